"""Silero VAD (capsearch.voice.vad) with the real model: silence, noise, espeak-ng speech, auto-stop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from capsearch.config import VoiceSettings
from capsearch.errors import ModelUnavailableError
from capsearch.voice.audio import loud_samples
from capsearch.voice.vad import CHUNK, SAMPLE_RATE, SileroVad, VadParams, VadStream, VadUpdate
from tests.voicekit import FRAME_SAMPLES, make_speech_wav, read_wav, silence

END_SILENCE = int(0.8 * SAMPLE_RATE)
LEAD_IN = SAMPLE_RATE // 2  # quiet before the speech, so its start is somewhere to find


@pytest.fixture(scope="module")
def vad() -> Iterator[SileroVad]:
    model = SileroVad()
    model.load()
    yield model
    model.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng saying "a dog running on the beach", float32 in [-1, 1], cut where the voice fades
    (espeak adds ~0.3 s of digital silence, which would count towards the silence a test adds)."""
    voice = as_float(read_wav(make_speech_wav(tmp_path_factory.mktemp("vad")).read_bytes()))
    return voice[: int(np.nonzero(np.abs(voice) > 0.01)[0][-1]) + 1]


def as_float(samples: np.ndarray) -> np.ndarray:
    return (samples / 32768).astype(np.float32)


def quiet(seconds: float, seed: int = 0) -> np.ndarray:
    return as_float(silence(seconds, seed=seed))


def spoken(speech: np.ndarray, after_s: float) -> np.ndarray:
    """Half a second of quiet room, the phrase, then `after_s` of quiet room."""
    return np.concatenate((quiet(LEAD_IN / SAMPLE_RATE, seed=1), speech, quiet(after_s, seed=2)))


def feed_in(stream: VadStream, samples: np.ndarray, size: int) -> list[VadUpdate]:
    return [stream.feed(samples[i : i + size]) for i in range(0, samples.size, size)]


def without_probs(update: VadUpdate) -> tuple[object, ...]:
    return (
        update.samples_heard,
        update.speech_ms,
        update.heard_speech,
        update.in_speech,
        update.speech_started_at,
        update.last_speech_end,
        update.silence_ms,
        update.ended,
        update.ended_at,
    )


def test_silence_is_never_speech_and_never_ends(vad: SileroVad) -> None:
    stream = vad.new_stream()
    updates = feed_in(stream, quiet(3), FRAME_SAMPLES)
    last = updates[-1]
    assert not any(u.heard_speech or u.ended or u.in_speech for u in updates)
    assert last.speech_ms == 0 and last.speech_started_at is None and last.last_speech_end is None
    assert last.samples_heard == 3 * SAMPLE_RATE // CHUNK * CHUNK
    assert last.silence_ms == last.samples_heard * 1000 / SAMPLE_RATE
    assert max(p for u in updates for p in u.probs) < 0.2


def test_white_noise_that_fools_the_loudness_rule_is_not_speech(vad: SileroVad) -> None:
    noise = (np.random.default_rng(3).standard_normal(2 * SAMPLE_RATE) * 0.05).astype(np.float32)
    assert loud_samples(noise, VoiceSettings().speech_rms) == noise.size  # -26 dBFS: "speech" by RMS
    update = vad.new_stream().feed(noise)
    assert update.speech_ms == 0 and not update.heard_speech and not update.ended
    assert max(update.probs) < 0.35
    assert not vad.speech_in(noise)


def test_speech_is_heard_within_its_first_second(vad: SileroVad, speech: np.ndarray) -> None:
    stream = vad.new_stream()
    updates = feed_in(stream, spoken(speech, 0.2), FRAME_SAMPLES)
    first = next(u for u in updates if u.heard_speech)
    assert first.speech_started_at is not None
    # espeak starts at once: speech begins in the chunk where the lead-in ends.
    assert abs(first.speech_started_at - LEAD_IN) <= CHUNK
    assert first.samples_heard - LEAD_IN <= SAMPLE_RATE
    assert 1000 <= updates[-1].speech_ms <= 1600  # the phrase is ~1.2 s of voiced sound
    assert not updates[-1].ended


def test_a_second_of_silence_after_speech_ends_the_stream_after_800_ms(
    vad: SileroVad, speech: np.ndarray
) -> None:
    stream = vad.new_stream()
    updates = feed_in(stream, spoken(speech, 1.0), FRAME_SAMPLES)
    last = updates[-1]
    assert last.ended and last.ended_at is not None and last.last_speech_end is not None
    # Speech ends where espeak's voice fades, give or take Silero's two-chunk tail.
    assert abs(last.last_speech_end - (LEAD_IN + speech.size)) <= 2 * CHUNK
    assert END_SILENCE <= last.ended_at - last.last_speech_end < END_SILENCE + CHUNK
    # The frame that heard the 800th ms of silence is the first to say so.
    first = next(i for i, u in enumerate(updates) if u.ended)
    assert updates[first].samples_heard >= last.ended_at > updates[first - 1].samples_heard
    assert all(u.ended_at == last.ended_at for u in updates[first:])


