"""The one-time conversion of a transformers Whisper checkpoint for CTranslate2.

It needs torch and transformers, which serving never imports: `export_in_child` runs it in a child
process (`python -m capsearch.ml.whisper_ct2.convert MODEL_ID CACHE_DIR OUT_DIR`), so its memory
goes back to the system when it ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from capsearch.errors import ModelUnavailableError
from capsearch.ml.whisper_ct2 import cache
from capsearch.ml.whisper_ct2.features import FeatureSpec

_UNAVAILABLE_EXIT = 3
# Rough: torch loads the weights and CTranslate2 writes them again (whisper-base, 0.3 GB).
_CONVERT_S_PER_GB = 40.0
# Copied beside model.bin so that serving reads only the converted directory.
_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
_FIX = "run `capsearch models download`, or start with CAPSEARCH_MODELS__PROFILE=tiny for an offline demo."


def estimate_s(checkpoint: Path) -> float:
    return 8 + _CONVERT_S_PER_GB * cache.weights_bytes(checkpoint) / 1e9


def export_in_child(model_id: str, cache_dir: Path, out_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "capsearch.ml.whisper_ct2.convert",
        model_id,
        str(cache_dir),
        str(out_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == _UNAVAILABLE_EXIT:
        raise ModelUnavailableError(done.stdout.strip())
    if done.returncode != 0:
        raise RuntimeError(f"converting the transcriber failed: {done.stderr.strip()[-2000:]}")


def export(model_id: str, checkpoint: Path, out_dir: Path) -> None:
    """Write the CTranslate2 model, the tokenizer files and meta.json (last) into `out_dir`."""
    from ctranslate2.converters import TransformersConverter

    try:
        features = FeatureSpec.from_checkpoint(checkpoint)
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailableError(
            f"The transcriber model '{model_id}' cannot be converted ({exc}). Fix: {_FIX}"
        ) from exc
    # force: the publishing step made out_dir (empty) for us.
    TransformersConverter(str(checkpoint)).convert(str(out_dir), force=True)
    for name in _SIDE_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out_dir / name)
    meta = {
        "format": cache.FORMAT,
        "model_id": model_id,
        "features": features.to_json(),
        "max_target_positions": int(config["max_target_positions"]),
    }
    # Written last: a directory with meta.json is a finished conversion.
    (out_dir / cache.META_FILE).write_text(json.dumps(meta, indent=2))


def _main(argv: list[str]) -> int:
    model_id, cache_dir, out_dir = argv
    checkpoint = cache.checkpoint_dir(model_id, Path(cache_dir))
    try:
        if checkpoint is None:
            raise ModelUnavailableError(f"The transcriber model '{model_id}' is not on disk. Fix: {_FIX}")
        export(model_id, checkpoint, Path(out_dir))
    except ModelUnavailableError as exc:
        print(exc.message)
        return _UNAVAILABLE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
