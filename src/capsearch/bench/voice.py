"""Voice latency and capacity: live recordings over `/ws` to a real uvicorn server on loopback.

Each simulated page sends 200 ms PCM frames in real time, as the microphone would produce them:
silence, a spoken phrase (espeak-ng), a pause, then `voice.stop`. Times are measured from the
moment the speech is *said* (its position in the audio), not from when its frame was sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from capsearch.config import DatabaseSettings, RateLimitSettings, Settings, StorageSettings
from capsearch.server import uvicorn_config
from capsearch.voice.audio import SAMPLE_RATE
from capsearch.ws.frames import encode_pcm_frame

FRAME = SAMPLE_RATE // 5  # 200 ms, what the page sends
PHRASE = "a dog running on the beach"
CAPTIONS = ["a dog running on the beach", "a plate of pasta on a table", "a red car parked on a street"]
SLACK_S = 0.25  # batching window, socket and scheduling on top of the two passes a partial may wait


@dataclass
class Recording:
    """One simulated page's recording and what came back, with loop-clock times."""

    sent_at: list[float] = field(default_factory=list)  # when each frame was sent
    partials: list[tuple[float, float]] = field(default_factory=list)  # (received at, seconds covered)
    started: float = 0.0  # when the first sample was "said"
    stop_at: float = 0.0
    final_at: float = 0.0
    hits_at: float = 0.0
    text: str = ""
    top_hit: str = ""
    error: str = ""


def speech_clip(phrase: str = PHRASE) -> tuple[np.ndarray, str]:
    """int16 16 kHz mono speech from espeak-ng, or a loud hum standing in for it (and why)."""
    if shutil.which("espeak-ng") is None:
        t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
        return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), "espeak-ng missing: a hum, not words"
    raw = subprocess.run(["espeak-ng", "--stdout", phrase], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
    from capsearch.voice.audio import resample

    return (resample(samples.astype(np.float32) / 32768, rate) * 32767).astype(np.int16), "espeak-ng"


def timeline(speech: np.ndarray, lead_s: float = 0.4, tail_s: float = 0.6) -> tuple[np.ndarray, float, float]:
    """Silence, speech, a pause before stop; returns the audio and when speech starts and ends (s)."""
    lead, tail = np.zeros(int(lead_s * SAMPLE_RATE), np.int16), np.zeros(int(tail_s * SAMPLE_RATE), np.int16)
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 0.02 * 32768)
    first, last = (int(loud[0]), int(loud[-1])) if loud.size else (0, speech.size)
    return np.concatenate([lead, speech, tail]), lead_s + first / SAMPLE_RATE, lead_s + last / SAMPLE_RATE


async def record(url: str, stream_id: str, audio: np.ndarray, *, delay_s: float = 0.0) -> Recording:
    """Speak `audio` into a fresh socket in real time, stop, and collect everything that comes back."""
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    rec = Recording()
    await asyncio.sleep(delay_s)
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "voice.start", "id": stream_id}))
        assert json.loads(await ws.recv())["type"] == "voice.accepted"

        async def listen() -> None:
            while True:
                msg = json.loads(await ws.recv())
                now = loop.time()
                if msg["type"] == "voice.partial":
                    rec.partials.append((now, float(msg["seconds"])))
                elif msg["type"] == "voice.final":
                    rec.final_at, rec.text = now, msg["text"]
                elif msg["type"] == "voice.hits":
                    rec.hits_at = now
                    rec.top_hit = msg["hits"][0]["image"]["caption"] if msg["hits"] else "(no match)"
                    return
                elif msg["type"] in ("voice.error", "error"):
                    rec.error = f"{msg['code']}: {msg['detail']}"
                    return

        listener = asyncio.create_task(listen())
        rec.started = loop.time()
        for i in range(0, audio.size, FRAME):
            # A frame exists once the microphone has produced its last sample.
            ready = rec.started + min(i + FRAME, audio.size) / SAMPLE_RATE
            await asyncio.sleep(max(0.0, ready - loop.time()))
            await ws.send(encode_pcm_frame(stream_id, audio[i : i + FRAME].astype("<i2").tobytes()))
            rec.sent_at.append(loop.time())
        rec.stop_at = loop.time()
        await ws.send(json.dumps({"type": "voice.stop", "id": stream_id}))
        await asyncio.wait_for(listener, 300)
        await ws.close(1000)
    return rec


def lags(rec: Recording) -> list[float]:
    """For each partial: how old the newest audio it covers was when it arrived."""
    out = []
    for received, seconds in rec.partials:
        # The frame holding the last sample covered (`seconds` is rounded to 10 ms; the last frame is short).
        frame = max(0, min(len(rec.sent_at) - 1, math.ceil(seconds * SAMPLE_RATE / FRAME - 0.1) - 1))
        out.append(received - rec.sent_at[frame])
    return out


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
def voice_server(settings: Settings, clip: np.ndarray) -> Iterator[tuple[int, float]]:
    """(port, seconds of one pass alone) of a real server in a child process, with captions to find."""
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


