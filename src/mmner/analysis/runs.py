"""A finished run directory as the report reads it: what it is (metrics.json), its test predictions
next to the gold posts, the training posts it learned from, and its optional per-post outputs.

Nothing here loads the model, so a report works for every registry model, and for runs whose model
this checkout no longer has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmner.analysis import artifacts
from mmner.analysis.slices import PostEntities, post_entities
from mmner.config import DataConfig, OptimConfig, TrainerConfig
from mmner.data import datadir
from mmner.data.post import Post
from mmner.data.readers import read_conll
from mmner.errors import MmnerError

# What every section says about each run (DESIGN §6: never a result without them).
IDENTITY = ("model", "dataset", "variant", "encoder", "visual_source", "seed")

# The training schedule: runs that differ in any of these are not points of one low-resource curve.
SCHEDULE = (("trainer", "max_epochs"), ("trainer", "max_steps"), ("trainer", "patience"), ("trainer", "batch_size"),
            ("trainer", "accumulate_grad_batches"), ("trainer", "batching"), ("optim", "lr"), ("optim", "encoder_lr"),
            ("optim", "weight_decay"), ("optim", "warmup"))
_SECTIONS = {"trainer": TrainerConfig, "optim": OptimConfig}


@dataclass
class RunData:
    label: str  # R1, R2, ... in the order given
    path: Path
    metrics: dict[str, Any]  # metrics.json["test"]
    data: DataConfig
    seed: int
    posts: list[Post]  # gold test posts
    pred: list[list[str]]
    items: list[PostEntities]
    train_posts: list[Post] | None
    train_note: str | None = None
    relation: dict[str, float] | None = None
    attention: dict[str, dict[str, Any]] | None = None
    schedule: dict[str, Any] | None = None  # SCHEDULE keys ("trainer.max_epochs": 6, ...) of config.yaml

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def mode(self) -> str:
        return str(self.metrics.get("mode", "conlleval"))

    @property
    def test_key(self) -> tuple:
        """Runs with the same key were scored on the same posts, so they can be compared pair-wise."""
        return (self.metrics.get("data_sha1") or self.metrics.get("dataset"), len(self.posts))

    @property
    def n_train(self) -> int | None:
        if "train_posts" in self.metrics:
            return int(self.metrics["train_posts"])
        return len(self.train_posts) if self.train_posts is not None else None

    def identity(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "label": self.label, "run": self.name, "path": str(self.path),
            **{k: m.get(k) for k in IDENTITY},
            "data_sha1": m.get("data_sha1"), "mode": self.mode, "test_posts": len(self.posts),
            "train_posts": self.n_train, "train_fraction": float(m.get("train_fraction", self.data.train_fraction)),
            "git_commit": m.get("git_commit"), "schedule": self.schedule,
        }

    def describe(self) -> str:
        m = self.metrics
        return (f"{self.label} = {self.name}: {m.get('model')}, encoder {m.get('encoder')}, visual {m.get('visual_source')}, "
                f"seed {m.get('seed')}, {m.get('dataset')} ({m.get('variant')})")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmnerError(f"{path}: no such file (is {path.parent} a finished run directory?)") from None
    except json.JSONDecodeError as exc:
        raise MmnerError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def schedule_of(raw: dict[str, Any]) -> dict[str, Any]:
    """The SCHEDULE keys of a config (a key it does not set has its default)."""
    out = {}
    for section, key in SCHEDULE:
        given = raw.get(section) if isinstance(raw.get(section), dict) else {}
        out[f"{section}.{key}"] = given.get(key, _SECTIONS[section].model_fields[key].default)
    return out


def _config(run_dir: Path) -> tuple[DataConfig, int, dict[str, Any]]:
    """The data section, seed and schedule of config.yaml, read without the model registry (any model's
    run works)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise MmnerError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return DataConfig(**(raw.get("data") or {})), int(raw.get("seed", 13)), schedule_of(raw)
    except (yaml.YAMLError, ValidationError, TypeError, ValueError) as exc:
        raise MmnerError(f"{path}: cannot read its data section ({str(exc).splitlines()[0]})") from None


def _check_aligned(posts: list[Post], pred: list[Post], gold_path: Path, pred_path: Path) -> None:
    if len(pred) != len(posts):
        raise MmnerError(f"{pred_path}: {len(pred)} posts but the test data {gold_path} has {len(posts)}")
    for g, p in zip(posts, pred):
        if g.tokens != p.tokens:
            raise MmnerError(f"{pred_path}:{p.meta.get('line')}: post {p.id} has other tokens than "
                             f"{gold_path}:{g.meta.get('line')}")


def load(run_dir: str | Path, label: str, data_dir: str | None = None) -> RunData:
    """Read a run directory for the report; one-line errors name what is missing."""
    from mmner.train.run import training_subset

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MmnerError(f"{run_dir}: no such run directory")
    data, seed, schedule = _config(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict) or "test" not in metrics:
        raise MmnerError(f"{run_dir / 'metrics.json'}: no test split scored (the report analyses test predictions)")
    if not data.test:
        raise MmnerError(f"{run_dir / 'config.yaml'}: data.test is not set; the report needs the test split")
    gold_path = datadir.resolve(data.test, data_dir or data.dir)
    posts = datadir.load_dataset(str(gold_path))
    if any(p.tags is None for p in posts):
        raise MmnerError(f"{gold_path}: test data without gold tags")
    pred_path, tags_file = run_dir / "predictions" / "test.conll", artifacts.tags_path(run_dir)
    if pred_path.is_file():
        pred_posts = read_conll(pred_path)
        _check_aligned(posts, pred_posts, gold_path, pred_path)
        pred = [list(p.tags or []) for p in pred_posts]
    elif tags_file.is_file():  # a tracked copy of the run: tags without the words (benchmarks/runs)
        pred = artifacts.read_tags(tags_file, posts)
    else:
        raise MmnerError(f"{pred_path}: no such file (the run wrote no test predictions)")
    test = metrics["test"]
    items = post_entities(posts, pred, str(test.get("mode", "conlleval")))

    train_posts, note = None, None
    try:
        train_posts = training_subset(datadir.load_dataset(data.train, data_dir or data.dir), data, seed)
    except MmnerError as exc:
        note = f"training data not readable here ({exc})"

    rel = artifacts.relation_path(run_dir)
    att = artifacts.attention_path(run_dir)
    attention = artifacts.read_attention(att) if att.is_file() else None
    if attention:
        _check_entities(attention, posts, att)
    return RunData(
        label=label, path=run_dir, metrics=test, data=data, seed=seed, posts=posts, pred=pred, items=items,
        train_posts=train_posts, train_note=note,
        relation=artifacts.read_relation(rel) if rel.is_file() else None,
        attention=attention, schedule=schedule,
    )


def _check_entities(attention: dict[str, dict[str, Any]], posts: list[Post], path: Path) -> None:
    """Entity spans of the attention file must lie inside their post (a file of another test set fails here)."""
    lengths = {p.id: len(p.tokens) for p in posts}
    for pid, m in attention.items():
        n = lengths.get(pid)
        bad = [x for x in m["entities"] if n is not None and x["end"] > n]
        if bad:
            raise MmnerError(f"{path}: post {pid}: entity [{bad[0]['start']}, {bad[0]['end']}) "
                             f"lies beyond the post's {n} tokens")
