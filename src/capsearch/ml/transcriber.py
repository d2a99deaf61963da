"""Whisper speech recognition behind the `Model` contract.

We call the feature extractor and `model.generate` ourselves (no ASR pipeline): the pipeline wants
ffmpeg for files and transcribes one clip per call, while one `generate` call over a padded batch is
what lets concurrent voice streams share the model. Whisper pads every clip to 30 s, so a pass costs
the same however short the clip; batching is where the savings are. The feature extractor always
pads to the full window, so live partials (`Clip(final=False)`) cost a full pass here too; the
CTranslate2 backend (capsearch.ml.whisper_ct2) is the one that shortens them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from capsearch.ml.pretrained import PretrainedModel
from capsearch.ml.speech import SAMPLE_RATE, ClipLike, as_clips, tidy_transcript

__all__ = ["SAMPLE_RATE", "WhisperTranscriber", "tidy_transcript"]

# Decoder prompt: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>.
_PROMPT_TOKENS = 4

_Processor: Any = WhisperProcessor
_Whisper: Any = WhisperForConditionalGeneration


class WhisperTranscriber(PretrainedModel):
    """`Model[Clip, str]`: 16 kHz mono float32 clips in, one transcript per clip out, in order.

    Bare arrays are accepted as finals. Partials and finals are transcribed alike (full window).
    """

    name = "transcriber"
    backend = "transformers"

    def __init__(
        self,
        model_id: str,
        *,
        cache_dir: Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        language: str | None = "en",
        max_new_tokens: int = 128,
    ) -> None:
        super().__init__(model_id, cache_dir=cache_dir, device=device, dtype=dtype)
        # None: Whisper detects the language of each clip (costs one more decoder step).
        self.language = language
        self.max_new_tokens = max_new_tokens

    def load(self) -> None:
        if self.loaded:
            return
        processor, model = self._load_local(_Processor, _Whisper, dtype=self.dtype)
        self._set_generation_defaults(model)
        self._processor = processor
        self._model = model.to(self.device).eval()

    def _set_generation_defaults(self, model: Any) -> None:
        # Set on the model's own config rather than passed per call: Whisper's generate() adds its own
        # arguments, and a config passed beside them (or two length limits) earns a warning per call.
        gen = model.generation_config
        # Batched generation pads finished rows; a checkpoint without a pad token cannot be batched.
        if gen.pad_token_id is None:
            gen.pad_token_id = gen.eos_token_id
        # The decoder has max_target_positions slots and the prompt takes some of them. Whisper's
        # generate() adds the prompt's length to `max_length`, so it acts as a new-token cap here;
        # `max_new_tokens` stays unset because the inner generate() also sees a default max_length,
        # and the two together earn a warning on every call.
        room = int(model.config.max_target_positions) - _PROMPT_TOKENS
        gen.max_length = max(1, min(self.max_new_tokens, room))
        gen.max_new_tokens = None
        # Greedy: deterministic, and beams would multiply a CPU's cost.
        gen.num_beams = 1
        gen.do_sample = False

    def predict(self, batch: Sequence[ClipLike]) -> list[str]:
        if not batch:
            return []
        if self._model is None:
            raise RuntimeError("WhisperTranscriber.predict() called before load()")
        clips = [clip.samples for clip in as_clips(batch)]
        with torch.inference_mode():
            features = self._processor.feature_extractor(
                clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
            )
            output_ids = self._model.generate(
                input_features=features["input_features"].to(self.device, dtype=self.dtype),
                # Needed when clips of different lengths share a batch (docs: "batched Whisper").
                attention_mask=features["attention_mask"].to(self.device),
                language=self.language,
                task="transcribe",
            )
        texts: list[str] = self._processor.batch_decode(output_ids, skip_special_tokens=True)
        if len(texts) != len(batch):
            raise RuntimeError(f"transcriber returned {len(texts)} transcripts for {len(batch)} clips")
        return [tidy_transcript(t) for t in texts]
