"""One pub/sub channel followed for as long as the process runs, through Redis restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)


async def follow_channel(
    redis: Redis,
    channel: str,
    handle: Callable[[bytes], None],
    *,
    subscribed: asyncio.Event | None = None,
) -> None:
    """Call `handle` with each message's payload until cancelled. A dropped connection (Redis
    restarted) is subscribed again after half a second; `subscribed` is set once listening."""
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            if subscribed is not None:
                subscribed.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    handle(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("channel %s lost (%s); subscribing again", channel, e)
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
