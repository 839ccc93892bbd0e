"""VisualBERT-CRF (Chen et al., Exp 4.2 with captions, 3.1 with regions; after Li et al. 2019): one stream of text and
visual tokens through the text encoder, CRF over the text tokens.

Each window's input is `[CLS] text [SEP]` followed by the post's visual tokens: every region projected
to the encoder width plus a learned visual segment vector and a learned region-position embedding
(VisualBERT's `token_type_embeddings_visual` / `position_embeddings_visual`), fed through the
encoder's `inputs_embeds` so that its layer norm and all its layers see both. Self-attention covers
text and regions; padding regions are left out by the attention mask, so they change nothing.

Layout per row: `text (n tokens) | regions (R) | padding`, with the regions right after the window's
own text, so that an encoder with relative positions (MPNet) sees the same distances whatever the
batch. Text tokens keep the encoder's positions; visual tokens all take its first position (their
order is in the region-position table), so they use no room in the encoder's position table and a
window's text keeps the full `max_length`.

Regions: `grid` features of width `visual_dim`, or `caption` regions (the caption encoded by the same
encoder, one region per caption token). A post without image has no visual tokens.

`image: false` (with `visual.source: none`) is Chen et al.'s text-only VisualBERT + CRF (Exp 1.2): the
same model with no visual tokens for any post, i.e. the encoder over the text alone, no visual
parameters. Without vision-and-language pretraining (none is available offline) it differs from
`bert-crf` only in what `rpbert` builds on it (the [CLS] relation pass, sub-token pooling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams
from mmner.models.bert_crf import BertCRF, BertCRFParams
from mmner.models.blocks import (
    RegionParams,
    VisualRegions,
    collate_visual,
    encode_with_attention,
    featurize_visual,
    resolve_region_params,
    word_region_attention,
    pool_words,
)
from mmner.models.registry import register
from mmner.tagging.vocab import LabelVocab

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs


class VisualBertCRFParams(BertCRFParams, RegionParams):
    max_regions: int = Field(100, ge=1)  # size of the region-position table: most regions per post
    image: bool = True  # false: the text-only model (Chen et al. Exp 1.2), visual.source: none


@register("visualbert-crf")
class VisualBertCRF(BertCRF):
    Params = VisualBertCRFParams
    params: VisualBertCRFParams
    uses_visual = True

    def __init__(self, params: VisualBertCRFParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        if not params.image:
            return
        hidden = encoder.config.hidden_size
        self.region_dim = params.visual_dim or hidden
        self.visual = VisualRegions(self.region_dim, hidden)
        std = getattr(encoder.config, "initializer_range", 0.02)
        self.visual_type = nn.Parameter(torch.randn(hidden) * std)  # the visual segment
        self.visual_position = nn.Embedding(params.max_regions, hidden)
        nn.init.normal_(self.visual_position.weight, std=std)
        # RoBERTa / MPNet count positions from padding_idx + 1, BERT from 0
        table = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
        pad = getattr(table, "padding_idx", None)
        self.first_position = pad + 1 if pad is not None else 0
        self.segmented = "token_type_ids" in tokenizer.model_input_names

    @property
    def region_attention(self) -> bool:  # type: ignore[override]
        return self.params.image

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        if getattr(params, "image", True):
            return resolve_region_params(params, visual)
        if visual.source != "none":
            raise MmnerError(f"visual.source: {params.name} with model.image: false is the text-only model and would "
                             f"ignore {visual.source!r} input; set visual.source: none (or model.image: true)")
        if getattr(params, "visual_dim", None) is not None:
            raise MmnerError(f"model.visual_dim: {params.name} with model.image: false takes no regions; leave it unset")
        return params

    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        if not self.params.image:
            return super().featurize(post)
        framing = len(self.special.prefix) + len(self.special.suffix)  # a caption is encoded on its own
        limit = min(self.params.caption_tokens, self.params.max_regions, self.max_length - framing)
        item = {**super().featurize(post), **featurize_visual(post, visual, self.tokenizer, self.region_dim, limit)}
        if item["regions"] is not None and item["regions"].shape[0] > self.params.max_regions:
            raise MmnerError(f"post {post.id}: {item['regions'].shape[0]} visual regions, more than "
                             f"model.max_regions={self.params.max_regions}")
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        if self.params.image:
            batch.update(collate_visual(items, self.region_dim, self.special, self.tokenizer.pad_token_id or 0))
        owner = [b for b, item in enumerate(items) for _ in item["windows"]]
        batch["window_post"] = torch.tensor(owner, dtype=torch.long)  # [N_windows]
        return batch

    def visual_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual token embeddings [B, R, H] and their mask [B, R]."""
        regions, mask = self.visual(batch, self.encoder)  # [B, R, H]; R <= max_regions (featurize)
        slots = torch.arange(regions.shape[1], device=regions.device)
        return regions + self.visual_type + self.visual_position(slots), mask

    def text_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """The words' states from the text alone (no visual tokens): the first sub-token's, or with
        `word_pieces` the mean of the word's sub-tokens'. [B, W, H]"""
        types = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **types).last_hidden_state
        return pool_words(hidden.reshape(-1, hidden.shape[-1]), batch["gather"], batch.get("word_pieces"))

    def word_states(self, batch: dict[str, Any]) -> torch.Tensor:
        if not self.params.image:
            return self.text_states(batch)
        ids, text_mask = batch["input_ids"], batch["attention_mask"].bool()  # [N, T]
        visual, post_mask = self.visual_tokens(batch)  # [B, R, H], [B, R]
        visual, visual_mask = visual[batch["window_post"]], post_mask[batch["window_post"]]  # [N, R, H], [N, R]
        n, t = ids.shape
        r = visual.shape[1]
        text = self.encoder.get_input_embeddings()(ids)  # [N, T, H]
        lengths = text_mask.sum(1, keepdim=True)  # [N, 1]
        slots = lengths + torch.arange(r, device=ids.device)  # [N, R]: right after each window's text
        embeds = torch.cat([text, text.new_zeros(n, r, text.shape[-1])], 1)  # [N, T + R, H]
        embeds = embeds.scatter(1, slots.unsqueeze(-1).expand(-1, -1, text.shape[-1]), visual.to(text.dtype))
        mask = torch.cat([text_mask, text_mask.new_zeros(n, r)], 1).scatter(1, slots, visual_mask)  # [N, T + R]
        steps = torch.arange(t + r, device=ids.device).expand(n, -1)
        positions = self.first_position + torch.where(steps < lengths, steps, torch.zeros_like(steps))
        # encoders with segment ids keep a buffer of zeros only as long as their position table: pass them
        types = {"token_type_ids": torch.zeros_like(positions)} if self.segmented else {}
        inputs = dict(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions, **types)
        record = batch.get("_record")
        if record is None:
            hidden = self.encoder(**inputs).last_hidden_state
        else:
            hidden, attention = encode_with_attention(self.encoder, **inputs)  # [N, T + R, T + R]
            words = batch.get("_record_gather", batch["gather"])  # [B, W] into [N, T]
            record["word_region"] = word_region_attention(attention, words // t * (t + r) + words % t, slots)
            record["region_mask"] = post_mask
        # the word gather index points into [N, T]; re-base it onto [N, T + R]
        gather = batch["gather"]
        gather = gather // t * (t + r) + gather % t  # [B, W]
        # first sub-token, or with `word_pieces` (rpbert's word_pooling: mean) the mean of the word's sub-tokens
        return pool_words(hidden.reshape(-1, hidden.shape[-1]), gather, batch.get("word_pieces"))  # [B, W, H]
