"""How well search ranks and refuses, on the labelled set (bench/search_set.json, docs/search.md).

The set: photo captions in BLIP's style, queries written as a person would search for one of them
(`match`: the captions that count as right), and queries nothing in it matches (`match` empty), each
in the tune or the held-out half. Captions and queries are embedded with the app's own MiniLM, the
captions go into the app's exact index, and each method answers every query with a list of caption
ids (empty: "no match"). Figures, per half:

* recall@5: share of matchable queries with a right caption among the first 5 answers;
* MRR: mean of 1 / rank of the first right answer (0 when none is answered);
* refused: share of no-match queries answered "no match";
* false refusals: matchable queries answered "no match" (counted as misses in recall and MRR).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import numpy as np

from capsearch.config import SearchSettings
from capsearch.db.models import Image
from capsearch.search.index import VectorIndex
from capsearch.services.relevance import Background, Judge
from capsearch.services.search import MIN_POOL, keyword_match, keywords, rank

Half = Literal["tune", "held_out"]
# The rule the service had before issue 13, kept here as a baseline.
OLD_BOOST, OLD_FLOOR = 0.15, 0.35


@dataclass(frozen=True)
class Query:
    text: str
    match: frozenset[str]  # caption ids that count as a right answer; empty: nothing matches
    half: Half


@dataclass(frozen=True)
class LabelledSet:
    captions: list[tuple[str, str]]  # (id, text)
    queries: list[Query]

    def picked(self, half: Half | None) -> list[int]:
        return [i for i, q in enumerate(self.queries) if half is None or q.half == half]


def load_set() -> LabelledSet:
    raw = json.loads(resources.files("capsearch.bench").joinpath("search_set.json").read_text("utf-8"))
    captions = [(c["id"], c["text"]) for c in raw["captions"]]
    queries = [Query(q["q"], frozenset(q["match"]), q["half"]) for q in raw["queries"]]
    return LabelledSet(captions, queries)


def embed_set(data: LabelledSet, embedder: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(caption vectors, query vectors) from the app's embedder (built and loaded if not given)."""
    if embedder is None:
        from capsearch.config import Settings
        from capsearch.ml.factory import build_embedder

        embedder = build_embedder(Settings(_env_file=None))
        embedder.load()

    def vectors(texts: list[str]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), 64):
            rows += embedder.predict(texts[start : start + 64])
        return np.stack(rows).astype(np.float32)

    return vectors([t for _, t in data.captions]), vectors([q.text for q in data.queries])


Answer = list[int]  # caption positions, best first; empty = "no match"


@dataclass
class Bench:
    """The set in an exact index, answering queries the way the service does."""

    data: LabelledSet
    captions: np.ndarray
    queries: np.ndarray
    settings: SearchSettings = field(default_factory=SearchSettings)
    index: VectorIndex = field(init=False)
    images: list[Image] = field(init=False)

    def __post_init__(self) -> None:
        self.index = VectorIndex(self.captions.shape[1], threshold=10**9)
        self.index.upsert(np.arange(len(self.captions)), self.captions)
        self.images = [Image(id=i, caption=text) for i, (_, text) in enumerate(self.data.captions)]

    def nearest(self, qi: int, k: int | None = None) -> list[tuple[int, float]]:
        k = k or self.settings.default_k
        return self.index.search(self.queries[qi], max(4 * k, MIN_POOL))

    def background(self, qi: int) -> np.ndarray:
        return self.index.background(self.queries[qi], self.settings.background_sample)

    def right(self, qi: int, position: int) -> bool:
        return self.data.captions[position][0] in self.data.queries[qi].match

    # ---- methods: query index -> answer ------------------------------------------------------

    def cosine(self, qi: int, floor: float | None = None) -> Answer:
        pairs = self.nearest(qi)
        if floor is not None and (not pairs or pairs[0][1] < floor):
            return []
        return [i for i, _ in pairs][: self.settings.default_k]

    def lifted(self, qi: int, boost: float) -> list[tuple[float, int, float]]:
        """(cosine + boost · keyword share · (1 − cosine), position, keyword share), best first."""
        terms = keywords(self.data.queries[qi].text)
        shares = [(i, s, keyword_match(terms, self.data.captions[i][1])) for i, s in self.nearest(qi)]
        return sorted(((s + boost * m * (1 - s), i, m) for i, s, m in shares), reverse=True)

    def old_hybrid(self, qi: int) -> Answer:
        """Before issue 13: ordered by the lifted score, flat floor 0.35 on it, relative cut-off."""
        scored = self.lifted(qi, OLD_BOOST)
        if not scored or scored[0][0] < OLD_FLOOR:
            return []
        cut = max(OLD_FLOOR, scored[0][0] * self.settings.relative_cutoff)
        return [i for s, i, _ in scored if s >= cut][: self.settings.default_k]

    def service(self, qi: int, settings: SearchSettings | None = None) -> Answer:
        """The shipped rule: services.search.rank over the index's answer and background."""
        settings = settings or self.settings
        candidates = [(self.images[i], s) for i, s in self.nearest(qi)]
        hits = rank(self.data.queries[qi].text, candidates, settings, settings.default_k, self.background(qi))
        return [h.image.id for h in hits]

    def service_with_lift(self, qi: int, boost: float = OLD_BOOST) -> Answer:
        """rank()'s rule with the old keyword lift put back: ordered, cut and judged by the lifted score."""
        judge = Judge(Background.of(self.background(qi), self.settings), self.settings)
        scored = self.lifted(qi, boost)
        cut = scored[0][0] * self.settings.relative_cutoff if scored else 0.0
        kept = [(s, i, m) for s, i, m in scored if s >= cut]
        if scored and not judge.accepts(scored[0][0]):
            kept = [(s, i, m) for s, i, m in kept if m == 1.0]
        return [i for _, i, _ in kept][: self.settings.default_k]


