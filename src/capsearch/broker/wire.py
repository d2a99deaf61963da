"""How model inputs and outputs cross Redis: bytes in stream fields and reply messages.

Binary-safe and copy-light: audio and vectors travel as raw little-endian float32, never as JSON.
A reply is one pub/sub message: a JSON header line, then the payload.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage

from capsearch.ml.speech import Clip


def encode_input(model: str, item: Any) -> dict[str, bytes]:
    if model == "embedder":
        return {"data": str(item).encode()}
    if model == "transcriber":
        clip = item if isinstance(item, Clip) else Clip(np.asarray(item))
        samples = np.ascontiguousarray(clip.samples, dtype="<f4").reshape(-1)
        return {"data": samples.tobytes(), "final": b"1" if clip.final else b"0"}
    if model == "captioner":  # the example gallery's captions (uploads go as durable jobs)
        buffer = io.BytesIO()
        item.convert("RGB").save(buffer, "JPEG", quality=95)
        return {"data": buffer.getvalue()}
    raise ValueError(f"no request/reply codec for model {model!r}")


async def off_loop(model: str, codec: Callable[..., Any], *args: Any) -> Any:
    """Run a codec: an image's JPEG encode or decode in a thread (blocking work); audio and text are
    byte copies, done in place."""
    if model == "captioner":
        return await asyncio.to_thread(codec, *args)
    return codec(*args)


def decode_input(model: str, fields: dict[bytes, bytes]) -> Any:
    data = fields[b"data"]
    if model == "embedder":
        return data.decode()
    if model == "transcriber":
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        return Clip(samples, final=fields.get(b"final", b"1") == b"1")
    if model == "captioner":
        with PILImage.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    raise ValueError(f"no request/reply codec for model {model!r}")


def encode_output(model: str, value: Any) -> bytes:
    if model == "embedder":
        return np.ascontiguousarray(value, dtype="<f4").reshape(-1).tobytes()
    return str(value).encode()


def decode_output(model: str, data: bytes) -> Any:
    if model == "embedder":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    return data.decode()


@dataclass(frozen=True)
class Reply:
    request_id: str
    ok: bool
    payload: bytes = b""
    code: str = ""
    message: str = ""

    def to_bytes(self) -> bytes:
        head = {"id": self.request_id, "ok": self.ok, "code": self.code, "message": self.message}
        return json.dumps(head).encode() + b"\n" + self.payload

    @classmethod
    def from_bytes(cls, raw: bytes) -> Reply:
        head, _, payload = raw.partition(b"\n")
        h = json.loads(head)
        return cls(str(h["id"]), bool(h["ok"]), payload, str(h.get("code", "")), str(h.get("message", "")))
