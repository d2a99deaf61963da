"""Text search: embed the query, take the nearest captions from the index, re-rank, cut.

Hybrid score of a candidate (s = cosine similarity of query and caption vectors, in [-1, 1]; m = the
share of the query's keywords found as words in the caption, in [0, 1]; b = `keyword_boost`):

    score = s + b · m · (1 − s)

An exact keyword match closes a share b·m of the gap to a perfect score, so it lifts a hit without
ever pushing a score past 1 — the page draws scores as bars. Then:

* a hit scoring below best × `relative_cutoff` is dropped (far below the best is noise), and
* if the best scores below `floor`, the answer is "no match" (`no_match: true`, no hits) rather
  than the least bad image.

Keywords are the query's words minus common stop words; plurals are folded naively ("dogs" matches
"dog", "beaches" matches "beach"). Only the index's nearest `k·4` (at least 50) candidates are
re-ranked: keywords lift semantic hits, they do not retrieve captions the vectors missed.

`SearchOptions` (services/search_options.py) wrap this: an upload-date range narrows the candidates
before the index is asked (so the nearest are the nearest within the range), and newest-first orders
the hits that passed the relevance decision above, after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Priority
from capsearch.config import SearchSettings
from capsearch.db.models import Image
from capsearch.errors import CapsearchError
from capsearch.services.indexing import SearchIndexer
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
    score: float  # hybrid score, what results are ranked by
    similarity: float  # cosine similarity of the vectors alone
    keyword_match: float  # share of the query's keywords found in the caption


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


def hybrid_score(similarity: float, match: float, boost: float) -> float:
    return similarity + boost * match * (1.0 - similarity)


def rank(
    query: str,
    candidates: Iterable[tuple[Image, float]],
    settings: SearchSettings,
    k: int,
) -> list[Hit]:
    """Score, order (best first), cut and trim `candidates` (image, cosine similarity)."""
    terms = keywords(query)
    hits = []
    for image, similarity in candidates:
        match = keyword_match(terms, image.effective_caption or "")
        hits.append(Hit(image, hybrid_score(similarity, match, settings.keyword_boost), similarity, match))
    # Ties (the same caption twice) go to the newer image, as in the collection.
    hits.sort(key=lambda h: (h.score, h.image.id), reverse=True)
    if not hits or hits[0].score < settings.floor:
        return []
    cut = max(settings.floor, hits[0].score * settings.relative_cutoff)
    return [h for h in hits if h.score >= cut][:k]


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
        async with self.sessions() as s:
            rows = (await s.execute(select(Image).where(Image.id.in_([i for i, _ in nearest])))).scalars()
            by_id = {image.id: image for image in rows}
        # An id can be gone by now (deleted after the index answered): it is skipped, never shown.
        candidates = [(by_id[i], sim) for i, sim in nearest if i in by_id]
        if options.sort == "relevance":
            return SearchResult(query, rank(query, candidates, self.settings, k), options, in_range)
        # Newest first: every candidate that passes the relevance decision, then the k newest of them.
        hits = rank(query, candidates, self.settings, len(candidates))
        return SearchResult(query, newest_first(hits)[:k], options, in_range)
