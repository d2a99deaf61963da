"""Tiny random-weight models of the real architectures, built offline and deterministically.

They load through exactly the same `from_pretrained` path as the real checkpoints, so tests and the
offline demo exercise the real code. Their captions are random words (the same for every image).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)
from transformers.utils import logging as _hf_logging

# transformers ships type hints, but some functions used here are unannotated; strict mypy refuses to
# call those, so they go through Any.
hf_logging: Any = _hf_logging
_BlipProcessor: Any = BlipProcessor
_BlipModel: Any = BlipForConditionalGeneration

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
# Caption-like words, so the random output still reads like (nonsense) English in the demo UI.
_WORDS = [
    *("a", "an", "the", "of", "on", "in", "with", "and", "at", "near", "by", "under", "two", "three"),
    *("dog", "cat", "bird", "horse", "person", "man", "woman", "child", "people", "car", "bus", "bike"),
    *("boat", "train", "street", "beach", "grass", "field", "road", "water", "sky", "tree", "table"),
    *("plate", "ball", "hat", "red", "blue", "green", "white", "black", "brown", "small", "large", "old"),
    *("young", "sitting", "standing", "running", "walking", "playing", "riding", "eating", "holding"),
    *("looking", "is", "are"),
]

TINY_IMAGE_SIZE = 32
BASE_IMAGE_SIZE = 384


def _bert_tokenizer(words: list[str]) -> Any:
    # transformers 5 silently ignores `vocab_file=` (everything becomes [UNK]); `vocab=` works.
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + words)}
    return BertTokenizer(
        vocab=vocab,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        bos_token="[DEC]",
        eos_token="[SEP]",
    )


def _processor(tokenizer: Any, image_size: int) -> Any:
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return _BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _text_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids(["[DEC]", "[SEP]", "[PAD]"])
    return {"bos_token_id": ids[0], "eos_token_id": ids[1], "sep_token_id": ids[1], "pad_token_id": ids[2]}


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bars for a sub-second build; restore the setting after."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def tiny_blip_in_memory(seed: int = 0) -> tuple[Any, Any]:
    """The tiny BLIP (hidden 32, 2 layers, 2 heads, 32x32 images in 8x8 patches) and its processor."""
    tokenizer = _bert_tokenizer(_WORDS)
    ids = _text_ids(tokenizer)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            **ids,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = _BlipModel(config).eval()
    gen = model.generation_config
    # Random weights may pick [SEP] first or emit [CLS]/[MASK]/[UNK], which decode to nothing; banning
    # them and asking for a few tokens guarantees a readable, non-empty caption.
    gen.suppress_tokens = tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[DEC]"])
    gen.min_new_tokens = 3
    return model, _processor(tokenizer, TINY_IMAGE_SIZE)


def build_tiny_blip(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny BLIP and save model + processor to `out_dir` (replacing it). Under a second."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model, processor = tiny_blip_in_memory(seed)
    # Build next to the target and rename, so a crash or a concurrent reader never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        with _quiet_progress():
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        try:
            os.rename(new, target)
            return
        except OSError:
            # Another process finished the same build first; a deterministic build makes theirs equal.
            if (target / "config.json").is_file():
                return
            raise
    # Move the old one aside first: a directory cannot be renamed over a non-empty one.
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def build_random_blip_base(seed: int = 0) -> tuple[Any, Any]:
    """BLIP at the size of Salesforce/blip-image-captioning-base (224M params, 384x384), random weights.

    Same compute as the real checkpoint, for benchmarks on machines that cannot download it. Returns
    (BlipForConditionalGeneration, BlipProcessor), in memory only.
    """
    config = BlipConfig()
    text_config: Any = config.text_config
    vocab_size = int(text_config.vocab_size)
    # The real BERT vocabulary is not available offline; placeholder tokens keep ids and decoding valid.
    words = [f"w{i}" for i in range(vocab_size - len(_SPECIALS))]
    tokenizer = _bert_tokenizer(words)
    text_config.update(_text_ids(tokenizer))
    torch.manual_seed(seed)
    model = _BlipModel(config).eval()
    return model, _processor(tokenizer, BASE_IMAGE_SIZE)
