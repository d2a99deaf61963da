"""The simulated page of the voice benchmark: a spoken phrase, and its live recording over `/ws`.

Each page sends 50 ms PCM frames in real time, as the microphone would produce them: silence, a
spoken phrase (espeak-ng), a pause, then `voice.stop`; it notes when each frame went out and when
each reply came back, on the loop's clock.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import shutil
import subprocess
import wave
from dataclasses import dataclass, field

import numpy as np

from capsearch.voice.audio import SAMPLE_RATE
from capsearch.ws.frames import encode_pcm_frame

FRAME = SAMPLE_RATE // 20  # 50 ms, what the page sends
PHRASE = "a dog running on the beach"
AUTO_STOP_WAIT_S = 5  # silence a page keeps sending, at most, for the server to end the recording


@dataclass
class Recording:
    """One simulated page's recording and what came back, with loop-clock times."""

    sent_at: list[float] = field(default_factory=list)  # when each frame was sent
    partials: list[tuple[float, float]] = field(default_factory=list)  # (received at, seconds covered)
    live_hits: list[float] = field(default_factory=list)  # live hits, before the recording ended
    live_words: list[str] = field(default_factory=list)  # the words each of them searched
    started: float = 0.0  # when the first sample was "said"
    stop_at: float = 0.0  # voice.stop sent, or voice.stopped received (auto-stop)
    auto_stopped: str = ""  # the server's reason, when it ended the recording itself
    final_at: float = 0.0
    hits_at: float = 0.0
    text: str = ""
    top_hit: str = ""
    error: str = ""


def speech_clip(phrase: str = PHRASE) -> tuple[np.ndarray, str]:
    """int16 16 kHz mono speech from Festival's HTS voice or espeak-ng, or a loud hum standing in for
    it (and why)."""
    from capsearch.bench.voice_wer import festival_missing, festival_speech
    from capsearch.voice.audio import resample

    if festival_missing() is None:
        return (festival_speech(phrase) * 32767).astype(np.int16), "Festival HTS"
    if shutil.which("espeak-ng") is None:
        t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
        return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), "espeak-ng missing: a hum, not words"
    raw = subprocess.run(["espeak-ng", "--stdout", phrase], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (resample(samples.astype(np.float32) / 32768, rate) * 32767).astype(np.int16), "espeak-ng"


def timeline(speech: np.ndarray, lead_s: float = 0.4, tail_s: float = 0.6) -> tuple[np.ndarray, float, float]:
    """Silence, speech, a pause before stop; returns the audio and when speech starts and ends (s)."""
    lead, tail = np.zeros(int(lead_s * SAMPLE_RATE), np.int16), np.zeros(int(tail_s * SAMPLE_RATE), np.int16)
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 0.02 * 32768)
    first, last = (int(loud[0]), int(loud[-1])) if loud.size else (0, speech.size)
    return np.concatenate([lead, speech, tail]), lead_s + first / SAMPLE_RATE, lead_s + last / SAMPLE_RATE


async def record(
    url: str, stream_id: str, audio: np.ndarray, *, delay_s: float = 0.0, auto_stop: bool = False
) -> Recording:
    """Speak `audio` into a fresh socket in real time, stop, and collect everything that comes back.
    `auto_stop`: never press stop; keep the microphone on (silence) until the server ends it."""
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
                elif msg["type"] == "voice.stopped":
                    rec.stop_at, rec.auto_stopped = now, msg["reason"]
                elif msg["type"] == "voice.hits" and msg.get("partial"):
                    rec.live_hits.append(now)
                    rec.live_words.append(msg["transcript"])
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
        if auto_stop:  # the microphone stays on until the server hears the speaker is done
            audio = np.concatenate([audio, np.zeros(AUTO_STOP_WAIT_S * SAMPLE_RATE, np.int16)])
        for i in range(0, audio.size, FRAME):
            if rec.auto_stopped or listener.done():
                break
            # A frame exists once the microphone has produced its last sample.
            ready = rec.started + min(i + FRAME, audio.size) / SAMPLE_RATE
            await asyncio.sleep(max(0.0, ready - loop.time()))
            await ws.send(encode_pcm_frame(stream_id, audio[i : i + FRAME].astype("<i2").tobytes()))
            rec.sent_at.append(loop.time())
        if not rec.auto_stopped:
            rec.stop_at = loop.time()
            await ws.send(json.dumps({"type": "voice.stop", "id": stream_id}))
        await asyncio.wait_for(listener, 300)
        await ws.close(1000)
    return rec


def final_hits_at(rec: Recording) -> float:
    """When the hits of the final transcript were first on the page: live, if the early final was
    done before the recording ended (capsearch.voice.partials), or else with voice.final."""
    early = [at for at, words in zip(rec.live_hits, rec.live_words, strict=True) if words == rec.text]
    return min(early, default=rec.hits_at)


def lags(rec: Recording) -> list[float]:
    """For each partial: how old the newest audio it covers was when it arrived."""
    out = []
    for received, seconds in rec.partials:
        # The frame holding the last sample covered (`seconds` is rounded to 10 ms; the last frame is short).
        frame = max(0, min(len(rec.sent_at) - 1, math.ceil(seconds * SAMPLE_RATE / FRAME - 0.1) - 1))
        out.append(received - rec.sent_at[frame])
    return out