def test_half_a_second_of_silence_does_not_end_it(vad: SileroVad, speech: np.ndarray) -> None:
    update = feed_in(vad.new_stream(), spoken(speech, 0.5), FRAME_SAMPLES)[-1]
    assert update.heard_speech and not update.ended and update.ended_at is None
    assert 300 <= update.silence_ms <= 600  # Silero hears a chunk or two of tail after the voice


def test_end_silence_zero_never_ends(vad: SileroVad, speech: np.ndarray) -> None:
    update = vad.new_stream(VadParams(end_silence_ms=0)).feed(spoken(speech, 2.0))
    assert update.heard_speech and update.silence_ms > 1500 and not update.ended


def test_min_speech_zero_still_needs_speech(vad: SileroVad, speech: np.ndarray) -> None:
    params = VadParams(min_speech_ms=0)
    assert not vad.new_stream(params).feed(quiet(1)).heard_speech
    assert vad.new_stream(params).feed(speech[: CHUNK * 3]).heard_speech


def test_odd_frames_give_the_same_answers_as_one_feed(vad: SileroVad, speech: np.ndarray) -> None:
    audio = spoken(speech, 1.0)
    whole = vad.new_stream().feed(audio)
    pieces = feed_in(vad.new_stream(), audio, 333)
    assert without_probs(pieces[-1]) == without_probs(whole)
    probs = [p for u in pieces for p in u.probs]
    # The same chunks, batched differently: the same probabilities up to float rounding.
    np.testing.assert_allclose(probs, whole.probs, atol=1e-4)
    assert len(probs) == audio.size // CHUNK


def test_interleaved_streams_keep_their_own_state(vad: SileroVad, speech: np.ndarray) -> None:
    talk, hush = spoken(speech, 1.0), quiet(3, seed=5)
    alone = vad.new_stream().feed(talk)
    a, b = vad.new_stream(), vad.new_stream()
    for i in range(0, max(talk.size, hush.size), FRAME_SAMPLES):
        last_a = a.feed(talk[i : i + FRAME_SAMPLES])
        last_b = b.feed(hush[i : i + FRAME_SAMPLES])
    assert without_probs(last_a) == without_probs(alone)
    assert last_b.speech_ms == 0 and not last_b.ended


def test_streams_fed_from_two_threads_at_once_match_serial_runs(vad: SileroVad, speech: np.ndarray) -> None:
    clips = [spoken(speech, 1.0), np.concatenate((quiet(1, seed=7), speech))]
    serial = [without_probs(vad.new_stream().feed(clip)) for clip in clips]

    def run(clip: np.ndarray) -> tuple[object, ...]:
        return without_probs(feed_in(vad.new_stream(), clip, FRAME_SAMPLES)[-1])

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(run, clips)) == serial


def test_speech_in_a_whole_clip(vad: SileroVad, speech: np.ndarray) -> None:
    assert vad.speech_in(speech)
    assert not vad.speech_in(quiet(2))
    assert not vad.speech_in(np.zeros(100, np.float32))
    # Less speech than min_speech_ms (150 ms) is a cough, not a query.
    assert not vad.speech_in(speech[: CHUNK * 3])


def test_settings_become_params() -> None:
    params = VadParams.from_settings(VoiceSettings(vad_threshold=0.6, end_silence_ms=0, min_speech_ms=90))
    assert (params.threshold, params.end_silence_ms, params.min_speech_ms) == (0.6, 0, 90)
    assert params.low == pytest.approx(0.45)


def test_a_missing_model_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        SileroVad(tmp_path / "silero_vad_v6.onnx").load()
    assert "faster-whisper" in caught.value.message and caught.value.status_code == 503


def test_misuse_is_refused(vad: SileroVad) -> None:
    with pytest.raises(RuntimeError, match="load"):
        SileroVad().new_stream()
    with pytest.raises(ValueError, match="1-D"):
        vad.new_stream().feed(np.zeros((2, CHUNK), np.float32))


def test_loading_imports_neither_faster_whisper_nor_ctranslate2() -> None:
    heavy = ("faster_whisper", "ctranslate2", "torch", "torchaudio")
    code = (
        "import sys; from capsearch.voice.vad import SileroVad; "
        "assert 'onnxruntime' not in sys.modules, 'imported at import time'; "
        f"SileroVad().load(); print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
