"""Fitting the no-match decision and the labels on the tune half of the labelled set (docs/search.md).

Only tune-half queries are looked at here; `capsearch bench --only relevance` prints the fit next to
the shipped settings and both halves' figures.

1. The prior and its guards: over the tune queries, the median of their backgrounds' medians and
   spreads (`prior_location`, `prior_scale`); the largest median rounded up to 0.05
   (`max_location`), the smallest spread rounded down to 0.01 (`min_scale`).
2. A logistic regression of "the set holds a right answer" on the best hit's cosine s and standing z:
   log-odds = b0 + b1·s + b2·z. So `standing_weight` = b2 / b1, and the bar where the odds are
   ACCEPT_ODDS is `accept_bar` = (ln ACCEPT_ODDS − b0) / b1, in the units of the adjusted score.
3. `strong_bar`: the lowest adjusted score from which up the tune half's first hits were right at
   least STRONG_PRECISION of the time (a refused-or-not no-match query's first hit counts as wrong).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from capsearch.bench.relevance import Bench, Half, format_fit, methods, score
from capsearch.config import SearchSettings
from capsearch.services.relevance import Background, Judge

# 1:2 — a wrong "no match" hides the image someone wanted; a wrong hit is shown labelled "possible".
ACCEPT_ODDS = 0.5
STRONG_PRECISION = 0.95


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 100) -> np.ndarray:
    """Weights (bias first) of a lightly ridged logistic regression, by Newton's method."""
    xs = np.c_[np.ones(len(x)), x]
    w = np.zeros(xs.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(xs @ w)))
        grad = xs.T @ (p - y) + l2 * w
        hess = (xs.T * (p * (1 - p))) @ xs + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit(bench: Bench, accept_odds: float = ACCEPT_ODDS) -> dict[str, float]:
    tune = bench.data.picked("tune")
    backgrounds = [bench.background(qi) for qi in tune]
    medians = np.array([np.median(b) for b in backgrounds])
    spreads = np.array([1.4826 * np.median(np.abs(b - np.median(b))) for b in backgrounds])
    prior = {
        "prior_location": round(float(np.median(medians)), 3),
        "prior_scale": round(float(np.median(spreads)), 3),
        "max_location": math.ceil(float(medians.max()) * 20) / 20,
        "min_scale": math.floor(float(spreads.min()) * 100) / 100,
    }
    settings = bench.settings.model_copy(update=prior)
    best = np.array([bench.nearest(qi)[0][1] for qi in tune])
    standing = np.array(
        [Background.of(b, settings).standing(s) for b, s in zip(backgrounds, best, strict=True)]
    )
    answerable = np.array([1.0 if bench.data.queries[qi].match else 0.0 for qi in tune])
    b0, b1, b2 = _logistic(np.c_[best, standing], answerable)
    weight = float(b2 / b1)
    adjusted = best + weight * standing
    first_right = np.array([bench.right(qi, bench.nearest(qi)[0][0]) for qi in tune])
    strong = max(adjusted) + 1e-3
    for bar in sorted(adjusted, reverse=True):
        chosen = adjusted >= bar
        if first_right[chosen].mean() >= STRONG_PRECISION:
            strong = float(bar)
    floor_only = _logistic(best[:, None], answerable)
    return prior | {
        "standing_weight": round(weight, 3),
        "accept_bar": round(float((math.log(accept_odds) - b0) / b1), 3),
        "strong_bar": round(strong, 3),
        # The same fit on the cosine alone: the best flat floor for comparison, not a setting.
        "flat_floor": round(float((math.log(accept_odds) - floor_only[0]) / floor_only[1]), 3),
    }


def label_precision(bench: Bench, settings: SearchSettings, half: Half | None) -> tuple[float, int]:
    """Of the first hits labelled "strong" (answered queries only), the share that are right."""
    right = []
    for qi in bench.data.picked(half):
        pairs = bench.nearest(qi)
        judge = Judge(Background.of(bench.background(qi), settings), settings)
        if judge.accepts(pairs[0][1]) and judge.label(pairs[0][1]) == "strong":
            right.append(bench.right(qi, pairs[0][0]))
    return (float(np.mean(right)) if right else float("nan")), len(right)


def operating_points(bench: Bench) -> list[dict[str, Any]]:
    """What other odds for answering give: the trade between refusing no-match queries and refusing
    true matches, on both halves. The shipped odds (ACCEPT_ODDS) are a choice of costs, not a fit."""
    rows = []
    for odds in (0.125, 0.25, 0.5, 1.0, 2.0):
        settings = bench.settings.model_copy(update={"accept_bar": fit(bench, odds)["accept_bar"]})
        row: dict[str, Any] = {"odds to answer": f"{odds:g}", "accept_bar": settings.accept_bar}
        for half in ("tune", "held_out"):
            f = score(bench, partial(bench.service, settings=settings), bench.data.picked(half))
            row[f"{half} recall@5 / MRR"] = f"{f.recall_at_5:.3f} / {f.mrr:.3f}"
            row[f"{half} refused"] = f"{f.refused:.0%}"
        rows.append(row)
    return rows


def tables(bench: Bench) -> list[tuple[str, list[dict[str, Any]]]]:
    fitted = fit(bench)
    shipped = bench.settings
    out = [("Fit on the tune half vs shipped settings", format_fit(fitted, shipped))]
    halves: tuple[Half, ...] = ("held_out", "tune")
    for half in halves:
        picked = bench.data.picked(half)
        rows = [score(bench, m, picked).row(n) for n, m in methods(bench, fitted["flat_floor"]).items()]
        out.append((f"{half.replace('_', '-')} half", rows))
    labels = []
    for half in halves:
        precision, n = label_precision(bench, shipped, half)
        labels.append({"half": half, "first hits labelled strong": n, "of them right": f"{precision:.1%}"})
    out.append(("Labels (shipped settings)", labels))
    out.append(
        ("Other odds for answering (accept_bar refitted; the rest as shipped)", operating_points(bench))
    )
    return out
