"""Dependencies of both edges (REST routes in api/, the page socket in ws/), declared once here;
tests swap them through `app.dependency_overrides`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import HTTPConnection

from capsearch.config import Settings
from capsearch.pipelines.images import ImagePipeline
from capsearch.pipelines.voice import VoicePipeline
from capsearch.ratelimit import RateLimiter, RateLimits, client_key
from capsearch.services.library import ImageLibrary
from capsearch.services.search import SearchService
from capsearch.services.search_options import SearchOptions
from capsearch.shapes import SearchOptionsIn
from capsearch.state import AppState
from capsearch.ws.connection import SocketServices


def get_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.capsearch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_app_settings(state: StateDep) -> Settings:
    return state.settings


def get_image_pipeline(state: StateDep) -> ImagePipeline:
    return state.images


def get_library(state: StateDep) -> ImageLibrary:
    return state.library


def get_search_service(state: StateDep) -> SearchService:
    return state.search


def get_voice_pipeline(state: StateDep) -> VoicePipeline:
    return state.voice


def get_socket_services(state: StateDep) -> SocketServices:
    return state.sockets()


def get_search_options(params: Annotated[SearchOptionsIn, Query()]) -> SearchOptions:
    # A mistake here is a 422 with its own code (bad_date_range, ...), not FastAPI's generic one.
    return params.options()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ImagePipelineDep = Annotated[ImagePipeline, Depends(get_image_pipeline)]
LibraryDep = Annotated[ImageLibrary, Depends(get_library)]
SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]
VoicePipelineDep = Annotated[VoicePipeline, Depends(get_voice_pipeline)]
SocketServicesDep = Annotated[SocketServices, Depends(get_socket_services)]
# The REST searches' sort and upload-date range (query parameters: sort, uploaded_from, uploaded_to, tz).
SearchOptionsDep = Annotated[SearchOptions, Depends(get_search_options)]


class Quota:
    """One client's allowance of one kind of request: `take()` spends a token or raises
    RateLimitedError (429 `rate_limited`, with `retry_after`)."""

    def __init__(self, limits: RateLimits, limiter: RateLimiter, key: str) -> None:
        self.limits, self.limiter, self.key = limits, limiter, key

    def take(self) -> None:
        self.limits.take(self.limiter, self.key)


def _quota(pick: Callable[[RateLimits], RateLimiter]) -> Callable[[HTTPConnection], Quota]:
    def quota(conn: HTTPConnection) -> Quota:
        limits = get_state(conn).rate_limits
        return Quota(limits, pick(limits), client_key(conn))

    return quota


def _taken(pick: Callable[[RateLimits], RateLimiter]) -> Callable[[HTTPConnection], None]:
    make = _quota(pick)

    def take(conn: HTTPConnection) -> None:
        make(conn).take()

    return take


# In a route decorator's `dependencies=[...]`: a client over its limit gets 429 before the route runs
# (and before an upload's body is read).
UploadQuota = Depends(_taken(lambda limits: limits.uploads))
SearchQuota = Depends(_taken(lambda limits: limits.searches))
VoiceQuota = Depends(_taken(lambda limits: limits.voice))
# The page's own routes take the token themselves, to answer a refusal with a fragment, not JSON.
PageSearchQuotaDep = Annotated[Quota, Depends(_quota(lambda limits: limits.searches))]
