"""Pick the torch device and dtype from settings; "auto" means the best the machine offers."""

from __future__ import annotations

import torch

from capsearch.config import DeviceName, DTypeName

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(name: DeviceName) -> str:
    """Return a torch device string. "auto" prefers cuda, then Apple's mps, then cpu."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: DTypeName, device: str) -> torch.dtype:
    """Return the weight dtype. "auto" is float16 on cuda (half the memory, tensor cores) and float32
    elsewhere, because half precision on CPUs is slow or unsupported for many kernels."""
    if name != "auto":
        return _DTYPES[name]
    if device.startswith("cuda"):
        return torch.float16
    return torch.float32
