"""Background repair: what a crash or an outage left behind is put right without a restart.

Run once at start-up (before serving) and then every `maintenance.sweep_interval_s`:

* Rows `received`/`captioning` unchanged for `stuck_after_s` with no live caption task (their task
  gave up during a database outage, or a page's released caption never got back in the queue) are
  captioned again at background priority.
* Temp files of interrupted atomic writes (`.tmp-*` in the store and the search index directory)
  older than `temp_file_age_s` are deleted.
* Stored originals and thumbnails whose hash has no row (a kill between writing the files and
  inserting the row) are deleted once older than `orphan_grace_s`. A hash is checked against the
  database while it is claimed (`StoreClaims`), so files an upload is about to name are never deleted.

The partial uploads under `<store>/tmp/uploads` belong to the upload registry and are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from capsearch.config import MaintenanceSettings
from capsearch.db.models import utcnow
from capsearch.db.outage import is_unavailable
from capsearch.services import repo
from capsearch.storage import MEDIA_KINDS, MIME_BY_EXT, is_sha256

if TYPE_CHECKING:
    from capsearch.pipelines.images import ImagePipeline

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
# Hashes checked against the database per query.
SHA_BATCH = 500
# File times can be coarse (and a sweep takes a moment): re-check this far behind the last pass.
MTIME_SLACK_S = 2.0


class StoreClaims:
    """Content hashes whose files someone is writing or deleting right now.

    An upload holds its hash from writing the files until its row is committed (or the files are
    removed again); the sweep takes the hashes it examines, so the two never act on one hash at once.
    """

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Event] = {}

    @asynccontextmanager
    async def hold(self, sha256: str) -> AsyncIterator[None]:
        while (released := self._held.get(sha256)) is not None:
            await released.wait()
        self._held[sha256] = asyncio.Event()
        try:
            yield
        finally:
            self._held.pop(sha256).set()

    def take(self, shas: Iterable[str]) -> list[str]:
        """Claim the hashes nobody holds (at once, without waiting); returns those taken."""
        taken = [s for s in shas if s not in self._held]
        for s in taken:
            self._held[s] = asyncio.Event()
        return taken

    def release(self, shas: Iterable[str]) -> None:
        for s in shas:
            self._held.pop(s).set()


@dataclass
class SweepReport:
    requeued: int = 0
    temp_files: int = 0
    orphan_files: int = 0


@dataclass
class _Shard:
    """One `ab/` directory of both kinds: its old temp files and its candidate orphans."""

    temp_removed: int = 0
    candidates: dict[str, list[Path]] = field(default_factory=dict)
    oldest: dict[str, float] = field(default_factory=dict)


class Maintenance:
    def __init__(
        self, settings: MaintenanceSettings, images: ImagePipeline, *, temp_dirs: Sequence[Path] = ()
    ) -> None:
        self.settings = settings
        self.images = images
        self.store = images.store
        self.claims = images.claims
        # Other directories whose own `.tmp-*` files are swept (the search index's).
        self.temp_dirs = list(temp_dirs)
        # Files last modified before this (epoch seconds) were already checked against the rows.
        self._checked_before: float | None = None
        self._db_down = False

    async def startup(self) -> SweepReport:
        """Before serving: temp files and orphans a crash left. Unfinished rows are the lifespan's
        (`ImagePipeline.resume_unfinished`)."""
        report = SweepReport()
        await self.sweep_files(report)
        return report

    async def sweep(self) -> SweepReport:
        """One periodic pass (the Periodic runner's job)."""
        report = SweepReport()
        try:
            report.requeued = await self.requeue_stuck()
            await self.sweep_files(report)
        except Exception as e:
            if not is_unavailable(e):
                raise
            # Once per outage, not on every pass.
            log.log(
                logging.DEBUG if self._db_down else logging.WARNING,
                "maintenance sweep skipped, the database is unreachable: %s",
                e,
            )
            self._db_down = True
        else:
            self._db_down = False
        if report.requeued or report.temp_files or report.orphan_files:
            log.info(
                "maintenance: %d stuck caption(s) queued again; %d temp and %d orphan file(s) removed",
                report.requeued,
                report.temp_files,
                report.orphan_files,
            )
        return report

    async def requeue_stuck(self) -> int:
        idle_since = utcnow() - timedelta(seconds=self.settings.stuck_after_s)
        async with self.images.sessions() as s:
            rows = await repo.stuck(s, idle_since)
        return sum(self.images.recaptioner.requeue(image) for image in rows)

    async def sweep_files(self, report: SweepReport) -> None:
        now = time.time()
        temp_cutoff = now - self.settings.temp_file_age_s
        orphan_cutoff = now - self.settings.orphan_grace_s
        since = None if self._checked_before is None else self._checked_before - MTIME_SLACK_S
        report.temp_files += await asyncio.to_thread(_remove_temp_files, self.temp_dirs, temp_cutoff)
        # Shard by shard, so memory stays bounded however large the store is.
        watermark = orphan_cutoff
        for prefix in await asyncio.to_thread(self._shard_names):
            shard = await asyncio.to_thread(self._scan, prefix, temp_cutoff, since, orphan_cutoff)
            report.temp_files += shard.temp_removed
            shas = list(shard.candidates)
            for start in range(0, len(shas), SHA_BATCH):
                batch = shas[start : start + SHA_BATCH]
                report.orphan_files += await self._remove_orphans(batch, shard, orphan_cutoff)
                # A hash an upload held could not be judged now: the next pass looks at it again.
                held = [s for s in batch if s in shard.candidates]
                watermark = min([watermark, *(shard.oldest[s] for s in held)])
        self._checked_before = watermark

    async def _remove_orphans(self, batch: list[str], shard: _Shard, cutoff: float) -> int:
        taken = self.claims.take(batch)
        try:
            async with self.images.sessions() as s:
                known = await repo.existing_shas(s, taken)
            doomed = [p for sha in taken if sha not in known for p in shard.candidates[sha]]
            removed = await asyncio.to_thread(_unlink_old, doomed, cutoff)
        finally:
            self.claims.release(taken)
        for sha in taken:
            del shard.candidates[sha]
        if removed:
            log.warning("maintenance: removed %d stored file(s) that no image row names", removed)
        return removed

    # ---- blocking: run in a thread ------------------------------------------------------------

    def _shard_names(self) -> list[str]:
        names: set[str] = set()
        for kind in MEDIA_KINDS:
            names.update(e.name for e in _entries(self.store.root / kind) if e.is_dir(follow_symlinks=False))
        return sorted(names)

    def _scan(self, prefix: str, temp_cutoff: float, since: float | None, orphan_cutoff: float) -> _Shard:
        shard = _Shard()
        for kind in MEDIA_KINDS:
            top = self.store.root / kind / prefix
            subdirs = [Path(d.path) for d in _entries(top) if d.is_dir(follow_symlinks=False)]
            for folder in (top, *subdirs):
                for entry in _entries(folder):
                    if entry.is_file(follow_symlinks=False):
                        self._consider(entry, shard, temp_cutoff, since, orphan_cutoff)
        return shard

    @staticmethod
    def _consider(
        entry: os.DirEntry[str], shard: _Shard, temp_cutoff: float, since: float | None, orphan_cutoff: float
    ) -> None:
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            return  # removed meanwhile
        if entry.name.startswith(TEMP_PREFIX):
            if mtime < temp_cutoff:
                shard.temp_removed += _unlink_old([Path(entry.path)], temp_cutoff)
            return
        sha, _, ext = entry.name.partition(".")
        # Only names the store itself writes; anything else is not ours to judge.
        if not is_sha256(sha) or ext not in MIME_BY_EXT:
            return
        if mtime >= orphan_cutoff or (since is not None and mtime < since):
            return
        shard.candidates.setdefault(sha, []).append(Path(entry.path))
        shard.oldest[sha] = min(mtime, shard.oldest.get(sha, mtime))


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:  # not created yet, or removed meanwhile
        return []


def _remove_temp_files(folders: list[Path], cutoff: float) -> int:
    temps = [
        Path(e.path) for f in folders for e in _entries(f) if e.name.startswith(TEMP_PREFIX) and e.is_file()
    ]
    return _unlink_old(temps, cutoff)


def _unlink_old(paths: list[Path], cutoff: float) -> int:
    """Delete the files still last modified before `cutoff` (one rewritten meanwhile stays)."""
    removed = 0
    for p in paths:
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
