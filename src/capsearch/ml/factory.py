"""Build the configured models, unloaded: the registry puts their files on disk first.

Each returns a model that is not loaded yet; the app loads it off the event loop (`load()` in a
thread), so startup never blocks serving on a model that is still reading its weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capsearch.config import ModelSettings, Settings
from capsearch.ml.registry import ModelSpec, ensure_available, spec_for

if TYPE_CHECKING:
    from capsearch.ml.blip_ov import OpenVinoBlipCaptioner
    from capsearch.ml.captioner import BlipCaptioner
    from capsearch.ml.embedder import TextEmbedder
    from capsearch.ml.transcriber import WhisperTranscriber
    from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber

# Model classes import torch (~8 s): each builder imports its own only when it is called.


def _ready(models: ModelSettings, role: str) -> ModelSpec:
    spec = spec_for(models, role)
    ensure_available(spec, models)
    return spec


def captioner_backend(models: ModelSettings, device: str) -> str:
    """ "torch" or "openvino": what `captioner_backend` means on this device ("auto": OpenVINO on a
    CPU, where it is ~2.5x faster; torch on a GPU, where float16 kernels are its strength)."""
    if models.captioner_backend != "auto":
        return models.captioner_backend
    return "openvino" if device == "cpu" else "torch"


def build_captioner(settings: Settings) -> BlipCaptioner | OpenVinoBlipCaptioner:
    from capsearch.ml.captioner import BlipCaptioner
    from capsearch.ml.device import resolve_device, resolve_dtype

    models = settings.models
    spec = _ready(models, "captioner")
    device = resolve_device(models.device)
    if captioner_backend(models, device) == "openvino":
        from capsearch.ml.blip_ov import OpenVinoBlipCaptioner

        return OpenVinoBlipCaptioner(
            spec.model_id,
            cache_dir=models.cache_dir,
            max_new_tokens=models.caption_max_tokens,
            int8=models.captioner_int8,
        )
    return BlipCaptioner(
        spec.model_id,
        cache_dir=models.cache_dir,
        device=device,
        dtype=resolve_dtype(models.dtype, device),
        max_new_tokens=models.caption_max_tokens,
    )


def build_embedder(settings: Settings) -> TextEmbedder:
    from capsearch.ml.device import resolve_device
    from capsearch.ml.embedder import TextEmbedder

    models = settings.models
    spec = _ready(models, "embedder")
    return TextEmbedder(
        spec.model_id,
        cache_dir=models.cache_dir,
        device=resolve_device(models.device),
        max_tokens=models.embed_max_tokens,
        label=spec.name,
    )


def transcriber_backend(models: ModelSettings, device: str) -> str:
    """ "transformers" or "ctranslate2": what `transcriber_backend` means on this device ("auto":
    CTranslate2 on a CPU, where live partials run on a shortened window; transformers on a GPU, where
    float16 kernels are its strength)."""
    if models.transcriber_backend != "auto":
        return models.transcriber_backend
    return "ctranslate2" if device == "cpu" else "transformers"


def build_transcriber(settings: Settings) -> WhisperTranscriber | CT2WhisperTranscriber:
    from capsearch.ml.device import resolve_device, resolve_dtype

    models = settings.models
    spec = _ready(models, "transcriber")
    device = resolve_device(models.device)
    language = None if models.language in (None, "", "auto") else models.language
    if transcriber_backend(models, device) == "ctranslate2":
        from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber

        return CT2WhisperTranscriber(
            spec.model_id,
            cache_dir=models.cache_dir,
            language=language,
            max_new_tokens=models.transcriber_max_tokens,
            int8=models.transcriber_int8,
            partials_int8=models.transcriber_partials_int8,
        )
    from capsearch.ml.transcriber import WhisperTranscriber

    return WhisperTranscriber(
        spec.model_id,
        cache_dir=models.cache_dir,
        device=device,
        dtype=resolve_dtype(models.dtype, device),
        language=language,
        max_new_tokens=models.transcriber_max_tokens,
    )
