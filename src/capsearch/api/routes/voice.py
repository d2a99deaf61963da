"""Voice over REST: an audio file to its transcript, or straight to search hits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from capsearch.api.multipart import read_uploaded_files
from capsearch.api.schemas import ErrorOut
from capsearch.config import LimitSettings, Settings
from capsearch.deps import SearchOptionsDep, SettingsDep, VoicePipelineDep, VoiceQuota
from capsearch.shapes import SearchResponse, search_response
from capsearch.voice.audio import SUPPORTED

router = APIRouter(tags=["voice"])

_AUDIO_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"{SUPPORTED}; at most 30 s (CAPSEARCH_VOICE__MAX_SECONDS).",
                        }
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (413, 415, 422, 429, 503)}


class TranscriptionOut(BaseModel):
    text: str = Field(description="What was said.")
    seconds: float = Field(description="Length of the audio, in seconds.")


class VoiceSearchOut(SearchResponse):
    """GET /api/search's answer for what was said, and the transcript."""

    transcript: str = Field(description="What was said.")
    query: str = Field(description="What was searched: the transcript (cut at a word if too long).")


def _audio_limits(settings: Settings) -> LimitSettings:
    # The multipart reader's caps, sized for one audio file instead of a batch of images.
    return LimitSettings(max_image_bytes=settings.voice.max_upload_bytes, max_files_per_request=1)


async def _read_audio(request: Request, settings: Settings) -> bytes:
    uploaded = (await read_uploaded_files(request, "file", _audio_limits(settings)))[0]
    if uploaded.error is not None:
        raise uploaded.error
    return uploaded.data


@router.post(
    "/api/transcriptions",
    response_model=TranscriptionOut,
    responses=_ERRORS,
    openapi_extra=_AUDIO_BODY,
    dependencies=[VoiceQuota],
)
async def transcribe(request: Request, settings: SettingsDep, voice: VoicePipelineDep) -> TranscriptionOut:
    """Transcribe an audio file (multipart field `file`); nothing is stored."""
    transcript = await voice.transcribe_file(await _read_audio(request, settings))
    return TranscriptionOut(text=transcript.text, seconds=round(transcript.seconds, 2))


@router.post(
    "/api/search/voice",
    response_model=VoiceSearchOut,
    responses=_ERRORS,
    openapi_extra=_AUDIO_BODY,
    dependencies=[VoiceQuota],
)
async def search_by_voice(
    request: Request,
    settings: SettingsDep,
    voice: VoicePipelineDep,
    options: SearchOptionsDep,
    k: Annotated[
        int | None, Query(ge=1, description="How many hits at most (default 12, capped at 100).")
    ] = (None),
) -> VoiceSearchOut:
    """Say what to find: the file is transcribed, then searched like a typed query. Silence → 422."""
    transcript = await voice.transcribe_file(await _read_audio(request, settings))
    result = search_response(await voice.search_transcript(transcript.text, options, k))
    return VoiceSearchOut(transcript=transcript.text, **result.model_dump())
