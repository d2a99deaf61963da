"""Read uploaded files from a multipart body as it streams in, never holding more than the limits allow.

Starlette's `request.form()` spools every file in full before a handler sees it; here each part is cut
off at `max_image_bytes` while the rest of the request keeps parsing, so one oversized file gets its own
refusal and the others in the same request still go through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from capsearch.config import LimitSettings
from capsearch.errors import CapsearchError, IntakeError
from capsearch.intake.images import describe_size, too_large_error
from capsearch.text import MAX_FILENAME, clean_filename

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room per file for the part headers and boundaries around it.
PART_OVERHEAD = 64 * 1024


@dataclass
class UploadedFile:
    filename: str | None  # display text only, never a path
    content_type: str | None  # as the client declared it; informational only
    data: bytes  # empty when `error` is set
    error: IntakeError | None


def body_limit(limits: LimitSettings) -> int:
    return limits.max_files_per_request * (limits.max_image_bytes + PART_OVERHEAD)


async def read_uploaded_files(request: Request, field: str, limits: LimitSettings) -> list[UploadedFile]:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise _bad_request(
            'Send the files as multipart/form-data (an HTML form with enctype="multipart/form-data", '
            f'or curl -F "{field}=@photo.jpg").'
        )
    limit = body_limit(limits)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _request_too_large(limits)

    collector = _Collector(field, limits)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            # A chunked body has no Content-Length to check up front.
            if received > limit:
                raise _request_too_large(limits)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise _bad_request("The upload could not be read: the multipart body is malformed.") from exc
    if parser.state != MultipartState.END:
        raise _bad_request("The upload ended before it was complete; please send it again.")
    if not collector.files:
        raise CapsearchError(
            f'No files were found in the upload; attach them in the "{field}" field.',
            code="no_files",
            status_code=422,
        )
    return collector.files


class _Collector:
    """python_multipart callbacks: keep parts named `field`, drop everything else as it arrives."""

    def __init__(self, field: str, limits: LimitSettings) -> None:
        self.field = field
        self.limits = limits
        self.files: list[UploadedFile] = []
        self._count = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._wanted = False
        self._buffer = bytearray()
        self._size = 0
        self._filename: str | None = None
        self._raw_filename: bytes | None = None
        self._content_type: str | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._wanted = False
        self._buffer = bytearray()
        self._size = 0

    # The parser caps header count and length per part, so these buffers stay small.
    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if _decode(options.get(b"name", b"")) != self.field:
            return
        self._wanted = True
        self._count += 1
        if self._count > self.limits.max_files_per_request:
            n = self.limits.max_files_per_request
            raise CapsearchError(
                f"This upload has more than {n} files; send at most {n} at a time.",
                code="too_many_files",
                status_code=413,
            )
        self._raw_filename = options.get(b"filename")
        self._filename = clean_filename(_decode(self._raw_filename))
        self._content_type = _decode(self._headers.get(b"content-type")).strip()[:MAX_FILENAME] or None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._wanted:
            return
        self._size += end - start
        if self._size > self.limits.max_image_bytes:
            # Past the cap: forget what we kept and only count the rest, for an honest size message.
            if self._buffer:
                self._buffer = bytearray()
            return
        self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if not self._wanted:
            return
        self._wanted = False
        if self._raw_filename == b"" and self._size == 0:
            # What a browser sends for a file input left empty: not a file at all.
            self._count -= 1
            return
        if self._size > self.limits.max_image_bytes:
            error = too_large_error(self._size, self.limits.max_image_bytes)
            self.files.append(UploadedFile(self._filename, self._content_type, b"", error))
        else:
            self.files.append(UploadedFile(self._filename, self._content_type, bytes(self._buffer), None))
        self._buffer = bytearray()


def _decode(raw: bytes | None) -> str:
    if raw is None:
        return ""
    # parse_options_header hands back latin-1 bytes; browsers send UTF-8 names.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bad_request(message: str) -> CapsearchError:
    return CapsearchError(message, code="bad_request", status_code=422)


def _request_too_large(limits: LimitSettings) -> CapsearchError:
    return CapsearchError(
        f"This upload is too large; send at most {limits.max_files_per_request} files "
        f"of up to {describe_size(limits.max_image_bytes)} each.",
        code="too_large",
        status_code=413,
    )
