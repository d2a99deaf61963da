"""The lock files follow pyproject.toml: every declared dependency pinned exactly, inside its range.

Offline and quick, so a pyproject.toml edit without `make lock` fails here. `make lock-check`
re-resolves the whole set against the index (it also catches a dependency that was dropped).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.lock": ("dev",), "requirements-load.lock": ("dev", "load")}


def pins(lock: str) -> dict[NormalizedName, Version]:
    """name -> version of every line; each one an exact pin with no extras, markers or URL."""
    out: dict[NormalizedName, Version] = {}
    for line in (ROOT / lock).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not (req.extras or req.marker or req.url), f"{lock}: {line}"
        out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for e in extras for r in optional[e]]]


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_declared_dependency_within_its_range(lock: str) -> None:
    locked = pins(lock)
    stale = [
        str(req)
        for req in declared(LOCKS[lock])
        if (v := locked.get(canonicalize_name(req.name))) is None or not req.specifier.contains(v, True)
    ]
    assert not stale, f"{lock} is stale for {stale}: run `make lock` and commit the lock files"


def test_load_lock_is_the_main_lock_plus_the_load_extra() -> None:
    main, load = pins("requirements.lock"), pins("requirements-load.lock")
    differ = {name: (v, load.get(name)) for name, v in main.items() if load.get(name) != v}
    assert not differ, f"requirements-load.lock disagrees with requirements.lock: {differ}; run `make lock`"


def test_torch_is_pinned_without_a_local_label() -> None:
    """2.13.0, not 2.13.0+cpu: the local CPU wheel and a CUDA build installed first both satisfy it."""
    for lock in LOCKS:
        torch = pins(lock)[canonicalize_name("torch")]
        assert torch.local is None, f"{lock}: torch=={torch}"