@dataclass(frozen=True)
class Figures:
    queries: int
    recall_at_5: float
    mrr: float
    refused: float  # share of no-match queries refused
    no_match_queries: int
    false_refusals: int

    def row(self, name: str) -> dict[str, Any]:
        return {
            "method": name,
            "recall@5": f"{self.recall_at_5:.3f}",
            "MRR": f"{self.mrr:.3f}",
            "no-match refused": f"{self.refused:.0%} ({round(self.refused * self.no_match_queries)}/"
            f"{self.no_match_queries})",
            "true matches refused": self.false_refusals,
        }


def score(bench: Bench, method: Callable[[int], Answer], picked: Sequence[int]) -> Figures:
    reciprocal, found, refused, false_refusals = [], [], [], 0
    for qi in picked:
        answer = method(qi)
        if not bench.data.queries[qi].match:
            refused.append(not answer)
            continue
        false_refusals += not answer
        ranks = [r for r, i in enumerate(answer, 1) if bench.right(qi, i)]
        reciprocal.append(1 / ranks[0] if ranks else 0.0)
        found.append(bool(ranks) and ranks[0] <= 5)
    return Figures(
        len(reciprocal), float(np.mean(found)), float(np.mean(reciprocal)), float(np.mean(refused)),
        len(refused), false_refusals,
    )  # fmt: skip


def methods(bench: Bench, fitted_floor: float) -> dict[str, Callable[[int], Answer]]:
    return {
        "plain cosine, no refusal": bench.cosine,
        f"plain cosine, flat floor {OLD_FLOOR}": lambda qi: bench.cosine(qi, OLD_FLOOR),
        f"plain cosine, flat floor {fitted_floor:.2f} (fitted on tune)": lambda qi: bench.cosine(
            qi, fitted_floor
        ),
        "old hybrid (keyword lift, floor 0.35)": bench.old_hybrid,
        "shipped: cosine + adaptive no-match": bench.service,
        "adaptive no-match + old keyword lift": bench.service_with_lift,
    }


def first_hit_flips(bench: Bench, method: Callable[[int], Answer]) -> list[str]:
    """Matchable queries whose first plain-cosine answer is right but whose first `method` answer
    (when it answers) is wrong: what a keyword lift must never do."""
    flips = []
    for qi in bench.data.picked(None):
        if not bench.data.queries[qi].match:
            continue
        plain, other = bench.cosine(qi), method(qi)
        if plain and other and bench.right(qi, plain[0]) and not bench.right(qi, other[0]):
            flips.append(bench.data.queries[qi].text)
    return flips


def format_fit(fitted: dict[str, float], shipped: SearchSettings) -> list[dict[str, Any]]:
    return [
        {"setting": name, "fitted on tune": f"{value:.3f}", "shipped": getattr(shipped, name, "(comparison)")}
        for name, value in fitted.items()
    ]
