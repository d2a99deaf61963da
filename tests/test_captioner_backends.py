"""Which engine captions: `captioner_backend` auto/torch/openvino, and the torch path's fused attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capsearch.config import ModelSettings, Settings
from capsearch.ml.blip_sdpa import use_sdpa
from capsearch.ml.factory import build_captioner, captioner_backend
from capsearch.ml.tiny import tiny_blip_in_memory


@pytest.mark.parametrize(
    ("chosen", "device", "expected"),
    [
        ("auto", "cpu", "openvino"),
        ("auto", "cuda", "torch"),
        ("auto", "mps", "torch"),
        ("torch", "cpu", "torch"),
        ("openvino", "cpu", "openvino"),
    ],
)
def test_auto_means_openvino_on_a_cpu_and_torch_elsewhere(chosen: str, device: str, expected: str) -> None:
    assert captioner_backend(ModelSettings(captioner_backend=chosen), device) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chosen", "engine"), [("auto", "OpenVinoBlipCaptioner"), ("torch", "BlipCaptioner")]
)
def test_the_tiny_profile_builds_the_chosen_engine(tmp_path: Path, chosen: str, engine: str) -> None:
    models = ModelSettings(
        profile="tiny", cache_dir=tmp_path, device="cpu", captioner_backend=chosen, allow_download=False
    )  # type: ignore[arg-type]
    captioner = build_captioner(Settings(_env_file=None, models=models))  # type: ignore[call-arg]
    assert type(captioner).__name__ == engine and not captioner.loaded  # built, not loaded yet


def test_fused_attention_gives_the_same_image_features() -> None:
    model, _processor = tiny_blip_in_memory()
    pixels = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        eager = model.vision_model(pixel_values=pixels)[0]
        assert use_sdpa(model) == model.config.vision_config.num_hidden_layers
        fused = model.vision_model(pixel_values=pixels)[0]
    assert torch.allclose(eager, fused, atol=1e-6)
