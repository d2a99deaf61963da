"""Where CTranslate2 conversions of a Whisper checkpoint live and what they are keyed by.

Layout under the model cache dir (models_cache/ by default), in converted/whisper-ct2/:
  <name>-<model id hash>-<key>/   model.bin, config.json, vocabulary.json (CTranslate2's), the
                                  checkpoint's tokenizer and feature-extractor files, meta.json
  .<that dir name>.lock / .tmp-*  as for the OpenVINO captioner (capsearch.ml.blip_ov.cache)

The key hashes the checkpoint (config files' bytes; weight files' names, sizes and mtimes) and the
versions of what converted it (our layout, ctranslate2, transformers), so a changed checkpoint or an
upgrade converts again. The weights are stored as converted (float32 for float32 checkpoints); int8
is applied when CTranslate2 loads them, so both compute types share one conversion.
Keying and publishing (lock, temporary directory, atomic rename, pruning superseded keys) are
blip_ov.cache's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from capsearch.ml.blip_ov.cache import (
    CONVERTED_DIRNAME,
    checkpoint_dir,
    conversion_key,
    entry_name,
    library_versions,
    publish,
    weights_bytes,
)

__all__ = ["checkpoint_dir", "checkpoint_key", "converted_dir", "is_complete", "publish_ct2", "weights_bytes"]

# Bump when the converted files or meta.json change meaning: old conversions are then ignored.
FORMAT = 1
BACKEND_DIRNAME = "whisper-ct2"
META_FILE = "meta.json"
MODEL_FILE = "model.bin"
_KEY_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json")
_LIBRARIES = ("ctranslate2", "transformers")


def checkpoint_key(checkpoint: Path) -> str:
    """Hex digest naming one conversion of `checkpoint` by this code with these library versions."""
    facts: dict[str, object] = {"format": FORMAT, "versions": library_versions(_LIBRARIES)}
    return conversion_key(checkpoint, _KEY_FILES, facts)


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
