"""Dropout with a cheaper random mask, for training on the CPU (`trainer.dropout_mask: fast`).

torch's dropout draws one Bernoulli variable per element from the CPU generator, one random number
each: on a 2-core CPU that is ~4 ns an element, a sixth of a MiniLM training step (dropout runs after
the embeddings, every attention and every feed-forward block). `dropout_mask` draws 64 random bits per
four elements instead and keeps an element where its 16 bits are at or above p x 2^16: the same
Bernoulli(1 - p) keep mask up to a keep probability rounded to 1/65536 (p 0.1: 0.899994), scaled by
1 / (1 - p) as torch scales it, seeded by torch's generator like every other draw. Roughly 4x cheaper.

`use_fast_dropout(model)` puts it in every `nn.Dropout` module of a model (the encoder's, the heads'):
the dropout after the embeddings, every attention output and every feed-forward block; and in the
attention probabilities of its Hugging Face encoders (`fast_attention`): with dropout on, torch's
scaled dot-product attention on the CPU runs its reference ("math") kernel, which upcasts bf16 inputs to
fp32 and draws the dropout mask one Bernoulli variable at a time; `fast_attention` computes the same
fp32 attention by hand with this mask instead. In evaluation (and wherever dropout is off, or off the
CPU) it is the encoder's SDPA attention unchanged, and dropout is the identity either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

_BITS = 16


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A keep mask shaped and typed as `like`: 1 / (1 - p) where kept (probability 1 - p, to 1/65536),
    0 where dropped."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p} is not in [0, 1)")
    n = like.numel()
    # the whole int64 range (random_() alone leaves the sign bit 0: one lane in four would be biased)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), 2**63 - 1)
    bits = words.view(torch.int16)[:n].view(like.shape)  # 16 bits an element, as a signed int16
    threshold = round(p * 2**_BITS) - 2 ** (_BITS - 1)
    return (bits >= threshold).to(like.dtype).mul_(1.0 / (1.0 - p))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout of `x` with `dropout_mask` on the CPU (the identity outside training or at p 0); elsewhere
    torch's (a GPU draws its masks in the dropout kernel itself)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return nn.functional.dropout(x, p, training)
    return x * dropout_mask(x, p)


class FastDropout(nn.Dropout):
    """`nn.Dropout` drawing its mask with `dropout_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


FAST_ATTENTION = "mmner_sdpa"  # the attention implementation name `use_fast_dropout` gives encoders


def attention_by_hand(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      p: float, scaling: float | None = None) -> torch.Tensor:
    """softmax(q k^T x scaling + mask) with `fast_dropout` on the probabilities, times v, in fp32 as
    torch's reference SDPA kernel computes bf16 inputs; [B, heads, T, d] -> [B, heads, T, d] in the
    query's dtype. `mask`: bool (True = attend) or additive float, broadcastable to [B, heads, T, S]."""
    dtype = query.dtype
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-2, -1)).mul_(scaling)
        if mask is not None:
            scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                      else scores + mask.float())
        probs = fast_dropout(torch.softmax(scores, dim=-1), p)
        return torch.matmul(probs, value.float()).to(dtype)


def fast_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs: Any) -> tuple[torch.Tensor, None]:
    """A Hugging Face attention function (registered as `FAST_ATTENTION`): `attention_by_hand` while its
    attention dropout is on, on the CPU; otherwise transformers' SDPA attention."""
    if dropout == 0.0 or not module.training or query.device.type != "cpu" or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[1] != key.shape[1]:  # grouped key / value heads: each serves its group of query heads
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = attention_by_hand(query, key, value, attention_mask, dropout, scaling)
    return out.transpose(1, 2).contiguous(), None  # [B, T, heads, d], as transformers' attention functions give


class FastMultiheadAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` (same parameters) whose training forward on the CPU drops attention
    probabilities with `attention_by_hand`, where torch's would run SDPA's reference kernel with its
    Bernoulli mask. The cases that path does not cover (attention weights asked for, evaluation, masks
    other than a key padding mask, separate key / value widths, added bias or zero keys, sequence-first
    tensors, other devices) are torch's forward unchanged."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,  # type: ignore[override]
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (need_weights or not self.training or self.dropout == 0.0 or query.device.type != "cpu"
                or not self.batch_first or not self._qkv_same_embed_dim or attn_mask is not None or is_causal
                or self.bias_k is not None or self.add_zero_attn or query.dim() != 3):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        width, heads = self.embed_dim, self.num_heads
        weight, bias = self.in_proj_weight, self.in_proj_bias

        def project(x: torch.Tensor, part: slice) -> torch.Tensor:
            return nn.functional.linear(x, weight[part], None if bias is None else bias[part])

        # one projection per distinct input, as torch packs them
        if query is key and key is value:
            q, k, v = project(query, slice(None)).chunk(3, dim=-1)
        elif key is value:
            q = project(query, slice(0, width))
            k, v = project(key, slice(width, None)).chunk(2, dim=-1)
        else:
            q, k, v = (project(x, slice(i * width, (i + 1) * width)) for i, x in enumerate((query, key, value)))

        def split(x: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, H / heads]
            return x.reshape(x.shape[0], x.shape[1], heads, width // heads).transpose(1, 2)

        mask = None
        if key_padding_mask is not None:  # True (bool) = ignore, or an additive float mask, [B, S]
            mask = (~key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask)[:, None, None, :]
        out = attention_by_hand(split(q), split(k), split(v), mask, self.dropout)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], width)
        return self.out_proj(out), None


def _register_fast_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(FAST_ATTENTION, fast_attention)
    AttentionMaskInterface.register(FAST_ATTENTION, sdpa_mask)  # the masks SDPA takes


# On import: a process that unpickles a model using it (a spawned distributed worker) imports this module
# for the model's FastDropout modules, and so knows the encoders' attention by name before they run.
_register_fast_attention()


def use_fast_dropout(model: nn.Module) -> int:
    """Every `nn.Dropout` module of `model` (its encoder's too) draws its mask with `dropout_mask`, its
    `nn.MultiheadAttention` modules become `FastMultiheadAttention` and its Hugging Face encoders with
    SDPA attention switch to `fast_attention`, in place; how many dropout modules were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = FastDropout
            switched += 1
        elif type(module) is nn.MultiheadAttention:
            module.__class__ = FastMultiheadAttention
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation(FAST_ATTENTION)
    return switched
