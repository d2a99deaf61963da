"""The no-match decision and the hits' labels on synthetic scores, and the background sample the
index draws for it (services/relevance.py, search/background.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capsearch.config import SearchSettings
from capsearch.db.models import Image
from capsearch.search.background import spread
from capsearch.search.index import VectorIndex
from capsearch.services.relevance import Background, Judge
from capsearch.services.search import rank

SETTINGS = SearchSettings()


def images(*captions: str) -> list[Image]:
    return [Image(id=i + 1, caption=c) for i, c in enumerate(captions)]


def ranked(query: str, captions: list[str], scores: list[float], k: int = 12) -> list[tuple[str, str]]:
    pool = list(zip(images(*captions), scores, strict=True))
    return [(h.image.caption or "", h.label) for h in rank(query, pool, SETTINGS, k, scores)]


# ---- the rule on synthetic scores -------------------------------------------------------------


def test_the_shipped_bars_are_ordered() -> None:
    assert SETTINGS.min_scale > 0 and SETTINGS.prior_weight > 0
    assert SETTINGS.strong_bar >= SETTINGS.accept_bar  # every strong hit is an answer


def test_a_tiny_collection_leans_on_the_prior() -> None:
    three = Background.of([0.9, 0.1, 0.0], SETTINGS)
    # The best is judged, not part of its background; the other two are outweighed by the prior.
    assert three.size == 2
    assert abs(three.location - SETTINGS.prior_location) < abs(0.05 - SETTINGS.prior_location)
    one = Background.of([0.9], SETTINGS)
    assert (one.location, one.scale) == pytest.approx((SETTINGS.prior_location, SETTINGS.prior_scale))
    many = Background.of(np.r_[np.full(500, 0.3), [0.9]], SETTINGS.model_copy(update={"max_location": 1.0}))
    assert many.location == pytest.approx(0.3, abs=0.01)  # hundreds: the collection's own median


def test_no_scores_give_the_prior_and_equal_scores_stay_finite() -> None:
    empty = Background.of([], SETTINGS)
    assert (empty.location, empty.scale) == pytest.approx((SETTINGS.prior_location, SETTINGS.prior_scale))
    flat = Background.of(np.full(1000, 0.1), SETTINGS)
    assert flat.scale == SETTINGS.min_scale
    assert math.isfinite(flat.standing(0.1)) and flat.standing(0.1) == pytest.approx(0.0, abs=0.01)


def test_a_one_subject_collection_is_judged_against_a_varied_one() -> None:
    # Every caption is a cat: "cat" scores ~0.5 against all of them, nothing stands out.
    cats = Background.of(np.random.default_rng(0).normal(0.5, 0.03, 400), SETTINGS)
    assert cats.location == SETTINGS.max_location
    assert Judge(cats, SETTINGS).accepts(0.6)


def test_a_collection_crowded_with_the_query_still_answers_a_close_match() -> None:
    # Half the collection are near-copies of the query: the spread is wide, nothing stands out,
    # yet a caption this close is an answer.
    crowded = np.concatenate([np.full(6, 0.88), np.linspace(0.0, 0.2, 6)])
    judge = Judge(Background.of(crowded, SETTINGS), SETTINGS)
    assert judge.adjusted(0.8) < SETTINGS.accept_bar
    assert judge.accepts(0.8) and judge.label(0.8) == "strong"
    assert not judge.accepts(SETTINGS.sure_similarity - 0.2)


def test_the_same_score_means_more_for_a_quiet_query() -> None:
    quiet = Judge(Background.of(np.full(200, 0.0) + np.linspace(-0.05, 0.05, 200), SETTINGS), SETTINGS)
    noisy = Judge(Background.of(np.linspace(0.0, 0.4, 200), SETTINGS), SETTINGS)
    assert quiet.adjusted(0.45) > noisy.adjusted(0.45)
    assert quiet.accepts(0.45) and not noisy.accepts(0.45)


def test_labels_and_acceptance_are_monotone() -> None:
    judge = Judge(Background.of(np.linspace(-0.1, 0.3, 300), SETTINGS), SETTINGS)
    steps = np.linspace(-0.2, 1.0, 121)
    accepted = [judge.accepts(s) for s in steps]
    strong = [judge.label(s) == "strong" for s in steps]
    assert accepted == sorted(accepted) and strong == sorted(strong)
    assert any(accepted) and not all(accepted) and any(strong)
    assert all(a for a, s in zip(accepted, strong, strict=True) if s)


def test_three_images_one_clear_match() -> None:
    captions = ["a dog on a beach", "a bowl of soup", "a city at night"]
    assert ranked("puppy at the seaside", captions, [0.72, 0.05, 0.08]) == [("a dog on a beach", "strong")]
    assert ranked("a violin concert", captions, [0.21, 0.12, 0.18]) == []


def test_a_single_image() -> None:
    assert ranked("a red bicycle", ["a red bicycle against a wall"], [0.85]) == [
        ("a red bicycle against a wall", "strong")
    ]
    assert ranked("a snowy owl", ["a red bicycle against a wall"], [0.2]) == []


def test_equal_scores_are_refused_unless_high() -> None:
    captions = [f"a photo number {i}" for i in range(6)]
    assert ranked("something", captions, [0.3] * 6) == []
    assert len(ranked("something", captions, [0.9] * 6)) == 6


def test_every_query_word_in_a_caption_answers_but_does_not_reorder() -> None:
    captions = ["a puppy asleep on a rug", "a dog running on the beach", "a plate of pasta"]
    scores = [0.36, 0.34, 0.02]
    # Neither dog stands out enough, but one caption holds the word: that caption answers "dog",
    # as "possible"; the puppy, higher by cosine but without the word, is not shown.
    assert ranked("dog", captions, scores) == [("a dog running on the beach", "possible")]
    assert ranked("puppy", captions, scores) == [("a puppy asleep on a rug", "possible")]
    assert ranked("kitten", captions, scores) == []
    # Only captions among the hits shown count: a literal one far below the best does not.
    assert ranked("pasta", captions, scores) == []
    # When the best stands out, the words change nothing: cosine order, its own labels.
    standing = [0.9, 0.34, 0.02]
    assert (
        ranked("dog", captions, standing) == ranked("kitten", captions, standing) == [(captions[0], "strong")]
    )


def test_hits_below_the_relative_cut_and_beyond_k_are_dropped() -> None:
    captions = ["a red bicycle", "a blue bicycle", "a bicycle wheel", "a bowl of soup"]
    scores = [0.8, 0.6, 0.47, 0.05]
    assert [c for c, _ in ranked("red bike", captions, scores)] == captions[:2]
    assert [c for c, _ in ranked("red bike", captions, scores, k=1)] == captions[:1]


def test_without_a_background_the_candidates_stand_in() -> None:
    scores = [0.8, 0.1, 0.12, 0.05, 0.08]
    pool = list(zip(images("a dog on a beach", *["a bowl of soup"] * 4), scores, strict=True))
    assert [h.label for h in rank("dog at the sea", pool, SETTINGS, 5)] == ["strong"]


# ---- the background, from the index ----------------------------------------------------------


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_drawn_from(scores: np.ndarray, truth: np.ndarray, atol: float) -> None:
    assert np.abs(scores[:, None] - truth[None, :]).min(axis=1).max() <= atol


def test_background_of_an_exact_index() -> None:
    index = VectorIndex(16, threshold=10_000)
    query = unit(1, seed=9)[0]
    assert len(index.background(query, 512)) == 0
    vectors = unit(300)
    index.upsert(np.arange(300), vectors)
    np.testing.assert_allclose(np.sort(index.background(query, 512)), np.sort(vectors @ query), atol=1e-5)
    # Evenly spread over storage (here: the order of upload), from the first vector to the last.
    positions = spread(300, 100)
    assert len(positions) == 100 and positions[0] == 0 and positions[-1] == 299
    np.testing.assert_allclose(index.background(query, 100), vectors[positions] @ query, atol=1e-5)
    index.upsert([0], -vectors[:1])  # an edit counts at once
    assert np.isclose(index.background(query, 512), -vectors[0] @ query, atol=1e-5).any()


def test_background_of_an_ivf_index() -> None:
    index = VectorIndex(16, threshold=100)
    vectors = unit(2000)
    index.upsert(np.arange(2000), vectors)
    index.rebuild("ivf")
    assert index.kind == "ivf"
    query = unit(1, seed=9)[0]
    drawn = index.background(query, 256)
    assert len(drawn) == 256
    assert_drawn_from(drawn, vectors @ query, 2e-3)  # stored as float16
    # Kept while the size moves by 1% or less; taken again beyond that.
    index.upsert(np.arange(2000, 2010), unit(10, seed=1))
    np.testing.assert_array_equal(index.background(query, 256), drawn)
    index.upsert(np.arange(2010, 2100), unit(90, seed=2))
    assert not np.array_equal(index.background(query, 256), drawn)
