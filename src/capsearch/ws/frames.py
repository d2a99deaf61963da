"""Binary frame layouts of `/ws` (docs/protocol.md): upload chunks (kind 0x01) and voice audio (0x02)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from capsearch.ws.messages import UPLOAD_ID as _UPLOAD_ID
from capsearch.ws.messages import ProtocolError

CHUNK_KIND = 0x01
PCM_KIND = 0x02  # voice audio; the samples' encoding codes live in capsearch.voice.audio
_OFFSET = struct.Struct(">Q")


@dataclass(frozen=True)
class Chunk:
    upload_id: str
    offset: int
    payload: bytes


@dataclass(frozen=True)
class PcmFrame:
    stream_id: str
    encoding: int  # 0x01 int16 LE, 0x02 float32 LE (checked with the samples, not here)
    payload: bytes


def parse_binary(data: bytes) -> Chunk | PcmFrame:
    """Upload bytes (kind 0x01) or voice audio (kind 0x02); raises ProtocolError(invalid_message)."""
    if data[:1] == bytes([PCM_KIND]):
        return parse_pcm_frame(data)
    return parse_chunk(data)


_BAD_KIND = "A binary message must start with kind 0x01 (upload bytes) or 0x02 (voice audio)."


def parse_pcm_frame(data: bytes) -> PcmFrame:
    if len(data) < 3 or data[0] != PCM_KIND:
        raise ProtocolError("invalid_message", _BAD_KIND)
    n = data[2]
    if len(data) < 3 + n:
        raise ProtocolError("invalid_message", "This binary message is shorter than its header.")
    stream_id = _ascii(data[3 : 3 + n])
    if not _UPLOAD_ID.match(stream_id):
        raise ProtocolError("invalid_message", "The stream id in this audio frame is not valid.")
    return PcmFrame(stream_id, data[1], data[3 + n :])


def encode_pcm_frame(stream_id: str, payload: bytes, encoding: int = 0x01) -> bytes:
    """The client side of the audio frame layout (used by tests, the benchmark and scripted clients)."""
    raw = stream_id.encode("ascii")
    return bytes([PCM_KIND, encoding, len(raw)]) + raw + payload


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return ""


def parse_chunk(data: bytes) -> Chunk:
    """Split a binary frame into its header and payload; raises ProtocolError(invalid_message)."""
    if len(data) < 2 or data[0] != CHUNK_KIND:
        raise ProtocolError("invalid_message", _BAD_KIND)
    n = data[1]
    end = 2 + n + _OFFSET.size
    if len(data) < end:
        raise ProtocolError("invalid_message", "This binary message is shorter than its header.")
    upload_id = _ascii(data[2 : 2 + n])
    if not _UPLOAD_ID.match(upload_id):
        raise ProtocolError("invalid_message", "The upload id in this binary message is not valid.")
    (offset,) = _OFFSET.unpack_from(data, 2 + n)
    return Chunk(upload_id, offset, data[end:])


def encode_chunk(upload_id: str, offset: int, payload: bytes) -> bytes:
    """The client side of the chunk layout (used by tests and scripted clients)."""
    raw = upload_id.encode("ascii")
    return bytes([CHUNK_KIND, len(raw)]) + raw + _OFFSET.pack(offset) + payload
