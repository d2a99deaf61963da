"""Whisper on CTranslate2: same checkpoint and same greedy tokens as `WhisperTranscriber` for finals,
and live partials on a shortened window.

Why: on a CPU the encoder dominates a pass and its cost grows with the window. Finals keep the full
30 s window (Whisper's accuracy depends on it); partials, which are replaced a moment later anyway,
run on the audio so far plus `partial_margin_s` of silence. The serving path imports ctranslate2,
faster-whisper's numpy feature extractor and tokenizers, never torch: only the one-time conversion
does (in a child process, so its memory goes back to the system when it ends).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from capsearch.errors import ModelUnavailableError
from capsearch.ml.speech import Clip, ClipLike, as_clips, tidy_transcript
from capsearch.ml.whisper_ct2 import cache, convert
from capsearch.ml.whisper_ct2.decoding import PROMPT_TOKENS, decode_options, max_length_for
from capsearch.ml.whisper_ct2.features import FeatureSpec, LogMel, partial_frames

log = logging.getLogger(__name__)

DEFAULT_PARTIAL_MARGIN_S = 2.0


class CT2WhisperTranscriber:
    """`Model[Clip, str]` backed by a CTranslate2 conversion of a transformers Whisper checkpoint."""

    name = "transcriber"
    backend = "ctranslate2"
    fix: ClassVar[str] = (
        "run `capsearch models download`, or start with CAPSEARCH_MODELS__PROFILE=tiny for an offline demo."
    )

    def __init__(
        self,
        model_id: str,
        *,
        cache_dir: Path,
        language: str | None = "en",
        max_new_tokens: int = 128,
        int8: bool = False,
        num_threads: int | None = None,
        partial_margin_s: float = DEFAULT_PARTIAL_MARGIN_S,
        partial_lanes: int | None = None,
        partials_int8: bool = True,
        convert_in_subprocess: bool = True,
    ) -> None:
        # Nothing heavy here: the app builds models at startup and loads them off the event loop.
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        # None: Whisper detects the language of each clip (from the encoder output it already has).
        self.language = language
        self.max_new_tokens = max_new_tokens
        self.int8 = int8
        # CTranslate2's intra-op threads: each pass uses them all.
        self.num_threads = num_threads or _usable_cores()
        # Live partials on int8 weights (a second, int8 copy of the model, ~75 MB for whisper-base):
        # 2.5x faster here, word error rate 0.106 vs 0.090, and a partial is replaced by the final
        # anyway, which keeps `int8` (float32 unless asked).
        self.partials_int8 = partials_int8 and not int8
        # Passes that can run at once (CTranslate2's inter_threads: workers sharing one set of
        # weights), so the voice flow runs finals and partials side by side (voice/lanes.py): a
        # partial beside a final took 0.28 s instead of 0.17 alone; queued behind it, 1.06. The int8
        # copy runs one single-threaded partial per core (a second thread does not speed a partial
        # up: 0.117 s vs 0.135 s); one shared float32 model runs one final and one partial.
        self.partial_lanes = max(1, partial_lanes or self.num_threads) if self.partials_int8 else 1
        self.lanes = 1 + self.partial_lanes
        self.partial_margin_s = partial_margin_s
        self.convert_in_subprocess = convert_in_subprocess
        self._model: Any = None
        self._partial_model: Any = None
        self._mel: LogMel | None = None
        self._tokenizer: Any = None
        self._max_length = 0
        self._last_special = 0
        self._lang_tokens: frozenset[str] = frozenset()
        # Frames of every encoder pass the last predict() ran, for tests and measurements.
        self.last_frames: list[int] = []

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def compute_type(self) -> str:
        return "int8" if self.int8 else "float32"

    def describe(self) -> str:
        weights = "int8 weights" if self.int8 else "float32"
        if self.partials_int8:
            weights += " finals, int8 partials"
        return f"{self.model_id} on cpu (ctranslate2, {weights})"

    def _checkpoint(self) -> Path:
        found = cache.checkpoint_dir(self.model_id, self.cache_dir)
        if found is None:
            raise ModelUnavailableError(
                f"The {self.name} model '{self.model_id}' is not on disk. Fix: {self.fix}"
            )
        return found

    def converted_dir(self) -> Path:
        """Where this checkpoint's conversion is (or will be) for the installed library versions."""
        key = cache.checkpoint_key(self._checkpoint())
        return cache.converted_dir(self.cache_dir, self.model_id, key)

    def convert(self) -> Path:
        """Convert the checkpoint unless this exact conversion is cached; returns its directory."""
        checkpoint = self._checkpoint()
        target = cache.converted_dir(self.cache_dir, self.model_id, cache.checkpoint_key(checkpoint))
        if cache.is_complete(target):
            return target
        estimate = convert.estimate_s(checkpoint)

        def build(tmp: Path) -> None:
            log.info("converting the transcriber for CTranslate2 (one time, ~%.0f s)…", estimate)
            started = time.monotonic()
            if self.convert_in_subprocess:
                convert.export_in_child(self.model_id, self.cache_dir, tmp)
            else:
                convert.export(self.model_id, checkpoint, tmp)
            log.info("converted the transcriber in %.0f s: %s", time.monotonic() - started, target)

        cache.publish_ct2(target, build)
        return target

    def load(self) -> None:
        if self.loaded:
            return
        directory = self.convert()
        meta = json.loads((directory / cache.META_FILE).read_text())
        from tokenizers import Tokenizer

        self._lang_tokens = frozenset(t for t in _vocabulary(directory) if _is_language_token(t))
        if self.language is not None and _language_token(self.language) not in self._lang_tokens:
            raise ValueError(f"'{self.model_id}' does not know the language {self.language!r}")
        room = int(meta["max_target_positions"]) - PROMPT_TOKENS
        # CTranslate2 caps new tokens at min(max_length // 2, max_length - the 3 prompt tokens before
        # the last): this max_length gives exactly the cap transformers' generate() gets.
        cap = max(1, min(self.max_new_tokens, room))
        self._max_length = max_length_for(cap)
        self._mel = LogMel(FeatureSpec.from_json(meta["features"]))
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._last_special = int(self._tokenizer.token_to_id("<|notimestamps|>"))
        if self.partials_int8:
            self._model = self._whisper(directory, self.compute_type, 1, self.num_threads)
            self._partial_model = self._whisper(directory, "int8", self.partial_lanes, 1)
        else:
            self._model = self._whisper(directory, self.compute_type, self.lanes, self.num_threads)
            self._partial_model = self._model

    @staticmethod
    def _whisper(directory: Path, compute_type: str, workers: int, threads: int) -> Any:
        import ctranslate2

        return ctranslate2.models.Whisper(
            str(directory),
            device="cpu",
            compute_type=compute_type,
            inter_threads=workers,
            intra_threads=threads,
        )

    def predict(self, batch: Sequence[ClipLike]) -> list[str]:
        if not batch:
            return []
        if self._model is None or self._mel is None:
            raise RuntimeError("CT2WhisperTranscriber.predict() called before load()")
        clips = as_clips(batch)
        frames: list[int] = []
        texts: list[str] = [""] * len(clips)
        # Finals share one full-window pass; partials share one window as long as the longest of them
        # (shorter ones just get more silence: a larger margin).
        for final in (True, False):
            rows = [i for i, clip in enumerate(clips) if clip.final is final]
            if rows:
                kind = [clips[i] for i in rows]
                frames.append(self.frames_for(kind))
                ids = self.token_ids(kind)
                decoded = self._tokenizer.decode_batch(ids, skip_special_tokens=True)
                for i, text in zip(rows, decoded, strict=True):
                    # A partial's token cap can cut a character's bytes in two: drop the remnant
                    # (finals stay exactly as transformers decodes them).
                    texts[i] = tidy_transcript(text if final else text.rstrip().rstrip("\ufffd"))
        # Assigned whole: two lanes may run predict() at once.
        self.last_frames = frames
        return texts

    def frames_for(self, clips: list[Clip]) -> int:
        """The window of one pass over `clips` (all finals or all partials), in feature frames."""
        assert self._mel is not None
        spec = self._mel.spec
        if clips[0].final:
            return spec.full_frames
        return max(partial_frames(c.samples.size, self.partial_margin_s, spec) for c in clips)

    def token_ids(self, clips: list[Clip]) -> list[list[int]]:
        """Greedy text tokens (no prompt, no end token) of one pass over clips of one kind."""
        import ctranslate2

        assert self._mel is not None
        frames = self.frames_for(clips)
        # Held in a local: the StorageView borrows this array's memory.
        mel = self._mel([c.samples for c in clips], frames)
        model = self._model if clips[0].final else self._partial_model
        encoded = model.encode(ctranslate2.StorageView.from_array(mel))
        if all(c.abandoned for c in clips):
            return [[] for _ in clips]  # stale before decoding began: nobody reads these any more
        prompts = [self._prompt(lang) for lang in self._languages(model, encoded, len(clips))]
        options = decode_options(clips, self._max_length)
        results = model.generate(
            encoded,
            prompts,
            beam_size=1,
            # The checkpoint's suppress lists (stored by the converter), as transformers applies them.
            suppress_blank=True,
            suppress_tokens=[-1],
            **options,
        )
        # Timestamp tokens are not special to the tokenizer; transformers' decode filters them out.
        return [[t for t in result.sequences_ids[0] if t <= self._last_special] for result in results]

    def _languages(self, model: Any, encoded: Any, size: int) -> list[str]:
        if self.language is not None:
            return [_language_token(self.language)] * size
        if not model.is_multilingual and len(self._lang_tokens) == 1:
            # CTranslate2 detects only with the full multilingual vocabulary; one language is no choice.
            return [next(iter(self._lang_tokens))] * size
        # Each clip's most likely language token, as transformers' generate() picks it.
        return [pairs[0][0] for pairs in model.detect_language(encoded)]

    @staticmethod
    def _prompt(language_token: str) -> list[str]:
        return ["<|startoftranscript|>", language_token, "<|transcribe|>", "<|notimestamps|>"]

    def close(self) -> None:
        self._model = None
        self._partial_model = None
        self._mel = None
        self._tokenizer = None


def _usable_cores() -> int:
    # The cores this process may run on (a container's share), not the host's count.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _vocabulary(directory: Path) -> list[str]:
    # The converter writes vocabulary.json; conversions made elsewhere (faster-whisper's) ship .txt.
    path = directory / "vocabulary.json"
    if path.is_file():
        return list(json.loads(path.read_text()))
    return (directory / "vocabulary.txt").read_text().splitlines()


def _language_token(code: str) -> str:
    return f"<|{code.strip().lower()}|>"


def _is_language_token(token: str) -> bool:
    # <|en|>, <|haw|>, <|yue|>: two or three lowercase letters between the markers.
    inner = token[2:-2]
    return token.startswith("<|") and token.endswith("|>") and 2 <= len(inner) <= 3 and inner.isalpha()
