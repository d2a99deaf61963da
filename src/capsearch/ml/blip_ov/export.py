"""Turn a loaded BlipForConditionalGeneration into the two OpenVINO graphs the fast captioner runs.

Imported only to convert (it needs torch and the model's weights in memory); serving reads the files.

- encoder: pixel_values -> cross_kv [layers, 2, batch, heads, patches, head_dim]: the vision tower
  plus every decoder layer's cross-attention key/value projections, so those are computed once per
  image instead of once per generated token.
- decoder: one greedy step. (input_ids [batch, 1], position_ids [1, 1], past_kv [layers, 2, batch,
  heads, past, head_dim], self_bias [1, past + 1], cross_k_0, cross_v_0, ... [batch, heads, patches,
  head_dim] per layer) -> (logits [batch, vocab] of the new position, present_kv with the new
  position appended). The cross keys/values come in per layer (views into the encoder's output),
  not as one tensor: slicing one input inside the graph made the CPU plugin copy all of it on
  every step (42 MB per image per token). self_bias is added to the self-attention
  scores (0 = attend). The first step gets one all-zero past slot, masked with -1e30, rather than an
  empty past: OpenVINO 2026.4 computes wrong logits for a zero-length past once the graph has been
  saved and read back (correct in memory), so the cache never has length 0.

The step re-states BLIP's text layer math with the model's own submodules (same Linear/LayerNorm/GELU
modules, same order of operations as transformers' BlipTextSelfAttention) instead of tracing
`generate`, whose cache objects and masks do not trace into a fixed graph.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capsearch.ml.blip_ov.cache import DECODER_XML, ENCODER_XML


class _ImageEncoder(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.layers = model.text_decoder.bert.encoder.layer
        text = model.config.text_config
        self.heads = int(text.num_attention_heads)
        self.head_dim = int(text.hidden_size) // self.heads

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds = self.vision(pixel_values=pixel_values)[0]
        batch, patches, _ = embeds.shape
        shape = (batch, patches, self.heads, self.head_dim)
        per_layer = []
        for layer in self.layers:
            attn = layer.crossattention.self
            key = attn.key(embeds).view(shape).transpose(1, 2)
            value = attn.value(embeds).view(shape).transpose(1, 2)
            per_layer.append(torch.stack([key, value]))
        return torch.stack(per_layer)


class _DecoderStep(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        decoder = model.text_decoder
        self.embeddings = decoder.bert.embeddings
        self.layers = decoder.bert.encoder.layer
        self.head = decoder.cls
        text = model.config.text_config
        self.heads = int(text.num_attention_heads)
        self.head_dim = int(text.hidden_size) // self.heads

    def _attend(
        self,
        attn: Any,
        hidden: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = hidden.shape[0]
        query = attn.query(hidden).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        # Scores scaled after the matmul, as transformers does: the same rounding as the torch backend.
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, value).permute(0, 2, 1, 3)
        return context.reshape(batch, -1, self.heads * self.head_dim)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        past_kv: torch.Tensor,
        self_bias: torch.Tensor,
        *cross_kv: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embeddings
        hidden = emb.LayerNorm(emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids))
        batch = hidden.shape[0]
        shape = (batch, -1, self.heads, self.head_dim)
        present = []
        for i, layer in enumerate(self.layers):
            attn = layer.attention.self
            key = torch.cat([past_kv[i, 0], attn.key(hidden).view(shape).transpose(1, 2)], dim=2)
            value = torch.cat([past_kv[i, 1], attn.value(hidden).view(shape).transpose(1, 2)], dim=2)
            present.append(torch.stack([key, value]))
            # One new position sees every earlier one: the causal mask is zeros except the unused slot.
            hidden = layer.attention.output(self._attend(attn, hidden, key, value, self_bias), hidden)
            cross = layer.crossattention
            keys, values = cross_kv[2 * i], cross_kv[2 * i + 1]
            hidden = cross.output(self._attend(cross.self, hidden, keys, values), hidden)
            hidden = layer.output(layer.intermediate(hidden), hidden)
        return self.head(hidden[:, -1, :]), torch.stack(present)


def _dims(model: Any) -> dict[str, int]:
    text, vision = model.config.text_config, model.config.vision_config
    heads = int(text.num_attention_heads)
    return {
        "layers": int(text.num_hidden_layers),
        "heads": heads,
        "head_dim": int(text.hidden_size) // heads,
        "image_size": int(vision.image_size),
        "patches": (int(vision.image_size) // int(vision.patch_size)) ** 2 + 1,
        "max_positions": int(text.max_position_embeddings),
    }


def export_graphs(model: Any, out_dir: Path, *, int8: bool = False) -> dict[str, int]:
    """Write encoder.xml/.bin and decoder.xml/.bin for `model` (eval mode, float32) into `out_dir`.

    Returns the dimensions the decoding loop needs. `int8`: weights stored as 8-bit integers with a
    per-channel scale (NNCF weight compression), activations stay float32.
    """
    import openvino as ov

    dims = _dims(model)
    layers, heads, head_dim = dims["layers"], dims["heads"], dims["head_dim"]
    size, patches = dims["image_size"], dims["patches"]
    text = model.config.text_config
    model = model.float().eval()
    # Example inputs only fix ranks and dtypes; every batch/length dimension is declared dynamic below.
    pixels = torch.zeros(2, 3, size, size)
    ids = torch.full((2, 1), int(text.bos_token_id), dtype=torch.long)
    position = torch.tensor([[1]], dtype=torch.long)
    past = torch.zeros(layers, 2, 2, heads, 1, head_dim)
    bias = torch.tensor([[-1e30, 0.0]])
    cross = [torch.zeros(2, heads, patches, head_dim) for _ in range(2 * layers)]
    kv_shape = ov.PartialShape([layers, 2, -1, heads, -1, head_dim])
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing touches deprecated transformers properties; their warnings are noise here (and
        # pytest turns warnings into errors).
        warnings.simplefilter("ignore")
        encoder = ov.convert_model(
            _ImageEncoder(model).eval(),
            example_input=(pixels,),
            input=[("pixel_values", ov.PartialShape([-1, 3, size, size]), ov.Type.f32)],
        )
        inputs = [
            ("input_ids", ov.PartialShape([-1, 1]), ov.Type.i64),
            ("position_ids", ov.PartialShape([1, 1]), ov.Type.i64),
            ("past_kv", kv_shape, ov.Type.f32),
            ("self_bias", ov.PartialShape([1, -1]), ov.Type.f32),
            *(
                (f"cross_{kind}_{i}", ov.PartialShape([-1, heads, -1, head_dim]), ov.Type.f32)
                for i in range(layers)
                for kind in ("k", "v")
            ),
        ]
        # Shapes by position, names set after: the traced *cross_kv arguments have no names to match.
        decoder = ov.convert_model(
            _DecoderStep(model).eval(),
            example_input=(ids, position, past, bias, *cross),
            input=[(shape, kind) for _, shape, kind in inputs],
        )
    for port, (name, _, _) in zip(decoder.inputs, inputs, strict=True):
        port.get_tensor().set_names({name})
    encoder.outputs[0].get_tensor().set_names({"cross_kv"})
    decoder.outputs[0].get_tensor().set_names({"logits"})
    decoder.outputs[1].get_tensor().set_names({"present_kv"})
    if int8:
        import nncf

        encoder = nncf.compress_weights(encoder)
        decoder = nncf.compress_weights(decoder)
    # compress_to_fp16 would round the weights: the graphs must compute what the checkpoint computes.
    ov.save_model(encoder, out_dir / ENCODER_XML, compress_to_fp16=False)
    ov.save_model(decoder, out_dir / DECODER_XML, compress_to_fp16=False)
    return dims
