"""Pieces shared by several models (DESIGN §4): one copy each.

Visual regions reach a multimodal model in one of two shapes, whatever the run's `visual.source`:
grid-like regions `[R, D]` (`VisualInput.regions`) or a caption (`VisualInput.caption`), which the
model encodes with its own text encoder into one region per caption token (`caption_regions`). The
featurise / collate / encode steps for both are here (`featurize_visual`, `collate_visual`,
`VisualRegions`), so every multimodal model sees `regions` [B, R, H] and `mask` [B, R] (True = real
region; an all-False row is a post without image, see `mmner.vision.inputs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmner.errors import MmnerError
from mmner.vision.inputs import caption_regions, collate_regions

if TYPE_CHECKING:
    from mmner.data.post import Post
    from mmner.tagging.alignment import SpecialTokens
    from mmner.vision.inputs import VisualInput, VisualInputs


def pad_word_ids(items: list[dict[str, Any]], key: str, width: int) -> torch.Tensor:
    """Each item's per-word ids under `key`, zero-padded to [B, width] (long)."""
    ids = torch.zeros((len(items), width), dtype=torch.long)
    for b, item in enumerate(items):
        ids[b, : len(item[key])] = torch.tensor(item[key])
    return ids


def pad_tags(items: list[dict[str, Any]], width: int) -> torch.Tensor | None:
    """Gold ids [B, W] when every item has gold, else None."""
    if any(item.get("tags") is None for item in items):
        return None
    return pad_word_ids(items, "tags", width)


# --------------------------------------------------------------------------------------------------
# visual input of a text-encoder model


class RegionParams(BaseModel):
    """Config keys of every model that takes visual regions (mixed into its `Params`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    # Width D of grid regions (the CNN's channels: 1280 for efficientnet-lite0, 2048 for ResNet-152).
    # `train` fills it in from `visual.grid_encoder`; unset for caption sources, whose regions are the
    # text encoder's own states.
    visual_dim: int | None = Field(None, ge=1)
    caption_tokens: int = Field(64, ge=1)  # most caption sub-tokens used (captions are cut, never the text)


P = TypeVar("P", bound=BaseModel)  # a model's params (`models.base.ModelParams`, which imports this module)


def resolve_region_params(params: P, visual: VisualInputs) -> P:
    """`params` completed for the run's visual source: `visual_dim` is the grid's width, or unset."""
    name = params.name
    if visual.source == "none":
        raise MmnerError(f"visual.source: {name} is a multimodal model and needs visual input; "
                         "set visual.source to caption, pseudo-caption or grid (or choose bert-crf)")
    dim = getattr(params, "visual_dim", None)
    if visual.source != "grid":
        if dim is not None:
            raise MmnerError(f"model.visual_dim: {name} encodes {visual.source} regions with its text encoder; "
                             "leave model.visual_dim unset (it is for visual.source: grid)")
        return params
    if visual.dim is None:
        raise MmnerError("model.visual_dim: cannot tell the width of the grid regions; set model.visual_dim")
    if dim is not None and dim != visual.dim:
        raise MmnerError(f"model.visual_dim: {dim}, but the grid encoder ({visual.detail}) gives regions of width "
                         f"{visual.dim}; remove model.visual_dim or set it to {visual.dim}")
    return params.model_copy(update={"visual_dim": visual.dim})


def checked_regions(post: Post, regions: torch.Tensor, region_dim: int) -> torch.Tensor:
    """A post's grid regions [R, D], refused when D is not the width the model was built for."""
    if regions.dim() != 2 or regions.shape[-1] != region_dim:
        raise MmnerError(f"post {post.id}: visual regions of shape {tuple(regions.shape)}, but the model takes "
                         f"[R, {region_dim}] (model.visual_dim); use the grid encoder the run was trained with")
    return regions


