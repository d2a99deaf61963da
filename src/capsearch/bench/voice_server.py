"""The server side of the voice benchmark: a real uvicorn server in a child process, with captions
for the transcripts to find, and the Whisper model to measure.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from capsearch.config import Settings
from capsearch.server import uvicorn_config

CAPTIONS = ["a dog running on the beach", "a plate of pasta on a table", "a red car parked on a street"]


def _photo(seed: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (64, 48), (seed * 70 % 256, 120, 200 - seed * 50))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _serve_main(settings_json: str, clip: np.ndarray, conn: Connection) -> None:
    """Child process: the server, away from the simulated pages' event loop and GIL."""
    from capsearch.app import create_app
    from capsearch.ml.factory import build_transcriber

    settings = Settings.model_validate_json(settings_json)
    transcriber = build_transcriber(settings)
    transcriber.load()
    one_pass = single_pass_seconds(transcriber, clip)
    app = create_app(settings, transcriber_factory=lambda _s: transcriber)
    config = uvicorn_config(app, settings.server, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)

    async def control() -> None:
        while not server.started:  # noqa: ASYNC110 — uvicorn exposes no "started" event
            await asyncio.sleep(0.05)
        conn.send((server.servers[0].sockets[0].getsockname()[1], one_pass))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        server.should_exit = True

    async def main() -> None:
        task = asyncio.create_task(control())
        await server.serve()
        task.cancel()

    asyncio.run(main())


@contextmanager
def voice_server(settings: Settings, clip: np.ndarray) -> Iterator[tuple[int, tuple[float, float]]]:
    """(port, (final pass, partial pass) alone) of a real server in a child process, with captions to
    find."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_main, args=(settings.model_dump_json(), clip, child))
    proc.start()
    try:
        if not parent.poll(600):
            raise RuntimeError("the voice benchmark server did not start")
        port, one_pass = parent.recv()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            for i, caption in enumerate(CAPTIONS):  # something for the transcript to find
                r = http.post("/api/images?wait=true", files={"files": (f"{i}.jpg", _photo(i), "image/jpeg")})
                image_id = r.json()["items"][0]["image"]["id"]
                http.patch(f"/api/images/{image_id}", json={"caption": caption}).raise_for_status()
        yield port, one_pass
    finally:
        parent.send("stop")
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()


def single_pass_seconds(transcriber: Any, clip: np.ndarray, repeat: int = 5) -> tuple[float, float]:
    """(final pass, partial pass) of one stream over `clip`, model alone: the units "one pass behind"
    is measured in. The fastest of a few runs after warming up, because a busy shared CPU only ever
    makes a run slower."""
    from capsearch.ml.speech import Clip

    audio = clip.astype(np.float32) / 32768
    out = []
    for final in (True, False):
        for _ in range(2):
            transcriber.predict([Clip(audio, final=final)])
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            transcriber.predict([Clip(audio, final=final)])
            times.append(time.perf_counter() - t0)
        out.append(min(times))
    return out[0], out[1]


def real_whisper_dir(settings: Settings) -> tuple[str | None, str]:
    """A real Whisper directory to measure, and where it came from (or why there is none)."""
    from capsearch.ml.registry import is_local_path, local_dir, spec_for

    env = os.environ.get("CAPSEARCH_TEST_WHISPER_DIR")
    if env and (Path(env) / "config.json").is_file():
        return env, Path(env).name
    models = settings.models.model_copy(update={"profile": "default"})
    spec = spec_for(models, "transcriber")
    found = local_dir(spec, models)
    if found is not None:
        return str(found), spec.name
    hint = "set CAPSEARCH_TEST_WHISPER_DIR (../shared/tools/whisper_base_offline.sh builds one)"
    where = "directory" if is_local_path(spec.model_id) else f"{settings.models.cache_dir}/"
    return None, f"skipped: {spec.name} is not in {where}; {hint} or run `capsearch models download`"
