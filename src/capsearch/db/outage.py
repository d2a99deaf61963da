"""Telling "the database is unreachable right now" apart from other database errors, and riding it out.

An outage surfaces in several shapes: a refused connect (a plain OSError from the driver), a pooled
connection the server closed under us (SQLAlchemy InterfaceError/OperationalError with the
connection invalidated), or the server saying it is shutting down or starting up (asyncpg's operator
intervention errors). All of them mean: nothing was written, and the same statement will work later.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg.exceptions as pg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa

from capsearch.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Waits between tries while the database is away: 0.1 s, doubling, at most this long.
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0

# asyncpg's own errors that mean the server is gone, refusing, restarting or out of connections.
_PG_OUTAGES: tuple[type[BaseException], ...] = (
    pg.PostgresConnectionError,  # class 08: connection failure, does not exist, rejected
    pg.OperatorInterventionError,  # class 57: admin/crash shutdown, cannot connect now
    pg.InsufficientResourcesError,  # class 53: too many connections, out of memory, disk full
    pg.InvalidCatalogNameError,  # the database itself is missing (being restored, dropped)
    pg.InvalidAuthorizationSpecificationError,  # credentials rotated under a running app
    pg.InterfaceError,  # the client side of a connection that broke
)
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.", "sqlite3.")


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or what caused it, says the database cannot be used right now.

    A bare OSError counts only when a database driver raised it (a full disk while storing a file is
    not a database outage), and a constraint violation never counts.
    """
    return any(_says_outage(e) for e in _chain(exc))


def _says_outage(e: BaseException) -> bool:
    if isinstance(e, DatabaseUnavailableError):
        return True
    if isinstance(e, sa.DBAPIError):
        return e.connection_invalidated or isinstance(e, (sa.OperationalError, sa.InterfaceError))
    if isinstance(e, OSError):  # refused, reset, DNS, connect timeout: only from a driver
        return _raised_by_driver(e)
    # Pool timeouts (no connection came free), asyncpg's and sqlite3's own connection errors.
    return isinstance(e, (sa.TimeoutError, sa.DisconnectionError, *_PG_OUTAGES, sqlite3.OperationalError))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, the driver error SQLAlchemy wraps (`orig`), and their causes; each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (getattr(e, "orig", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _raised_by_driver(exc: BaseException) -> bool:
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        if str(frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
    return False


async def retry_unavailable(op: Callable[[], Awaitable[T]], *, budget_s: float, what: str) -> T:
    """Run `op`; while the database is unreachable, run it again with exponential backoff for up to
    `budget_s` seconds, then raise the last error. Other errors are raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = FIRST_BACKOFF_S
    failures = 0
    while True:
        try:
            result = await op()
        except Exception as e:
            left = deadline - loop.time()
            if not is_unavailable(e) or left <= 0:
                if failures:
                    log.error("%s: the database stayed unreachable for %.0f s; giving up", what, budget_s)
                raise
            if not failures:
                log.warning(
                    "%s: the database is unreachable (%s); retrying for up to %.0f s", what, e, budget_s
                )
            failures += 1
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, MAX_BACKOFF_S)
        else:
            if failures:
                log.info("%s: done after %d retries", what, failures)
            return result
