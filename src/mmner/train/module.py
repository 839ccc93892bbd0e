"""Lightning wrapping of a `Tagger`: the model says what to compute, Lightning owns devices,
precision, checkpoints, progress bars and logging (DESIGN §8)."""

from __future__ import annotations

import atexit
import bisect
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from transformers import get_linear_schedule_with_warmup

from mmner.config import Config
from mmner.data.batches import (
    Collator,
    EpochSampler,
    PostDataset,
    bucket_batches,
    bucketed_loader,
    epoch_rng,
    item_lengths,
    loader,
)
from mmner.data.post import Post
from mmner.models.base import AuxiliaryTask, Tagger
from mmner.tagging.scorer import score
from mmner.train.distill import Teacher
from mmner.vision.inputs import VisualInputs

log = logging.getLogger("mmner")


def train_loader(posts: list[Post], model: Tagger, config: Config, visual: VisualInputs | None = None) -> DataLoader:
    """The tagging batches of one training epoch: length-bucketed (`trainer.batching: bucket`, seeded by
    the run's seed and the epoch) or plain shuffled (`random`)."""
    t = config.trainer
    if t.batching == "random":
        return loader(posts, model, t.batch_size, True, t.num_workers, visual)
    return bucketed_loader(PostDataset(posts, model, visual), model, t.batch_size, t.num_workers, shuffle=True,
                           seed=config.seed, chunk_batches=t.bucket_batches)