def weights_digest(module: nn.Module) -> str:
    """Identifies a (frozen, pretrained) encoder's weights: its first tensor (the embedding table) and its last."""
    digest = hashlib.sha1()
    weights = list(module.parameters())
    for tensor in (weights[0], weights[-1]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def featurize_visual(post: Post, visual: VisualInput | None, tokenizer, region_dim: int,
                     caption_tokens: int) -> dict[str, Any]:
    """One post's visual part of a model's features: `regions` [R, D] or `caption_ids`, or neither
    (a post without image). A caption is cut to `caption_tokens` sub-tokens."""
    if visual is None or visual.masked:
        return {"regions": None, "caption_ids": None}
    if visual.regions is not None:
        return {"regions": checked_regions(post, visual.regions, region_dim).float(), "caption_ids": None}
    if visual.caption is not None:
        ids = tokenizer(visual.caption, add_special_tokens=False)["input_ids"][:caption_tokens]
        return {"regions": None, "caption_ids": ids or None}
    return {"regions": None, "caption_ids": None}


def collate_visual(items: list[dict[str, Any]], region_dim: int, special: SpecialTokens,
                   pad_id: int) -> dict[str, torch.Tensor]:
    """The visual part of a batch: `regions` [B, R, D] + `region_mask` [B, R] for grid regions, or
    `caption_ids` / `caption_attention` [B, T] (each caption framed as a single sequence) with
    `caption_tokens` [B, T] True at caption tokens, for `VisualRegions` to encode."""
    captions = [item["caption_ids"] for item in items]
    regions = [item["regions"] for item in items]
    if any(c is not None for c in captions):
        if any(r is not None for r in regions):
            raise MmnerError("a batch mixes grid regions and captions; a run has one visual source")
        seqs = [special.single(c or []) for c in captions]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        tokens = torch.zeros((len(items), width), dtype=torch.bool)
        start = len(special.prefix)
        for b, (seq, c) in enumerate(zip(seqs, captions)):
            ids[b, : len(seq)] = torch.tensor(seq)
            attention[b, : len(seq)] = 1
            tokens[b, start : start + len(c or [])] = True
        return {"caption_ids": ids, "caption_attention": attention, "caption_tokens": tokens}
    out, mask = collate_regions(regions, dim=region_dim)
    return {"regions": out, "region_mask": mask}


class VisualRegions(nn.Module):
    """A batch's regions projected to the model width: [B, R, D] -> [B, R, H], padding rows zero.

    Caption batches are first encoded with the model's text encoder (passed in, not owned, so its
    weights are registered once), one region per caption token. The projection is the linear map
    of Chen et al. (§3.1) "into the same embedding space of word representation".
    """

    def __init__(self, region_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(region_dim, hidden)

    def forward(self, batch: dict[str, Any], encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        if "caption_ids" in batch:
            states = encoder(input_ids=batch["caption_ids"], attention_mask=batch["caption_attention"]).last_hidden_state
            regions, mask = caption_regions(states, batch["caption_tokens"])  # [B, R, H], [B, R]
        else:
            regions, mask = batch["regions"], batch["region_mask"]
        return self.proj(regions) * mask.unsqueeze(-1).to(regions.dtype), mask


# --------------------------------------------------------------------------------------------------
# attention over regions


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, keeping only `mask`ed-in entries; an all-masked row is all zeros
    (a post without image attends to nothing, so its attended vector is 0)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)


def masked_mean(regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real regions. [B, R, H], [B, R] -> [B, H]; 0 for a post without image."""
    weights = mask.to(regions.dtype)
    return (regions * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


class CrossAttentionLayer(nn.Module):
    """A transformer layer whose queries (words) attend over keys (regions): multi-head attention
    with residual and layer norm, then a feed-forward block with residual and layer norm.

    For a post without image the attended vector is 0 (the residual keeps the words as they are).
    """

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                record: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, W, H] attends over memory [B, R, H] (memory_mask [B, R], True = real). With `record`,
        the attention weights [B, W, R] (mean over heads; 0 for a post without image) are appended."""
        has = memory_mask.any(-1)  # [B]
        # nn.MultiheadAttention gives NaN for a row without keys: let such rows see slot 0, then drop it
        usable = memory_mask.clone()
        usable[:, 0] |= ~has
        attended, weights = self.attention(x, memory, memory, key_padding_mask=~usable, need_weights=record is not None)
        attended = attended * has[:, None, None].to(attended.dtype)
        if record is not None:
            record.append(weights * has[:, None, None].to(weights.dtype))
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x)))


# --------------------------------------------------------------------------------------------------
# where a model looks: attention from words over visual regions (computed only when predicting)
#
# `Tagger.predict` passes an `AttentionRecord` in the batch under "_record"; a model that attends over
# visual regions fills it during its forward pass, and `attention_rows` turns it into one entry per post.


