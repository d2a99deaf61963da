"""Text search: embed the query, take the nearest captions from the index, judge, cut.

Hits are ranked by cosine similarity alone. A keyword lift (cosine plus a bonus for the query's
words found in the caption) was measured on the labelled set and dropped: it never fixed a wrong
first hit there, turned a right one wrong ("walking trail in the woods" went to the mountain biker
"on a dirt trail in the woods"), and lifted captions that merely share a word with a query nothing
matches (docs/search.md). The share of keywords found is still reported with each hit.

The best hit is then judged (services/relevance.py) against the query's background — its cosines
with the collection. If it stands out enough, every hit scoring at least best × `relative_cutoff`
is shown, each labelled "strong" or "possible" by its own score (a broad query, "birds", gets the
parrot and the ducks too, marked as less sure). If not, only hits whose caption holds every keyword
of the query are shown — MiniLM scores a lone word low against a whole caption ("beach" 0.45
against "a dog running on the beach", below what some queries nothing matches reach), yet a caption
with the very word answers it — and without such a caption the answer is "no match" (`no_match:
true`, no hits) rather than the least bad image.

`SearchOptions` (services/search_options.py) wrap this: an upload-date range narrows the candidates
before the index is asked (so the nearest are the nearest within the range), and newest-first orders
the hits that passed the relevance decision above, after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Priority
from capsearch.config import SearchSettings
from capsearch.db.models import Image
from capsearch.errors import CapsearchError
from capsearch.services.indexing import SearchIndexer
from capsearch.services.relevance import Background, Judge, Label
from capsearch.services.search_options import RELEVANCE, SearchOptions, ids_in_range, newest_first

_WORD = re.compile(r"[a-z0-9]+")
_SPACES = re.compile(r"\s+")
STOP_WORDS = frozenset(
    "a an the and or but of on in at to for from with by over under near into onto is are was were be "  # noqa: SIM905
    "been it its this that these those there some any very".split()
)
MIN_POOL = 50


class QueryError(CapsearchError):
    """Codes: empty_query, query_too_long (422)."""

    status_code = 422


@dataclass(frozen=True)
class Hit:
    image: Image
    score: float  # what results are ranked by: the cosine similarity
    similarity: float  # cosine similarity of the vectors
    keyword_match: float  # share of the query's keywords found in the caption (not used to rank)
    label: Label  # "strong" or "possible" (services/relevance.py)


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[Hit]
    options: SearchOptions = RELEVANCE
    in_range: int | None = None  # images uploaded within the options' date range (None: no range)

    @property
    def no_match(self) -> bool:
        return not self.hits


def clean_query(raw: str, max_chars: int) -> str:
    query = _SPACES.sub(" ", raw).strip()
    if not query:
        raise QueryError("Type a few words to search for.", code="empty_query")
    if len(query) > max_chars:
        raise QueryError(
            f"The query is {len(query)} characters long; at most {max_chars} are allowed.",
            code="query_too_long",
        )
    return query


def _forms(word: str) -> set[str]:
    forms = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
    return forms


def keywords(text: str) -> list[str]:
    return [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in STOP_WORDS]


def keyword_match(terms: Sequence[str], caption: str) -> float:
    """Share of `terms` that occur as whole words (plurals folded) in `caption`."""
    if not terms:
        return 0.0
    words: set[str] = set()
    for w in _WORD.findall(caption.lower()):
        words |= _forms(w)
    return sum(1 for t in terms if _forms(t) & words) / len(terms)


def rank(
    query: str,
    candidates: Iterable[tuple[Image, float]],
    settings: SearchSettings,
    k: int,
    background: Sequence[float] | np.ndarray | None = None,
) -> list[Hit]:
    """Order (best first), judge, cut and trim `candidates` (image, cosine similarity).

    `background`: the query's cosines with the collection (or an even spread of it); without it,
    the candidates' own cosines stand in — the top of the collection, which makes the best stand
    out less, so fewer queries are answered."""
    # Ties (the same caption twice) go to the newer image, as in the collection.
    pairs = sorted(candidates, key=lambda p: (p[1], p[0].id), reverse=True)
    if not pairs:
        return []
    judge = Judge(
        Background.of([sim for _, sim in pairs] if background is None else background, settings), settings
    )
    terms = keywords(query)
    cut = pairs[0][1] * settings.relative_cutoff
    shown = [(image, sim) for image, sim in pairs if sim >= cut]
    matches = [keyword_match(terms, image.effective_caption or "") for image, _ in shown]
    hits = [Hit(image, sim, sim, m, judge.label(sim)) for (image, sim), m in zip(shown, matches, strict=True)]
    if not judge.accepts(pairs[0][1]):
        # Answered by the words alone: only the captions that hold them all.
        hits = [h for h in hits if h.keyword_match == 1.0]
    return hits[:k]


class SearchService:
    def __init__(
        self, *, settings: SearchSettings, sessions: async_sessionmaker[AsyncSession], indexer: SearchIndexer
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.indexer = indexer

    def clamp_k(self, k: int | None) -> int:
        return max(1, min(k or self.settings.default_k, self.settings.max_k))

    async def search(
        self, raw_query: str, k: int | None = None, options: SearchOptions = RELEVANCE
    ) -> SearchResult:
        """Hits for a query, in the options' order and date range; raises QueryError (422) or
        BusyError (503)."""
        query = clean_query(raw_query, self.settings.max_query_chars)
        k = self.clamp_k(k)
        within = await ids_in_range(self.sessions, options) if options.filtered else None
        in_range = None if within is None else len(within)
        if in_range == 0:
            return SearchResult(query, [], options, in_range)
        vector = await self.indexer.embedder.run(query, Priority.INTERACTIVE)
        nearest = await self.indexer.nearest(vector, max(4 * k, MIN_POOL), within)
        if not nearest:
            return SearchResult(query, [], options, in_range)
        background = await self.indexer.background(vector)
        async with self.sessions() as s:
            rows = (await s.execute(select(Image).where(Image.id.in_([i for i, _ in nearest])))).scalars()
            by_id = {image.id: image for image in rows}
        # An id can be gone by now (deleted after the index answered): it is skipped, never shown.
        candidates = [(by_id[i], sim) for i, sim in nearest if i in by_id]
        if options.sort == "relevance":
            hits = rank(query, candidates, self.settings, k, background)
            return SearchResult(query, hits, options, in_range)
        # Newest first: every candidate that passes the relevance decision, then the k newest of them.
        hits = rank(query, candidates, self.settings, len(candidates), background)
        return SearchResult(query, newest_first(hits)[:k], options, in_range)
