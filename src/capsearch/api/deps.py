"""Dependencies, declared once; tests swap them through `app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from capsearch.config import Settings
from capsearch.services.images import ImageService
from capsearch.services.search import SearchService
from capsearch.state import AppState


def get_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.capsearch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_app_settings(state: StateDep) -> Settings:
    return state.settings


def get_image_service(state: StateDep) -> ImageService:
    return state.images


def get_search_service(state: StateDep) -> SearchService:
    return state.search


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]
