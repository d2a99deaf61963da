"""A query's background: its cosine with an even spread of the stored vectors, for the no-match decision.

A search asks "does the best caption stand out from what this query scores against the collection?"
(`services/relevance.py`). Scoring every vector would cost a second full scan, so the background is
the query against at most `m` of them: all of them when there are no more, otherwise every
(n/m)-th vector in storage order. Storage order is roughly upload order, so the spread covers the
collection's history evenly rather than one burst of similar photos.

* exact (flat) index: the rows are read in place under the index's lock, each query — ~0.1 ms for
  512 rows, and always current (an edited caption counts at once).
* IVF: the stored float16 codes are spread over the inverted lists, and collecting them costs a few
  ms, so the spread is kept and taken again only when its size moves by more than 1% (a rebuild
  starts a new sampler). A collection that large barely changes its background with a few edits.
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

faiss: Any = _faiss

Vectors = npt.NDArray[np.float32]
REFRESH_SHARE = 0.01


def spread(n: int, m: int) -> npt.NDArray[np.int64]:
    """Positions 0..n-1 (all of them when n ≤ m), else m of them evenly spaced."""
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


def _flat_rows(index: Any, dim: int, m: int) -> Vectors:
    flat = faiss.downcast_index(index.index)
    n = int(index.ntotal)
    # A view of FAISS's own buffer: valid only while the caller holds the index's lock.
    rows: Vectors = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    return rows if n <= m else rows[spread(n, m)]


def _ivf_rows(index: Any, dim: int, m: int) -> Vectors:
    invlists = index.invlists
    sizes = np.array([invlists.list_size(i) for i in range(index.nlist)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picks = spread(int(starts[-1]), m)
    lists = np.searchsorted(starts, picks, side="right") - 1
    out = np.empty((len(picks), dim), np.float32)
    for list_no in np.unique(lists):
        size = int(sizes[list_no])
        codes = faiss.rev_swig_ptr(invlists.get_codes(int(list_no)), size * index.code_size)
        table = np.frombuffer(codes, dtype="<f2").reshape(size, dim)
        chosen = lists == list_no
        out[chosen] = table[picks[chosen] - starts[list_no]]
    return out


class BackgroundSampler:
    """Scores a query against the spread of one index's vectors. Call under that index's lock."""

    def __init__(self) -> None:
        self._cached: tuple[int, Vectors] | None = None  # (the IVF index's size then, its spread)

    def scores(self, index: Any, dim: int, query: Vectors, m: int) -> npt.NDArray[np.float32]:
        n = int(index.ntotal)
        if not n or m < 1:
            return np.empty(0, np.float32)
        rows = self._ivf(index, dim, m, n) if isinstance(index, faiss.IndexIVF) else _flat_rows(index, dim, m)
        scores: npt.NDArray[np.float32] = (rows @ query.reshape(dim)).astype(np.float32, copy=False)
        return scores

    def _ivf(self, index: Any, dim: int, m: int, n: int) -> Vectors:
        cached = self._cached
        if cached is None or abs(n - cached[0]) > REFRESH_SHARE * cached[0] or len(cached[1]) != min(n, m):
            cached = self._cached = (n, _ivf_rows(index, dim, m))
        return cached[1]
