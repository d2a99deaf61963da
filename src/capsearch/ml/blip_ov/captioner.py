"""BLIP captions on the CPU with OpenVINO: same checkpoint, same greedy tokens as `BlipCaptioner`.

Why it is faster than the torch backend on a CPU: the vision tower runs as one compiled graph
(fused attention instead of eager), each decoder layer's cross-attention keys/values are computed
once per image inside that graph instead of being re-read through `generate`'s cache objects, and a
decoder step is one compiled call. Numerics stay float32 (the CPU plugin would otherwise pick bf16
on CPUs that have it, changing tokens); int8 weights are an opt-in (`int8=True`), unverified for
quality.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from capsearch.errors import ModelUnavailableError
from capsearch.ml.blip_ov import cache
from capsearch.ml.blip_ov.decode import GreedyRules, Step, greedy_decode
from capsearch.ml.blip_ov.preprocess import TOKENIZER_JSON, ImagePrep, TextDecoder
from capsearch.ml.caption_text import tidy_caption
from capsearch.ml.yielding import NEVER_YIELD, Yielder

log = logging.getLogger(__name__)

# Measured on a 2-core CPU: BLIP base (224M parameters, 0.9 GB of weights) converts in ~60 s.
_CONVERT_S_PER_GB = 65.0
_UNAVAILABLE_EXIT = 3
# Images decoded together. Measured on BLIP base, 2 cores: 4 at a time captions as fast per image as
# 8 (0.77 vs 0.76 s), and holds half the cross-attention keys/values (42 MB per image) and buffers.
DECODE_BATCH = 4


class OpenVinoBlipCaptioner:
    """`Model[PIL.Image.Image, str]` backed by OpenVINO graphs converted from a BLIP checkpoint."""

    name = "captioner"
    backend = "openvino"
    fix: ClassVar[str] = (
        "run `capsearch models download`, or start with CAPSEARCH_MODELS__PROFILE=tiny for an offline demo."
    )

    def __init__(
        self,
        model_id: str,
        *,
        cache_dir: Path,
        max_new_tokens: int = 30,
        int8: bool = False,
        num_threads: int | None = None,
        performance_hint: str = "LATENCY",
        convert_in_subprocess: bool = True,
    ) -> None:
        # Nothing heavy here: the app builds models at startup and loads them off the event loop.
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.max_new_tokens = max_new_tokens
        self.int8 = int8
        self.num_threads = num_threads
        self.performance_hint = performance_hint
        # A conversion loads the torch weights; in-process, the allocator keeps ~0.75 GB of them after
        # they are freed, for as long as the server runs. A child process returns it all on exit.
        self.convert_in_subprocess = convert_in_subprocess
        self._encoder: Any = None
        self._decoder: Any = None
        self._prep: ImagePrep | None = None
        self._text: TextDecoder | None = None
        self._rules: GreedyRules | None = None
        self._dims: dict[str, int] = {}
        # predict() reuses one pair of infer requests; a second caller must wait, not interleave.
        self._lock = threading.Lock()
        # Where captions give way to interactive work: before each image's vision pass (which is
        # also cancelled and rerun if such work arrives mid-pass) and before each decoding step.
        self.yield_to: Yielder = NEVER_YIELD

    @property
    def loaded(self) -> bool:
        return self._decoder is not None

    def describe(self) -> str:
        weights = "int8 weights" if self.int8 else "float32"
        return f"{self.model_id} on cpu (openvino, {weights})"

    def _checkpoint(self) -> Path:
        found = cache.checkpoint_dir(self.model_id, self.cache_dir)
        if found is None:
            raise ModelUnavailableError(
                f"The {self.name} model '{self.model_id}' is not on disk. Fix: {self.fix}"
            )
        return found

    def converted_dir(self) -> Path:
        """Where this checkpoint's graphs are (or will be) for the installed library versions."""
        checkpoint = self._checkpoint()
        key = cache.checkpoint_key(checkpoint, int8=self.int8)
        return cache.converted_dir(self.cache_dir, self.model_id, key, int8=self.int8)

    def convert(self) -> Path:
        """Convert the checkpoint unless this exact conversion is cached; returns its directory.

        The first time costs about a minute for BLIP base (torch loads the weights and OpenVINO
        traces them); later calls, and later starts, only hash a few small files.
        """
        checkpoint = self._checkpoint()
        target = cache.converted_dir(
            self.cache_dir, self.model_id, cache.checkpoint_key(checkpoint, int8=self.int8), int8=self.int8
        )
        if cache.is_complete(target):
            return target
        estimate = 5 + _CONVERT_S_PER_GB * cache.weights_bytes(checkpoint) / 1e9 * (1.3 if self.int8 else 1)

        def build(tmp: Path) -> None:
            log.info("converting the captioner for OpenVINO (one time, ~%.0f s)…", estimate)
            started = time.monotonic()
            if self.convert_in_subprocess:
                self._export_in_child(tmp)
            else:
                self._export(tmp)
            log.info("converted the captioner in %.0f s: %s", time.monotonic() - started, target)

        cache.publish(target, build)
        return target

    def _export_in_child(self, out_dir: Path) -> None:
        command = [sys.executable, "-m", "capsearch.ml.blip_ov.captioner", self.model_id]
        command += [str(self.cache_dir), str(out_dir), "int8" if self.int8 else "fp32"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == _UNAVAILABLE_EXIT:
            raise ModelUnavailableError(done.stdout.strip())
        if done.returncode != 0:
            raise RuntimeError(f"converting the captioner failed: {done.stderr.strip()[-2000:]}")

    def _export(self, out_dir: Path) -> None:
        # torch and the weights are needed only here; a cached start never imports this module.
        from transformers import BlipForConditionalGeneration, BlipProcessor

        from capsearch.ml.blip_ov.export import export_graphs
        from capsearch.ml.blip_ov.preprocess import save_processor

        try:
            model: Any = BlipForConditionalGeneration.from_pretrained(
                self.model_id, cache_dir=self.cache_dir, local_files_only=True
            )
            processor: Any = BlipProcessor.from_pretrained(
                self.model_id, cache_dir=self.cache_dir, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"The {self.name} model '{self.model_id}' could not be loaded ({exc}). Fix: {self.fix}"
            ) from exc
        rules = GreedyRules.from_model(model)
        try:
            dims = export_graphs(model, out_dir, int8=self.int8)
        finally:
            # The traced graphs and transformers keep reference cycles to the ~0.9 GB of torch weights;
            # collect them now, not at some later GC pass, so serving does not start with two copies.
            del model
            gc.collect()
        meta = {"format": cache.GRAPH_FORMAT, "model_id": self.model_id, "int8": self.int8}
        meta |= {"dims": dims, "rules": rules.to_json(), **save_processor(processor, out_dir)}
        # Written last: a directory with meta.json is a finished conversion.
        (out_dir / cache.META_FILE).write_text(json.dumps(meta, indent=2))

    def load(self) -> None:
        if self.loaded:
            return
        directory = self.convert()
        meta = json.loads((directory / cache.META_FILE).read_text())
        # No transformers here, hence no torch: the serving process needs only openvino and tokenizers.
        from capsearch.ml.blip_ov.runtime import compile_graphs

        encoder, decoder = compile_graphs(
            directory, num_threads=self.num_threads, performance_hint=self.performance_hint
        )
        self._prep = ImagePrep.from_json(meta["image"])
        self._text = TextDecoder(directory / TOKENIZER_JSON, clean_up_spaces=bool(meta["text"]["clean_up"]))
        self._rules = GreedyRules.from_json(meta["rules"])
        self._dims = {k: int(v) for k, v in meta["dims"].items()}
        self._encoder, self._decoder = encoder, decoder
        self._warm_up(directory)

    def _warm_up(self, directory: Path) -> None:
        """Run every batch size once. The CPU plugin repacks dynamically shaped layers' weights on their
        first run at each size, reading them through the mapping again: drop those pages after each
        (BLIP base: ~0.3 GB less resident), and no real caption is the slow first one."""
        from capsearch.ml.blip_ov.runtime import drop_mapped_weights

        assert self._prep is not None and self._rules is not None
        one = self._encoder.cross_kv(self._prep.blank())
        drop_mapped_weights(directory)
        for size in range(1, DECODE_BATCH + 1):
            step = self._decoder.bind(np.repeat(one, size, axis=2))
            try:
                greedy_decode(step, size, self._rules, 2)
            finally:
                self._decoder.release()
            drop_mapped_weights(directory)

    def pixel_values(self, images: list[Image.Image]) -> np.ndarray:
        """The processor's input for these images: resized, normalised, [batch, 3, H, W] float32."""
        if self._prep is None:
            raise RuntimeError("OpenVinoBlipCaptioner.pixel_values() called before load()")
        return self._prep(images)

    def generate_ids(self, pixel_values: np.ndarray, *, max_new_tokens: int | None = None) -> np.ndarray:
        """Greedy token ids [batch, 1 + n] for preprocessed images, as the torch backend's `generate`."""
        if self._rules is None:
            raise RuntimeError("OpenVinoBlipCaptioner.predict() called before load()")
        # Past the learned positions the decoder has no embedding to look up.
        limit = min(max_new_tokens or self.max_new_tokens, self._dims["max_positions"] - 1)
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        with self._lock:
            parts = [
                self._decode(pixel_values[i : i + DECODE_BATCH], limit)
                for i in range(0, pixel_values.shape[0], DECODE_BATCH)
            ]
        # As one `generate` call: rows that ended early are padded to the longest.
        width = max(p.shape[1] for p in parts)
        pad = self._rules.pad_token_id
        return np.concatenate(
            [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=pad) for p in parts]
        )

    def _decode(self, pixel_values: np.ndarray, limit: int) -> np.ndarray:
        assert self._rules is not None
        yield_to = self.yield_to
        step: Step = self._decoder.bind(self._encoder.cross_kv(pixel_values, yield_to))

        def yielding_step(ids: np.ndarray, position: int) -> np.ndarray:
            yield_to.checkpoint()
            return step(ids, position)

        try:
            return greedy_decode(yielding_step, pixel_values.shape[0], self._rules, limit)
        finally:
            self._decoder.release()

    def predict(self, batch: list[Image.Image]) -> list[str]:
        if not batch:
            return []
        if self._prep is None or self._text is None:
            raise RuntimeError("OpenVinoBlipCaptioner.predict() called before load()")
        ids = self.generate_ids(self.pixel_values(batch))
        texts = self._text(ids)
        captions = [tidy_caption(t) for t in texts]
        if len(captions) != len(batch):
            raise RuntimeError(f"captioner returned {len(captions)} captions for {len(batch)} images")
        return captions

    def close(self) -> None:
        self._encoder = None
        self._decoder = None
        self._prep = None
        self._text = None
        self._rules = None


def _convert_main(argv: list[str]) -> int:
    """`python -m capsearch.ml.blip_ov.captioner MODEL_ID CACHE_DIR OUT_DIR fp32|int8`: one conversion."""
    model_id, cache_dir, out_dir, variant = argv
    captioner = OpenVinoBlipCaptioner(model_id, cache_dir=Path(cache_dir), int8=variant == "int8")
    try:
        captioner._export(Path(out_dir))
    except ModelUnavailableError as exc:
        print(exc.message)
        return _UNAVAILABLE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(_convert_main(sys.argv[1:]))
