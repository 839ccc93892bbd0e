"""Posts as model batches, without a trainer: featurised once per dataset, batched in post order, in
length order (evaluation, tagging: results go back to post order by each item's `index`) or in
length-bucketed shuffled batches (training). Used by training, inference and models' auxiliary tasks."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from mmner.data.post import Post
from mmner.vision.inputs import describe

if TYPE_CHECKING:
    from mmner.models.base import Tagger
    from mmner.vision.inputs import VisualInputs


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
                self._cache[i] = {**self.model.featurize(post, vi), "index": i, "visual_used": describe(vi)}
        return [self._cache[i] for i in indices]


class Collator:
    def __init__(self, model: Tagger) -> None:
        self.model = model

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.model.collate(items)
        batch["index"] = [item["index"] for item in items]
        batch["visual_used"] = [item.get("visual_used") for item in items]  # `vision.inputs.describe`
        return batch


def input_length(item: dict[str, Any]) -> int:
    """How long a featurised post is as the model reads it: the sub-tokens of all its windows (a caption
    pair's caption included), plus caption tokens or regions encoded beside the text; words for
    word-level models. Batches of similar lengths pad little."""
    windows = item.get("windows")
    n = sum(len(w.input_ids) for w in windows) if windows else int(item.get("n_words") or 0)
    if item.get("caption_ids"):
        n += len(item["caption_ids"])
    if item.get("regions") is not None:
        n += int(item["regions"].shape[0])
    return n


def item_lengths(dataset: Dataset) -> list[int]:
    """`input_length` of every item of a dataset (featurising, and caching, all its posts once)."""
    n = len(dataset)  # type: ignore[arg-type]
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(list(range(n))) if getitems is not None else [dataset[i] for i in range(n)]
    return [input_length(item) for item in items]


def bucket_batches(indices: list[int], lengths: list[int], batch_size: int, rng: random.Random | None,
                   chunk_batches: int, drop_last: bool = False) -> list[list[int]]:
    """Batches of posts of similar length. With `rng`: the posts are shuffled, cut into chunks of
    `chunk_batches` batches, each chunk sorted by length and cut into batches, and the batch order is
    shuffled (so a batch's posts are random but alike in length). Without: one length-sorted pass
    (evaluation; callers restore the order from the items' `index`)."""
    order = list(indices)
    if rng is not None:
        rng.shuffle(order)
        chunk = batch_size * chunk_batches
        chunks = [order[s : s + chunk] for s in range(0, len(order), chunk)]
    else:
        chunks = [order]
    batches: list[list[int]] = []
    for part in chunks:
        part = sorted(part, key=lambda i: lengths[i])  # stable: equal lengths keep their order
        batches += [part[s : s + batch_size] for s in range(0, len(part), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    if rng is not None:
        rng.shuffle(batches)
    return batches


class EpochSampler(Sampler[int]):
    """All indices in order, knowing the epoch (Lightning calls `set_epoch` on a batch sampler's
    sampler, as on a `DistributedSampler`, which replaces this one under DDP and has `epoch` too)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


def epoch_rng(sampler: Any, seed: int) -> random.Random:
    """The shuffling of one epoch: a function of the run's seed and the epoch only, so a resumed run
    draws the batches it would have drawn."""
    return random.Random(f"{seed}:{getattr(sampler, 'epoch', 0)}")


class BucketBatchSampler(BatchSampler):
    """Length-bucketed batches (`bucket_batches`) over the indices `sampler` gives: shuffled per epoch
    with `seed` when `shuffle`, else one length-sorted pass. Every index of the sampler exactly once."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False, lengths: list[int] | None = None,
                 seed: int = 0, shuffle: bool = True, chunk_batches: int = 50) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths or [])
        self.seed, self.shuffle, self.chunk_batches = seed, shuffle, chunk_batches

    def __iter__(self):
        rng = epoch_rng(self.sampler, self.seed) if self.shuffle else None
        yield from bucket_batches(list(self.sampler), self.lengths, self.batch_size, rng, self.chunk_batches,
                                  self.drop_last)


def loader(posts: list[Post], model: Tagger, batch_size: int, shuffle: bool, num_workers: int = 0,
           visual: VisualInputs | None = None, gold: bool = True, sort: bool = False) -> DataLoader:
    """Batches of featurised posts: shuffled, or in order; `sort`: in length order instead, each
    batch's items carrying their `index` so that callers put the results back in post order."""
    dataset = PostDataset(posts, model, visual, gold)
    if sort and not shuffle and posts:
        return bucketed_loader(dataset, model, batch_size, num_workers, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=Collator(model),
                      num_workers=num_workers)


def bucketed_loader(dataset: PostDataset, model: Tagger, batch_size: int, num_workers: int = 0, *,
                    shuffle: bool, seed: int = 0, chunk_batches: int = 50) -> DataLoader:
    """`BucketBatchSampler` batches of `dataset` (whose posts are all featurised here, for their lengths)."""
    sampler = BucketBatchSampler(EpochSampler(len(dataset)), batch_size, lengths=item_lengths(dataset), seed=seed,
                                 shuffle=shuffle, chunk_batches=chunk_batches)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(model), num_workers=num_workers)
