"""Helpers for the tests that talk to the app over REST (httpx over ASGITransport, or a real server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy import func, select

from capsearch.db.models import Image
from capsearch.state import AppState
from tests.browserkit import free_port


def state_of(app: FastAPI) -> AppState:
    s: AppState = app.state.capsearch
    return s


async def count_rows(app: FastAPI) -> int:
    async with state_of(app).sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Image))).scalar_one())


def files(*blobs: bytes, names: list[str] | None = None) -> list[tuple[str, tuple[str, bytes, str]]]:
    names = names or [f"photo{i}.jpg" for i in range(len(blobs))]
    return [("files", (n, b, "image/jpeg")) for n, b in zip(names, blobs, strict=True)]


def dead_database_url(db_url: str, tmp_path: object) -> str:
    if db_url.startswith("postgresql"):
        return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/capsearch"  # nothing listens
    return f"sqlite+aiosqlite:///{tmp_path}"  # a directory: "unable to open database file"


async def until(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    """Poll what another process does until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
