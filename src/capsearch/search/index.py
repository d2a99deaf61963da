"""A FAISS index of caption vectors keyed by image id: exact while small, IVF above a threshold.

Vectors are L2-normalised, so inner product = cosine similarity, for both kinds.

* exact: `IndexIDMap2(IndexFlatIP)`, a scan of every vector. Up to ~100k vectors it is fast enough
  and needs no training.
* approximate: IVF (inner product) over vectors stored as float16 (`IndexIVFScalarQuantizer`,
  QT_fp16, not by residual), with the ids in its lists and a hash-table direct map, so single ids are
  replaced and removed in place — deletions need no tombstones. A query scans the ~1/32 of the lists
  nearest to it; float16 halves the bytes scanned (a query is memory-bound) and moves a score by
  ~1e-3 at most, which changed no top-10 in the benchmark. HNSW was measured and rejected: building
  it on this 2-core CPU takes ~8 min per million vectors (IVF: well under a minute), and it cannot
  remove ids (docs/benchmarks.md).

Everything here is blocking and thread-safe; the async side (`services/indexing.py`) calls it through
`asyncio.to_thread`. A rebuild trains and fills the new index without holding the lock, recording the
writes that arrive meanwhile and replaying them before the swap, so searches and writes continue.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Literal

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from capsearch.search.background import BackgroundSampler
from capsearch.search.probing import TRAIN_POINTS_PER_LIST, ivf_lists, search_params

# FAISS ships partial type stubs (no DirectMap, no SearchParametersIVF(nprobe=)): treat it as untyped.
faiss: Any = _faiss

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
IndexKind = Literal["exact", "ivf"]

# One query is memory-bound: OpenMP threads gain little and, with several searches (or uploads)
# running at once, they spin on cores that are already busy (measured 5× slower under load).
SEARCH_THREADS = 1
BUILD_THREADS = os.cpu_count() or 1
# An IVF index trained on n vectors is retrained once it holds this many times more: its lists,
# placed for the old data, become unbalanced and slow.
RETRAIN_GROWTH = 4


def checksum(ids: Ids, vectors: Vectors) -> str:
    """Content hash over ids and vectors, both in ascending id order; equal sets give equal sums.

    Vectors are hashed as the approximate index stores them (FAISS's own float16 encoding, which
    rounds a few values differently from numpy's), so an index and the float32 rows it was built
    from hash the same whichever kind it is."""
    order = np.argsort(ids, kind="stable")
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(ids[order], dtype="<i8").tobytes())
    fp16 = faiss.ScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16)
    # In slices: no second full copy of a million vectors just to hash them.
    for start in range(0, len(order), 65536):
        rows = np.ascontiguousarray(vectors[order[start : start + 65536]], dtype=np.float32)
        h.update(fp16.compute_codes(rows).tobytes())
    return h.hexdigest()


def _as_arrays(ids: Any, vectors: Any, dim: int) -> tuple[Ids, Vectors]:
    ids_arr = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    vec_arr = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    if len(ids_arr) != len(vec_arr):
        raise ValueError(f"{len(ids_arr)} ids for {len(vec_arr)} vectors")
    return ids_arr, vec_arr


def _exact(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _ivf(dim: int, ids: Ids, vectors: Vectors) -> Any:
    nlist = ivf_lists(len(ids))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    # Codes are the vectors themselves (not residuals to a centroid): exporting them needs no decoding.
    index.by_residual = False
    sample = nlist * TRAIN_POINTS_PER_LIST
    # Only tiny collections (a test's threshold) have fewer; FAISS would warn on stderr about them.
    index.cp.min_points_per_centroid = min(TRAIN_POINTS_PER_LIST, len(ids) // nlist)
    rng = np.random.default_rng(0)  # reproducible builds: same data, same lists
    index.train(vectors[rng.choice(len(ids), sample, replace=False)] if sample < len(ids) else vectors)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def _kind_of(index: Any) -> IndexKind:
    return "ivf" if isinstance(index, faiss.IndexIVF) else "exact"


def build(dim: int, kind: IndexKind, ids: Ids, vectors: Vectors) -> Any:
    """A new index of `kind` holding exactly these vectors. Blocking; minutes at millions (IVF)."""
    faiss.omp_set_num_threads(BUILD_THREADS)
    index = _ivf(dim, ids, vectors) if kind == "ivf" and len(ids) else _exact(dim)
    for start in range(0, len(ids), 65536):
        index.add_with_ids(vectors[start : start + 65536], ids[start : start + 65536])
    return index


def export(index: Any, dim: int) -> tuple[Ids, Vectors]:
    """Every (id, vector) in the index, in no particular order."""
    if isinstance(index, faiss.IndexIVF):
        invlists = index.invlists
        id_parts, vec_parts = [], []
        for list_no in range(index.nlist):
            size = invlists.list_size(list_no)
            if not size:
                continue
            id_parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * index.code_size)
            vec_parts.append(np.frombuffer(codes.copy(), dtype="<f2").reshape(size, dim).astype(np.float32))
        if not id_parts:
            return np.empty(0, np.int64), np.empty((0, dim), np.float32)
        return np.concatenate(id_parts).astype(np.int64), np.concatenate(vec_parts)
    flat = faiss.downcast_index(index.index)
    n = index.ntotal
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), n * dim).copy().reshape(n, dim) if n else None
    return ids, vectors if vectors is not None else np.empty((0, dim), np.float32)


_Op = tuple[Literal["upsert", "remove"], Ids, Vectors | None]


class VectorIndex:
    def __init__(self, dim: int, *, threshold: int, nprobe: int = 0, index: Any = None) -> None:
        self.dim = dim
        self.threshold = threshold
        self.nprobe = nprobe
        self._index: Any = index if index is not None else _exact(dim)
        self._trained_size = self._index.ntotal
        self._lock = threading.Lock()
        # Writes made while a rebuild runs; replayed on the new index before it replaces this one.
        self._journal: list[_Op] | None = None
        self._background = BackgroundSampler()

    @property
    def kind(self) -> IndexKind:
        return _kind_of(self._index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def wanted_kind(self) -> IndexKind:
        """Exact up to the threshold; IVF above it, with hysteresis so a size near it never flaps."""
        n = len(self)
        if self.kind == "ivf":
            return "ivf" if n >= self.threshold // 2 else "exact"
        return "ivf" if n > self.threshold else "exact"

    def needs_rebuild(self) -> bool:
        grown = self.kind == "ivf" and len(self) > RETRAIN_GROWTH * max(self._trained_size, 1)
        return grown or self.wanted_kind() != self.kind

    # ---- writes -------------------------------------------------------------------------------

    def upsert(self, ids: Any, vectors: Any) -> None:
        """Add vectors, replacing any already stored under the same ids."""
        ids_arr, vec_arr = _as_arrays(ids, vectors, self.dim)
        with self._lock:
            self._apply(self._index, ("upsert", ids_arr, vec_arr))
            if self._journal is not None:
                self._journal.append(("upsert", ids_arr, vec_arr))

    def remove(self, ids: Any) -> int:
        ids_arr = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            removed = self._apply(self._index, ("remove", ids_arr, None))
            if self._journal is not None:
                self._journal.append(("remove", ids_arr, None))
        return removed

    @staticmethod
    def _apply(index: Any, op: _Op) -> int:
        kind, ids, vectors = op
        ivf = isinstance(index, faiss.IndexIVF)
        removed = 0
        # The flat index's remove_ids costs a scan plus a rebuild of its id map (~9 ms at 100k, with
        # searches waiting): skip it for ids it does not hold, the usual case of a new caption.
        if ivf or any(VectorIndex._holds(index, int(i)) for i in ids):
            # IVF's hash-table direct map accepts only an array selector; a batch (hash set) selector
            # keeps a large removal from the flat index linear instead of quadratic.
            selector = (faiss.IDSelectorArray if ivf or len(ids) < 16 else faiss.IDSelectorBatch)(
                len(ids), faiss.swig_ptr(ids)
            )
            removed = int(index.remove_ids(selector))
        if kind == "upsert":
            index.add_with_ids(vectors, ids)
        return removed

    @staticmethod
    def _holds(index: Any, image_id: int) -> bool:
        try:
            index.reconstruct(image_id)  # IndexIDMap2 looks the id up in its hash map
        except RuntimeError:
            return False
        return True

    def begin_rebuild(self) -> None:
        """Start recording writes; read the source of the rebuild only after this returns, so a
        write racing with the read lands in the record too (replaying it is idempotent)."""
        with self._lock:
            if self._journal is not None:
                raise RuntimeError("a rebuild is already running")
            self._journal = []

    def abort_rebuild(self) -> None:
        with self._lock:
            self._journal = None

    def finish_rebuild(self, ids: Any, vectors: Any, kind: IndexKind | None = None) -> None:
        """Build a fresh index of `kind` (default: what the size calls for) from these vectors without
        holding the lock — searches and writes go on — then replay the recorded writes and swap."""
        try:
            ids_arr, vec_arr = _as_arrays(ids, vectors, self.dim)
            fresh = build(self.dim, kind or self._kind_for(len(ids_arr)), ids_arr, vec_arr)
        except BaseException:
            self.abort_rebuild()
            raise
        with self._lock:
            for op in self._journal or []:
                self._apply(fresh, op)
            self._index, self._journal, self._background = fresh, None, BackgroundSampler()
            self._trained_size = len(ids_arr)

    def rebuild(self, kind: IndexKind | None = None) -> None:
        """Rebuild from this index's own vectors (e.g. to switch kind as the collection grows)."""
        self.begin_rebuild()
        try:
            ids, vectors = self.snapshot()
        except BaseException:
            self.abort_rebuild()
            raise
        self.finish_rebuild(ids, vectors, kind)

    def _kind_for(self, n: int) -> IndexKind:
        return "ivf" if n > self.threshold else "exact"

    # ---- reads --------------------------------------------------------------------------------

    def search(self, vector: Any, k: int, within: Ids | None = None) -> list[tuple[int, float]]:
        """The k nearest (id, cosine) pairs, best first; only among the ids `within`, when given."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        faiss.omp_set_num_threads(SEARCH_THREADS)
        with self._lock:
            index = self._index
            if not index.ntotal:
                return []
            scores, ids = index.search(query, k, params=search_params(index, self.nprobe, within))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def background(self, vector: Any, m: int) -> npt.NDArray[np.float32]:
        """Cosines of `vector` with an even spread of at most m stored vectors (search/background.py)."""
        with self._lock:
            return self._background.scores(self._index, self.dim, np.asarray(vector, np.float32), m)

    def snapshot(self) -> tuple[Ids, Vectors]:
        with self._lock:
            return export(self._index, self.dim)

    def ids(self) -> set[int]:
        return {int(i) for i in self.snapshot()[0]}

    def clone(self) -> Any:
        """A copy of the FAISS index (for saving without holding the lock while writing)."""
        with self._lock:
            return faiss.clone_index(self._index)
