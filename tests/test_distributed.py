"""Training on several devices: two CPU processes with DDP (gloo) stand in for two GPUs.

The same code path as a multi-GPU run: a distributed sampler splits the training posts, validation
predictions are gathered from every process before scoring, and only the first process writes the
run directory.
"""

from __future__ import annotations

import csv
import json

from conftest import tiny_config
from mmner.config import load_config
from mmner.data.readers import read_conll
from mmner.inference import load_run, predict_tags
from mmner.train.run import train


def test_two_process_ddp_training(tiny_model_params, tiny_corpus, tmp_path):
    config = load_config(None, base=tiny_config(tiny_model_params["bert-crf"], tiny_corpus, devices=2,
                                                strategy="ddp_spawn", max_epochs=2))
    run_dir = tmp_path / "run"
    metrics = train(config, run_dir, quiet=True)
    assert metrics["test"]["gold_entities"] == sum(
        tag.startswith("B-") for post in read_conll(tiny_corpus["test"]) for tag in post.tags)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # each process took half of the 24 training posts: 2 steps of 8 per epoch instead of 3
    with open(run_dir / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert max(int(r["step"]) for r in rows) + 1 == 2 * 2
    # the valid F1 of each epoch was computed once, on the valid posts gathered from both processes
    assert sum(1 for r in rows if r.get("valid_f1")) == 2
    _, model = load_run(run_dir)
    posts = read_conll(tiny_corpus["test"])
    assert [p.tags for p in read_conll(run_dir / "predictions" / "test.conll")] == predict_tags(model, posts, progress=False)


def test_bucketed_batches_under_lightnings_distributed_sampler(tiny_model_params, tiny_corpus):
    """What Lightning builds for each rank under DDP (`_update_dataloader` swaps a DistributedSampler into the
    bucketed batch sampler, keeping its lengths and seed): across 2 ranks every training post exactly once
    per epoch, both ranks the same number of batches, and another epoch another order."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    from mmner.models import registry
    from mmner.tagging.vocab import LabelVocab
    from mmner.train.module import train_loader

    config = load_config(None, base=tiny_config(tiny_model_params["bert-crf"], tiny_corpus, batch_size=5))
    posts = read_conll(tiny_corpus["train"])
    cls = registry.get("bert-crf")
    model = cls.create(config.model_params(), LabelVocab.from_posts(posts), posts)
    # as Lightning calls the train_dataloader hook: recording each sampler's init arguments
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        base = train_loader(posts, model, config, None)
    seen: dict[int, list[list[int]]] = {}
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            sampler = DistributedSampler(base.dataset, num_replicas=2, rank=rank, shuffle=True, seed=config.seed)
            ranked = _update_dataloader(base, sampler)
            ranked.batch_sampler.sampler.set_epoch(epoch)
            per_rank.append([batch["index"] for batch in ranked])
        assert len(per_rank[0]) == len(per_rank[1])  # the ranks step together
        flat = [i for rank in per_rank for batch in rank for i in batch]
        assert sorted(flat) == list(range(len(posts)))  # 24 posts: each once, on one rank
        seen[epoch] = per_rank[0]
    assert seen[0] != seen[1]
