"""What each profile needs and what is cached: `capsearch models list` and `capsearch models download`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capsearch.config import ModelProfile, ModelSettings
from capsearch.ml.registry import PROFILES, ModelSpec, ensure_available, local_dir, profile_specs


def download_profile(settings: ModelSettings, profile: ModelProfile) -> list[tuple[str, ModelSpec, str]]:
    """Fetch (or build) every model of `profile`, and convert the captioner and the transcriber where
    their backends need it; returns (what, spec, local directory) for each.

    An explicit command, so it downloads even when `allow_download` is off for the running app.
    """
    done = []
    for spec in profile_specs(settings, profile):
        ensure_available(spec, settings, download=True)
        done.append((spec.role, spec, str(local_dir(spec, settings))))
        if spec.role == "captioner" and _converts(settings):
            # Converted now rather than on the server's first start (a minute for BLIP base).
            from capsearch.ml.blip_ov import OpenVinoBlipCaptioner

            captioner = OpenVinoBlipCaptioner(
                spec.model_id, cache_dir=settings.cache_dir, int8=settings.captioner_int8
            )
            done.append(("  openvino", spec, str(captioner.convert())))
        if spec.role == "transcriber" and _converts_transcriber(settings):
            from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber

            transcriber = CT2WhisperTranscriber(spec.model_id, cache_dir=settings.cache_dir)
            done.append(("  ctranslate2", spec, str(transcriber.convert())))
    return done


def _converts(settings: ModelSettings) -> bool:
    from capsearch.ml.device import resolve_device
    from capsearch.ml.factory import captioner_backend

    return captioner_backend(settings, resolve_device(settings.device)) == "openvino"


def _converts_transcriber(settings: ModelSettings) -> bool:
    from capsearch.ml.device import resolve_device
    from capsearch.ml.factory import transcriber_backend

    return transcriber_backend(settings, resolve_device(settings.device)) == "ctranslate2"


def _dir_size(path: Path) -> int:
    # Hub snapshots hold symlinks into blobs/; stat() follows them, so this is the real size.
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def list_models(settings: ModelSettings) -> list[dict[str, Any]]:
    """Rows for `capsearch models list`, both profiles. Keys: role, id, profile, active (bool),
    cached ("yes"/"no"), path and size (strings, "" when not cached)."""
    rows: list[dict[str, Any]] = []
    for profile in PROFILES:
        for spec in profile_specs(settings, profile):
            path = local_dir(spec, settings)
            rows.append(
                {
                    "role": spec.role,
                    "id": spec.name,
                    "profile": profile,
                    "active": profile == settings.profile,
                    "cached": "yes" if path else "no",
                    "path": str(path) if path else "",
                    "size": _human(_dir_size(path)) if path else "",
                }
            )
    return rows
