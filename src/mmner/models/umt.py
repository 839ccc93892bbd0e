"""UMT, the Unified Multimodal Transformer of Yu et al. (2020): a multimodal interaction module over
a text encoder, and an auxiliary text-only entity span detector that guides the main tagger.

Per window of sub-tokens (the paper's `[CLS] s_1 .. s_n [SEP]`), with C the text encoder's states:

- R = `text_layers` Transformer layers over C (§2.3), the textual hidden representations;
  V = the visual regions projected to the text width (`blocks.VisualRegions`, V = W_u U, §2.2).
- Multimodal interaction (§2.3.1-2.3.2), each CMT a stack of `cross_layers` cross-modal Transformer
  layers (`blocks.CrossAttentionLayer`: m-head cross attention, residual + LN, FFN, residual + LN):
  P = CMT(queries V, keys R); image-aware words A = CMT(queries R, keys P) (the coupled CMT layer);
  word-aware visual Q = CMT(queries R, keys V); visual gate g = sigmoid(W_a A + W_q Q) (eq. 3),
  B = g * Q; H = [A ; B] (§2.3.3).
- Auxiliary entity span detection (§2.4): T = `text_layers` other Transformer layers over C, span
  emissions w_ESD . t over the untyped span tags (O, B, I; the scheme's prefixes), their own CRF.
- Conversion matrix W^c [|Z|, |Y|], initialised to 1/|C_j| where span tag Z_j corresponds to Y_k
  (B -> every B-type, I -> every I-type, O -> O) and 0 elsewhere, then learned; the main emissions
  are w_MNER . h + (w_ESD . t) W^c (eq. 7).
- Loss = NLL(main) + `aux_weight` * NLL(span) (§2.5, lambda = 0.5); span gold is the typed gold
  with its types removed, read as conlleval reads it (a stray I- opens a span).

Words take the state of their first sub-token, as in BERT-CRF. Ablations (Table 3, and the
text-only branch) are switches: `aux` (no ESD module: the paper's MT-BERT-CRF), `conversion`,
`image_aware_words` (H = [R ; B]), `visual_gate` (B = Q) and `image` (no image at all: H = R,
trained with `visual.source: none`).

A post without image (all regions masked) attends to nothing: its B is 0 and A is R passed through
the layers with a zero attended vector, so its tags depend on its text alone; padding regions are
left out of every attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams
from mmner.models.bert_crf import BertCRF, BertCRFParams
from mmner.models.blocks import (
    CrossAttentionLayer,
    RegionParams,
    VisualRegions,
    collate_visual,
    featurize_visual,
    pad_word_ids,
    resolve_region_params,
)
from mmner.models.registry import register
from mmner.tagging import schemes
from mmner.tagging.crf import CRFHead
from mmner.tagging.vocab import LabelVocab

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs

# The span tagger's labels are a vocabulary of one stand-in type: O, B-SPAN, I-SPAN (bio).
_SPAN = "SPAN"


class UMTParams(BertCRFParams, RegionParams):
    text_layers: int = Field(1, ge=1)  # Transformer layers over C for R (and, apart, for T): one in the paper
    cross_layers: int = Field(1, ge=1)  # layers of each cross-modal Transformer (P, A, Q): one in the paper
    heads: int | None = Field(None, ge=1)  # m; default the encoder's heads (BERT-base: 12, the paper's m)
    aux: bool = True  # auxiliary entity span detection (ESD) module
    aux_weight: float = Field(0.5, ge=0.0)  # lambda
    conversion: bool = True  # span emissions guide the main ones through the conversion matrix
    image: bool = True  # false: text-only branch (no multimodal interaction), visual.source: none
    image_aware_words: bool = True  # false: H = [R ; B] (Table 3, "w/o image-aware WR")
    visual_gate: bool = True  # false: B = Q (Table 3, "w/o visual gate")


def span_tags(tags: Sequence[str], scheme: str = "bio") -> list[str]:
    """Untyped span tags of typed gold tags, in `scheme`: ["B-PER", "I-PER", "O"] -> ["B", "I", "O"].

    The tags are read as conlleval reads them (`schemes.convert`), so a stray I- opens a span (B) and
    a change of type inside I- tags starts a new span, exactly the entities the main task is scored on.
    """
    return [t if t == "O" else t.split("-", 1)[0] for t in schemes.convert(tags, scheme)]


def conversion_matrix(spans: LabelVocab, labels: LabelVocab) -> torch.Tensor:
    """W^c [|Z|, |Y|]: 1/|C_j| where span tag Z_j corresponds to label Y_k (same prefix; O to O), else 0."""
    matrix = torch.zeros(len(spans), len(labels))
    for j, z in enumerate(spans.tags):
        prefix = z.split("-", 1)[0]
        matches = [k for k, y in enumerate(labels.tags) if y.split("-", 1)[0] == prefix]
        matrix[j, matches] = 1.0 / len(matches)
    return matrix


@register("umt")
class UMT(BertCRF):
    Params = UMTParams
    params: UMTParams
    uses_visual = True

    def __init__(self, params: UMTParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        h = self.hidden = encoder.config.hidden_size
        heads = params.heads or encoder.config.num_attention_heads
        if h % heads:
            raise MmnerError(f"model.heads: {heads} heads do not divide the encoder width {h}")
        ffn = getattr(encoder.config, "intermediate_size", 4 * h)

        def stack(n: int) -> nn.ModuleList:
            return nn.ModuleList(CrossAttentionLayer(h, heads, ffn, params.dropout) for _ in range(n))

        self.text_layers = stack(params.text_layers)  # C -> R (self-attention: queries = keys = words)
        self.region_dim = params.visual_dim or h
        if params.image:
            self.visual = VisualRegions(self.region_dim, h)
            if params.image_aware_words:
                self.image_to_text = stack(params.cross_layers)  # P: regions attend over R
                self.coupled = stack(params.cross_layers)  # A: R attends over P
            self.text_to_image = stack(params.cross_layers)  # Q: R attends over regions
            if params.visual_gate:
                self.gate_a = nn.Linear(h, h)
                self.gate_q = nn.Linear(h, h, bias=False)
        self.classifier = nn.Linear(2 * h if params.image else h, len(labels))  # w_MNER
        if params.aux:
            self.spans = LabelVocab([_SPAN], labels.scheme)
            self.span_layers = stack(params.text_layers)  # C -> T
            self.span_classifier = nn.Linear(h, len(self.spans))  # w_ESD
            self.span_crf = CRFHead(self.spans, params.constrained)
            if params.conversion:
                self.conversion = nn.Parameter(conversion_matrix(self.spans, labels))  # W^c

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        if getattr(params, "image", True):
            return resolve_region_params(params, visual)
        if visual.source != "none":
            raise MmnerError(f"visual.source: umt with model.image: false is the text-only branch and would ignore "
                             f"{visual.source!r} input; set visual.source: none (or model.image: true)")
        if getattr(params, "visual_dim", None) is not None:
            raise MmnerError("model.visual_dim: umt with model.image: false takes no regions; leave it unset")
        return params

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        item = super().featurize(post)
        if self.params.aux and post.tags is not None:
            item["span_tags"] = [self.spans.index[t if t == "O" else f"{t}-{_SPAN}"]
                                 for t in span_tags(post.tags, self.labels.scheme)]
        if self.params.image:
            framing = len(self.special.prefix) + len(self.special.suffix)  # a caption is encoded on its own
            limit = min(self.params.caption_tokens, self.max_length - framing)
            item.update(featurize_visual(post, visual, self.tokenizer, self.region_dim, limit))
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        if self.params.aux and batch["tags"] is not None:
            batch["span_tags"] = pad_word_ids(items, "span_tags", batch["word_mask"].shape[1])
        if self.params.image:
            batch.update(collate_visual(items, self.region_dim, self.special, self.tokenizer.pad_token_id or 0))
            owner = [b for b, item in enumerate(items) for _ in item["windows"]]
            batch["window_post"] = torch.tensor(owner, dtype=torch.long)  # [N_windows]
        return batch

    # -- compute --------------------------------------------------------------------------------
    @property
    def region_attention(self) -> bool:  # type: ignore[override]
        return self.params.image

    def interact(self, text: torch.Tensor, text_mask: torch.Tensor, regions: torch.Tensor,
                 region_mask: torch.Tensor, record: list[torch.Tensor] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The multimodal interaction module: R [N, T, H] (mask [N, T]) and V [N, R, H] (mask [N, R])
        -> H = [A ; B] [N, T, 2H], and the visual gate g [N, T, H] (None when switched off). With
        `record`, the word-to-region attention of each layer of the Q stack ([N, T, R]) is appended."""
        a = text
        if self.params.image_aware_words:
            p = regions
            for layer in self.image_to_text:
                p = layer(p, text, text_mask)  # [N, R, H]
            for layer in self.coupled:
                a = layer(a, p, region_mask)  # [N, T, H]
        q = text
        for layer in self.text_to_image:
            q = layer(q, regions, region_mask, record)  # [N, T, H]
        q = q * region_mask.any(-1)[:, None, None].to(q.dtype)  # no image: no visual representation
        gate = torch.sigmoid(self.gate_a(a) + self.gate_q(q)) if self.params.visual_gate else None
        return torch.cat([a, q if gate is None else gate * q], dim=-1), gate

    def compute(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Word-level `emissions` [B, W, L], `span_emissions` [B, W, |Z|] and `gate` [B, W, H] (what exists)."""
        mask = batch["attention_mask"].bool()  # [N, T]
        types = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        states = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              **types).last_hidden_state  # C: [N, T, H]
        states = self.dropout(states)
        text = states
        for layer in self.text_layers:
            text = layer(text, text, mask)  # R
        gather = batch["gather"]  # [B, W] into the flat [N * T]

        def words(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, x.shape[-1])[gather]  # [N, T, X] -> [B, W, X]

        out: dict[str, torch.Tensor] = {}
        if self.params.image:
            regions, region_mask = self.visual(batch, self.encoder)  # [B, R, H], [B, R]
            regions = self.dropout(regions)[batch["window_post"]]  # [N, R, H]
            record = batch.get("_record")
            layers: list[torch.Tensor] | None = [] if record is not None else None
            fused, gate = self.interact(text, mask, regions, region_mask[batch["window_post"]], layers)  # [N, T, 2H]
            if record is not None:  # words over regions in the word-aware visual stack (Q), mean over its layers
                record["word_region"] = words(torch.stack(layers).mean(0))  # type: ignore[arg-type]  # [B, W, R]
                record["region_mask"] = region_mask
            if gate is not None:
                out["gate"] = words(gate)
        else:
            fused = text
        emissions = self.classifier(self.dropout(words(fused)))  # [B, W, L]
        if self.params.aux:
            spans = states
            for layer in self.span_layers:
                spans = layer(spans, spans, mask)  # T
            span_emissions = self.span_classifier(self.dropout(words(spans)))  # [B, W, |Z|]
            out["span_emissions"] = span_emissions
            if self.params.conversion:
                emissions = emissions + span_emissions @ self.conversion  # eq. 7
        out["emissions"] = emissions
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {**self.compute(batch), "word_mask": batch["word_mask"]}
        if batch.get("tags") is not None:
            loss = self.crf.loss(out["emissions"], batch["tags"], batch["word_mask"])
            if self.params.aux:
                span_loss = self.span_crf.loss(out["span_emissions"], batch["span_tags"], batch["word_mask"])
                out["span_loss"] = span_loss
                loss = loss + self.params.aux_weight * span_loss
            out["loss"] = loss
        return out

    def decode_spans(self, batch: dict[str, Any]) -> list[list[str]]:
        """The span tagger's best untyped tags per word (B / I / O), for inspection."""
        if not self.params.aux:
            raise MmnerError("umt: model.aux is false, there is no span tagger")
        out = self.forward({**batch, "tags": None})
        ids = self.span_crf.decode(out["span_emissions"], out["word_mask"])
        return [[self.spans.tags[i].split("-", 1)[0] for i in row] for row in ids]
