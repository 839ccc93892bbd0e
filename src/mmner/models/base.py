"""The interface every model implements.

A model owns its featurisation (posts -> tensors), since a word-vector biLSTM and a sub-word
transformer need different inputs, but everything it returns is word level: one emission row per
original token, so decoding, scoring and output are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.data import Dataset

from mmner.data.post import Post
from mmner.tagging.vocab import LabelVocab

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs


@dataclass
class AuxiliaryTask:
    """An extra training objective a model brings, trained in the same loop as tagging (a model's
    `auxiliary_tasks(config, posts=train posts, visual=their visual inputs) -> list[AuxiliaryTask]`, e.g.
    RpBERT's text-image relation classification).

    Each epoch runs every auxiliary task's batches first, in list order, then the tagging batches
    (RpBERT, Algorithm 1); every batch is one task's and optimises that task's `loss` alone.
    """

    name: str
    dataset: Dataset  # items for `collate`; `mmner.data.batches.PostDataset` featurises posts with the model
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    loss: Callable[[dict[str, Any]], torch.Tensor]
    batch_size: int | None = None  # default: trainer.batch_size


class ModelParams(BaseModel):
    """Base of every model's config section; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str


class Tagger(nn.Module):
    """Base class of registry models.

    Life cycle: `create` (fresh, for training: may build vocabularies from the training posts) or
    `load` (architecture from a run directory, weights loaded by the caller); then `featurize` each
    post with its visual input (CPU, in the data loader), `collate` a list of features into a batch,
    `forward` for the loss and `decode` for word-level label ids.
    """

    name: ClassVar[str]
    Params: ClassVar[type[ModelParams]] = ModelParams
    # Multimodal models set this; a text-only model refuses a visual source rather than ignore it.
    uses_visual: ClassVar[bool] = False
    # Models that attend over visual regions set this and, when a batch carries an `AttentionRecord`
    # under "_record", fill it in `forward` (see `models.blocks`).
    region_attention: ClassVar[bool] = False
    # Models whose `predict` gives each post a `relation_score` (text-image relation) set this.
    relation_score: ClassVar[bool] = False
    # Models that are trained towards a teacher's CRF marginals set this: training refuses to start without
    # `distill.targets` (mmner.train.distill).
    teacher_required: ClassVar[bool] = False

    def __init__(self, params: ModelParams, labels: LabelVocab) -> None:
        super().__init__()
        self.params = params
        self.labels = labels

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        """`params` completed from the run's visual source before `create` (e.g. the width of grid
        regions), so that config.yaml holds everything `load` needs; raises if the source does not fit."""
        return params

    @classmethod
    def create(cls, params: ModelParams, labels: LabelVocab, train_posts: list[Post]) -> "Tagger":
        raise NotImplementedError

    def save_artifacts(self, run_dir: Path) -> None:
        """Write what `load` needs besides the weights (tokenizer, encoder config, vocabularies)."""

    @classmethod
    def load(cls, params: ModelParams, labels: LabelVocab, run_dir: Path) -> "Tagger":
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups for the optimiser: `encoder` (pretrained, small lr) and `head` (the rest)."""
        return {"head": [p for p in self.parameters() if p.requires_grad]}

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        """Features of one post; `visual` is its visual input for the run's source (None for text-only
        runs; masked when the post has no image), which text-only models ignore."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    # -- compute --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Returns `emissions` [B, W, L] (word level), `word_mask` [B, W] and, with gold, `loss`."""
        raise NotImplementedError

    def decode(self, batch: dict[str, Any]) -> list[list[int]]:
        """Best label ids, one list per post, one id per original token."""
        raise NotImplementedError

    def predict(self, batch: dict[str, Any], attention: bool = True) -> dict[str, Any]:
        """`tags` as `decode`, plus what else the model computes per post, one list entry per post:
        `attention` (region attention, `blocks.attention_rows`; None for a post without image) for
        models with `region_attention`, unless `attention` is false (then the encoder runs its fastest
        kernel, which returns no weights); models with a relation score add `relation_score`."""
        if not (self.region_attention and attention):
            return {"tags": self.decode(batch)}
        from mmner.models.blocks import AttentionRecord, attention_rows

        record = AttentionRecord()
        tags = self.decode({**batch, "_record": record})
        return {"tags": tags, "attention": attention_rows(record, batch, getattr(self, "tokenizer", None))}
