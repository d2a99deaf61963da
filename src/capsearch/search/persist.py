"""The index on disk: `vectors.faiss` plus a `vectors.json` sidecar that says what it holds.

Both are written atomically (temp file in the same directory, fsync, rename, fsync of the directory),
index first. A crash between the two renames leaves a new index beside old metadata; the content
checksum then disagrees and the next start rebuilds — a torn pair is never trusted.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss as _faiss

from capsearch.search.index import checksum, export

# FAISS ships partial type stubs (no DirectMap, no SearchParametersIVF(nprobe=)): treat it as untyped.
faiss: Any = _faiss

INDEX_FILE = "vectors.faiss"
META_FILE = "vectors.json"
FORMAT_VERSION = 1


class IndexLoadError(Exception):
    """The saved index cannot be used; the message says why (it goes into the rebuild log line)."""


@dataclass(frozen=True)
class IndexMeta:
    model: str
    dim: int
    count: int
    kind: str
    checksum: str
    saved_at: str
    version: int = FORMAT_VERSION


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(directory: Path, name: str, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{name}-")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        _fsync_dir(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: Path, index: Any, *, model: str, dim: int) -> IndexMeta:
    """Write `index` (a FAISS index nobody else is changing, e.g. a clone) and its sidecar. Blocking."""
    directory.mkdir(parents=True, exist_ok=True)
    ids, vectors = export(index, dim)
    kind = "ivf" if isinstance(index, faiss.IndexIVF) else "exact"
    meta = IndexMeta(
        model=model,
        dim=dim,
        count=len(ids),
        kind=kind,
        checksum=checksum(ids, vectors),
        saved_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _replace_atomically(directory, INDEX_FILE, lambda tmp: faiss.write_index(index, tmp))
    body = json.dumps(asdict(meta), indent=2).encode()
    _replace_atomically(directory, META_FILE, lambda tmp: Path(tmp).write_bytes(body))
    return meta


def read_meta(directory: Path) -> IndexMeta:
    path = directory / META_FILE
    try:
        raw = json.loads(path.read_text())
        meta = IndexMeta(**raw)
    except FileNotFoundError as e:
        raise IndexLoadError(f"there is no saved index metadata ({path})") from e
    except (OSError, ValueError, TypeError) as e:
        raise IndexLoadError(f"the index metadata {path} is unreadable ({e})") from e
    if meta.version != FORMAT_VERSION:
        raise IndexLoadError(
            f"the saved index has format {meta.version}, this version writes {FORMAT_VERSION}"
        )
    return meta


def load(directory: Path, *, model: str, dim: int) -> tuple[Any, IndexMeta]:
    """The saved index and its metadata, checked against each other; IndexLoadError says what is wrong."""
    meta = read_meta(directory)
    if meta.model != model or meta.dim != dim:
        raise IndexLoadError(
            f"the saved index is for {meta.model} ({meta.dim}-d), the embedder is {model} ({dim}-d)"
        )
    path = directory / INDEX_FILE
    if not path.is_file():
        raise IndexLoadError(f"the index file {path} is missing")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:  # FAISS reports corrupt or truncated files this way
        raise IndexLoadError(f"the index file {path} is unreadable ({e})") from e
    if index.d != dim:
        raise IndexLoadError(f"the index file holds {index.d}-d vectors, expected {dim}")
    if checksum(*export(index, dim)) != meta.checksum:
        raise IndexLoadError("the index file does not match its metadata (interrupted save)")
    return index, meta
