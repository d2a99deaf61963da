"""Shared by the browser tests: where Chromium is and how it is launched, real sample photos, a real
uvicorn server for any app (conftest's `server` fixture uses it), the page opened with probes, a fake
microphone, and collectors of the page's console errors and of the frames it sends over its socket.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no Playwright browser download).
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import shutil
import socket
import subprocess
import sys
import threading
import warnings
import zipfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image as PILImage

from capsearch.app import CaptionerFactory, create_app
from capsearch.config import ServerSettings, Settings
from capsearch.server import uvicorn_config
from tests.browser_js import DROP_JS
from tests.voicekit import make_speech_wav, read_wav, silence, wav_bytes

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
PHOTO_NAMES = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Every browser test module: `pytestmark = BROWSER` (plus its own marks).
BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install chromium"),
]

OPEN = '#connection[data-state="open"]'  # the page's socket is live
FAKE_UI = "--use-fake-ui-for-media-stream"  # grants the microphone without asking
FAKE_DEVICE = "--use-fake-device-for-media-stream"


def real_photos() -> list[Path]:
    """Public-domain sample photos from the scikit-image wheel (its data README lists them), cached."""
    cache = ARTIFACTS / "photos"
    paths = [cache / n for n in PHOTO_NAMES]
    if all(p.is_file() for p in paths):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / "wheel"
    try:
        subprocess.run(
            [*PIP_DOWNLOAD, "scikit-image", "-d", str(download)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        wheel = next(download.glob("scikit_image-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for p in paths:
                p.write_bytes(z.read(f"skimage/data/{p.name}"))
    except (subprocess.SubprocessError, StopIteration, KeyError, OSError) as e:
        warnings.warn(f"no real photos ({e}); using generated images instead", stacklevel=1)
        return generated_photos(cache)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return paths


def generated_photos(folder: Path) -> list[Path]:
    out = []
    for i in range(len(PHOTO_NAMES)):
        rnd = random.Random(i)
        img = PILImage.linear_gradient("L").resize((512, 384)).convert("RGB")
        for _ in range(20):
            x, y = rnd.randrange(512), rnd.randrange(384)
            img.paste(tuple(rnd.randrange(256) for _ in range(3)), (x, y, x + 60, y + 60))
        path = folder / f"generated-{i}.jpg"
        img.save(path, "JPEG", quality=90)
        out.append(path)
    return out


def noise_jpeg(path: Path, min_bytes: int) -> Path:
    """A real JPEG over the size limit: noise does not compress."""
    side = 1400
    while True:
        rnd = random.Random(side)
        img = PILImage.frombytes("RGB", (side, side), rnd.randbytes(side * side * 3))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        if buf.tell() > min_bytes:
            path.write_bytes(buf.getvalue())
            return path
        side += 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(app: FastAPI, server_settings: ServerSettings | None = None) -> AsyncIterator[str]:
    """Run `app` in a real uvicorn server on a free port (its own thread), with the transport limits
    of `server_settings` (the defaults if none); yields the base URL."""
    port = free_port()
    limits = server_settings or ServerSettings()
    config = uvicorn_config(app, limits, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            await asyncio.sleep(0.1)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


@asynccontextmanager
async def running(settings: Settings, factory: CaptionerFactory) -> AsyncIterator[httpx.AsyncClient]:
    """The app in a real server; yields an API client on it."""
    app = create_app(settings, captioner_factory=factory)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=120) as api:
        yield api


async def open_page(
    browser: Any, base: str, problems: list[str], *init_scripts: str, frames: Counter[str] | None = None
) -> Any:
    """A new page on `base` with `init_scripts` (browser_js's probes) run first, its console errors
    collected in `problems` and, given `frames`, the frames it sends counted there; back once the
    socket is live."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, problems)
    if frames is not None:
        watch_frames(page, frames)
    for script in init_scripts:
        await page.add_init_script(script)
    await page.goto(base + "/")
    await page.wait_for_selector(OPEN, timeout=15_000)
    return page


async def drop_file(page: Any, name: str, data: bytes) -> None:
    """Drops a file on the page the way a person drags one in (a real DataTransfer, drag events)."""
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    await page.evaluate(DROP_JS, [base64.b64encode(data).decode(), name, mime])


def microphone_args(wav: Path | None, *, grant: bool = True) -> list[str]:
    """Chromium flags for a fake microphone that plays `wav` (looping); `grant=False` leaves the
    permission to the browser's own prompt, which headless Chromium answers with a denial."""
    args = [FAKE_DEVICE]
    if grant:
        args.append(FAKE_UI)
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav.resolve()}")
    return args


async def launch(playwright: Any, *extra: str) -> Any:
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra])


def speech_with_pause(directory: Path, phrase: str, pause_s: float = 0.8) -> Path:
    """espeak-ng says `phrase`, then `pause_s` of quiet: the fake microphone loops the file, so the
    pause keeps the repetitions apart. Skips the test when espeak-ng or sox is missing."""
    spoken = read_wav(make_speech_wav(directory, phrase).read_bytes())
    out = directory / "speech-pause.wav"
    out.write_bytes(wav_bytes(np.concatenate([spoken, silence(pause_s)])))
    return out


def quiet_wav(directory: Path, seconds: float = 3.0) -> Path:
    out = directory / "quiet.wav"
    out.write_bytes(wav_bytes(silence(seconds)))
    return out


def watch_console(page: Any, problems: list[str]) -> None:
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))


def watch_frames(page: Any, frames: Counter[str]) -> None:
    """Counts what the page sends over its WebSockets as Chromium sees it on the wire: frames["text"]
    and frames["binary"] (and the binary bytes in frames["bytes"])."""

    def on_socket(ws: Any) -> None:
        def sent(payload: str | bytes) -> None:
            if isinstance(payload, bytes):
                frames["binary"] += 1
                frames["bytes"] += len(payload)
            else:
                frames["text"] += 1

        ws.on("framesent", sent)

    page.on("websocket", on_socket)
