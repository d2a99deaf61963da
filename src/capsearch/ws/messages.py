"""The `/ws` message shapes (docs/protocol.md): JSON text frames and the binary chunk header."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

UPLOAD_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
_UPLOAD_ID = re.compile(UPLOAD_ID_PATTERN)
UploadId = Annotated[str, Field(pattern=UPLOAD_ID_PATTERN)]

CHUNK_KIND = 0x01
_OFFSET = struct.Struct(">Q")


class ProtocolError(Exception):
    """A message that breaks the protocol; answered with an `error` and the socket stays open."""

    def __init__(self, code: str, detail: str, upload_id: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.upload_id = upload_id


class _In(BaseModel):
    # Extra fields are tolerated so newer pages can talk to older servers.
    model_config = ConfigDict(extra="ignore", frozen=True)


class UploadStart(_In):
    type: Literal["upload.start"]
    id: UploadId
    name: str = Field(max_length=1024)
    size: int = Field(ge=0)
    mime: str = Field(max_length=255)


class UploadResume(_In):
    type: Literal["upload.resume"]
    id: UploadId


class UploadEnd(_In):
    type: Literal["upload.end"]
    id: UploadId
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class UploadCancel(_In):
    type: Literal["upload.cancel"]
    id: UploadId


class Ping(_In):
    type: Literal["ping"]


ClientMessage = Annotated[
    UploadStart | UploadResume | UploadEnd | UploadCancel | Ping, Field(discriminator="type")
]
_CLIENT = TypeAdapter[ClientMessage](ClientMessage)
CLIENT_TYPES = frozenset({"upload.start", "upload.resume", "upload.end", "upload.cancel", "ping"})


class _Out(BaseModel):
    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)


class UploadAccepted(_Out):
    type: Literal["upload.accepted"] = "upload.accepted"
    id: str
    offset: int
    chunk_size: int
    window: int


class UploadAck(_Out):
    type: Literal["upload.ack"] = "upload.ack"
    id: str
    offset: int


class UploadDone(_Out):
    type: Literal["upload.done"] = "upload.done"
    id: str
    image_id: int
    duplicate: bool


class UploadRejected(_Out):
    type: Literal["upload.rejected"] = "upload.rejected"
    id: str
    code: str
    detail: str
    offset: int | None = None  # only for bad_offset: where the next chunk must start


class ErrorOut(_Out):
    type: Literal["error"] = "error"
    code: str
    detail: str
    id: str | None = None  # the upload id named by the offending message, when it had one


class Fragment(_Out):
    type: Literal["fragment"] = "fragment"
    html: str


class Pong(_Out):
    type: Literal["pong"] = "pong"


ServerMessage = UploadAccepted | UploadAck | UploadDone | UploadRejected | ErrorOut | Fragment | Pong


def parse_text(text: str) -> ClientMessage:
    """Parse one text frame; raises ProtocolError with bad_json, unknown_type or invalid_message."""
    try:
        raw: Any = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_json", "This message is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_message", "A message must be a JSON object with a `type`.")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "This message has no `type`.")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"Unknown message type {kind[:64]!r}.")
    try:
        return _CLIENT.validate_python(raw)
    except ValidationError as e:
        upload_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        raise ProtocolError("invalid_message", _describe(kind, e), _valid_id(upload_id)) from None


def _describe(kind: str, error: ValidationError) -> str:
    parts = []
    for err in error.errors()[:3]:
        # loc[0] is the union tag; the field name follows it.
        where = ".".join(str(x) for x in err["loc"][1:]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return f"This {kind} message is not valid ({'; '.join(parts)})."


def _valid_id(value: str | None) -> str | None:
    return value if value is not None and _UPLOAD_ID.match(value) else None


@dataclass(frozen=True)
class Chunk:
    upload_id: str
    offset: int
    payload: bytes


def parse_chunk(data: bytes) -> Chunk:
    """Split a binary frame into its header and payload; raises ProtocolError(invalid_message)."""
    if len(data) < 2 or data[0] != CHUNK_KIND:
        raise ProtocolError("invalid_message", "A binary message must start with kind 0x01.")
    n = data[1]
    end = 2 + n + _OFFSET.size
    if len(data) < end:
        raise ProtocolError("invalid_message", "This binary message is shorter than its header.")
    try:
        upload_id = data[2 : 2 + n].decode("ascii")
    except UnicodeDecodeError:
        upload_id = ""
    if not _UPLOAD_ID.match(upload_id):
        raise ProtocolError("invalid_message", "The upload id in this binary message is not valid.")
    (offset,) = _OFFSET.unpack_from(data, 2 + n)
    return Chunk(upload_id, offset, data[end:])


def encode_chunk(upload_id: str, offset: int, payload: bytes) -> bytes:
    """The client side of the chunk layout (used by tests and scripted clients)."""
    raw = upload_id.encode("ascii")
    return bytes([CHUNK_KIND, len(raw)]) + raw + _OFFSET.pack(offset) + payload
