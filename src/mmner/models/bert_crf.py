"""BERT-CRF (Chen et al.): a transformer text encoder, first sub-token per word, linear layer, CRF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams, Tagger
from mmner.models.blocks import pad_tags, pad_word_ids
from mmner.models.registry import register
from mmner.tagging.alignment import SpecialTokens, make_windows, word_pieces
from mmner.tagging.crf import CRFHead
from mmner.tagging.vocab import LabelVocab
from mmner.text.encoders import load_encoder, load_tokenizer, resolve_encoder
from mmner.text.shapes import SHAPES, word_shape

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput


class BertCRFParams(ModelParams):
    encoder: str = "minilm-l6"
    max_length: int = 512
    dropout: float = 0.1
    constrained: bool = True
    # Keep the encoder's word-embedding table as pretrained: it is half of a small encoder's weights,
    # almost all rows untouched by any one batch, yet AdamW would update every row each step.
    freeze_embeddings: bool = True
    # Width of a word-shape embedding (mmner.text.shapes: lower, Title, UPPER, mixed, ...) joined to each
    # word's state before the emission layer: the casing an uncased encoder never sees. 0: none. Read by
    # bert-crf, bert-crf-caption and caption-distill; the other models refuse it.
    casing: int = Field(0, ge=0)


def pad_windows(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Flatten every post's windows into one encoder batch and build the word gather index.

    Returns input_ids / attention_mask [N_windows, T], `gather` [B, W] (flat index into the
    [N_windows * T] hidden states of each word's first sub-token) and `word_mask` [B, W].
    """
    windows = [w for item in items for w in item["windows"]]
    width = max(len(w.input_ids) for w in windows)
    input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(windows), width), dtype=torch.long)
    max_words = max(item["n_words"] for item in items)
    gather = torch.zeros((len(items), max_words), dtype=torch.long)
    word_mask = torch.zeros((len(items), max_words), dtype=torch.bool)
    row = 0
    for b, item in enumerate(items):
        for window in item["windows"]:
            n = len(window.input_ids)
            input_ids[row, :n] = torch.tensor(window.input_ids)
            attention[row, :n] = 1
            for word, pos in window.owned:
                gather[b, word] = row * width + pos
                word_mask[b, word] = True
            row += 1
    return {"input_ids": input_ids, "attention_mask": attention, "gather": gather, "word_mask": word_mask}


@register("bert-crf")
class BertCRF(Tagger):
    Params = BertCRFParams

    def __init__(self, params: BertCRFParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.special = SpecialTokens.of(tokenizer)
        if params.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)
        limit = getattr(encoder.config, "max_position_embeddings", params.max_length)
        # Some position tables reserve slots (RoBERTa/MPNet padding offset): stay two below.
        self.max_length = min(params.max_length, limit - 2 if limit > 2 else limit)
        self.dropout = nn.Dropout(params.dropout)
        if params.casing and type(self).forward is not BertCRF.forward:
            raise MmnerError(f"model.casing: {params.name} does not read word shapes (bert-crf, bert-crf-caption "
                             "and caption-distill do); set it to 0")
        self.shape_embedding = nn.Embedding(len(SHAPES), params.casing, padding_idx=0) if params.casing else None
        self.classifier = nn.Linear(encoder.config.hidden_size + params.casing, len(labels))
        self.crf = CRFHead(labels, params.constrained)

    @classmethod
    def create(cls, params: BertCRFParams, labels: LabelVocab, train_posts: list[Post]) -> "BertCRF":
        path = resolve_encoder(params.encoder)
        return cls(params, labels, load_encoder(path, pretrained=True), load_tokenizer(path))

    def save_artifacts(self, run_dir: Path) -> None:
        target = run_dir / "encoder"
        self.encoder.config.save_pretrained(target)
        self.tokenizer.save_pretrained(target)

    @classmethod
    def load(cls, params: BertCRFParams, labels: LabelVocab, run_dir: Path) -> "BertCRF":
        path = run_dir / "encoder"
        return cls(params, labels, load_encoder(path, pretrained=False), load_tokenizer(path))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        ids = {id(p) for p in encoder}
        return {"encoder": encoder, "head": [p for p in self.parameters() if p.requires_grad and id(p) not in ids]}

    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        pieces = word_pieces(self.tokenizer, post.tokens, self.max_length - 2)
        return {
            "windows": make_windows(self.special, pieces, self.max_length),
            "n_words": len(post.tokens),
            "tags": self.labels.encode(post) if post.tags is not None else None,
            **self.shape_features(post),
        }

    def shape_features(self, post: Post) -> dict[str, Any]:
        """Each word's shape class (`model.casing`), else nothing."""
        return {"shapes": [word_shape(w) for w in post.tokens]} if self.shape_embedding is not None else {}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = pad_windows(items, self.tokenizer.pad_token_id or 0)
        batch["tags"] = pad_tags(items, batch["word_mask"].shape[1])
        if self.shape_embedding is not None:
            batch["shapes"] = pad_word_ids(items, "shapes", batch["word_mask"].shape[1])  # [B, W], 0 pads
        return batch

    def word_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """First-sub-token hidden state of every word. [B, W, H]"""
        types = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **types).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])  # [N_windows * T, H]
        return flat[batch["gather"]]  # [B, W, H]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        states = self.word_states(batch)  # [B, W, H]
        if self.shape_embedding is not None:
            shapes = self.shape_embedding(batch["shapes"])  # [B, W, casing]
            states = torch.cat([states, shapes.to(states.dtype)], dim=-1)
        emissions = self.classifier(self.dropout(states))  # [B, W, L]
        out = {"emissions": emissions, "word_mask": batch["word_mask"]}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(emissions, batch["tags"], batch["word_mask"])
        return out

    def decode(self, batch: dict[str, Any]) -> list[list[int]]:
        out = self.forward({**batch, "tags": None})
        return self.crf.decode(out["emissions"], out["word_mask"])
