"""How much of an index one query looks at: the IVF index's lists and how many a query scans, and
the selector that keeps a filtered search (SearchOptions' upload-date range) to the ids it may find.

A filtered search passes FAISS the allowed ids as an `IDSelectorBatch` (a hash set) in the query's
search parameters, so the index itself skips every other vector and the k nearest are the k nearest
*within* the range — never a top-k cut first and a filter after, which would lose the three images a
narrow range holds among a million. `IndexIDMap2` translates the selector to the flat index's own
positions, so it is given image ids, like IVF, whose lists hold the ids themselves (checked on
FAISS 1.15: tests/test_search_index.py).
"""

from __future__ import annotations

import math
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

faiss: Any = _faiss  # partial type stubs (no SearchParametersIVF(nprobe=)): treat it as untyped

# Training on 32 points per list is plenty for well-spread centroids and keeps a 1M build short.
TRAIN_POINTS_PER_LIST = 32
MIN_SCANNED = 32_768


def ivf_lists(n: int) -> int:
    """Lists for n vectors: ~2·√n as a power of two (2048 at a million: 4096 scanned no fewer bytes
    for the same recall and doubled the build), but never so many that a list would get fewer than
    TRAIN_POINTS_PER_LIST training points."""
    wanted: int = 2 ** round(math.log2(2 * math.sqrt(max(n, 1))))
    trainable: int = 2 ** int(math.log2(max(n // TRAIN_POINTS_PER_LIST, 1)))
    return max(1, min(wanted, trainable))


def auto_nprobe(nlist: int, n: int) -> int:
    """Lists scanned per query: 1/32 of them, but at least ~MIN_SCANNED vectors' worth. At a million
    vectors 1/32 measured ≥ 0.95 recall@10; smaller collections need a larger share for the same
    recall, and scanning 32k float16 vectors costs only ~2 ms (docs/benchmarks.md)."""
    share = max(1 / 32, MIN_SCANNED / max(n, 1))
    return max(1, min(nlist, math.ceil(nlist * share)))


def search_params(index: Any, nprobe: int, within: npt.NDArray[np.int64] | None) -> Any:
    """FAISS search parameters for `index` (None: its defaults). `nprobe` 0 picks it by size.

    With `within`, an IVF query scans more lists, in proportion to how much of the index the range
    leaves out, so it still compares as many allowed vectors as an unfiltered query compares in all;
    a range holding a small share of the collection scans every list, which makes it exact."""
    sel = faiss.IDSelectorBatch(len(within), faiss.swig_ptr(within)) if within is not None else None
    if not isinstance(index, faiss.IndexIVF):
        return faiss.SearchParameters(sel=sel) if sel is not None else None
    probes = nprobe or auto_nprobe(index.nlist, index.ntotal)
    if sel is None:
        return faiss.SearchParametersIVF(nprobe=probes)
    assert within is not None
    probes = math.ceil(probes * index.ntotal / max(len(within), 1))
    return faiss.SearchParametersIVF(nprobe=min(index.nlist, probes), sel=sel)