class AttentionRecord(dict):
    """Filled by a model's forward pass: `word_region` [B, W, R], the attention from each word (its
    first sub-token) to each visual region, averaged over the layers and heads that attend across
    modalities; `region_mask` [B, R]; optionally `labels`, one list of region names per post (caption
    tokens), when the regions are not the batch's `caption_ids`."""


@contextmanager
def eager_attention(encoder: nn.Module) -> Iterator[None]:
    """The encoder with the eager attention kernel for the duration: SDPA returns no weights."""
    before = getattr(getattr(encoder, "config", None), "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(encoder, "set_attn_implementation"):
        yield
        return
    encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        encoder.set_attn_implementation(before)


def encode_with_attention(encoder: nn.Module, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's last hidden states [N, S, H] and its self-attention [N, S, S] averaged over
    layers and heads (the 1/LH sum of RpBERT eq. 10-11)."""
    with eager_attention(encoder):
        out = encoder(**inputs, output_attentions=True)
    if not out.attentions:
        raise MmnerError(f"{type(encoder).__name__} returns no attention weights; region attention needs an "
                         "encoder with an eager attention implementation")
    return out.last_hidden_state, torch.stack(out.attentions).mean(dim=(0, 2))


def word_region_attention(attention: torch.Tensor, gather: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Rows of each word, columns of each region: `attention` [N, S, S] per window, `gather` [B, W]
    (flat index into [N * S] of each word's first sub-token), `columns` [N, R] (each region's position
    in every window) -> [B, W, R]."""
    n, s, _ = attention.shape
    rows = attention.reshape(n * s, s)[gather]  # [B, W, S]
    return rows.gather(-1, columns[gather // s].clamp(0, s - 1))  # [B, W, R]


def attention_rows(record: AttentionRecord, batch: dict[str, Any], tokenizer: Any) -> list[dict[str, Any] | None]:
    """One entry per post of a filled record (None for a post without image):
    `{"weights": [R], "words": [W][R], "grid": [h, w] | "labels": [R]}` — weights_j is the attention
    of all the post's words to region j (RpBERT's a_j^v, eq. 11, whose sum is S_TV, eq. 10), `words`
    the same per word; `grid` for image regions that form a square grid (row-major), `labels` naming
    caption regions by their sub-tokens."""
    att = record["word_region"].float()  # [B, W, R]
    region_mask, word_mask = record["region_mask"], batch["word_mask"]
    labels = record.get("labels")
    rows: list[dict[str, Any] | None] = []
    for b in range(att.shape[0]):
        keep = region_mask[b].nonzero().flatten()
        if keep.numel() == 0:
            rows.append(None)
            continue
        words = att[b, word_mask[b]][:, keep]  # [W_b, R_b]
        entry: dict[str, Any] = {"weights": [round(float(x), 6) for x in words.sum(0)],
                                 "words": [[round(float(x), 6) for x in row] for row in words]}
        if labels is not None:
            entry["labels"] = list(labels[b])
        elif "caption_ids" in batch:
            entry["labels"] = tokenizer.convert_ids_to_tokens(batch["caption_ids"][b][batch["caption_tokens"][b]].tolist())
        else:
            side = int(round(keep.numel() ** 0.5))
            if side * side == keep.numel():
                entry["grid"] = [side, side]
        if "labels" in entry and len(entry["labels"]) != keep.numel():
            raise MmnerError(f"region attention: {keep.numel()} regions but {len(entry['labels'])} region names")
        rows.append(entry)
    return rows


def pool_words(flat: torch.Tensor, gather: torch.Tensor, pieces: torch.Tensor | None = None) -> torch.Tensor:
    """Each word's state from the encoder's flat token states `flat` [M, H]: the state at `gather` (its
    first sub-token; any shape of indices into M), or with `pieces` (same shape: the word's sub-token
    count, its sub-tokens consecutive from `gather`) the mean over its sub-tokens. A count of 0 (padding)
    gives zeros. [*gather.shape, H]"""
    if pieces is None:
        return flat[gather]
    k = max(int(pieces.max()), 1) if pieces.numel() else 1
    steps = torch.arange(k, device=flat.device)
    valid = steps < pieces.unsqueeze(-1)  # [..., K]
    index = torch.where(valid, gather.unsqueeze(-1) + steps, gather.unsqueeze(-1))
    total = (flat[index] * valid.unsqueeze(-1).to(flat.dtype)).sum(-2)  # [..., H]
    return total / pieces.clamp(min=1).unsqueeze(-1).to(flat.dtype)