def single_pass_seconds(transcriber: Any, clip: np.ndarray, repeat: int = 5) -> float:
    """One stream's pass, model alone: the unit "one pass behind" is measured in. The fastest of a
    few runs after warming up, because a busy shared CPU only ever makes a run slower."""
    audio = clip.astype(np.float32) / 32768
    for _ in range(2):
        transcriber.predict([audio])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        transcriber.predict([audio])
        times.append(time.perf_counter() - t0)
    return min(times)


async def _bench_model(
    label: str, port: int, one_pass: float, quick: bool, levels: list[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    speech, source = speech_clip()
    audio, speech_start, speech_end = timeline(speech)
    url = f"ws://127.0.0.1:{port}/ws"
    reps = [await record(url, f"latency-{i:03d}", audio) for i in range(1 if quick else 3)]
    failed = [r.error for r in reps if r.error]
    ok = [r for r in reps if not r.error and r.partials]
    latency: dict[str, Any] = {"model": label, "speech": source}
    if failed or not ok:
        latency["error"] = failed[0] if failed else "no partial arrived while speaking"
    else:
        latency |= {
            "pass_s": round(one_pass, 3),
            "speech_to_partial_s": round(
                statistics.median(r.partials[0][0] - r.started - speech_start for r in ok), 3
            ),
            "speech_end_to_final_s": round(
                statistics.median(r.final_at - r.started - speech_end for r in ok), 3
            ),
            "speech_end_to_hits_s": round(
                statistics.median(r.hits_at - r.started - speech_end for r in ok), 3
            ),
            "stop_to_hits_s": round(statistics.median(r.hits_at - r.stop_at for r in ok), 3),
            "transcript": ok[0].text[:40],
            "top_hit": ok[0].top_hit[:30],
        }
    # Longer speech for the capacity runs: several partials per stream.
    long_audio, _, _ = timeline(np.concatenate([speech, speech]), tail_s=0.4)
    budget = 2 * one_pass + SLACK_S
    capacity: list[dict[str, Any]] = []
    for n in levels:
        recs = await asyncio.gather(
            *(
                record(url, f"cap-{n:03d}-{i:03d}", long_audio, delay_s=i * FRAME / SAMPLE_RATE / n)
                for i in range(n)
            )
        )
        all_lags = [lag for r in recs for lag in lags(r)]
        errors = sum(1 for r in recs if r.error)
        keeps_up = bool(all_lags) and not errors and max(all_lags) <= budget and all(r.partials for r in recs)
        capacity.append(
            {
                "model": label,
                "streams": n,
                "partials_per_stream": round(statistics.mean(len(r.partials) for r in recs), 1),
                "lag_p50_s": round(statistics.median(all_lags), 2) if all_lags else 0.0,
                "lag_max_s": round(max(all_lags), 2) if all_lags else 0.0,
                "budget_s": round(budget, 2),
                "stop_to_final_max_s": round(
                    max((r.final_at - r.stop_at for r in recs if r.final_at), default=0), 2
                ),
                "errors": errors,
                "keeps_up": "yes" if keeps_up else "no",
            }
        )
        if not keeps_up:
            break
    return latency, capacity


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


def bench_voice(settings: Settings, *, quick: bool = False) -> list[str]:
    from capsearch.bench.offline import format_table
    from capsearch.db.migrate import upgrade

    latency: list[dict[str, Any]] = []
    capacity: list[dict[str, Any]] = []
    notes: list[str] = []
    real, origin = real_whisper_dir(settings)
    candidates: list[tuple[str, str | None, list[int]]] = [
        ("tiny", None, [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32])
    ]
    if real is not None and not quick:
        candidates.append((origin, real, [1, 2, 4]))
    else:
        notes.append(f"real Whisper: {'skipped with --quick' if real else origin}")
    for label, model_dir, levels in candidates:
        with tempfile.TemporaryDirectory(prefix="capsearch-bench-voice-") as tmp:
            root = Path(tmp)
            models = settings.models.model_copy(update={"profile": "tiny", "transcriber_id": model_dir})
            s = Settings(
                _env_file=None,
                database=DatabaseSettings(url=f"sqlite+aiosqlite:///{root / 'bench.db'}"),
                storage=StorageSettings(dir=root / "media"),
                models=models,
                transcribe_batch=settings.transcribe_batch,
                # Every simulated page is the same loopback client; per-client limits would cap it.
                voice=settings.voice.model_copy(update={"max_streams_per_client": 64}),
                rate_limits=RateLimitSettings(enabled=False),
            )
            upgrade(s.database.url)
            with voice_server(s, timeline(speech_clip()[0])[0]) as (port, one_pass):
                lat, cap = asyncio.run(_bench_model(label, port, one_pass, quick, levels))
            latency.append(lat)
            capacity += cap
    sustained = {row["model"]: row["streams"] for row in capacity if row["keeps_up"] == "yes"}
    summary = ", ".join(f"{m}: {n}" for m, n in sustained.items()) or "none"
    return [
        "Voice over /ws, one page speaking in real time (times from when the words were said; "
        "pass_s = one Whisper pass alone)\n" + format_table(latency) + "".join(f"\n({n})" for n in notes),
        f"Voice capacity: concurrent pages speaking at once; keeps up = every partial's newest audio at "
        f"most 2 passes + {SLACK_S:g} s old (one pass behind). Streams sustained: {summary}\n"
        + format_table(capacity),
    ]
