"""`capsearch bench --only feed` end to end on small numbers: every page gets every caption. No timing
is asserted (the numbers belong to docs/benchmarks.md, measured on a quiet machine)."""

from __future__ import annotations

from capsearch.bench.feed import CARD, bench_feed
from capsearch.bench.feedserver import event_fields
from capsearch.db.models import ImageStatus
from capsearch.events import ImageChanged, ImageDeleted
from capsearch.shapes import ImageOut


def test_event_fields_reads_both_kinds() -> None:
    image = ImageOut.model_construct(id=7, status=ImageStatus.READY)
    assert event_fields(ImageChanged.model_construct(image=image)) == (7, "image.changed", "ready")
    assert event_fields(ImageDeleted(id=8)) == (8, "image.deleted", None)


def test_the_feed_bench_runs_and_every_page_gets_every_caption() -> None:
    result = bench_feed(sockets=5, images=3)
    assert len(result.wanted) == 3
    assert result.missing() == [set()] * 5
    assert len(result.latencies_ms) == 5 * 3  # a publish stamp for every (page, image) pair
    events = sum(result.stats["events"].values())
    assert events >= 3  # at least each image's "ready"
    assert result.stats["renders"].get(CARD, 0) >= 3
    rows = result.rows()
    assert all(set(r) == {"what", "value", "target", "ok"} for r in rows)
    done = next(r for r in rows if r["what"].startswith("done cards"))
    assert (done["value"], done["ok"]) == ("15 / 15", "ok")
