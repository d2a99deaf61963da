"""Images in, token ids out, without transformers or torch: what BlipProcessor does, in numpy/PIL.

Serving then never imports torch (hundreds of MB resident). The settings are read from the
checkpoint's processor at conversion time and stored in meta.json; the tokenizer is saved beside
the graphs as tokenizer.json and decoded with the `tokenizers` library.

- `ImagePrep` reproduces transformers 5's BlipImageProcessor (PIL backend): resize with PIL to
  (height, width) with the configured resample filter (BICUBIC for BLIP), rescale in float64 then
  cast to float32, normalise in float32, channels first.
- `TextDecoder` reproduces `batch_decode(ids, skip_special_tokens=True)` of the tokenizers-backed
  BertTokenizer, including `clean_up_tokenization_spaces` when the checkpoint sets it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TOKENIZER_JSON = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class ImagePrep:
    height: int
    width: int
    resample: int
    do_resize: bool
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, image_processor: Any) -> ImagePrep:
        size = image_processor.size
        if isinstance(size, dict):
            height, width = size.get("height"), size.get("width")
        else:
            height, width = size.height, size.width
        if not (height and width):
            raise ValueError(f"only a fixed height/width resize is supported, not {size}")
        if getattr(image_processor, "do_center_crop", False) or getattr(image_processor, "do_pad", False):
            raise ValueError("center crop and padding are not supported")
        return cls(
            height=int(height),
            width=int(width),
            resample=int(image_processor.resample),
            do_resize=bool(image_processor.do_resize),
            do_rescale=bool(image_processor.do_rescale),
            rescale_factor=float(image_processor.rescale_factor),
            do_normalize=bool(image_processor.do_normalize),
            image_mean=_three(image_processor.image_mean),
            image_std=_three(image_processor.image_std),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImagePrep:
        data = dict(data)
        data["image_mean"] = _three(data["image_mean"])
        data["image_std"] = _three(data["image_std"])
        return cls(**data)

    def blank(self) -> np.ndarray:
        """One all-zero image's pixel_values, for a warm-up run."""
        return np.zeros((1, 3, self.height, self.width), dtype=np.float32)

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        """pixel_values [batch, 3, height, width] float32, as BlipProcessor(images=...)["pixel_values"]."""
        out = np.empty((len(images), 3, self.height, self.width), dtype=np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        for i, image in enumerate(images):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if self.do_resize:
                rgb = rgb.resize((self.width, self.height), resample=Image.Resampling(self.resample))
            pixels: np.ndarray = np.asarray(rgb)
            if self.do_rescale:  # transformers multiplies in float64, then casts to float32
                pixels = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
            else:
                pixels = pixels.astype(np.float32)
            if self.do_normalize:
                pixels = (pixels - mean) / std
            out[i] = pixels.transpose(2, 0, 1)
        return out


def _three(values: Any) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = [values] * 3
    a, b, c = (float(v) for v in values)
    return a, b, c


def _clean_up(text: str) -> str:
    """transformers' `clean_up_tokenization` (spaces before punctuation and English contractions)."""
    for before, after in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(before, after)
    return text


class TextDecoder:
    def __init__(self, tokenizer_json: Path, *, clean_up_spaces: bool) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.clean_up_spaces = clean_up_spaces

    def __call__(self, ids: np.ndarray) -> list[str]:
        rows = [[int(t) for t in row] for row in ids]
        texts = self._tokenizer.decode_batch(rows, skip_special_tokens=True)
        return [_clean_up(t) for t in texts] if self.clean_up_spaces else list(texts)


def save_processor(processor: Any, out_dir: Path) -> dict[str, Any]:
    """Write tokenizer.json into `out_dir`; returns meta.json's "image" and "text" entries."""
    tokenizer = processor.tokenizer
    tokenizer.backend_tokenizer.save(str(out_dir / TOKENIZER_JSON))
    clean = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    if clean and type(tokenizer.backend_tokenizer.model).__name__ == "BPE":
        clean = False  # transformers skips the clean-up for BPE tokenizers (BLIP's is WordPiece)
    image = ImagePrep.from_processor(processor.image_processor)
    return {"image": image.to_json(), "text": {"clean_up": clean}}
