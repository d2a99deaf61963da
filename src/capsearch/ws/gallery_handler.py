"""One page's idle gallery over the socket: skeleton cards at once, each filled in as its caption lands.

At most one gallery runs per page; a second request while one runs is ignored (once per idle
period), and `gallery.cancel` (the person is back) drops the examples still waiting for the model.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from capsearch.services.gallery import ExampleCaption, Gallery
from capsearch.ws import fragments
from capsearch.ws.messages import Fragment

if TYPE_CHECKING:
    from capsearch.ws.connection import Connection

log = logging.getLogger(__name__)


class GalleryHandler:
    def __init__(self, channel: Connection, gallery: Gallery) -> None:
        self.channel = channel
        self.gallery = gallery
        self._task: asyncio.Task[None] | None = None

    async def request(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._task = self.channel.spawn(self._show())

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _show(self) -> None:
        gallery_id = uuid.uuid4().hex[:10]
        examples = await self.gallery.pick()
        if not examples:
            return
        await self.channel.send(Fragment(html=fragments.gallery(gallery_id, examples)))

        async def landed(result: ExampleCaption) -> None:
            await self.channel.send(Fragment(html=fragments.gallery_card(gallery_id, result)))

        try:
            await self.gallery.caption(examples, landed)
        except asyncio.CancelledError:
            log.debug("gallery %s cancelled: the person is back", gallery_id)
            raise
