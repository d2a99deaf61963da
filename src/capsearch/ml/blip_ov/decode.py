"""Greedy decoding in numpy with the same rules as transformers' `generate` for BLIP captions.

`BlipForConditionalGeneration.generate` calls `text_decoder.generate` with the text decoder's own
generation config (the outer model's generation_config.json is NOT consulted, in transformers 5.24:
the tiny model's suppress_tokens/min_new_tokens there have no effect on the torch backend either),
overriding eos with sep_token_id and pad with pad_token_id, and we add num_beams=1, do_sample=False
and max_new_tokens. Of the logits processors that config can switch on, the ones below are
reproduced; the others are refused at conversion time rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Greedy-relevant GenerationConfig fields we do not reproduce, with the value that means "off".
_UNSUPPORTED_OFF: dict[str, Any] = {
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
}


@dataclass(frozen=True)
class GreedyRules:
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    min_length: int = 0  # counts the prompt ([DEC]) too, as transformers does
    min_new_tokens: int = 0
    suppress_tokens: tuple[int, ...] = field(default=())
    begin_suppress_tokens: tuple[int, ...] = field(default=())
    repetition_penalty: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GreedyRules:
        data = dict(data)
        for name in ("suppress_tokens", "begin_suppress_tokens"):
            data[name] = tuple(int(t) for t in data.get(name) or ())
        return cls(**data)

    @classmethod
    def from_model(cls, model: Any) -> GreedyRules:
        """What the torch backend's `generate` call applies for this loaded BlipForConditionalGeneration."""
        text = model.config.text_config
        gen = model.text_decoder.generation_config
        odd = {
            name: getattr(gen, name, off)
            for name, off in _UNSUPPORTED_OFF.items()
            if getattr(gen, name, off) not in (off, None, 0, 1.0)
        }
        if odd:
            raise ValueError(f"the fast captioner does not implement these generation settings: {odd}")
        return cls(
            bos_token_id=int(text.bos_token_id),
            eos_token_id=int(text.sep_token_id),
            pad_token_id=int(text.pad_token_id),
            min_length=int(gen.min_length or 0),
            min_new_tokens=int(gen.min_new_tokens or 0),
            suppress_tokens=tuple(int(t) for t in gen.suppress_tokens or ()),
            begin_suppress_tokens=tuple(int(t) for t in gen.begin_suppress_tokens or ()),
            repetition_penalty=float(gen.repetition_penalty or 1.0),
        )

    def apply(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Adjust `scores` [batch, vocab] in place before the argmax, given the tokens so far `ids`."""
        length = ids.shape[1]
        if self.repetition_penalty != 1.0:
            rows = np.arange(ids.shape[0])[:, None]
            seen = scores[rows, ids]
            scores[rows, ids] = np.where(
                seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty
            )
        if length < self.min_length or length - 1 < self.min_new_tokens:
            scores[:, self.eos_token_id] = -np.inf
        if self.suppress_tokens:
            scores[:, list(self.suppress_tokens)] = -np.inf
        if self.begin_suppress_tokens and length == 1:
            scores[:, list(self.begin_suppress_tokens)] = -np.inf


# (last tokens [batch, 1] int64, their position) -> next-token logits [batch, vocab] float32.
Step = Callable[[np.ndarray, int], np.ndarray]


def greedy_decode(step: Step, batch: int, rules: GreedyRules, max_new_tokens: int) -> np.ndarray:
    """Token ids [batch, 1 + n], starting with bos, as `generate` returns them: a row that emitted
    eos is padded with pad_token_id while others go on; stops when all rows ended or at max_new_tokens."""
    ids = np.full((batch, 1), rules.bos_token_id, dtype=np.int64)
    unfinished = np.ones(batch, dtype=bool)
    for position in range(max_new_tokens):
        scores = np.array(step(ids[:, -1:], position), dtype=np.float32)  # a copy: apply() edits it
        rules.apply(scores, ids)
        # np.argmax, like torch.argmax, returns the first of equal maxima.
        chosen = np.where(unfinished, scores.argmax(axis=-1), rules.pad_token_id)
        ids = np.concatenate([ids, chosen[:, None]], axis=1)
        unfinished &= chosen != rules.eos_token_id
        if not unfinished.any():
            break
    return ids
