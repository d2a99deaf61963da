"""BLIP image captioning behind the `Model` contract.

We call the processor and `model.generate` ourselves: transformers 5 removed the "image-to-text"
pipeline, and doing it by hand is also what lets one `generate` call caption a whole batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor, StoppingCriteria, StoppingCriteriaList

from capsearch.ml.blip_sdpa import use_sdpa
from capsearch.ml.caption_text import tidy_caption
from capsearch.ml.pretrained import PretrainedModel
from capsearch.ml.yielding import NEVER_YIELD, Yielder

__all__ = ["BlipCaptioner", "tidy_caption"]


class _YieldEachStep(StoppingCriteria):
    """Not a stopping rule: `generate` calls its criteria once per token, which makes them the one
    hook between decoding steps. Gives way there, and never stops generation."""

    def __init__(self, yield_to: Yielder) -> None:
        self._yield_to = yield_to

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self._yield_to.checkpoint()
        never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, never)


class BlipCaptioner(PretrainedModel):
    """`Model[PIL.Image.Image, str]`: a batch of images in, one caption per image out, in order."""

    name = "captioner"

    def __init__(
        self,
        model_id: str,
        *,
        cache_dir: Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_new_tokens: int = 30,
    ) -> None:
        super().__init__(model_id, cache_dir=cache_dir, device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens
        # Where captions give way to interactive work: before a batch and between decoding steps
        # (the batched vision pass runs uninterrupted: the OpenVINO backend can cancel its own).
        self.yield_to: Yielder = NEVER_YIELD

    @classmethod
    def from_loaded(
        cls,
        model: Any,
        processor: Any,
        *,
        model_id: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_new_tokens: int = 30,
    ) -> BlipCaptioner:
        """Wrap an in-memory model and processor (benchmarks of random weights; nothing is on disk)."""
        captioner = cls(
            model_id, cache_dir=Path("."), device=device, dtype=dtype, max_new_tokens=max_new_tokens
        )
        captioner._processor = processor
        captioner._model = model.to(device=device, dtype=dtype).eval()
        use_sdpa(captioner._model)
        return captioner

    def load(self) -> None:
        if self.loaded:
            return
        processor, model = self._load_local(BlipProcessor, BlipForConditionalGeneration, dtype=self.dtype)
        self._processor = processor
        self._model = model.to(self.device).eval()
        use_sdpa(self._model)

    def pixel_values(self, images: list[Image.Image]) -> np.ndarray:
        """The processor's input for these images: resized, normalised, [batch, 3, H, W] float32."""
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        values: np.ndarray = self._processor(images=rgb, return_tensors="np")["pixel_values"]
        return values

    def generate_ids(self, pixel_values: np.ndarray) -> np.ndarray:
        """Greedy token ids [batch, 1 + n], the prompt ([DEC]) first."""
        if self._model is None:
            raise RuntimeError("BlipCaptioner.predict() called before load()")
        self.yield_to.checkpoint()
        with torch.inference_mode():
            pixels = torch.from_numpy(pixel_values).to(self.device, dtype=self.dtype)
            # Greedy decoding: deterministic, and beams would multiply the cost on a CPU.
            output_ids = self._model.generate(
                pixel_values=pixels,
                max_new_tokens=self.max_new_tokens,
                num_beams=1,
                do_sample=False,
                stopping_criteria=StoppingCriteriaList([_YieldEachStep(self.yield_to)]),
            )
        ids: np.ndarray = output_ids.cpu().numpy()
        return ids

    def predict(self, batch: list[Image.Image]) -> list[str]:
        if not batch:
            return []
        if self._model is None:
            raise RuntimeError("BlipCaptioner.predict() called before load()")
        ids = self.generate_ids(self.pixel_values(batch))
        texts: list[str] = self._processor.batch_decode(ids, skip_special_tokens=True)
        captions = [tidy_caption(t) for t in texts]
        if len(captions) != len(batch):  # generate() returns one row per image; guard the contract anyway
            raise RuntimeError(f"captioner returned {len(captions)} captions for {len(batch)} images")
        return captions
