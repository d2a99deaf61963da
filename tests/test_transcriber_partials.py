"""CTranslate2 partials: a shortened window (the audio so far plus a margin), padded to the longest
partial of a batch, and decoding that cannot run away on it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from capsearch.ml.speech import Clip
from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber
from tests.test_transcriber_backends import _clips, fast, needs_ct2, tiny_dir

__all__ = ["fast", "tiny_dir"]  # fixtures, used by name


class _EncoderSpy:
    """The CTranslate2 model, recording the shape of every feature batch its encoder gets."""

    def __init__(self, model: Any, into: _EncoderSpy | None = None) -> None:
        self.model = model
        # `into`: record into another spy's lists (the float32 model's and the partials' int8 copy).
        self.shapes: list[tuple[int, ...]] = into.shapes if into else []
        self.options: list[dict[str, Any]] = into.options if into else []  # generate()'s kwargs, per pass

    def encode(self, features: Any) -> Any:
        self.shapes.append(tuple(features.shape))
        return self.model.encode(features)

    def generate(self, *args: Any, **options: Any) -> Any:
        self.options.append(options)
        return self.model.generate(*args, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@pytest.fixture
def spy(fast: CT2WhisperTranscriber) -> Any:
    real, real_partial = fast._model, fast._partial_model
    fast._model = _EncoderSpy(real)
    fast._partial_model = _EncoderSpy(real_partial, into=fast._model)
    yield fast._model
    fast._model, fast._partial_model = real, real_partial


@needs_ct2
def test_partials_run_on_a_shorter_window(fast: CT2WhisperTranscriber, spy: _EncoderSpy) -> None:
    one, three = _clips()[0], _clips()[2]
    texts = fast.predict([Clip(one, final=False)])
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert spy.shapes == [(1, 80, 300)]  # 1 s + the 2 s margin, not 3000 frames
    # Finals and partials in one batch: one full pass for the finals, one for the partials, padded to
    # the longest partial (3 s + 2 s); answers come back in the order asked.
    spy.shapes.clear()
    batch = [Clip(one, final=False), Clip(one), Clip(three, final=False)]
    mixed = fast.predict(batch)
    assert spy.shapes == [(1, 80, 3000), (2, 80, 500)]
    assert mixed[1] == fast.predict([Clip(one)])[0]
    # A bigger margin is a longer window.
    wide = CT2WhisperTranscriber(fast.model_id, cache_dir=fast.cache_dir, partial_margin_s=3.0)
    wide.load()
    wide.predict([Clip(one, final=False)])
    assert wide.last_frames == [400]


@needs_ct2
def test_partials_cannot_run_away(fast: CT2WhisperTranscriber, spy: _EncoderSpy) -> None:
    """On a short window Whisper tends to repeat itself instead of ending: partials get a repetition
    penalty and a token cap by seconds heard; finals decode exactly as transformers does."""
    one = _clips()[0]
    fast.predict([Clip(one, final=False), Clip(one)])
    final, partial = spy.options
    assert "repetition_penalty" not in final
    assert partial["repetition_penalty"] > 1
    assert partial["max_length"] < final["max_length"]


@needs_ct2
def test_a_pass_dropped_while_encoding_skips_its_decoding(
    fast: CT2WhisperTranscriber, spy: _EncoderSpy
) -> None:
    one = _clips()[0]
    dropped = threading.Event()

    class _DropDuringEncode(_EncoderSpy):
        def encode(self, features: Any) -> Any:
            encoded = super().encode(features)
            dropped.set()  # more speech came while the encoder ran: the final is stale now
            return encoded

    fast._model = _DropDuringEncode(spy.model, into=spy)
    assert fast.predict([Clip(one, dropped=dropped)]) == [""]
    assert spy.shapes == [(1, 80, 3000)] and spy.options == []  # encoded, never decoded
    # A batch with one clip still wanted decodes them all; a clip never dropped is decoded as before.
    both = fast.predict([Clip(one, dropped=dropped), Clip(one)])
    assert len(spy.options) == 1 and both[0] == both[1] == fast.predict([Clip(one)])[0] != ""
