"""BERT-CRF with captions (Chen et al., Exp 4.1): `[CLS] text [SEP] caption [SEP]` into the encoder.

The caption stands for the image (BLIP-2 file, JSON, the post's own, or a pseudo-caption: the run's
`visual.source` / `visual.caption`). Only the text tokens are tagged. The pair is framed the way the
tokenizer frames a pair (`SpecialTokens`; segment ids 1 on the caption where the encoder has them).
A post longer than one window is split into windows as for BERT-CRF, every window carrying the
caption: the caption is cut to `caption_tokens` sub-tokens and to half a window, never the text. A
post without image (masked) is `[CLS] text [SEP]`, exactly BERT-CRF's input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams
from mmner.models.bert_crf import BertCRF, BertCRFParams
from mmner.models.blocks import encode_with_attention, word_region_attention
from mmner.models.registry import register
from mmner.tagging.alignment import SpecialTokens, make_windows, word_pieces

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs


class BertCRFCaptionParams(BertCRFParams):
    caption_tokens: int = Field(64, ge=1)  # most caption sub-tokens per window


@register("bert-crf-caption")
class BertCRFCaption(BertCRF):
    Params = BertCRFCaptionParams
    params: BertCRFCaptionParams
    uses_visual = True
    region_attention = True

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        if visual.source not in ("caption", "pseudo-caption"):
            raise MmnerError(f"visual.source: {cls.name} reads captions, not {visual.source!r}; "
                             "set visual.source to caption or pseudo-caption")
        return params

    def caption_budget(self) -> int:
        """Most caption sub-tokens in a window: `caption_tokens`, and at most half of what the pair
        framing leaves, so the text keeps at least the other half."""
        s = self.special
        room = self.max_length - len(s.prefix) - len(s.middle) - len(s.suffix)
        return max(0, min(self.params.caption_tokens, room // 2))

    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        caption: list[int] = []
        if visual is not None and visual.caption is not None:
            caption = self.tokenizer(visual.caption, add_special_tokens=False)["input_ids"][: self.caption_budget()]
        if not caption:  # no image: the text alone, as BERT-CRF sees it
            return {**super().featurize(post), "segment_b": None, "caption": []}
        s = self.special
        # the caption and its framing go after every window's text: make_windows sees them as the suffix
        frame = SpecialTokens(prefix=s.prefix, suffix=s.middle + caption + s.suffix, middle=[])
        budget = self.max_length - len(frame.prefix) - len(frame.suffix)
        windows = make_windows(frame, word_pieces(self.tokenizer, post.tokens, budget), self.max_length)
        tail = len(caption) + len(s.suffix)
        return {
            "windows": windows,
            "segment_b": [len(w.input_ids) - tail for w in windows],  # where the caption segment starts
            "caption": caption,
            "n_words": len(post.tokens),
            "tags": self.labels.encode(post) if post.tags is not None else None,
            **self.shape_features(post),
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        starts = [start for item in items for start in (item["segment_b"] or [None] * len(item["windows"]))]
        if "token_type_ids" in self.tokenizer.model_input_names:
            types = torch.zeros_like(batch["input_ids"])  # [N_windows, T]
            lengths = batch["attention_mask"].sum(1)
            for row, start in enumerate(starts):
                if start is not None:
                    types[row, start : int(lengths[row])] = 1
            batch["token_type_ids"] = types
        # where each window's caption starts (-1: none) and each post's caption, for region attention
        batch["caption_start"] = torch.tensor([-1 if s is None else s for s in starts], dtype=torch.long)  # [N]
        batch["caption_pieces"] = [item["caption"] for item in items]
        return batch

    def word_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """As BERT-CRF; with an attention record (predict), the attention of each word over the caption
        tokens of its window (the caption's sub-tokens are the regions) is recorded too."""
        record = batch.get("_record")
        if record is None:
            return super().word_states(batch)
        types = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden, attention = encode_with_attention(self.encoder, input_ids=batch["input_ids"],
                                                  attention_mask=batch["attention_mask"], **types)
        pieces = batch["caption_pieces"]
        lengths = torch.tensor([len(c) for c in pieces], device=hidden.device)  # [B]
        slots = torch.arange(max(1, int(lengths.max())), device=hidden.device)  # [R]
        columns = batch["caption_start"].clamp(min=0)[:, None] + slots  # [N, R]
        record["word_region"] = word_region_attention(attention, batch["gather"], columns)
        record["region_mask"] = slots < lengths[:, None]  # [B, R]
        record["labels"] = [self.tokenizer.convert_ids_to_tokens(c) for c in pieces]
        return hidden.reshape(-1, hidden.shape[-1])[batch["gather"]]  # [B, W, H]
