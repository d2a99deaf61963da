"""`capsearch bench --only scale`: the pure parts (ratios, verdicts, tables, test audio). The benchmark
itself starts a dozen processes and takes about a minute; it is run by hand (docs/benchmarks.md)."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from capsearch.bench.offline import format_table
from capsearch.bench.scale import Level, compare_rows, latency_rows, throughput_rows
from capsearch.bench.scalekit import tone_wav


def test_throughput_rows_give_the_ratio_to_one_worker_and_the_verdict() -> None:
    rows = throughput_rows([Level(1, 48, 6.0, 0.5), Level(2, 96, 6.0, 0.8), Level(4, 192, 7.0, 1.5)])
    assert [r["images_per_s"] for r in rows] == [8.0, 16.0, 27.43]
    assert [r["vs_1_worker"] for r in rows] == ["1.00x", "2.00x", "3.43x"]
    assert [(r["target"], r["ok"]) for r in rows] == [("", ""), ("≥ 1.9x", "ok"), ("≥ 3.6x", "MISS")]
    table = format_table(rows).splitlines()
    assert table[0].split()[:3] == ["workers", "images", "uploads_s"] and len(table) == 5


def test_compare_rows_subtract_the_first_mode_from_the_second() -> None:
    results = {
        "single": {"search": [10.0, 20.0, 30.0]},
        "distributed": {"search": [12.0, 23.0, 40.0]},
    }
    (row,) = compare_rows(results, "single", "distributed")
    assert row["runs"] == 3
    assert (row["single p50_ms"], row["distributed p50_ms"], row["added_p50_ms"]) == (20.0, 23.0, 3.0)


def test_latency_rows_add_what_the_redis_path_costs() -> None:
    rows = latency_rows({"in process": [5.0] * 10, "over Redis": [7.0] * 9 + [11.0]})
    assert [r["path"] for r in rows] == ["in process", "over Redis", "added by Redis"]
    assert (rows[2]["p50_ms"], rows[2]["requests"]) == (2.0, 10)
    assert rows[2]["p99_ms"] == pytest.approx(rows[1]["p99_ms"] - 5.0, abs=0.01)


def test_the_tone_is_a_loud_16_khz_mono_wav() -> None:
    with wave.open(io.BytesIO(tone_wav(1.0))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
    assert np.sqrt(np.mean(samples**2)) > 0.1  # far above the loudness rule's 0.01
