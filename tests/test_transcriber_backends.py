"""Which engine transcribes (`transcriber_backend`), and the CTranslate2 one: its conversion cache,
finals that match transformers' text, partials on a shortened window."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capsearch.config import ModelSettings, Settings
from capsearch.ml.factory import build_transcriber, transcriber_backend
from capsearch.ml.speech import Clip
from capsearch.ml.tiny import build_tiny_whisper, tiny_whisper_in_memory
from capsearch.ml.transcriber import WhisperTranscriber
from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber
from capsearch.ml.whisper_ct2.features import FRAME_MULTIPLE, FeatureSpec, partial_frames
from tests.voicekit import silence, tone

SR = 16_000
CONVERTING = "converting the transcriber for CTranslate2"


@pytest.mark.parametrize(
    ("chosen", "device", "expected"),
    [
        ("auto", "cpu", "ctranslate2"),
        ("auto", "cuda", "transformers"),
        ("auto", "mps", "transformers"),
        ("transformers", "cpu", "transformers"),
        ("ctranslate2", "cpu", "ctranslate2"),
    ],
)
def test_auto_means_ctranslate2_on_a_cpu_and_transformers_elsewhere(
    chosen: str, device: str, expected: str
) -> None:
    assert transcriber_backend(ModelSettings(transcriber_backend=chosen), device) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chosen", "engine"), [("auto", "CT2WhisperTranscriber"), ("transformers", "WhisperTranscriber")]
)
def test_the_tiny_profile_builds_the_chosen_engine(tmp_path: Path, chosen: str, engine: str) -> None:
    models = ModelSettings(
        profile="tiny", cache_dir=tmp_path, device="cpu", transcriber_backend=chosen, allow_download=False
    )  # type: ignore[arg-type]
    transcriber = build_transcriber(Settings(_env_file=None, models=models))  # type: ignore[call-arg]
    assert type(transcriber).__name__ == engine and not transcriber.loaded
    assert transcriber.language == "en"


def test_a_partial_window_is_the_audio_plus_the_margin_in_pairs_of_frames() -> None:
    spec = FeatureSpec(n_mels=80)
    assert spec.full_frames == 3000
    assert partial_frames(SR, 1.5, spec) == 250  # 1 s + 1.5 s = 250 frames of 10 ms
    assert partial_frames(SR + 1, 1.5, spec) == 252  # rounded up to whole pairs
    assert partial_frames(SR, 1.0, spec) < partial_frames(SR, 2.0, spec)
    assert partial_frames(29 * SR, 1.5, spec) == 3000  # never past the full window
    assert all(partial_frames(n, 0.37, spec) % FRAME_MULTIPLE == 0 for n in range(0, 3 * SR, 997))


# ---- the CTranslate2 engine on the tiny Whisper --------------------------------------------------

needs_ct2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None or importlib.util.find_spec("faster_whisper") is None,
    reason="ctranslate2 / faster-whisper not installed",
)


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        (tone(1.0) / 32768).astype(np.float32),
        (tone(2.5, hz=440) / 32768).astype(np.float32),
        (rng.standard_normal(3 * SR) * 0.1).astype(np.float32),
        (silence(0.4) / 32768).astype(np.float32),
        np.zeros(30 * SR, np.float32),
    ]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Whisper with its weights drawn wide (std 1) and its end token's embedding doubled.
    With the default small weights it says the same thing whatever it hears, and equal transcripts
    would prove nothing; this one answers each of `_clips()` differently, and ends some answers
    before the length cap."""
    import torch

    model, processor = tiny_whisper_in_memory(seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() >= 2 and "embed_positions" not in name:
                weight.normal_(0.0, 1.0)
        model.model.decoder.embed_tokens.weight[model.config.eos_token_id] *= 2
    out = tmp_path_factory.mktemp("models") / "wide-tiny-whisper"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _ct2(directory: Path, **kwargs: Any) -> CT2WhisperTranscriber:
    # In-process conversions: a child process adds ~8 s of torch imports to each test.
    kwargs.setdefault("convert_in_subprocess", False)
    transcriber = CT2WhisperTranscriber(str(directory), cache_dir=directory.parent, **kwargs)
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def fast(tiny_dir: Path) -> CT2WhisperTranscriber:
    return _ct2(tiny_dir)


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> WhisperTranscriber:
    transcriber = WhisperTranscriber(str(tiny_dir), cache_dir=tiny_dir.parent)
    transcriber.load()
    return transcriber


@needs_ct2
def test_finals_give_the_same_text_as_transformers(
    fast: CT2WhisperTranscriber, reference: WhisperTranscriber
) -> None:
    clips = _clips()
    expected = reference.predict([Clip(c) for c in clips])
    assert len(set(expected)) >= 3  # different clips, different transcripts: equality means something
    assert fast.predict([Clip(c) for c in clips]) == expected
    assert fast.last_frames == [3000]
    # One at a time, too: a batch does not change a clip's transcript.
    assert [fast.predict([Clip(c)])[0] for c in clips] == expected


@needs_ct2
def test_finals_give_the_same_tokens_as_transformers(
    fast: CT2WhisperTranscriber, reference: WhisperTranscriber
) -> None:
    import torch

    rng = np.random.default_rng(7)
    noise = [rng.standard_normal(int(s * SR)) * a for s in (0.5, 1, 4, 9, 20) for a in (0.01, 0.3)]
    clips = _clips() + [n.astype(np.float32) for n in noise]
    # Tokens, not text: the byte-level vocabulary decodes invalid UTF-8 to U+FFFD, which hides bytes.
    features = reference._processor.feature_extractor(
        clips, sampling_rate=SR, return_tensors="pt", return_attention_mask=True
    )
    with torch.inference_mode():
        out = reference._model.generate(
            input_features=features["input_features"],
            attention_mask=features["attention_mask"],
            language="en",
            task="transcribe",
        )
    tokenizer = reference._processor.tokenizer
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    theirs = []
    for row in out.tolist():  # new tokens only, padded with the end token
        theirs.append(row[: row.index(eot)] if eot in row else row)
    assert fast.token_ids([Clip(c) for c in clips]) == theirs
    # Both stop at the same length cap, and some rows end before it (the end token agrees too).
    cap = reference._model.generation_config.max_length
    assert max(map(len, theirs)) == cap and min(map(len, theirs)) < cap


@needs_ct2
@pytest.mark.parametrize("cap", [1, 2, 5])
def test_a_small_token_cap_is_the_same_on_both(tiny_dir: Path, cap: int) -> None:
    clips = [Clip(c) for c in _clips()]
    reference = WhisperTranscriber(str(tiny_dir), cache_dir=tiny_dir.parent, max_new_tokens=cap)
    reference.load()
    fast = _ct2(tiny_dir, max_new_tokens=cap)
    assert max(map(len, fast.token_ids(clips))) == cap
    assert fast.predict(clips) == reference.predict(clips)


@needs_ct2
def test_the_features_match_transformers(tiny_dir: Path, fast: CT2WhisperTranscriber) -> None:
    from transformers import WhisperFeatureExtractor

    clips = _clips()[:3]
    theirs = WhisperFeatureExtractor.from_pretrained(str(tiny_dir))(clips, sampling_rate=SR)["input_features"]
    assert fast._mel is not None
    ours = fast._mel(clips, 3000)
    assert ours.shape == np.asarray(theirs).shape
    assert np.abs(ours - np.asarray(theirs)).max() < 1e-4


@needs_ct2
def test_predict_contract(fast: CT2WhisperTranscriber) -> None:
    assert fast.predict([]) == []
    clips = _clips()
    # Bare arrays are finals (callers that predate Clip).
    assert fast.predict(clips[:2]) == fast.predict([Clip(c) for c in clips[:2]])
    texts = fast.predict([Clip(c, final=i % 2 == 0) for i, c in enumerate(clips)])
    assert len(texts) == len(clips) and all(isinstance(t, str) for t in texts)
    with pytest.raises(RuntimeError, match="load"):
        CT2WhisperTranscriber(fast.model_id, cache_dir=fast.cache_dir).predict([clips[0]])


def test_transformers_treats_partials_as_finals(reference: WhisperTranscriber) -> None:
    clip = _clips()[0]
    assert reference.predict([Clip(clip, final=False)]) == reference.predict([clip])


@needs_ct2
def test_language_detection_with_a_single_language(tiny_dir: Path, fast: CT2WhisperTranscriber) -> None:
    # The tiny vocabulary knows only <|en|>: detecting can only pick it.
    auto = _ct2(tiny_dir, language=None)
    clips = [Clip(c) for c in _clips()[:2]]
    assert auto.predict(clips) == fast.predict(clips)
    with pytest.raises(ValueError, match="language"):
        _ct2(tiny_dir, language="xx")


# ---- the conversion cache ----------------------------------------------------------------------


def _conversions(caplog: pytest.LogCaptureFixture) -> int:
    return sum(CONVERTING in r.getMessage() for r in caplog.records)


@needs_ct2
def test_converts_once_then_reuses_the_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="capsearch.ml.whisper_ct2")
    own = build_tiny_whisper(tmp_path / "models" / "tiny-whisper")
    first = _ct2(own, convert_in_subprocess=True)  # the default: a child process converts
    assert _conversions(caplog) == 1
    converted = first.converted_dir()
    assert converted.parent == own.parent / "converted" / "whisper-ct2"
    assert {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "meta.json"} <= {
        p.name for p in converted.iterdir()
    }
    stamp = (converted / "model.bin").stat().st_mtime_ns
    second = _ct2(own)
    assert _conversions(caplog) == 1 and second.convert() == converted
    assert (converted / "model.bin").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in converted.parent.iterdir()) == [f".{converted.name}.lock", converted.name]

    # A changed checkpoint (new weights, or an edited config) is converted again; the old one goes.
    weights = own / "model.safetensors"
    later = weights.stat().st_mtime_ns + 5_000_000_000
    os.utime(weights, ns=(later, later))
    changed = _ct2(own).converted_dir()
    assert changed != converted and _conversions(caplog) == 2 and not converted.exists()
    config = own / "config.json"
    config.write_text(config.read_text().replace('"dropout": 0.0', '"dropout": 0.1'))
    assert _ct2(own).converted_dir() != changed and _conversions(caplog) == 3


