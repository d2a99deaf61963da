"""`capsearch import`: good, duplicate and bad files, run twice; an interrupted run continues."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from capsearch import cli
from capsearch.config import Settings, get_settings
from capsearch.importer import Importer, find_files, format_report
from tests.apikit import count_rows
from tests.conftest import photo_bytes


def make_folder(root: Path) -> dict[str, int]:
    """Five distinct good photos (one nested), one copy, four bad files and hidden ones to skip."""
    (root / "trip" / "day2").mkdir(parents=True)
    for i in range(4):
        (root / "trip" / f"photo{i}.jpg").write_bytes(photo_bytes(500 + i))
    (root / "trip" / "day2" / "beach.png").write_bytes(photo_bytes(600, fmt="PNG"))
    (root / "copy-of-photo0.jpg").write_bytes(photo_bytes(500))
    (root / "notes.txt").write_text("not an image at all")
    (root / "broken.jpg").write_bytes(photo_bytes(700)[:500])
    (root / "empty.png").write_bytes(b"")
    noise = PILImage.frombytes("RGB", (700, 700), random.Random(800).randbytes(700 * 700 * 3))
    noise.save(root / "huge.jpg", quality=95)  # noise barely compresses: over the test's size limit
    assert (root / "huge.jpg").stat().st_size > 200_000
    (root / ".hidden.jpg").write_bytes(photo_bytes(900))
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "x.jpg").write_bytes(photo_bytes(901))
    return {"good": 5, "copies": 1, "bad": 4}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    make_folder(root)
    return root


def small_limit(settings: Settings) -> Settings:
    settings.limits.max_image_bytes = 200_000
    return settings


async def test_import_twice_adds_only_what_is_new(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, folder: Path
) -> None:
    limits = small_limit(settings).limits
    files = find_files(folder)
    assert len(files) == 10 and not any(".hidden" in str(f) or ".thumbs" in str(f) for f in files)

    progress: list[int] = []
    first = await Importer(client, limits, batch_size=3, on_progress=progress.append).run(files)
    assert (first.added, first.duplicates) == (5, 1)
    assert sorted((r.path.name, r.code) for r in first.rejected) == [
        ("broken.jpg", "corrupt_image"),
        ("empty.png", "empty_file"),
        ("huge.jpg", "too_large"),
        ("notes.txt", "unsupported_type"),
    ]
    assert sum(progress) == len(files) == first.done
    assert await count_rows(app) == 5
    listed = (await client.get("/api/images", params={"limit": 10})).json()["items"]
    assert {i["status"] for i in listed} == {"ready"}
    names = {i["filename"] for i in listed}
    assert {"beach.png", "photo1.jpg"} <= names
    assert len(names & {"photo0.jpg", "copy-of-photo0.jpg"}) == 1  # the same bytes are stored once

    second = await Importer(client, limits, batch_size=3).run(files)
    assert (second.added, second.duplicates, len(second.rejected)) == (0, 6, 4)
    assert await count_rows(app) == 5

    text = format_report(first, folder)
    assert text.startswith("5 added, 1 already there, 4 not imported (10 of 10 files)")
    assert "notes.txt: This file is a text file" in text


async def test_an_interrupted_import_continues_on_the_next_run(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, folder: Path
) -> None:
    limits = small_limit(settings).limits
    files = find_files(folder)
    first_batch_done = asyncio.Event()
    importer = Importer(
        client, limits, batch_size=2, concurrency=1, on_progress=lambda _n: first_batch_done.set()
    )
    task = asyncio.create_task(importer.run(files))
    await first_batch_done.wait()
    task.cancel()  # what Ctrl-C does to the running import
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = await count_rows(app)
    assert partial < 5

    rerun = await Importer(client, limits, batch_size=2).run(files)
    assert await count_rows(app) == 5
    assert rerun.added == 5 - partial


def test_cli_imports_in_process_when_no_server_answers(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "CAPSEARCH_DATABASE__URL": settings.database.url,
        "CAPSEARCH_STORAGE__DIR": str(settings.storage.dir),
        "CAPSEARCH_MODELS__PROFILE": "tiny",
        "CAPSEARCH_MODELS__CACHE_DIR": str(settings.models.cache_dir),
        "CAPSEARCH_MODELS__ALLOW_DOWNLOAD": "false",
        "CAPSEARCH_LIMITS__MAX_IMAGE_BYTES": "200000",
        "CAPSEARCH_SERVER__PORT": "9",  # nothing listens on the discard port
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        assert cli.main(["import", str(folder)]) == 0
        out = capsys.readouterr()
        assert "directly (no server answered at http://127.0.0.1:9)" in out.err
        assert out.out.startswith("5 added, 1 already there, 4 not imported")
        assert cli.main(["import", str(folder)]) == 0
        assert capsys.readouterr().out.startswith("0 added, 6 already there, 4 not imported")
        assert cli.main(["import", str(folder / "missing")]) == 2
    finally:
        get_settings.cache_clear()
