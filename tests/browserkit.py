"""Shared by the browser tests that build their own app: a real uvicorn server for any app, Chromium with
a fake microphone, and a collector of the page's console errors (see tests/test_browser.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from capsearch.server import uvicorn_config
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, free_port
from tests.voicekit import make_speech_wav, read_wav, silence, wav_bytes

FAKE_UI = "--use-fake-ui-for-media-stream"  # grants the microphone without asking
FAKE_DEVICE = "--use-fake-device-for-media-stream"


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run `app` in a real uvicorn server on a free port (its own thread); yields the base URL."""
    port = free_port()
    config = uvicorn_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
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
