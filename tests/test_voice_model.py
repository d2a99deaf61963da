"""The transcriber: tiny Whisper through the real from_pretrained path, batching, the registry role."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from capsearch.config import DEFAULT_TRANSCRIBER_CPU_ID, DEFAULT_TRANSCRIBER_GPU_ID, ModelSettings
from capsearch.errors import ModelUnavailableError
from capsearch.ml import factory, registry
from capsearch.ml.base import Model
from capsearch.ml.tiny import build_tiny_whisper
from capsearch.ml.transcriber import WhisperTranscriber, tidy_transcript
from tests.voicekit import tone


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper", seed=0)


@pytest.fixture(scope="module")
def transcriber(tiny_whisper_dir: Path) -> WhisperTranscriber:
    t = WhisperTranscriber(str(tiny_whisper_dir), cache_dir=tiny_whisper_dir.parent)
    t.load()
    return t


def test_tiny_whisper_transcribes_a_batch_of_different_lengths(transcriber: WhisperTranscriber) -> None:
    assert isinstance(transcriber, Model)
    assert transcriber.name == "transcriber"
    clips = [tone(1.0) / 32768, tone(0.1) / 32768, np.zeros(30 * 16000, np.float32)]
    texts = transcriber.predict([c.astype(np.float32) for c in clips])
    assert len(texts) == 3
    assert all(isinstance(t, str) and t and t == tidy_transcript(t) for t in texts)
    # The same clip alone gives the same text as in a batch: padding and masks do not leak across rows.
    assert transcriber.predict([clips[0].astype(np.float32)]) == texts[:1]
    assert transcriber.predict([]) == []


def test_decoding_stays_inside_the_decoder(transcriber: WhisperTranscriber) -> None:
    gen = transcriber._model.generation_config
    assert gen.max_length + 4 <= transcriber._model.config.max_target_positions
    assert gen.pad_token_id is not None  # batched generate() needs one


def test_tiny_whisper_build_is_deterministic(tmp_path: Path, transcriber: WhisperTranscriber) -> None:
    again = WhisperTranscriber(str(build_tiny_whisper(tmp_path / "again", seed=0)), cache_dir=tmp_path)
    again.load()
    clip = (tone(0.5) / 32768).astype(np.float32)
    assert again.predict([clip]) == transcriber.predict([clip])
    again.close()
    assert not again.loaded


def test_predict_before_load_and_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="load"):
        WhisperTranscriber(str(tmp_path), cache_dir=tmp_path).predict([np.zeros(10, np.float32)])
    with pytest.raises(ModelUnavailableError, match="transcriber"):
        WhisperTranscriber(str(tmp_path / "nothing"), cache_dir=tmp_path).load()


def test_both_profiles_have_a_transcriber(tmp_path: Path) -> None:
    settings = ModelSettings(cache_dir=tmp_path, device="cpu")
    tiny = registry.spec_for(settings.model_copy(update={"profile": "tiny"}), "transcriber")
    assert tiny.tiny and tiny.kind == "whisper" and tiny.model_id.endswith("whisper-transcriber")
    assert registry.spec_for(settings, "transcriber").model_id == DEFAULT_TRANSCRIBER_CPU_ID


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", DEFAULT_TRANSCRIBER_CPU_ID),
        ("cuda", DEFAULT_TRANSCRIBER_GPU_ID),
        ("mps", DEFAULT_TRANSCRIBER_GPU_ID),
    ],
)
def test_the_default_whisper_follows_the_device(device: str, expected: str) -> None:
    assert registry.default_transcriber_id(ModelSettings(device=device)) == expected  # type: ignore[arg-type]


def test_auto_device_asks_torch() -> None:
    expected = DEFAULT_TRANSCRIBER_GPU_ID if torch.cuda.is_available() else DEFAULT_TRANSCRIBER_CPU_ID
    if (
        not torch.cuda.is_available()
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        expected = DEFAULT_TRANSCRIBER_GPU_ID
    assert registry.default_transcriber_id(ModelSettings(device="auto")) == expected


def test_an_explicit_transcriber_id_wins(tmp_path: Path) -> None:
    settings = ModelSettings(profile="tiny", cache_dir=tmp_path, transcriber_id="openai/whisper-tiny.en")
    assert registry.spec_for(settings, "transcriber").model_id == "openai/whisper-tiny.en"


def test_build_transcriber_builds_the_tiny_one_offline(tmp_path: Path) -> None:
    from capsearch.config import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        models=ModelSettings(profile="tiny", cache_dir=tmp_path, allow_download=False, device="cpu"),
    )
    t = factory.build_transcriber(settings)
    assert not t.loaded and t.language == "en"
    assert (tmp_path / "tiny" / "whisper-transcriber" / "config.json").is_file()
