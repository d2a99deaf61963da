"""Where CTranslate2 conversions of a Whisper checkpoint live and what they are keyed by.

Layout under the model cache dir (models_cache/ by default), in converted/whisper-ct2/:
  <name>-<model id hash>-<key>/   model.bin, config.json, vocabulary.json (CTranslate2's), the
                                  checkpoint's tokenizer and feature-extractor files, meta.json
  .<that dir name>.lock / .tmp-*  as for the OpenVINO captioner (capsearch.ml.blip_ov.cache)

The key hashes the checkpoint (config files' bytes; weight files' names, sizes and mtimes) and the
versions of what converted it (our layout, ctranslate2, transformers), so a changed checkpoint or an
upgrade converts again. The weights are stored as converted (float32 for float32 checkpoints); int8
is applied when CTranslate2 loads them, so both compute types share one conversion.
Publishing (lock, temporary directory, atomic rename, pruning superseded keys) is blip_ov.cache's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from capsearch.ml.blip_ov.cache import CONVERTED_DIRNAME, checkpoint_dir, entry_name, publish, weights_bytes

__all__ = ["checkpoint_dir", "checkpoint_key", "converted_dir", "is_complete", "publish_ct2", "weights_bytes"]

# Bump when the converted files or meta.json change meaning: old conversions are then ignored.
FORMAT = 1
BACKEND_DIRNAME = "whisper-ct2"
META_FILE = "meta.json"
MODEL_FILE = "model.bin"
_KEY_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
_LIBRARIES = ("ctranslate2", "transformers")


def _versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def checkpoint_key(checkpoint: Path) -> str:
    """Hex digest naming one conversion of `checkpoint` by this code with these library versions."""
    digest = hashlib.sha256()
    facts: dict[str, object] = {"format": FORMAT, "versions": _versions()}
    for name in _KEY_FILES:
        path = checkpoint / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in checkpoint.glob(pattern)})
    # Sizes and mtimes, not contents: hashing the weights would add seconds to every start.
    facts["weights"] = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def converted_dir(cache_dir: Path, model_id: str, key: str) -> Path:
    return Path(cache_dir) / CONVERTED_DIRNAME / BACKEND_DIRNAME / entry_name(model_id, key)


def is_complete(directory: Path) -> bool:
    """meta.json is written last by a conversion; model.bin is checked in case of tampering."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT and (directory / MODEL_FILE).is_file()


def publish_ct2(target: Path, build: Callable[[Path], None]) -> bool:
    """`build(tmp_dir)` under the conversion lock, renamed to `target`; False if it was already there."""
    return publish(target, build, complete=is_complete)
