"""Tiny random-weight models of the real architectures (BLIP, Whisper), built offline and deterministically.

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
from tokenizers import pre_tokenizers
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.utils import logging as _hf_logging

# transformers ships type hints, but some functions used here are unannotated; strict mypy refuses to
# call those, so they go through Any.
hf_logging: Any = _hf_logging
_BlipProcessor: Any = BlipProcessor
_BlipModel: Any = BlipForConditionalGeneration
_WhisperConfig: Any = WhisperConfig
_WhisperModel: Any = WhisperForConditionalGeneration
_WhisperProcessor: Any = WhisperProcessor
_WhisperFeatures: Any = WhisperFeatureExtractor
_GenerationConfig: Any = GenerationConfig

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
    return _save(out_dir, *tiny_blip_in_memory(seed))


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


# ---- Whisper ---------------------------------------------------------------------------------

_WHISPER_SPECIALS = [
    *("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>"),
    *("<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"),
]
# Prompt + a few tokens: keeps the tiny model's (random) transcripts short and its passes fast.
TINY_WHISPER_MAX_POSITIONS = 40


def tiny_whisper_in_memory(seed: int = 0) -> tuple[Any, Any]:
    """The tiny Whisper (d_model 32, 1+1 layers, byte-level vocabulary) and its processor."""
    # The 256 byte-level symbols and no merges: every token is one byte, so any text round-trips.
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in _WHISPER_SPECIALS:
        vocab[token] = len(vocab)
    eot = "<|endoftext|>"
    tokenizer: Any = WhisperTokenizer(
        vocab=vocab, merges=[], unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _WHISPER_SPECIALS[1:]})
    ids = {token: vocab[token] for token in _WHISPER_SPECIALS}
    special = {
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids[eot],
        "pad_token_id": ids[eot],
        "bos_token_id": ids[eot],
    }
    config = _WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,  # 30 s of audio, as in every real Whisper
        max_target_positions=TINY_WHISPER_MAX_POSITIONS,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        **special,
    )
    torch.manual_seed(seed)
    model = _WhisperModel(config).eval()
    # What Whisper's generate() looks up to build the <|en|> <|transcribe|> <|notimestamps|> prompt.
    model.generation_config = _GenerationConfig(
        **special,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        max_length=TINY_WHISPER_MAX_POSITIONS,
    )
    processor = _WhisperProcessor(feature_extractor=_WhisperFeatures(), tokenizer=tokenizer)
    return model, processor


def build_tiny_whisper(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny Whisper and save model + processor to `out_dir` (replacing it). Under a second."""
    return _save(out_dir, *tiny_whisper_in_memory(seed))


def _save(out_dir: Path, model: Any, processor: Any) -> Path:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
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
