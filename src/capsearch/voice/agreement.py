"""Words that settle: LocalAgreement-2 over the partial transcripts of one live recording.

Whisper has no streaming mode: every partial pass transcribes the whole recording again, and the end
of each hypothesis flickers as more audio arrives ("a dog" → "a dog run" → "a dog running on").
LocalAgreement-2 (Macháček et al., "Turning Whisper into Real-Time Transcription System", 2023) calls
the words two consecutive hypotheses agree on *settled*: they are shown as final, searched while the
person still speaks, and never taken back. The rest of the latest hypothesis is *tentative*.

Choices, since the passes here are whole re-transcriptions without word timestamps:

* Words are compared case-folded and without trailing punctuation ("Dog," agrees with "dog"), because
  Whisper moves capitals and commas as the sentence grows; a word that settles is spelled as the
  latest hypothesis spells it (its "dog." at the end of one pass is "dog" once more words follow).
* Settled words are aligned by count, not by content: the first `n` words of every later hypothesis
  stand for the `n` settled ones, whatever they say. A hypothesis that rewrites a settled word does not
  change it (the page would jump, and a search already ran for it), and only the words after the first
  `n` of it can be tentative or settle next. One that is shorter than `n` words has no tentative part.
  Only the final transcript (`voice.final`) may differ from the settled words.
* Every partial counts as a hypothesis, an empty one too: it agrees with nothing, so it only delays
  the next words from settling by one pass.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settled:
    """One partial, split: `settled` never changes once shown and only grows; `tentative` is the rest
    of the latest hypothesis, which the next partial may change. Both are words joined by spaces."""

    settled: str
    tentative: str
    settled_changed: bool = False  # `settled` grew with this partial: search its words again

    @property
    def text(self) -> str:
        """What the page shows: the settled words, then the tentative ones."""
        return " ".join(part for part in (self.settled, self.tentative) if part)


def normalise(word: str) -> str:
    """The form two hypotheses' words are compared in: case-folded, trailing punctuation dropped."""
    end = len(word)
    while end > 0 and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[:end].casefold()


class Settler:
    """LocalAgreement-2 for one recording: feed it each partial transcript, in order."""

    def __init__(self) -> None:
        self._settled: list[str] = []
        # The previous hypothesis's words after the settled count, normalised; None before the first.
        self._previous: list[str] | None = None

    @property
    def settled(self) -> str:
        return " ".join(self._settled)

    def update(self, text: str) -> Settled:
        """Take the next partial transcript (the whole hypothesis so far) and split it."""
        tail = text.split()[len(self._settled) :]
        keys = [normalise(w) for w in tail]
        agreed = 0
        if self._previous is not None:
            for before, now in zip(self._previous, keys, strict=False):
                if before != now:
                    break
                agreed += 1
        self._settled.extend(tail[:agreed])
        self._previous = keys[agreed:]
        return Settled(self.settled, " ".join(tail[agreed:]), settled_changed=agreed > 0)
