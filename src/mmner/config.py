"""Experiment configuration: one YAML schema, validated with pydantic (unknown keys are errors).

The `model` section is validated against the chosen model's own `Params` class from the registry,
so `model.dropuot: 0.1` fails with the key and the allowed names, before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmner.errors import MmnerError
from mmner.models import registry
from mmner.models.base import ModelParams
from mmner.vision.config import VisualConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ExtraTrain(Section):
    """More training posts (`data.extra_train`): a dataset name or file, and optionally a `.tags` file
    (`<post id>\t<tags>` per post, in the data's order) whose tags replace the data's own, e.g. an
    ensemble's tags of unlabelled posts (benchmarks/pseudo_label.py). Their visual inputs are looked up
    as for that dataset. `exclude`: a file of post ids (one a line, `#` comments) left out of them, e.g.
    near-copies of evaluation posts (benchmarks/overlap.py --ids)."""

    data: str
    tags: str | None = None
    exclude: str | None = None


class Holdout(Section):
    """A fold of the training posts left out (`data.holdout`): the post at position i (in file order, after
    `limit_train`) is in fold i mod `folds`. A teacher trained without fold k gives the soft targets of fold
    k's posts (cross-fitting: benchmarks/teacher_marginals.py --fold k/n), as a teacher's own training posts
    get almost one-hot marginals."""

    fold: int = Field(ge=0)
    folds: int = Field(ge=2)

    @model_validator(mode="after")
    def _fold_in_range(self) -> "Holdout":
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is not one of the {self.folds} folds (0 to {self.folds - 1})")
        return self


class DataConfig(Section):
    train: str = "twitter2017:train"
    extra_train: list[ExtraTrain] = []  # posts added to the training split (after limit_train / train_fraction)
    valid: str = "twitter2017:valid"
    test: str | None = "twitter2017:test"
    dir: str | None = None  # data dir; default: $MMNER_DATA_DIR, else ../shared/data
    scheme: Literal["bio", "bioes"] = "bio"
    limit_train: int | None = None  # first N training posts only (quick runs, learning curves)
    # A seeded random share of the training posts (after limit_train): low-resource curves. Draws are
    # nested: for one seed, the posts of a smaller fraction are among those of a larger one.
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    holdout: Holdout | None = None  # a fold of the training posts left out (after limit_train, before train_fraction)


class OptimConfig(Section):
    lr: float = 1e-3  # heads (CRF, classifier, biLSTM)
    encoder_lr: float = 5e-5  # pretrained encoder
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all optimisation steps
    # layer-wise learning-rate decay: the encoder's layer n of N trains at encoder_lr x layer_decay^(N - n), its
    # embeddings at encoder_lr x layer_decay^N; 1.0: one rate for the whole encoder
    layer_decay: float = Field(1.0, gt=0.0, le=1.0)
    grad_clip: float = 1.0
    # AdamW's fused kernel (one pass over all parameters, clipping the gradients as it reads them); false:
    # its per-tensor loop after clip_grad_norm_
    fused: bool = True


class TrainerConfig(Section):
    max_epochs: int = 10
    max_steps: int = -1
    patience: int = 3  # epochs without a better valid F1 before stopping
    batch_size: int = 16
    eval_batch_size: int = 64
    accumulate_grad_batches: int = 1
    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1
    strategy: str = "auto"
    num_nodes: int = 1
    # `auto`: bf16-mixed where the CPU (avx512_bf16 / AMX) or the GPU computes in bf16, else 32-true;
    # or any Lightning precision ("32-true", "bf16-mixed", "16-mixed", ...). metrics.json says which ran.
    precision: str = "auto"
    # `bucket`: training batches drawn from length-sorted chunks of `bucket_batches` batches, the batch
    # order shuffled (seeded), so a batch pads little; `random`: plain shuffled batches.
    batching: Literal["bucket", "random"] = "bucket"
    bucket_batches: int = Field(50, ge=1)
    # `fast`: the dropout modules and, in training on the CPU, the attention probabilities draw their
    # masks from 16 random bits an element (mmner.models.dropout: ~4x cheaper on the CPU, keep
    # probability to 1/65536); `torch`: torch's own dropout and attention
    dropout_mask: Literal["fast", "torch"] = "fast"
    # torch threads; None: the cores this process may use (its CPU affinity)
    threads: int | None = Field(None, ge=1)
    num_workers: int = 0  # data-loader worker processes (0: featurise in the training process)
    log_every_n_steps: int = 20
    limit_val_batches: Union[int, float] = 1.0
    # an exponential moving average of the weights, W_avg <- ema x W_avg + (1 - ema) x W after every
    # optimizer step (mmner.train.module.WeightEMA): validation, the best epoch and the saved model use the
    # average. 0: off
    ema: float = Field(0.0, ge=0.0, lt=1.0)


class DistillConfig(Section):
    """Soft targets from a teacher (`distill`): files of CRF marginals of training posts, e.g. an ensemble's
    (benchmarks/teacher_marginals.py; format in mmner.train.distill), each for `data.train` or one of
    `data.extra_train`'s datasets. A post with a target trains on (1 - weight) x its CRF loss + weight x the
    KL divergence from the teacher's marginals to the model's; a batch without targets on the CRF loss.
    `temperature` T > 1 softens both sides before the KL: the teacher's marginals word by word (p^(1/T),
    renormalised; the files hold marginals, not the teacher's scores), the model's by dividing its CRF scores
    by T before forward-backward; the KL is scaled by T^2 so that its gradients keep their size. 1: off."""

    targets: list[str] = []
    weight: float = Field(0.5, gt=0.0, le=1.0)
    temperature: float = Field(1.0, ge=1.0, le=10.0)


class Config(Section):
    name: str | None = None
    seed: int = 13
    model: dict[str, Any]
    data: DataConfig = DataConfig()
    visual: VisualConfig = VisualConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    distill: DistillConfig = DistillConfig()

    def model_params(self) -> ModelParams:
        name = self.model.get("name")
        if not name:
            raise MmnerError(f"model.name: missing (choose one of: {', '.join(registry.names())})")
        cls = registry.get(name)
        try:
            return cls.Params(**self.model)
        except ValidationError as exc:
            raise MmnerError(_describe(exc, prefix="model", model=cls.Params)) from None

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["model"] = self.model_params().model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)


def _describe(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """The first validation error as one line naming the key; unknown keys list the allowed ones."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(([prefix] if prefix else []) + loc)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        target: Any = model or Config
        for part in loc[:-1]:
            field = target.model_fields.get(part)
            target = field.annotation if field is not None else None
            if not (isinstance(target, type) and issubclass(target, BaseModel)):
                target = None
                break
        allowed = f" (allowed: {', '.join(target.model_fields)})" if target is not None else ""
        return f"config key '{key}': unknown key{allowed}{more}"
    return f"config key '{key}': {err['msg']}{more}"


def _set(data: dict, dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise MmnerError(f"--set {dotted}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None


def read_yaml(path: Path, what: str, text: Callable[[str], str] | None = None) -> Any:
    """A YAML file's content (after `text` rewrites its text, if given); one-line errors naming the file
    (and the line, for invalid YAML)."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise MmnerError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        return yaml.safe_load(text(raw) if text is not None else raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise MmnerError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Read a YAML config (or start from `base`), apply `key=value` overrides, validate."""
    data: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path, "config")
        if loaded is not None and not isinstance(loaded, dict):
            raise MmnerError(f"{path}: a config must be a mapping of sections")
        data.update(loaded or {})
    for item in overrides or []:
        if "=" not in item:
            raise MmnerError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set(data, key.strip(), raw)
    try:
        config = Config(**data)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise MmnerError(where + _describe(exc)) from None
    config.model_params()  # validate the model section now, not after data loading
    return config
