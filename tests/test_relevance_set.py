"""The labelled search set with the real MiniLM: held-out figures, the keyword-lift finding, labels,
and the shipped settings being the tune half's fit (docs/search.md). ~10 s, mostly loading MiniLM."""

from __future__ import annotations

import pytest

from capsearch.bench.relevance import Bench, embed_set, first_hit_flips, load_set, score
from capsearch.bench.relevance_fit import fit, label_precision


@pytest.fixture(scope="module")
def bench() -> Bench:
    data = load_set()
    return Bench(data, *embed_set(data))


def test_the_set_is_as_documented() -> None:
    data = load_set()
    ids = [i for i, _ in data.captions]
    assert len(ids) == len(set(ids)) >= 100
    matchable = [q for q in data.queries if q.match]
    nothing = [q for q in data.queries if not q.match]
    assert len(matchable) >= 60 and len(nothing) >= 20
    assert all(q.match <= set(ids) for q in matchable)
    texts = {t for _, t in data.captions}
    assert not any(q.text in texts for q in data.queries)
    for group in (matchable, nothing):  # alternating halves, in the order written
        assert [q.half for q in group] == ["tune" if i % 2 == 0 else "held_out" for i in range(len(group))]


def test_held_out_figures(bench: Bench) -> None:
    held_out = bench.data.picked("held_out")
    shipped = score(bench, bench.service, held_out)
    # What docs/search.md reports; a change to the rule that loses ground fails here.
    assert shipped.recall_at_5 >= 0.94 and shipped.mrr >= 0.94
    assert shipped.refused >= 0.85 and shipped.false_refusals <= 3
    old = score(bench, bench.old_hybrid, held_out)
    assert shipped.refused > old.refused + 0.4


@pytest.mark.xfail(strict=True, reason="missed on the held-out half: recall@5 and MRR 0.940 (docs/search.md)")
def test_issue_targets_on_the_held_out_half(bench: Bench) -> None:
    held_out = bench.data.picked("held_out")
    shipped = score(bench, bench.service, held_out)
    cosine = score(bench, lambda qi: bench.cosine(qi, 0.35), held_out)
    assert shipped.refused >= 0.75
    assert shipped.recall_at_5 >= max(0.95, cosine.recall_at_5) and shipped.mrr >= 0.95


def test_no_keyword_lift_turns_a_right_first_hit_wrong(bench: Bench) -> None:
    assert first_hit_flips(bench, bench.service) == []
    # Why the lift was dropped: the old one did, on this set.
    assert first_hit_flips(bench, bench.old_hybrid) == ["walking trail in the woods"]


def test_strong_labels_hold_on_the_held_out_half(bench: Bench) -> None:
    precision, labelled = label_precision(bench, bench.settings, "held_out")
    assert labelled >= 40 and precision >= 0.95


def test_the_shipped_settings_are_the_tune_fit(bench: Bench) -> None:
    fitted = fit(bench)
    for name, value in fitted.items():
        if name != "flat_floor":
            assert getattr(bench.settings, name) == pytest.approx(value, abs=0.011), name