class TaskDataset(Dataset):
    """Several datasets end to end; an item is `(task number, item)`."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.datasets = datasets
        self.starts = [0]
        for d in datasets:
            self.starts.append(self.starts[-1] + len(d))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        task = bisect.bisect_right(self.starts, i) - 1
        return task, i - self.starts[task]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, Any]]:
        located = [self.locate(i) for i in indices]
        out: list[tuple[int, Any]] = []
        for task in dict.fromkeys(t for t, _ in located):  # a batch is one task's (TaskBatchSampler)
            dataset = self.datasets[task]
            local = [j for t, j in located if t == task]
            items = dataset.__getitems__(local) if hasattr(dataset, "__getitems__") else [dataset[j] for j in local]
            out.extend((task, item) for item in items)
        return out


class TaskBatchSampler(BatchSampler):
    """Batches of one task each, all of task 0's first, then task 1's, ...; within a task in the
    order `sampler` gives (shuffled or not). Under a distributed sampler every replica gets the same
    number of batches per task (a task's share is padded by repeating, as `DistributedSampler` does)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False, sizes: list[int] | None = None,
                 batch_sizes: list[int] | None = None, lengths: list[int] | None = None, seed: int = 0,
                 chunk_batches: int = 50) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.sizes = list(sizes or [])
        self.batch_sizes = list(batch_sizes or [batch_size] * len(self.sizes))
        self.starts = [sum(self.sizes[:k]) for k in range(len(self.sizes) + 1)]
        # With `lengths` (one per item of all tasks), each task's batches are length-bucketed and
        # shuffled per epoch with `seed` (`bucket_batches`); without, they follow `sampler`'s order.
        self.lengths = list(lengths) if lengths is not None else None
        self.seed, self.chunk_batches = seed, chunk_batches

    def _buckets(self) -> list[list[int]]:
        buckets: list[list[int]] = [[] for _ in self.sizes]
        for i in self.sampler:
            buckets[bisect.bisect_right(self.starts, i) - 1].append(i)
        replicas = getattr(self.sampler, "num_replicas", None)
        if replicas:
            for k, bucket in enumerate(buckets):
                share = math.ceil(self.sizes[k] / replicas)
                pool = bucket or list(range(self.starts[k], self.starts[k + 1]))
                buckets[k] = (pool * (share // max(len(pool), 1) + 1))[:share]
        return buckets

    def __iter__(self):
        rng = epoch_rng(self.sampler, self.seed) if self.lengths is not None else None
        for bucket, size in zip(self._buckets(), self.batch_sizes):
            if rng is not None:
                yield from bucket_batches(bucket, self.lengths, size, rng, self.chunk_batches, self.drop_last)
                continue
            for s in range(0, len(bucket), size):
                batch = bucket[s : s + size]
                if len(batch) == size or not self.drop_last:
                    yield batch

    def __len__(self) -> int:
        replicas = getattr(self.sampler, "num_replicas", None) or 1
        counts = [math.ceil(n / replicas) for n in self.sizes]
        rounding = math.floor if self.drop_last else math.ceil
        return sum(rounding(n / size) for n, size in zip(counts, self.batch_sizes))


class TaskCollator:
    """Collates a batch of `(task number, item)` with its task's collate; `task` names the task, None
    for tagging."""

    def __init__(self, collates: list[Callable], names: list[str | None]) -> None:
        self.collates, self.names = collates, names

    def __call__(self, pairs: list[tuple[int, Any]]) -> dict[str, Any]:
        task = pairs[0][0]
        batch = self.collates[task]([item for _, item in pairs])
        batch["task"] = self.names[task]
        return batch


class PostDataModule(L.LightningDataModule):
    def __init__(self, model: Tagger, train: list[Post], valid: list[Post], config: Config,
                 visual: dict[str, VisualInputs] | None = None) -> None:
        super().__init__()
        self.model, self.train, self.valid, self.config = model, train, valid, config
        self.visual = visual or {}  # split -> the run's visual inputs for it
        self.tasks: dict[str, AuxiliaryTask] = {}  # the model's auxiliary tasks by name (training_step)

    def train_dataloader(self) -> DataLoader:
        t = self.config.trainer
        hook = getattr(self.model, "auxiliary_tasks", None)
        tasks = hook(self.config, posts=self.train, visual=self.visual.get("train")) if hook is not None else []
        self.tasks = {task.name: task for task in tasks}
        if not self.tasks:
            return train_loader(self.train, self.model, self.config, self.visual.get("train"))
        tasks = list(self.tasks.values())
        main = PostDataset(self.train, self.model, self.visual.get("train"))
        dataset = TaskDataset([task.dataset for task in tasks] + [main])
        sizes = [len(d) for d in dataset.datasets]  # type: ignore[arg-type]
        batch_sizes = [task.batch_size or t.batch_size for task in tasks] + [t.batch_size]
        if t.batching == "bucket":
            lengths = [n for d in dataset.datasets for n in item_lengths(d)]
            sampler = TaskBatchSampler(EpochSampler(len(dataset)), t.batch_size, False, sizes=sizes,
                                       batch_sizes=batch_sizes, lengths=lengths, seed=self.config.seed,
                                       chunk_batches=t.bucket_batches)
        else:
            sampler = TaskBatchSampler(RandomSampler(dataset), t.batch_size, False, sizes=sizes,
                                       batch_sizes=batch_sizes)
        collator = TaskCollator([task.collate for task in tasks] + [Collator(self.model)],
                                [task.name for task in tasks] + [None])
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=t.num_workers)

    def val_dataloader(self) -> DataLoader:
        t = self.config.trainer
        return loader(self.valid, self.model, t.eval_batch_size, False, t.num_workers, self.visual.get("valid"), gold=False,
                      sort=True)


def clip_in_fused_update(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of a fused Adam / AdamW `optimizer` to global norm `max_norm` in its next step, as
    `torch.nn.utils.clip_grad_norm_` would (factor max_norm / (norm + 1e-6), at most 1): the fused kernel
    divides each gradient by `optimizer.grad_scale` as it reads it (the hook AMP's gradient scaler
    unscales through), so clipping costs one pass over the gradients (their norm) instead of two
    (~1.5% of a MiniLM UMT step on the CPU). Only where no gradient scaler sets `grad_scale` itself
    (fp32, bf16). Returns the norm before clipping."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)  # type: ignore[attr-defined]
    return norm


class RunningClock:
    """Seconds of wall clock with the spells in which this process was stopped left out (Ctrl-Z,
    `kill -STOP`, a paused `mmner sweep`), so that a paused training's epoch times stay true.

    A daemon thread ticks every `tick` seconds. A tick that comes more than `gap` seconds late while
    the process used almost no CPU time (under `busy` of the lateness) was a stop; a late tick with
    the CPU busy (a thread holding the interpreter) counts as running time, as does any stop shorter
    than `gap`. `now()` also counts a stop that ended since the last tick."""

    def __init__(self, tick: float = 0.25, gap: float = 3.0, busy: float = 0.1, thread: bool = True) -> None:
        self.tick, self.gap, self.busy = tick, gap, busy
        self.stopped = 0.0  # seconds
        self._lock = threading.Lock()
        self._last = (time.perf_counter(), time.process_time())
        if thread:
            threading.Thread(target=self._run, name="mmner-running-clock", daemon=True).start()

    def _late(self) -> float:
        """The current stop (seconds) since the last tick, 0 if none; called with the lock held."""
        wall, cpu = time.perf_counter(), time.process_time()
        late = wall - self._last[0] - self.tick
        return late if late > self.gap and cpu - self._last[1] < self.busy * late else 0.0

    def _tick(self) -> None:
        with self._lock:
            self.stopped += self._late()
            self._last = (time.perf_counter(), time.process_time())

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            self._tick()

    def stopped_seconds(self) -> float:
        """All stopped time so far, the stop that ended since the last tick included."""
        with self._lock:
            return self.stopped + self._late()

    def now(self) -> float:
        with self._lock:
            return time.perf_counter() - self.stopped - self._late()


_CLOCK: tuple[int, RunningClock] | None = None


def running_clock() -> RunningClock:
    """This process's `RunningClock` (one per process: a forked worker starts its own)."""
    global _CLOCK
    if _CLOCK is None or _CLOCK[0] != os.getpid():
        _CLOCK = (os.getpid(), RunningClock())
    return _CLOCK[1]


class TaggerModule(L.LightningModule):
    def __init__(self, model: Tagger, config: Config, valid_gold: list[list[str]],
                 teacher: Teacher | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.valid_gold = valid_gold
        self.teacher = teacher  # soft targets of the training posts (`distill`), or None
        self._predictions: list[tuple[int, list[int]]] = []
        self._epoch_start = 0.0
        self._stopped_start = 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        task = batch.get("task")
        if task is not None:  # an auxiliary task's batch (PostDataModule.tasks)
            loss = self.trainer.datamodule.tasks[task].loss(batch)
            self.log(f"train_loss_{task}", loss, prog_bar=True, batch_size=len(batch["index"]))
            return loss
        out = self.model(batch)
        loss = out["loss"]
        if self.teacher is not None:
            distilled = self.teacher.loss(self.model.crf, out["emissions"], out["word_mask"], batch["index"])
            if distilled is not None:
                kl, posts = distilled
                self.log("train_distill", kl, prog_bar=True, batch_size=posts)
                loss = (1.0 - self.teacher.weight) * loss + self.teacher.weight * kl
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Models with schedules over training (RpBERT's Gumbel temperature) read the progress, 0 -> 1.
        hook = getattr(self.model, "set_training_progress", None)
        if hook is not None:
            hook(self.global_step / max(1, int(self.trainer.estimated_stepping_batches)))

    def on_train_epoch_start(self) -> None:
        # epoch times leave out the time the process was stopped (paused); the clock is this process's (a
        # spawned distributed worker starts its own), not an attribute, so that the module pickles
        self._epoch_start = running_clock().now()
        self._stopped_start = running_clock().stopped_seconds()

    def on_train_epoch_end(self) -> None:
        self.log("epoch_seconds", running_clock().now() - self._epoch_start, sync_dist=True)

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
        # every rank scored the same gathered predictions: the mean over ranks is that value (and
        # Lightning does not warn that epoch-level values are unsynchronised)
        sync = self.trainer.world_size > 1
        self.log("valid_f1", result["f1"], prog_bar=True, sync_dist=sync)
        self.log("valid_precision", result["precision"], sync_dist=sync)
        self.log("valid_recall", result["recall"], sync_dist=sync)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            # One line per epoch, readable in log files where progress bars are not drawn.
            seconds = running_clock().now() - self._epoch_start
            stopped = running_clock().stopped_seconds() - self._stopped_start
            log.info("epoch %d: valid P %.2f R %.2f F1 %.2f (%d gold entities), %.0f s%s",
                     self.current_epoch + 1, result["precision"], result["recall"], result["f1"],
                     result["gold_entities"], seconds, f" (and {stopped:.0f} s stopped, left out)" if stopped else "")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by the global norm. Lightning's mixed-precision plugin refuses to clip for a fused
        optimizer (it assumes an fp16 gradient scaler); without a scaler (fp32, bf16) the gradients are
        the true ones, so they are clipped here directly, by the fused update (`clip_in_fused_update`)."""
        if gradient_clip_val and optimizer.defaults.get("fused"):
            clip_in_fused_update(optimizer, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        o = self.config.optim
        groups = self.model.parameter_groups()
        lrs = {"encoder": o.encoder_lr, "head": o.lr}
        param_groups = []
        for name, params in groups.items():
            # `optim.layer_decay` < 1: the encoder by depth, each at encoder_lr x decay^(top - depth)
            if name == "encoder" and o.layer_decay < 1.0:
                names = {id(p): n for n, p in self.model.named_parameters()}
                depths = layer_depths([names[id(p)] for p in params])
                top = max(depths)
                split = [
                    ([p for p, d in zip(params, depths) if d == depth], lrs[name] * o.layer_decay ** (top - depth))
                    for depth in sorted(set(depths))
                ]
            else:
                split = [(params, lrs[name])]
            for members, lr in split:
                decay = [p for p in members if p.ndim > 1]
                no_decay = [p for p in members if p.ndim <= 1]
                param_groups.append({"params": decay, "lr": lr, "weight_decay": o.weight_decay})
                param_groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
        # The fused kernel updates every parameter in one pass (on the CPU about 4x faster than the loop);
        # not under fp16 mixed precision, whose gradient scaler must unscale before clipping.
        scaled = self.trainer.precision == "16-mixed"
        optimizer = torch.optim.AdamW([g for g in param_groups if g["params"]], fused=o.fused and not scaled)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(o.warmup * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_depths(names: list[str]) -> list[int]:
    """Each encoder parameter's depth for `optim.layer_decay`: n + 1 inside the encoder's layer n
    (`...layer.<n>....`), 0 outside the numbered layers (the embeddings, MPNet's relative-position bias
    that every layer shares, the unused pooler)."""
    return [int(m.group(1)) + 1 if (m := _LAYER.search(n)) else 0 for n in names]


def _close_process_group() -> None:
    """Registered at exit in every process of a multi-process run (`ProcessGroupCloser`): all ranks meet
    at a barrier, then each destroys its process group."""
    from datetime import timedelta

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))  # names a rank that never arrives
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()


class ProcessGroupCloser(L.Callback):
    """Closes the process group when a training process of a multi-process run exits. Lightning does this
    for NCCL only; a gloo group left open is torn down by C++ destructors while its threads still run, which
    aborts the process ("terminate called without an active exception") at random after training."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1:
            atexit.unregister(_close_process_group)  # once per process
            atexit.register(_close_process_group)


class WeightEMA(WeightAveraging):
    """`trainer.ema`: an exponential moving average of the weights, W_avg <- decay x W_avg + (1 - decay) x W
    after every optimizer step (one fused lerp over the trained tensors). Lightning's WeightAveraging swaps
    the average in for validation, so valid F1, the best epoch and early stopping are the average's; a
    checkpoint holds the average as its state_dict and the trained weights beside it, which --resume restores.
    Frozen parameters (the encoder's word embeddings under `model.freeze_embeddings`) never change, so their
    average is their value, copied at the first update; the step's lerp leaves them out (half its cost with
    MiniLM-L6)."""

    def __init__(self, decay: float) -> None:
        self._lerp = get_ema_multi_avg_fn(decay)
        self._frozen: set[int] = set()
        super().__init__(multi_avg_fn=self._update)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._frozen = {p.data_ptr() for p in pl_module.parameters() if not p.requires_grad}
        super().setup(trainer, pl_module, stage)

    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        """The average's update over one device and dtype's tensors, leaving out the frozen parameters
        (`current` are the trained module's tensors, detached: they share its parameters' storage)."""
        keep = [i for i, t in enumerate(current) if t.data_ptr() not in self._frozen]
        if keep:
            self._lerp([averaged[i] for i in keep], [current[i] for i in keep], n_averaged)