@needs_ct2
def test_lanes_run_a_final_and_partials_at_once_with_the_same_answers(tiny_dir: Path) -> None:
    """predict() from several threads at once (voice/lanes.py): a final on the float32 model, partials
    on the int8 copy's workers (one set of weights); each answer is what the pass gives alone."""
    three = _ct2(tiny_dir, partial_lanes=2)
    assert (three.lanes, three._model.num_workers, three._partial_model.num_workers) == (3, 1, 2)
    clips = _clips()
    finals = [Clip(c) for c in clips]
    partials = [Clip(c, final=False) for c in clips[:3]]
    alone = (three.predict(finals), three.predict(partials))
    start = threading.Barrier(3)

    def lane(batch: list[Clip]) -> list[list[str]]:
        start.wait(timeout=30)
        return [three.predict(batch) for _ in range(3)]

    with ThreadPoolExecutor(3) as pool:
        got_finals, *got_partials = pool.map(lane, [finals, partials, partials])
    assert got_finals == [alone[0]] * 3
    assert got_partials == [[alone[1]] * 3] * 2


@needs_ct2
def test_partials_run_on_an_int8_copy_and_finals_stay_float32(
    fast: CT2WhisperTranscriber, tiny_dir: Path
) -> None:
    assert fast._model.compute_type == "float32" and fast._partial_model.compute_type.startswith("int8")
    assert "int8 partials" in fast.describe()
    assert fast.partial_lanes == len(os.sched_getaffinity(0)) and fast.lanes == 1 + fast.partial_lanes
    # One single-threaded partial worker per core above; without the copy one float32 model serves
    # both kinds, one final and one partial at a time.
    plain = _ct2(tiny_dir, partials_int8=False)
    assert plain._partial_model is plain._model and plain._model.compute_type == "float32"
    assert (plain.lanes, plain._model.num_workers) == (2, 2)
    # int8 everywhere: one int8 model.
    small = _ct2(tiny_dir, int8=True)
    assert small._partial_model is small._model and not small.partials_int8


def test_the_settings_choose_int8_partials(tmp_path: Path) -> None:
    models = ModelSettings(profile="tiny", cache_dir=tmp_path, transcriber_backend="ctranslate2")
    assert build_transcriber(Settings(_env_file=None, models=models)).partials_int8
    off = models.model_copy(update={"transcriber_partials_int8": False})
    assert not build_transcriber(Settings(_env_file=None, models=off)).partials_int8
