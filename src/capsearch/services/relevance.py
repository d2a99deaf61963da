"""Did a search find anything, and how sure is each hit? The no-match decision and the labels.

One cosine value means different things for different queries: a short or abstract query ("dogs",
"business meeting") scores its right caption lower than a long concrete one scores a caption that
merely shares its setting. So a hit is judged by its cosine `s` together with how far it stands
above this query's own background — its cosines with the collection (search/background.py):

    standing = (s − location) / scale
    adjusted = s + standing_weight · standing

`location` and `scale` are the background's median and spread (1.4826 · median absolute deviation,
which is the standard deviation for normal data, but barely moved by the few captions that do
match). A search is answered "no match" when the best hit's adjusted score is below `accept_bar`
(and no caption holds every word of the query: services/search.py); each hit shown is labelled
"strong" when its own adjusted score reaches `strong_bar`, else "possible". The weight and
`accept_bar` come from a logistic fit on the tune half of the labelled set, so `adjusted` is a
rescaling of that fit's log-odds; `strong_bar` is where the tune half's first hits were right ≥ 95%
of the time (docs/search.md).

Edge cases, all continuous rather than special-cased:

* Few images (a page with 3): their median and spread say little, so they are blended with a prior
  measured on the tune half, weighted as `prior_weight` images. The best score is left out of its
  own background, so with one image the prior alone decides (a fixed bar: s ≥ 0.47 with the shipped
  settings); with 2–4 it nearly does; with hundreds the collection's own figures dominate.
* All scores equal: the spread is 0; `min_scale` keeps the standing finite.
* A collection crowded with near-copies of the query (many beach dogs among a few others): the
  background's spread is wide, so even a near-perfect hit stands out little. A best cosine of
  `sure_similarity` or more is an answer, and a strong one, whatever the background.
* A collection that is mostly one subject (all cats): "cat" scores high against everything, so the
  best cannot stand out. `max_location` caps the location at the highest median any tune query had,
  so such a query is still judged against what a varied collection would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from capsearch.config import SearchSettings

Label = Literal["strong", "possible"]
# Turns a median absolute deviation into a standard deviation for normal data.
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Background:
    location: float
    scale: float
    size: int  # how many scores it was measured on

    @classmethod
    def of(cls, scores: npt.ArrayLike, settings: SearchSettings) -> Background:
        values = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
        # The best is what is being judged, not its background: in a handful of images it alone
        # would widen the spread (among thousands, dropping one score changes nothing).
        values = values[:-1]
        n = len(values)
        if n:
            median = float(np.median(values))
            spread = MAD_TO_SD * float(np.median(np.abs(values - median)))
        else:
            median, spread = settings.prior_location, settings.prior_scale
        w = n / (n + settings.prior_weight)
        location = w * median + (1 - w) * settings.prior_location
        scale = math.sqrt(w * spread**2 + (1 - w) * settings.prior_scale**2)
        return cls(min(location, settings.max_location), max(scale, settings.min_scale), n)

    def standing(self, similarity: float) -> float:
        return (similarity - self.location) / self.scale


@dataclass(frozen=True)
class Judge:
    """The decision for one query: built once from its background, then asked about each hit."""

    background: Background
    settings: SearchSettings

    def adjusted(self, similarity: float) -> float:
        return similarity + self.settings.standing_weight * self.background.standing(similarity)

    def accepts(self, similarity: float) -> bool:
        """Whether a best hit this similar means the collection holds what was asked for."""
        sure = similarity >= self.settings.sure_similarity
        return sure or self.adjusted(similarity) >= self.settings.accept_bar

    def label(self, similarity: float) -> Label:
        sure = similarity >= self.settings.sure_similarity
        return "strong" if sure or self.adjusted(similarity) >= self.settings.strong_bar else "possible"
