"""The content store's writes: a pair of files or nothing, and a received upload moved, not copied."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from capsearch.storage import ContentStore


def _store(tmp_path: Path) -> ContentStore:
    store = ContentStore(tmp_path / "media")
    store.init()
    return store


def _received(store: ContentStore, data: bytes) -> Path:
    path = store.root / "tmp" / "upload.part"
    path.write_bytes(data)
    return path


def test_adopt_moves_the_received_file_into_place(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"\xff\xd8 not really a jpeg"
    sha = hashlib.sha256(data).hexdigest()
    received = _received(store, data)
    inode = received.stat().st_ino
    files = store.adopt(sha, "image/jpeg", received, b"thumb")
    assert not received.exists()
    assert files.original.read_bytes() == data and files.original.stat().st_ino == inode
    assert files.thumbnail.read_bytes() == b"thumb"


def test_adopt_leaves_the_received_file_when_the_store_already_has_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"same bytes twice"
    sha = hashlib.sha256(data).hexdigest()
    store.put(sha, "image/png", data, b"thumb")
    received = _received(store, data)
    store.adopt(sha, "image/png", received, b"thumb")
    assert received.exists()  # the caller discards it with the rest of the upload
    assert store.read_original(sha, "image/png") == data


def test_adopt_never_leaves_half_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    data = b"the thumbnail write fails"
    sha = hashlib.sha256(data).hexdigest()
    received = _received(store, data)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("capsearch.storage._atomic_write", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.adopt(sha, "image/jpeg", received, b"thumb")
    assert store.all_files() == []
