"""Where converted graphs live, what they are keyed by, and how a conversion is published safely.

Layout under the model cache dir (models_cache/ by default), in converted/blip-openvino/:
  <name>-<fp32|int8>-<model id hash>-<key>/   encoder.xml/.bin, decoder.xml/.bin, meta.json
  .<that dir name>.lock                       held while one process converts
  .<that dir name>.tmp-<pid>-<random>/        a conversion in progress

The key hashes the checkpoint (config files' bytes; weight files' names, sizes and mtimes) and the
versions of what produced the graphs (our graph layout, openvino, transformers, nncf for int8), so a
new checkpoint or an upgrade converts again and never reuses stale graphs. A conversion is written
into a temporary directory and renamed into place: a crash leaves at most a `.tmp-` directory, which
is never read and is removed by the next conversion of the same key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path

# Bump when the exported graphs or meta.json change meaning: old conversions are then ignored.
GRAPH_FORMAT = 4
CONVERTED_DIRNAME = "converted"
BACKEND_DIRNAME = "blip-openvino"
META_FILE = "meta.json"
ENCODER_XML = "encoder.xml"
DECODER_XML = "decoder.xml"
_KEY_FILES = ("config.json", "generation_config.json")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def checkpoint_dir(model_id: str, cache_dir: Path) -> Path | None:
    """The local directory of `model_id` (a path, or a Hub id in the Hub cache), or None. No network."""
    path = Path(model_id).expanduser()
    if (path / "config.json").is_file():
        return path
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(model_id, "config.json", cache_dir=cache_dir)
    except ValueError:  # not a Hub id either
        return None
    return Path(config).parent if isinstance(config, str) else None


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of what makes a conversion ("missing" for one not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def conversion_key(checkpoint: Path, key_files: Sequence[str], facts: dict[str, object]) -> str:
    """Hex digest naming one conversion of `checkpoint`: the bytes of its `key_files`, its weight
    files' names, sizes and mtimes, and `facts` (our format, library versions, options)."""
    digest = hashlib.sha256()
    for name in key_files:
        path = checkpoint / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in checkpoint.glob(pattern)})
    # Sizes and mtimes, not contents: hashing ~900 MB of weights would add seconds to every start.
    # Hub snapshots are symlinks into content-named blobs; stat() follows them.
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    digest.update(json.dumps(facts | {"weights": stats}, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def checkpoint_key(checkpoint: Path, *, int8: bool) -> str:
    """Hex digest naming one conversion of `checkpoint` by this code with these library versions."""
    versions = library_versions(["openvino", "transformers"] + (["nncf"] if int8 else []))
    facts: dict[str, object] = {"format": GRAPH_FORMAT, "int8": int8, "versions": versions}
    return conversion_key(checkpoint, _KEY_FILES, facts)


def weights_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for pattern in _WEIGHT_PATTERNS for p in checkpoint.glob(pattern))


def entry_name(model_id: str, key: str, variant: str = "") -> str:
    """A conversion's directory name, shared by every backend's cache: a readable name for people
    browsing the cache, the variant, which model id (two local checkpoints may share a directory
    name), then the key, which alone decides whether the files are current."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_id.rstrip("/")).name or "model").strip("-.")
    source = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return "-".join(part for part in (name[:60], variant, source, key) if part)


def converted_dir(cache_dir: Path, model_id: str, key: str, *, int8: bool) -> Path:
    variant = "int8" if int8 else "fp32"
    return Path(cache_dir) / CONVERTED_DIRNAME / BACKEND_DIRNAME / entry_name(model_id, key, variant)


def is_complete(directory: Path) -> bool:
    """Published directories are complete by construction; meta.json is checked in case of tampering."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == GRAPH_FORMAT


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One converter per key across processes (two workers starting together convert once)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_tree(directory: Path) -> None:
    # Data on disk before the rename makes it visible: a power cut must not publish empty files.
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(
    target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool] = is_complete
) -> bool:
    """Make `target` exist, complete: run `build(tmp_dir)` and rename tmp_dir to `target`.

    Returns False if `target` was already there (perhaps made by another process while we waited
    for the lock), True if this call built it. `complete` says whether a directory is a finished
    conversion (other converters, such as capsearch.ml.whisper_ct2, bring their own).
    """
    with _locked(target):
        if complete(target):
            return False
        # Under the lock nobody else is converting this key: any temporary directory left is a crash's.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete (meta.json missing or unreadable): replace it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        try:
            build(tmp)
            _fsync_tree(tmp)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune_superseded(target)
        return True


def _prune_superseded(target: Path) -> None:
    """Remove conversions of the same model id and variant with another key (~900 MB each for BLIP
    base): after an upgrade or a changed checkpoint, this version never reads them again."""
    prefix = target.name[: target.name.rindex("-") + 1]
    for other in target.parent.glob(f"{prefix}*"):
        if other != target and other.is_dir() and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)
            (other.parent / f".{other.name}.lock").unlink(missing_ok=True)
