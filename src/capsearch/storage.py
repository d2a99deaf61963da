"""Content-addressed local store for originals and display thumbnails.

Layout: ``<dir>/originals/ab/cd/<sha256>.<ext>`` and ``<dir>/thumbs/ab/cd/<sha256>.jpg``. Every write
goes to a temp file (in the target directory, or a socket upload's own on the same filesystem), is
fsynced, then renamed, so a crash never leaves a half-written file under a real name. All methods
are blocking; callers run them in a thread.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MediaKind = Literal["originals", "thumbs"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("originals", "thumbs")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MIME_BY_EXT = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
EXT_BY_MIME = {v: k for k, v in MIME_BY_EXT.items()}


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


@dataclass(frozen=True)
class StoredFiles:
    original: Path
    thumbnail: Path


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def init(self) -> None:
        for kind in MEDIA_KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, kind: MediaKind, sha256: str, ext: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / kind / sha256[:2] / sha256[2:4] / f"{sha256}.{ext}"

    def original_path(self, sha256: str, mime: str) -> Path:
        return self.path("originals", sha256, EXT_BY_MIME[mime])

    def thumbnail_path(self, sha256: str) -> Path:
        return self.path("thumbs", sha256, "jpg")

    def put(self, sha256: str, mime: str, original: bytes, thumbnail_jpeg: bytes) -> StoredFiles:
        files = StoredFiles(self.original_path(sha256, mime), self.thumbnail_path(sha256))
        written: list[Path] = []
        try:
            for path, data in ((files.original, original), (files.thumbnail, thumbnail_jpeg)):
                if not path.exists():
                    _atomic_write(path, data)
                    written.append(path)
        except BaseException:
            # Never leave one half of a pair behind.
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return files

    def adopt(self, sha256: str, mime: str, received: Path, thumbnail_jpeg: bytes) -> StoredFiles:
        """Like `put`, for an original already on disk in this store's filesystem (a socket upload's
        temp file): it is synced and renamed into place, not copied. Left where it is if the store
        already holds those bytes."""
        files = StoredFiles(self.original_path(sha256, mime), self.thumbnail_path(sha256))
        moved = False
        try:
            if not files.original.exists():
                files.original.parent.mkdir(parents=True, exist_ok=True)
                _sync(received)
                os.replace(received, files.original)
                moved = True
            if not files.thumbnail.exists():
                _atomic_write(files.thumbnail, thumbnail_jpeg)
        except BaseException:
            if moved:  # never one half of a pair; the upload is refused and sent again
                files.original.unlink(missing_ok=True)
            raise
        return files

    def delete(self, sha256: str, mime: str) -> None:
        for p in (self.original_path(sha256, mime), self.thumbnail_path(sha256)):
            p.unlink(missing_ok=True)

    def exists(self, sha256: str, mime: str) -> bool:
        return self.original_path(sha256, mime).is_file() and self.thumbnail_path(sha256).is_file()

    def read_original(self, sha256: str, mime: str) -> bytes:
        return self.original_path(sha256, mime).read_bytes()

    def find(self, kind: MediaKind, sha256: str) -> Path | None:
        """Locate a stored file by hash alone (the media route knows no extension)."""
        if not is_sha256(sha256):
            return None
        folder = self.root / kind / sha256[:2] / sha256[2:4]
        for ext in ("jpg", "png", "webp", "gif"):
            p = folder / f"{sha256}.{ext}"
            if p.is_file():
                return p
        return None

    def all_files(self) -> list[Path]:
        return [p for kind in MEDIA_KINDS for p in (self.root / kind).rglob("*") if p.is_file()]


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
