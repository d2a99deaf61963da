"""The idle gallery: a few example photos captioned live while a page is left alone.

Examples are bundled public-domain photos (web/static/examples/, see its LICENSE), mixed with random
captioned images from the collection and, when configured, photos from a remote source. They are
captioned at background priority, so uploads and searches of people at their keyboard always go
first, and they are never stored: the gallery shows the model at work, it does not add to the
collection.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.config import GallerySettings, LimitSettings
from capsearch.errors import CapsearchError
from capsearch.intake.images import normalise_image
from capsearch.services import repo
from capsearch.storage import ContentStore

log = logging.getLogger(__name__)

EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


@dataclass(frozen=True)
class Example:
    key: str  # unique within one gallery and safe in an element id
    source: Literal["bundled", "collection", "remote"]
    # Same-origin or a data: URL, so the page's CSP (img-src 'self' data:) lets it show.
    image_url: str
    title: str
    display: PILImage.Image = field(repr=False, compare=False)


@dataclass(frozen=True)
class ExampleCaption:
    example: Example
    caption: str | None
    error: str | None = None


class Gallery:
    def __init__(
        self,
        settings: GallerySettings,
        *,
        captioner: Batcher[PILImage.Image, str],
        sessions: async_sessionmaker[AsyncSession],
        store: ContentStore,
        examples_dir: Path,
        limits: LimitSettings,
        thumbnail_size: int = 640,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.captioner = captioner
        self.sessions = sessions
        self.store = store
        self.examples_dir = examples_dir
        self.limits = limits
        self.thumbnail_size = thumbnail_size
        self.http = http
        self.rng = rng or random.Random()

    def bundled_files(self) -> list[Path]:
        if not self.examples_dir.is_dir():
            return []
        return sorted(p for p in self.examples_dir.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)

    async def pick(self, count: int | None = None) -> list[Example]:
        """Choose and load the examples: collection images, remote ones if configured, bundled ones."""
        count = count or self.settings.count
        from_collection = await self._from_collection(round(count * self.settings.collection_share))
        remote = await self._from_remote(count - len(from_collection))
        bundled = await self._from_bundle(count - len(from_collection) - len(remote))
        examples = [*from_collection, *remote, *bundled]
        self.rng.shuffle(examples)
        return examples

    async def caption(
        self, examples: list[Example], on_caption: Callable[[ExampleCaption], Awaitable[None]]
    ) -> None:
        """Caption each example at background priority, reporting each one as soon as it lands.

        Cancelling the caller cancels the queued requests too: the batcher drops them unrun.
        """

        async def one(example: Example) -> None:
            try:
                caption = await self.captioner.run(example.display, Priority.BACKGROUND)
            except CapsearchError as e:
                # Busy or failing: this example just stays uncaptioned; nobody asked for it.
                await on_caption(ExampleCaption(example, None, e.message))
            else:
                await on_caption(ExampleCaption(example, caption))

        await asyncio.gather(*(one(e) for e in examples))

    # ---- sources ------------------------------------------------------------------------------

    async def _from_collection(self, count: int) -> list[Example]:
        if count <= 0:
            return []
        async with self.sessions() as s:
            images = await repo.random_ready(s, count)
        examples = []
        for image in images:
            path = self.store.thumbnail_path(image.sha256)
            try:
                display = await asyncio.to_thread(_open_rgb, path)
            except OSError:
                continue  # its files were removed under us: skip it
            examples.append(
                Example(
                    key=f"image-{image.id}",
                    source="collection",
                    image_url=f"/media/thumbs/{image.sha256}",
                    title=image.filename or f"image {image.id}",
                    display=display,
                )
            )
        return examples

    async def _from_bundle(self, count: int) -> list[Example]:
        files = self.bundled_files()
        chosen = self.rng.sample(files, min(count, len(files)))
        examples = []
        for path in chosen:
            data = await asyncio.to_thread(path.read_bytes)
            norm = await asyncio.to_thread(normalise_image, data, self.limits, self.thumbnail_size)
            examples.append(
                Example(
                    key=f"bundled-{path.stem}",
                    source="bundled",
                    image_url=f"/static/examples/{path.name}",
                    title=path.name,
                    display=norm.display,
                )
            )
        return examples

    async def _from_remote(self, count: int) -> list[Example]:
        template = self.settings.remote_url_template
        if count <= 0 or not template or self.http is None:
            return []
        results = await asyncio.gather(
            *(self._fetch(template, self.rng.randrange(1 << 30)) for _ in range(count))
        )
        return [e for e in results if e is not None]

    async def _fetch(self, template: str, seed: int) -> Example | None:
        assert self.http is not None
        url = template.format(seed=seed)
        try:
            r = await self.http.get(url, timeout=self.settings.remote_timeout_s, follow_redirects=True)
            r.raise_for_status()
            if len(r.content) > self.limits.max_image_bytes:
                raise ValueError("too large")
            norm = await asyncio.to_thread(normalise_image, r.content, self.limits, self.thumbnail_size)
        except (httpx.HTTPError, ValueError, CapsearchError) as e:
            # The bundled photos stand in; an offline server is normal, not an error to show.
            log.info("remote example %s unavailable (%s); using a bundled one", url, e)
            return None
        data_url = "data:image/jpeg;base64," + base64.b64encode(norm.thumbnail_jpeg).decode("ascii")
        return Example(
            key=f"remote-{seed}", source="remote", image_url=data_url, title=url, display=norm.display
        )


def _open_rgb(path: Path) -> PILImage.Image:
    with PILImage.open(path) as im:
        return im.convert("RGB")
