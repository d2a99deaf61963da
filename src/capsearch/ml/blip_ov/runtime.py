"""Compiled OpenVINO graphs and the per-batch decoder state (the self-attention key/value cache)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.ml.blip_ov.cache import DECODER_XML, ENCODER_XML
from capsearch.ml.blip_ov.decode import Step
from capsearch.ml.yielding import NEVER_YIELD, Yielder

_MADV_DONTNEED = 4
# exp(-1e30 - max) is exactly 0: the placeholder slot adds nothing to the softmax or the context.
_MASKED = -1e30


class Decoder:
    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()
        self._cross: np.ndarray | None = None
        self._layers = 0

    def bind(self, cross_kv: np.ndarray) -> Step:
        """A step function for one batch; `cross_kv` is read in place by every step, never copied."""
        import openvino as ov

        request = self._request
        self._cross = cross_kv  # the request reads this memory: keep it alive while the batch decodes
        layers, _, batch, heads, _, head_dim = cross_kv.shape
        self._layers = layers
        for i in range(layers):  # contiguous views, shared with the request: no copies
            request.set_tensor(f"cross_k_{i}", ov.Tensor(cross_kv[i, 0], shared_memory=True))
            request.set_tensor(f"cross_v_{i}", ov.Tensor(cross_kv[i, 1], shared_memory=True))
        # Slot 0 is a placeholder that self_bias masks out (see export.py: the past is never empty).
        past = np.zeros((layers, 2, batch, heads, 1, head_dim), dtype=np.float32)
        position_ids = np.zeros((1, 1), dtype=np.int64)

        def step(input_ids: np.ndarray, position: int) -> np.ndarray:
            nonlocal past
            position_ids[0, 0] = position
            bias = np.zeros((1, past.shape[4] + 1), dtype=np.float32)
            bias[0, 0] = _MASKED
            request.set_tensor("input_ids", ov.Tensor(np.ascontiguousarray(input_ids, dtype=np.int64)))
            request.set_tensor("position_ids", ov.Tensor(position_ids))
            request.set_tensor("past_kv", ov.Tensor(past, shared_memory=True))
            request.set_tensor("self_bias", ov.Tensor(bias))
            request.infer()
            # Copies: the request reuses its output buffers on the next call.
            past = request.get_tensor("present_kv").data.copy()
            logits: np.ndarray = request.get_tensor("logits").data.copy()
            return logits

        return step

    def release(self) -> None:
        """Let go of the batch's cross-attention keys/values (~42 MB per image for BLIP base).

        The request's input tensors share that memory and keep it alive; pointing them at an empty
        placeholder frees it now, so the next batch's buffer never coexists with this one.
        """
        import openvino as ov

        if self._cross is None:
            return
        empty = np.zeros((0, *self._cross.shape[3:]), dtype=np.float32)  # a batch of none
        for i in range(self._layers):
            self._request.set_tensor(f"cross_k_{i}", ov.Tensor(empty))
            self._request.set_tensor(f"cross_v_{i}", ov.Tensor(empty))
        self._cross = None


class Encoder:
    """The vision graph, run one image at a time: batching gains nothing in this compute-bound part on
    a CPU, and a batch-8 run would hold ~0.4-0.6 GB more of intermediate buffers. The graph keeps its
    dynamic batch dimension: reshaped to a static [1, ...] input it ran ~0.2 s/img slower at batch 1
    (measured on BLIP base, 2 cores, OpenVINO 2026.4)."""

    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()

    def cross_kv(self, pixel_values: np.ndarray, yield_to: Yielder = NEVER_YIELD) -> np.ndarray:
        """Every decoder layer's cross-attention keys and values for these images:
        [layers, 2, batch, heads, patches, head_dim] float32. Each image's pass may be cancelled for
        more urgent work (`yield_to`) and is then run again from its unchanged input."""
        import openvino as ov

        request = self._request
        cross: np.ndarray | None = None
        for i in range(pixel_values.shape[0]):
            request.set_tensor("pixel_values", ov.Tensor(pixel_values[i : i + 1].copy()))
            # start_async + wait, not infer(): only an asynchronous run stops on cancel() (checked
            # between graph nodes; wait() then raises RuntimeError). A synchronous one runs to its end.
            yield_to.interruptible(_run_async(request), request.cancel)
            one = request.get_tensor("cross_kv").data
            if cross is None:
                shape = list(one.shape)
                shape[2] = pixel_values.shape[0]
                cross = np.empty(shape, dtype=np.float32)
            cross[:, :, i] = one[:, :, 0]
        assert cross is not None
        return cross


def _run_async(request: Any) -> Callable[[], None]:
    def run() -> None:
        request.start_async()
        request.wait()

    return run


def _config(num_threads: int | None, performance_hint: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        # The CPU plugin defaults to bf16 where the CPU has AVX512-BF16/AMX: faster, but the tokens
        # then differ from the float32 checkpoint's. Accuracy first.
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": performance_hint,
    }
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    return config


def drop_mapped_weights(directory: Path) -> None:
    """Release this process's resident pages of the memory-mapped .bin files.

    The CPU plugin repacks most weights into its own buffers at compile time and keeps the IR
    mapped, so every weight is resident twice (1.7 GB instead of 0.9 GB for BLIP base). The mapping
    is read-only and file-backed: MADV_DONTNEED only drops pages, and the few the plugin still reads
    (embedding rows, biases) are faulted back in from the page cache. Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    names = {str((directory / xml).with_suffix(".bin").resolve()) for xml in (ENCODER_XML, DECODER_XML)}
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in names and "w" not in fields[1]:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    madvise(start, end - start, _MADV_DONTNEED)
    except (OSError, AttributeError, ValueError):
        return  # only memory accounting is at stake


def compile_graphs(
    directory: Path, *, num_threads: int | None = None, performance_hint: str = "LATENCY"
) -> tuple[Encoder, Decoder]:
    import openvino as ov

    core = ov.Core()
    config = _config(num_threads, performance_hint)
    # One graph at a time, dropping its mapped copy before the next: the peak stays near one copy.
    encoder = core.compile_model(str(directory / ENCODER_XML), "CPU", config)
    drop_mapped_weights(directory)
    decoder = core.compile_model(str(directory / DECODER_XML), "CPU", config)
    drop_mapped_weights(directory)
    return Encoder(encoder), Decoder(decoder)
