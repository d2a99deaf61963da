"""The OpenVINO captioner's conversion cache: made once, reused, redone when the checkpoint or the
library changes, and never read half-written."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from capsearch.ml.blip_ov import OpenVinoBlipCaptioner, cache
from capsearch.ml.tiny import build_tiny_blip
from tests.imagefactory import photo_set

pytest.importorskip("openvino")

CONVERTING = "converting the captioner for OpenVINO"


def _conversions(caplog: pytest.LogCaptureFixture) -> int:
    return sum(CONVERTING in r.getMessage() for r in caplog.records)


@pytest.fixture
def own_tiny(tmp_path: Path) -> Path:
    """A checkpoint of this test's own (the cache tests change it)."""
    return build_tiny_blip(tmp_path / "models" / "tiny-blip")


def _load(directory: Path, **kwargs: Any) -> OpenVinoBlipCaptioner:
    # In-process conversions: a child process would add ~8 s of imports to each of these tests.
    kwargs.setdefault("convert_in_subprocess", False)
    fast = OpenVinoBlipCaptioner(str(directory), cache_dir=directory.parent, max_new_tokens=4, **kwargs)
    fast.load()
    return fast


def test_converts_once_then_reuses_the_cache(own_tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="capsearch.ml.blip_ov")
    first = _load(own_tiny, convert_in_subprocess=True)  # the default: a child process converts
    assert _conversions(caplog) == 1
    converted = first.converted_dir()
    assert converted.parent == own_tiny.parent / "converted" / "blip-openvino"
    assert sorted(p.name for p in converted.iterdir()) == [
        "decoder.bin", "decoder.xml", "encoder.bin", "encoder.xml", "meta.json", "tokenizer.json"
    ]  # fmt: skip
    stamp = (converted / "meta.json").stat().st_mtime_ns
    second = _load(own_tiny)
    assert _conversions(caplog) == 1
    assert second.convert() == converted and (converted / "meta.json").stat().st_mtime_ns == stamp
    assert second.predict(photo_set(2)) == first.predict(photo_set(2))
    # Only the published directory and its lock file: no temporary directories left behind.
    assert sorted(p.name for p in converted.parent.iterdir()) == [f".{converted.name}.lock", converted.name]


def test_a_changed_checkpoint_converts_again(own_tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="capsearch.ml.blip_ov")
    old = _load(own_tiny).converted_dir()
    weights = own_tiny / "model.safetensors"
    later = weights.stat().st_mtime_ns + 5_000_000_000
    os.utime(weights, ns=(later, later))
    new = _load(own_tiny).converted_dir()
    assert new != old and _conversions(caplog) == 2
    assert not old.exists()  # superseded conversions are removed, not left to fill the disk
    config = own_tiny / "config.json"
    config.write_text(config.read_text().replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": 1e-11'))
    assert _load(own_tiny).converted_dir() != new and _conversions(caplog) == 3


def test_a_new_library_version_converts_again(
    own_tiny: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="capsearch.ml.blip_ov")
    before = _load(own_tiny).converted_dir()
    real = cache.metadata.version
    monkeypatch.setattr(
        cache.metadata, "version", lambda name: "9999.0" if name == "openvino" else real(name)
    )
    after = _load(own_tiny).converted_dir()
    assert after != before and _conversions(caplog) == 2
    # int8 weights are a different conversion again.
    assert _load(own_tiny, int8=True).converted_dir() != after


def test_a_partial_conversion_is_ignored_and_cleaned_up(
    own_tiny: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="capsearch.ml.blip_ov")
    fast = OpenVinoBlipCaptioner(
        str(own_tiny), cache_dir=own_tiny.parent, max_new_tokens=4, convert_in_subprocess=False
    )
    target = fast.converted_dir()
    # A crash mid-conversion: the exporter dies after writing part of its output.
    real_export = OpenVinoBlipCaptioner._export

    def crash(self: OpenVinoBlipCaptioner, out_dir: Path) -> None:
        (out_dir / "encoder.xml").write_text("<half")
        raise KeyboardInterrupt

    monkeypatch.setattr(OpenVinoBlipCaptioner, "_export", crash)
    with pytest.raises(KeyboardInterrupt):
        fast.load()
    assert not target.exists()
    # Leftovers a killed process would leave (no `finally` runs on SIGKILL): a temporary directory and
    # a target without meta.json. Neither is read; the next conversion replaces both.
    stale = target.parent / f".{target.name}.tmp-99999-abc"
    stale.mkdir(parents=True)
    (stale / "encoder.xml").write_text("<half")
    target.mkdir()
    (target / "encoder.xml").write_text("<half")
    monkeypatch.setattr(OpenVinoBlipCaptioner, "_export", real_export)
    fast.load()
    assert _conversions(caplog) == 2 and not stale.exists()
    assert fast.predict(photo_set(1))
