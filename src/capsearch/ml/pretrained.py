"""What our Hugging Face models share: where the weights come from, the device, loading and freeing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from capsearch.errors import ModelUnavailableError


class PretrainedModel:
    """Base for the `Model` implementations built on `from_pretrained` (a processor and a model).

    Subclasses set `name` (the role) and implement `load()` with `_load_local` and `predict()`.
    """

    name: str  # the role ("captioner", …); a plain attribute, as the Model protocol declares it
    fix: ClassVar[str] = (
        "run `capsearch models download`, or start with CAPSEARCH_MODELS__PROFILE=tiny for an offline demo."
    )

    def __init__(
        self, model_id: str, *, cache_dir: Path, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        # Nothing heavy here: the app builds models at startup and loads them off the event loop.
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._processor: Any = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def describe(self) -> str:
        return f"{self.model_id} on {self.device} ({str(self.dtype).removeprefix('torch.')})"

    def _load_local(self, processor_cls: Any, model_cls: Any, **model_kwargs: Any) -> tuple[Any, Any]:
        """Both halves from local files only: fetching them is the registry's job, never load()'s,
        because an unreachable Hub would otherwise cost minutes of DNS retries before failing."""
        try:
            processor = processor_cls.from_pretrained(
                self.model_id, cache_dir=self.cache_dir, local_files_only=True
            )
            model = model_cls.from_pretrained(
                self.model_id, cache_dir=self.cache_dir, local_files_only=True, **model_kwargs
            )
        except (OSError, ValueError) as exc:  # ValueError: a missing path is not a valid Hub id either
            raise ModelUnavailableError(
                f"The {self.name} model '{self.model_id}' could not be loaded ({exc}). Fix: {self.fix}"
            ) from exc
        return processor, model

    def close(self) -> None:
        self._model = None
        self._processor = None
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
