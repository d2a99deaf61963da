"""How a pass decodes: finals exactly as transformers' greedy `generate`, partials held on a leash.

On a shortened window Whisper often fails to end: it repeats its last words until the token cap
(measured on whisper-base, 32 spoken phrases, `capsearch bench --only voice`: partials' word error rate
6.3, a pass 1 s instead of 0.25). For partials only, a repetition penalty and a cap of tokens by
seconds heard stop that: WER 0.11 (tried: margins 1-3 s, no-repeat n-grams of 3, penalties 1.2-1.3,
caps of 8 tokens a second). Finals keep transformers' tokens, so their accuracy stays measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capsearch.ml.speech import Clip

# Decoder prompt: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>.
PROMPT_TOKENS = 4
PARTIAL_REPETITION_PENALTY = 1.3
PARTIAL_TOKENS_PER_S, PARTIAL_TOKENS_MIN = 8, 8


def max_length_for(new_tokens: int) -> int:
    """CTranslate2 caps new tokens at min(max_length // 2, max_length - the 3 prompt tokens before the
    last): the max_length that allows exactly `new_tokens`."""
    return max(2 * new_tokens, new_tokens + PROMPT_TOKENS - 1)


def decode_options(clips: Sequence[Clip], max_length: int) -> dict[str, Any]:
    """`generate` options for one pass over clips of one kind (all finals or all partials)."""
    if clips[0].final:
        return {"max_length": max_length}
    heard = max(c.seconds for c in clips)
    cap = int(PARTIAL_TOKENS_PER_S * heard) + PARTIAL_TOKENS_MIN
    return {
        "repetition_penalty": PARTIAL_REPETITION_PENALTY,
        "max_length": min(max_length, max_length_for(cap)),
    }
