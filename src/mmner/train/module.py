"""Lightning wrapping of a `Tagger`: the model says what to compute, Lightning owns devices,
precision, checkpoints, progress bars and logging (DESIGN §8)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import get_linear_schedule_with_warmup

from mmner.config import Config
from mmner.data.post import Post
from mmner.models.base import Tagger
from mmner.tagging.scorer import score
from mmner.vision.inputs import VisualInputs

log = logging.getLogger("mmner")


class PostDataset(Dataset):
    """Posts featurised by the model on first access (tokenisation is the model's business), each with
    its visual input from `visual` (the run's `VisualInputs` for this split; None for text only)."""

    def __init__(self, posts: list[Post], model: Tagger, visual: VisualInputs | None = None, gold: bool = True) -> None:
        # Without `gold` the posts' tags are not featurised: decoding needs none, and scoring reads them
        # from the posts themselves.
        self.posts = posts if gold else [replace(p, tags=None) for p in posts]
        self.model = model
        self.visual = visual
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items: the visual inputs of the posts not seen yet are fetched together, so grid
        features of images outside the cache are computed one batch at a time."""
        todo = [i for i in dict.fromkeys(indices) if i not in self._cache]
        if todo:
            posts = [self.posts[i] for i in todo]
            visual = self.visual.get_many(posts) if self.visual is not None else [None] * len(posts)
            for i, post, vi in zip(todo, posts, visual):
                self._cache[i] = {**self.model.featurize(post, vi), "index": i}
        return [self._cache[i] for i in indices]


class Collator:
    def __init__(self, model: Tagger) -> None:
        self.model = model

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.model.collate(items)
        batch["index"] = [item["index"] for item in items]
        return batch


def loader(posts: list[Post], model: Tagger, batch_size: int, shuffle: bool, num_workers: int = 0,
           visual: VisualInputs | None = None, gold: bool = True) -> DataLoader:
    return DataLoader(
        PostDataset(posts, model, visual, gold),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=Collator(model),
        num_workers=num_workers,
    )


class PostDataModule(L.LightningDataModule):
    def __init__(self, model: Tagger, train: list[Post], valid: list[Post], config: Config,
                 visual: dict[str, VisualInputs] | None = None) -> None:
        super().__init__()
        self.model, self.train, self.valid, self.config = model, train, valid, config
        self.visual = visual or {}  # split -> the run's visual inputs for it

    def train_dataloader(self) -> DataLoader:
        t = self.config.trainer
        return loader(self.train, self.model, t.batch_size, True, t.num_workers, self.visual.get("train"))

    def val_dataloader(self) -> DataLoader:
        t = self.config.trainer
        return loader(self.valid, self.model, t.eval_batch_size, False, t.num_workers, self.visual.get("valid"), gold=False)


class TaggerModule(L.LightningModule):
    def __init__(self, model: Tagger, config: Config, valid_gold: list[list[str]]) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.valid_gold = valid_gold
        self._predictions: list[tuple[int, list[int]]] = []
        self._epoch_start = 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch)["loss"]
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self.log("epoch_seconds", time.perf_counter() - self._epoch_start, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._predictions.extend(zip(batch["index"], self.model.decode(batch)))

    def on_validation_epoch_end(self) -> None:
        predictions = self._predictions
        self._predictions = []
        if self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, predictions)
            predictions = [p for part in gathered for p in part]
        # A distributed sampler pads with repeats: keep one prediction per post.
        by_index = dict(predictions)
        gold = [self.valid_gold[i] for i in sorted(by_index)]
        pred = [self.model.labels.decode(by_index[i]) for i in sorted(by_index)]
        result = score(gold, pred)
        self.log("valid_f1", result["f1"], prog_bar=True)
        self.log("valid_precision", result["precision"])
        self.log("valid_recall", result["recall"])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            # One line per epoch, readable in log files where progress bars are not drawn.
            seconds = time.perf_counter() - self._epoch_start
            log.info("epoch %d: valid P %.2f R %.2f F1 %.2f (%d gold entities), %.0f s",
                     self.current_epoch + 1, result["precision"], result["recall"], result["f1"],
                     result["gold_entities"], seconds)

    def configure_optimizers(self):
        o = self.config.optim
        groups = self.model.parameter_groups()
        lrs = {"encoder": o.encoder_lr, "head": o.lr}
        param_groups = []
        for name, params in groups.items():
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            param_groups.append({"params": decay, "lr": lrs[name], "weight_decay": o.weight_decay})
            param_groups.append({"params": no_decay, "lr": lrs[name], "weight_decay": 0.0})
        optimizer = torch.optim.AdamW([g for g in param_groups if g["params"]])
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(o.warmup * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
