"""The `/ws` message shapes (docs/protocol.md): JSON text frames and the binary frame headers."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from capsearch.shapes import SearchHit, SearchOptionsIn, SearchScope

UPLOAD_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
UPLOAD_ID = re.compile(UPLOAD_ID_PATTERN)
UploadId = Annotated[str, Field(pattern=UPLOAD_ID_PATTERN)]
# Every client message is a small flat object (a file name is the longest field): a text frame longer
# than this is refused before it is parsed, which bounds what one message may cost the event loop.
MAX_TEXT_CHARS = 16 * 1024
# The largest integer a page's JavaScript holds exactly; a declared size above it is not a file size.
MAX_SAFE_INTEGER = 2**53 - 1


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
    size: int = Field(ge=0, le=MAX_SAFE_INTEGER)
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


class VoiceStart(SearchOptionsIn, _In):  # its sort and date range: as GET /api/search's
    type: Literal["voice.start"]
    id: UploadId  # same rules as upload ids
    # The only rate accepted is 16 kHz (the page resamples, Whisper hears 16 kHz); the bounds only keep
    # an absurd number out of the refusal's sentence.
    sample_rate: int = Field(16_000, ge=1, le=1_000_000)
    search: bool = True  # search with the final transcript and send `voice.hits`


class VoiceStop(_In):
    type: Literal["voice.stop"]
    id: UploadId


class VoiceCancel(_In):
    type: Literal["voice.cancel"]
    id: UploadId


class GalleryRequest(_In):
    """The page has been left alone: show captioned examples (once per idle period)."""

    type: Literal["gallery.request"]


class GalleryCancel(_In):
    """The person is back: drop the examples still waiting for the model."""

    type: Literal["gallery.cancel"]


ClientMessage = Annotated[
    UploadStart
    | UploadResume
    | UploadEnd
    | UploadCancel
    | Ping
    | VoiceStart
    | VoiceStop
    | VoiceCancel
    | GalleryRequest
    | GalleryCancel,
    Field(discriminator="type"),
]
_CLIENT = TypeAdapter[ClientMessage](ClientMessage)
CLIENT_TYPES = frozenset(
    {"upload.start", "upload.resume", "upload.end", "upload.cancel", "ping"}
    | {"voice.start", "voice.stop", "voice.cancel"}
    | {"gallery.request", "gallery.cancel"}
)


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
    retry_after: int | None = None  # seconds; only for refusals that pass with time (rate_limited, ...)


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


class VoiceAccepted(_Out):
    type: Literal["voice.accepted"] = "voice.accepted"
    id: str
    sample_rate: int
    max_seconds: float


class VoicePartial(_Out):
    type: Literal["voice.partial"] = "voice.partial"
    id: str
    text: str  # the whole hypothesis, as pages before `settled`/`tentative` show it
    seconds: float  # audio the text covers, from the start of the recording
    # LocalAgreement-2 (capsearch.voice.agreement): `settled` only grows and is never taken back before
    # the final; `tentative` is the rest of this hypothesis. Usually `text` is both joined by a space,
    # but not when this hypothesis rewrote settled words (they stay as they were).
    settled: str = ""
    tentative: str = ""

    @model_validator(mode="after")
    def _unsplit_is_tentative(self) -> VoicePartial:
        # A sender that does not split yet sends a hypothesis nothing has agreed with: all tentative.
        if not self.settled and not self.tentative:
            self.tentative = self.text
        return self


class VoiceFinal(_Out):
    type: Literal["voice.final"] = "voice.final"
    id: str
    text: str
    seconds: float


class VoiceHits(_Out, SearchScope):
    type: Literal["voice.hits"] = "voice.hits"
    id: str
    transcript: str
    query: str  # what was searched: the transcript, cut at a word if over the query limit
    hits: list[SearchHit]
    no_match: bool
    # The results panel the page shows, rendered from the same template as a typed search
    # (partials/search_results.html): the page swaps it in instead of searching again.
    html: str
    # True: hits of the settled words while the person still speaks; the final's hits replace them.
    partial: bool = False

    def dump(self) -> str:
        # Hits keep their nulls (an image without a caption yet), exactly as GET /api/search sends them.
        return self.model_dump_json()


class VoiceStopped(_Out):
    """The server ended a recording by itself; voice.final and voice.hits follow as after voice.stop.
    The page stops its microphone and sends nothing more for this id (frames in flight are dropped)."""

    type: Literal["voice.stopped"] = "voice.stopped"
    id: str
    reason: Literal["silence", "max_seconds"]  # the person went quiet after speaking, or the cap


class VoiceErrorOut(_Out):
    type: Literal["voice.error"] = "voice.error"
    id: str
    code: str
    detail: str
    retry_after: int | None = None  # seconds; only for rate_limited


ServerMessage = (
    UploadAccepted
    | UploadAck
    | UploadDone
    | UploadRejected
    | ErrorOut
    | Fragment
    | Pong
    | VoiceAccepted
    | VoicePartial
    | VoiceFinal
    | VoiceHits
    | VoiceStopped
    | VoiceErrorOut
)


def parse_text(text: str) -> ClientMessage:
    """Parse one text frame; raises ProtocolError with bad_json, unknown_type or invalid_message."""
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError("invalid_message", f"Text messages may be at most {MAX_TEXT_CHARS:,} characters.")
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError:
        raise ProtocolError("bad_json", "This message is not valid JSON.") from None
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise ProtocolError("bad_json", "A number in this message has too many digits.") from None
    except RecursionError:  # the parser gives up at a depth near 1,000, before reading much of the text
        raise ProtocolError(
            "bad_json", "This message is nested too deeply; messages are flat objects."
        ) from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_message", "A message must be a JSON object with a `type`.")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "This message has no `type`.")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"Unknown message type {kind[:64]!r}.")
    upload_id = _valid_id(raw.get("id") if isinstance(raw.get("id"), str) else None)
    try:
        return _CLIENT.validate_python(raw)
    except ValidationError as e:
        raise ProtocolError("invalid_message", _describe(kind, e), upload_id) from None
    except (ValueError, OverflowError, RecursionError):  # a value pydantic could not even compare
        raise ProtocolError(
            "invalid_message", f"This {kind} message has a value out of range.", upload_id
        ) from None


def _describe(kind: str, error: ValidationError) -> str:
    parts = []
    for err in error.errors()[:3]:
        # loc[0] is the union tag; the field name follows it.
        where = ".".join(str(x) for x in err["loc"][1:]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return f"This {kind} message is not valid ({'; '.join(parts)})."


def _valid_id(value: str | None) -> str | None:
    return value if value is not None and UPLOAD_ID.match(value) else None
