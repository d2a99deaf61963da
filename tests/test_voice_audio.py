"""Audio decoding and checks: every format to 16 kHz mono float32, and each refusal with its code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from capsearch.config import VoiceSettings
from capsearch.pipelines.voice import has_speech, query_of
from capsearch.voice.activity import LoudnessDetector
from capsearch.voice.audio import (
    PCM_F32LE,
    PCM_S16LE,
    SAMPLE_RATE,
    AudioError,
    decode_audio,
    pcm_to_float,
    sniff_format,
)
from tests.voicekit import encode, make_speech_wav, read_wav, silence, tone, wav_bytes


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng saying the phrase: int16, 16 kHz mono."""
    return read_wav(make_speech_wav(tmp_path_factory.mktemp("speech")).read_bytes())


def refused(data: bytes, code: str, max_seconds: float = 30) -> AudioError:
    with pytest.raises(AudioError) as caught:
        decode_audio(data, max_seconds)
    assert caught.value.code == code
    assert caught.value.message.endswith(".")
    return caught.value


def test_a_16k_wav_decodes_to_the_same_samples(speech: np.ndarray) -> None:
    out = decode_audio(wav_bytes(speech), 30)
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_allclose(out, speech / 32768, atol=1e-6)


def test_a_44k_stereo_wav_is_mixed_down_and_resampled(speech: np.ndarray) -> None:
    t = np.arange(44_100) / 44_100
    left = (np.sin(2 * np.pi * 440 * t) * 10_000).astype(np.int16)
    stereo = np.stack([left, left], axis=1).reshape(-1)
    out = decode_audio(wav_bytes(stereo, rate=44_100, channels=2), 30)
    assert abs(out.size - SAMPLE_RATE) <= 64  # one second either way
    assert 0.2 < float(np.abs(out).max()) < 0.35  # 10000/32768 ≈ 0.31: mixed, not summed


@pytest.mark.parametrize(
    ("fmt", "codec", "magic"),
    [
        ("mp3", "libmp3lame", "mp3"),
        ("ogg", "libopus", "ogg"),
        ("webm", "libopus", "webm"),
        ("flac", "flac", "flac"),
    ],
)
def test_compressed_speech_decodes_through_pyav(speech: np.ndarray, fmt: str, codec: str, magic: str) -> None:
    data = encode(speech, fmt, codec)
    assert sniff_format(data[:16]) == magic
    out = decode_audio(data, 30)
    # Encoders add a little padding; the length stays within 0.1 s and the speech stays loud.
    assert abs(out.size - speech.size) < SAMPLE_RATE // 10, (out.size, speech.size)
    assert has_speech(out, LoudnessDetector(VoiceSettings()))


@pytest.mark.parametrize(
    "data",
    [b"just some text, not audio at all", b"\x89PNG\r\n\x1a\n" + bytes(64), bytes(1000)],
)
def test_garbage_and_other_formats_are_unsupported(data: bytes) -> None:
    assert "WAV, MP3" in refused(data, "unsupported_audio").message


def test_an_empty_file_and_a_header_only_wav(speech: np.ndarray) -> None:
    refused(b"", "empty_audio")
    refused(wav_bytes(speech[:0]), "empty_audio")


@pytest.mark.parametrize(("fmt", "codec"), [("ogg", "libopus"), ("mp3", "libmp3lame")])
def test_damaged_files_are_corrupt(speech: np.ndarray, fmt: str, codec: str) -> None:
    data = encode(speech, fmt, codec)
    damaged = data[:40] + bytes(b ^ 0x5A for b in data[40:])
    refused(damaged, "corrupt_audio")


def test_a_truncated_wav_keeps_what_arrived(speech: np.ndarray) -> None:
    data = wav_bytes(speech)
    out = decode_audio(data[: len(data) // 2 + 1], 30)  # odd cut: half a sample is dropped
    assert 0 < out.size < speech.size


@pytest.mark.parametrize(("fmt", "codec"), [("wav", ""), ("ogg", "libopus")])
def test_audio_over_the_cap_is_refused(fmt: str, codec: str) -> None:
    long = tone(3.0)
    data = wav_bytes(long) if fmt == "wav" else encode(long, fmt, codec)
    assert "at most 2 seconds" in refused(data, "audio_too_long", max_seconds=2).message
    assert decode_audio(data, 4).size > 0


def test_silence_is_not_speech_and_speech_is(speech: np.ndarray) -> None:
    settings = LoudnessDetector(VoiceSettings())
    assert not has_speech(silence(3.0) / 32768, settings)
    assert not has_speech(np.zeros(SAMPLE_RATE, np.float32), settings)
    # A click is loud but far shorter than min_speech_ms.
    click = np.zeros(SAMPLE_RATE, np.float32)
    click[100:400] = 0.9
    assert not has_speech(click, settings)
    assert has_speech(speech / 32768, settings)


def test_pcm_frames_int16_and_float32() -> None:
    assert pcm_to_float(np.array([0, 16384, -32768], "<i2").tobytes(), PCM_S16LE).tolist() == [0, 0.5, -1]
    assert pcm_to_float(np.array([0.25, 2.0], "<f4").tobytes(), PCM_F32LE).tolist() == [0.25, 1.0]
    assert pcm_to_float(b"", PCM_S16LE).size == 0


@pytest.mark.parametrize(
    ("payload", "encoding", "words"),
    [
        (b"\x00\x01\x02", PCM_S16LE, "even number"),
        (b"\x00" * 6, PCM_F32LE, "multiple of 4"),
        (np.array([0.1, np.nan], "<f4").tobytes(), PCM_F32LE, "NaN"),
        (np.array([np.inf], "<f4").tobytes(), PCM_F32LE, "infinite"),
        (b"\x00\x00", 0x07, "Unknown sample encoding"),
    ],
)
def test_bad_pcm_frames(payload: bytes, encoding: int, words: str) -> None:
    with pytest.raises(AudioError) as caught:
        pcm_to_float(payload, encoding)
    assert caught.value.code == "bad_pcm"
    assert words in caught.value.message


def test_long_transcripts_are_cut_at_a_word_for_search() -> None:
    assert query_of("a dog on the beach", 200) == "a dog on the beach"
    assert query_of("a dog running on the beach", 12) == "a dog"
    assert query_of("supercalifragilistic", 5) == "super"


def test_speech_fixture_is_what_the_issue_describes(tmp_path: Path) -> None:
    data = make_speech_wav(tmp_path).read_bytes()
    assert sniff_format(data[:16]) == "wav"
    assert 1.0 < read_wav(data).size / SAMPLE_RATE < 3.0


def test_with_silero_a_hum_is_not_speech_but_a_voice_is(speech: np.ndarray) -> None:
    """The REST check and the live recordings share a detector: with Silero, a loud steady hum (which
    the loudness rule takes for speech) is no speech, and a voice is."""
    from capsearch.voice.vad import SileroDetector, SileroVad, VadParams

    vad = SileroVad()
    vad.load()
    detector = SileroDetector(vad, VadParams.from_settings(VoiceSettings()))
    hum = tone(2.0).astype(np.float32) / 32768
    assert has_speech(hum, LoudnessDetector(VoiceSettings()))
    assert not has_speech(hum, detector)
    assert has_speech(speech / 32768, detector)
    vad.close()
