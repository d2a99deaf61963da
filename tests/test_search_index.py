"""The FAISS index, its files, the ranking rules and the MiniLM embedder, without the app."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from capsearch.config import Settings
from capsearch.ml.base import Embedder
from capsearch.ml.factory import build_embedder
from capsearch.ml.registry import packaged_weights, spec_for
from capsearch.search import persist
from capsearch.search.index import VectorIndex, checksum
from capsearch.search.probing import auto_nprobe, ivf_lists
from capsearch.services.search import QueryError, clean_query, keyword_match, keywords

DIM = 32


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled(n: int, threshold: int = 1000) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    index = VectorIndex(DIM, threshold=threshold)
    ids, vectors = np.arange(100, 100 + n), unit_vectors(n)
    index.upsert(ids, vectors)
    return index, ids, vectors


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_search_upsert_remove(kind: str) -> None:
    index, ids, vectors = filled(2000)
    index.rebuild(kind)  # type: ignore[arg-type]
    assert index.kind == kind and len(index) == 2000
    hits = index.search(vectors[7], 5)
    assert hits[0][0] == ids[7] and hits[0][1] == pytest.approx(1.0, abs=2e-3)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    # Replacing an id moves it; it is never there twice.
    index.upsert([ids[7]], vectors[8:9])
    assert len(index) == 2000
    assert {i for i, _ in index.search(vectors[8], 2)} == {ids[7], ids[8]}
    assert index.search(vectors[7], 1)[0][0] != ids[7]
    assert index.remove([ids[8], 99_999]) == 1
    assert ids[8] not in index.ids() and len(index) == 1999


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_a_search_within_ids_finds_them_however_far_they_are(kind: str) -> None:
    index, ids, vectors = filled(20_000, threshold=1000)
    index.rebuild(kind)  # type: ignore[arg-type]
    index.nprobe = 4  # of 256 lists (IVF): as small a share as a million vectors get
    query = vectors[0]
    # The three least similar vectors: far outside any unfiltered top-k, and (IVF) in lists that
    # an unfiltered query does not scan.
    far = ids[np.argsort(vectors @ query)[:3]]
    assert not set(far) & {i for i, _ in index.search(query, 200)}
    within = np.concatenate([far, [5, 6]]).astype(np.int64)  # ids the index does not hold are ignored
    hits = index.search(query, 10, within)
    assert sorted(i for i, _ in hits) == sorted(far)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    # A wide range searches within it too: every hit is in it, the best of it first.
    half = ids[::2].astype(np.int64)
    wide = index.search(query, 5, half)
    assert wide[0][0] == ids[0] and all(i in set(half) for i, _ in wide)
    assert index.search(query, 5, np.empty(0, np.int64)) == []


def test_kind_follows_the_size_with_hysteresis() -> None:
    index, ids, _ = filled(150, threshold=100)
    assert index.kind == "exact" and index.needs_rebuild()
    index.rebuild()
    assert index.kind == "ivf" and not index.needs_rebuild()
    index.remove(ids[:80])  # 70 left: above half the threshold, stays IVF
    assert not index.needs_rebuild()
    index.remove(ids[80:130])  # 20 left
    assert index.needs_rebuild()
    index.rebuild()
    assert index.kind == "exact" and len(index) == 20


def test_writes_during_a_rebuild_are_kept() -> None:
    index, ids, _ = filled(3000)
    extra = unit_vectors(3, seed=9)
    index.begin_rebuild()
    snapshot = index.snapshot()
    # Writes between the snapshot and the swap: replayed on the new index.
    index.upsert([1, 2], extra[:2])
    index.remove([ids[0], 1])
    index.upsert([ids[1]], extra[2:3])
    index.finish_rebuild(*snapshot, "ivf")
    assert index.kind == "ivf"
    assert index.ids() == (set(ids.tolist()) - {ids[0]}) | {2}
    assert index.search(extra[2], 1)[0][0] == ids[1]


def test_searches_run_while_writing_from_other_threads() -> None:
    index, ids, vectors = filled(2000)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(300):
                index.upsert([10_000 + i], vectors[i : i + 1])
                index.remove([ids[i]])
        except BaseException as e:  # reported below; a thread cannot fail the test itself
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    for i in range(300):
        assert len(index.search(vectors[i], 3)) == 3
    thread.join()
    assert not errors and len(index) == 2000


def test_checksum_is_order_free_and_precision_matched() -> None:
    index, ids, vectors = filled(500)
    reference = checksum(ids, vectors)
    perm = np.random.default_rng(1).permutation(500)
    assert checksum(ids[perm], vectors[perm]) == reference
    index.rebuild("ivf")  # float16 storage: hashes equal to the float32 rows it came from
    assert checksum(*index.snapshot()) == reference
    changed = vectors.copy()
    changed[3] = unit_vectors(1, seed=5)[0]
    assert checksum(ids, changed) != reference
    assert checksum(ids[1:], vectors[1:]) != reference


def test_list_count_and_probes() -> None:
    assert ivf_lists(1_000_000) == 2048
    assert ivf_lists(100_000) == 512
    assert ivf_lists(100) == 2  # never more lists than training points allow
    assert auto_nprobe(2048, 1_000_000) == 68
    assert auto_nprobe(512, 100_000) == 168  # small collections scan a larger share
    assert auto_nprobe(16, 1000) == 16


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    index, ids, vectors = filled(1000)
    index.rebuild(kind)  # type: ignore[arg-type]
    meta = persist.save(tmp_path, index.clone(), model="m", dim=DIM)
    assert (meta.count, meta.kind, meta.model) == (1000, kind, "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [persist.INDEX_FILE, persist.META_FILE]
    loaded, meta2 = persist.load(tmp_path, model="m", dim=DIM)
    assert meta2 == meta and meta.checksum == checksum(ids, vectors)
    again = VectorIndex(DIM, threshold=1000, index=loaded)
    assert again.kind == kind and again.search(vectors[3], 1)[0][0] == ids[3]
    again.remove([ids[3]])  # the direct map survives the round trip
    assert len(again) == 999


def test_unusable_saved_index_says_why(tmp_path: Path) -> None:
    with pytest.raises(persist.IndexLoadError, match="no saved index metadata"):
        persist.load(tmp_path, model="m", dim=DIM)
    index, _, _ = filled(50)
    persist.save(tmp_path, index.clone(), model="m", dim=DIM)
    with pytest.raises(persist.IndexLoadError, match="embedder is other"):
        persist.load(tmp_path, model="other", dim=DIM)
    # A torn pair: a newer index file beside older metadata.
    index.upsert([1], unit_vectors(1, seed=3))
    meta = (tmp_path / persist.META_FILE).read_bytes()
    persist.save(tmp_path, index.clone(), model="m", dim=DIM)
    (tmp_path / persist.META_FILE).write_bytes(meta)
    with pytest.raises(persist.IndexLoadError, match="does not match its metadata"):
        persist.load(tmp_path, model="m", dim=DIM)
    (tmp_path / persist.INDEX_FILE).write_bytes(b"garbage")
    with pytest.raises(persist.IndexLoadError, match="unreadable"):
        persist.load(tmp_path, model="m", dim=DIM)
    (tmp_path / persist.INDEX_FILE).unlink()
    with pytest.raises(persist.IndexLoadError, match="missing"):
        persist.load(tmp_path, model="m", dim=DIM)


def test_query_cleaning_and_keywords() -> None:
    assert clean_query("  dog \n on   a beach ", 200) == "dog on a beach"
    with pytest.raises(QueryError) as empty:
        clean_query(" \t ", 200)
    assert (empty.value.code, empty.value.status_code) == ("empty_query", 422)
    with pytest.raises(QueryError) as long:
        clean_query("x" * 201, 200)
    assert long.value.code == "query_too_long"
    assert keywords("A dog on THE beach, a dog!") == ["dog", "beach"]
    assert keyword_match(["dog", "beach"], "Two dogs playing on the beaches") == 1.0
    assert keyword_match(["horses"], "a horse in a field") == 1.0
    assert keyword_match(["dog", "cat"], "a dog") == 0.5
    assert keyword_match(["glass"], "a gas station") == 0.0
    assert keyword_match([], "anything") == 0.0


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = build_embedder(Settings(_env_file=None))  # type: ignore[call-arg]
    model.load()
    return model


def test_embedder_resolves_to_the_packaged_weights_offline() -> None:
    spec = spec_for(Settings(_env_file=None).models, "embedder")  # type: ignore[call-arg]
    assert spec.model_id == str(packaged_weights("sentence-transformers/all-MiniLM-L6-v2"))
    assert spec.name == "sentence-transformers/all-MiniLM-L6-v2"


def test_embedder_vectors(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    texts = ["a dog running on the beach", "a puppy playing in the sand", "a plate of pasta"]
    vectors = embedder.predict(texts)
    assert len(vectors) == 3 and embedder.dim == 384
    for v in vectors:
        assert v.shape == (384,) and v.dtype == np.float32
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.5 > float(vectors[0] @ vectors[2]) + 0.3
    # Batching (padding) does not change a text's vector.
    (alone,) = embedder.predict([texts[2]])
    np.testing.assert_allclose(alone, vectors[2], atol=1e-5)
    assert embedder.predict([]) == []


def test_embedder_matches_sentence_transformers(embedder: Embedder) -> None:
    st = pytest.importorskip("sentence_transformers")
    path = packaged_weights("sentence-transformers/all-MiniLM-L6-v2")
    reference = st.SentenceTransformer(str(path), device="cpu")
    texts = ["a dog running on the beach", "snow covered mountains under a blue sky"]
    np.testing.assert_allclose(
        np.stack(embedder.predict(texts)), reference.encode(texts, normalize_embeddings=True), atol=1e-5
    )
