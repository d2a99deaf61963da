"""Hits while speaking: the settled words of a live recording, searched as they grow.

Per recording at most one search runs at a time, and at most one every `interval_s`; words that settle
meanwhile are searched next, all at once (coalescing, like the partial passes), so a burst of settled
words costs one search, never a queue of stale ones. The final transcript's hits replace these.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from capsearch.errors import CapsearchError
from capsearch.services.search import SearchResult
from capsearch.services.search_options import SearchOptions
from capsearch.voice.stream import VoiceStream

log = logging.getLogger(__name__)
# How a stream's words are searched: the voice pipeline's search_transcript.
Search = Callable[[str, SearchOptions], Awaitable[SearchResult]]


class LiveSearch:
    def __init__(self, search: Search, interval_s: float) -> None:
        self._search = search
        self._interval = interval_s

    def request(self, stream: VoiceStream, words: str, *, at_once: bool = False) -> None:
        """Search `words` soon, unless a newer request replaces them first. `at_once`: now, dropping
        a search of older words still waiting or running (the early final's transcript)."""
        stream.live_query = words
        if at_once and stream.search_task is not None:
            stream.search_task.cancel()
            stream.search_task = None
        if stream.search_task is None and not stream.finishing:
            stream.search_task = asyncio.create_task(self._run(stream), name=f"voice-search-{stream.id}")

    async def _run(self, stream: VoiceStream) -> None:
        loop = asyncio.get_running_loop()
        last = -self._interval
        try:
            while not stream.finishing and stream.live_query != stream.searched:
                wait = last + self._interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the debounce: words settling meanwhile join this search
                query = stream.live_query
                last = loop.time()
                try:
                    result = await self._search(query, stream.options)
                except CapsearchError as e:  # e.g. an embedder that is busy: the final still searches
                    log.debug("voice %s: live search skipped: %s", stream.id, e.message)
                    return
                stream.searched = query
                # A stop may have come while searching: then the final's hits are the ones to show.
                if stream.finishing:
                    return
                await stream.owner.voice_live_hits(stream.id, query, result)
        finally:
            if stream.search_task is asyncio.current_task():  # not one that replaced it
                stream.search_task = None
