"""Training a run directory (DESIGN §5); loading one and tagging with it is `mmner.inference`."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.utils.deterministic
from safetensors.torch import save_model

from mmner.analysis.artifacts import tags_path, write_post_outputs, write_tags
from mmner.config import Config, DataConfig, ExtraTrain, load_config
from mmner.data import datadir
from mmner.data.post import Post
from mmner.data.readers import write_conll
from mmner.errors import Interrupted, MmnerError
from mmner.inference import (
    check_visual,
    data_sha1,
    dataset_record,
    default_device,
    device_name,
    extras_summary,
    predict_tags,
    score_posts,
    visual_inputs,
)
from mmner.models import registry
from mmner.models.dropout import use_fast_dropout
from mmner.tagging.vocab import LabelVocab
from mmner.train.distill import Teacher
from mmner.train.module import PostDataModule, ProcessGroupCloser, TaggerModule, WeightEMA, running_clock
from mmner.vision.inputs import VisualInputs

log = logging.getLogger("mmner")

BEST = "best.ckpt"
LAST = "last.ckpt"


def _quiet_lightning() -> None:
    """mmner's own lines instead of Lightning's: its device and setup notices ("GPU available: False",
    "TPU available", an advert for a cloud logger), its model summary ("Total FLOPs: 0") and two
    warnings that point into site-packages: the logging interval on short epochs, and modules in eval
    mode, which here are always deliberate (only frozen parts such as rgcn's index encoder), and, on
    --resume, that the checkpoint folder is not empty (it holds the checkpoints being resumed)."""
    import warnings

    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LightningNotices) for f in logger.filters):
            logger.addFilter(_LightningNotices())


class _LightningNotices(logging.Filter):
    """Lets Lightning's warnings and errors through; its informational notices are mmner's to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "litlogger" not in str(record.msg)


def _progress_bar():
    """Lightning's bar, numbered as mmner's log lines are ("epoch 1/6", not "Epoch 0/5"), without the
    logger's version number."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class ProgressBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *args) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)
            return metrics

    return ProgressBar()


def _describe_model(model: torch.nn.Module) -> None:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %.1fM parameters, %.1fM trained", total / 1e6, trained / 1e6)


def git_commit() -> str | None:
    """HEAD of the checkout mmner runs from, with `+dirty` when tracked files differ from it."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def record_start(run_dir: Path, resume: bool, commit: str | None) -> list[str | None]:
    """Append this start of the run (its code's `commit`, whether a resume, when) to `starts.jsonl` in the run
    directory, and return the commits of every start so far, each once, in order: a run resumed from
    another checkout names all the code that trained it. Rank 0 only under distributed training."""
    import datetime

    path = run_dir / "starts.jsonl"
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        line = {"commit": commit, "resumed": resume,
                "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    starts = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.is_file() else []
    return list(dict.fromkeys(x.get("commit") for x in starts))


def _interrupted(exc: SystemExit, run_dir: Path, last: Path, epoch: int) -> Interrupted:
    """A stopped training as an error that says what is kept; never a finished-looking run (exit status 0)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    how, code = ("SIGTERM", 143) if isinstance(exc, SIGTERMException) else ("Ctrl-C", 130)
    if last.is_file():
        kept = (f"{last} holds the last finished epoch; continue with "
                f"`mmner train CONFIG --output {run_dir} --resume`")
    else:
        kept = (f"no epoch had finished; `mmner train CONFIG --output {run_dir} --resume` starts it again")
    return Interrupted(f"{run_dir}: training stopped by {how} in epoch {epoch + 1}; {kept}", code)


def _cpuinfo(field: str, text: str | None = None) -> str | None:
    """The first `field` of Linux /proc/cpuinfo (or of `text`), None where it cannot be read."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == field:
            return value.strip()
    return None


def cpu_flags(text: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where that cannot be read)."""
    return set((_cpuinfo("flags", text) or "").split())


def cpu_model(text: str | None = None) -> str | None:
    """The CPU's model name as metrics.json records it (`cpu`), e.g. to tell apart timings made on two
    machines; None where /proc/cpuinfo cannot be read."""
    return _cpuinfo("model name", text)


def resolve_precision(precision: str, accelerator: str = "auto", flags: set[str] | None = None,
                      cuda: bool | None = None, cuda_bf16: bool | None = None) -> str:
    """`trainer.precision` as Lightning takes it. `auto`: bf16-mixed where the device computes in bf16
    natively (a GPU that supports it; a CPU with avx512_bf16 or AMX), else 32-true, since emulated bf16
    is slower than fp32. Any other value is passed through. `flags`, `cuda`, `cuda_bf16`: for tests."""
    if precision != "auto":
        return precision
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda and accelerator in ("auto", "gpu", "cuda"):
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return "bf16-mixed" if supported else "32-true"
    flags = cpu_flags() if flags is None else flags
    return "bf16-mixed" if flags & {"avx512_bf16", "amx_bf16"} else "32-true"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def in_fold(position: int, fold: int, folds: int) -> bool:
    """Whether the post at `position` (file order) is in `fold` of `folds` (`data.holdout`)."""
    return position % folds == fold


def training_subset(posts: list[Post], data: DataConfig, seed: int) -> list[Post]:
    """The training posts a run learns from: the first `limit_train`, less the fold `data.holdout` leaves out,
    then a seeded random `train_fraction` of them (at least one post), in file order. Shuffling once per seed
    and taking a prefix makes the subsets of one seed nested, so a learning curve adds posts rather than
    swapping them."""
    if data.limit_train:
        posts = posts[: data.limit_train]
    if data.holdout is not None:
        posts = [p for i, p in enumerate(posts) if not in_fold(i, data.holdout.fold, data.holdout.folds)]
    if data.train_fraction >= 1.0:
        return posts
    order = list(range(len(posts)))
    random.Random(seed).shuffle(order)
    keep = sorted(order[: max(1, round(data.train_fraction * len(posts)))])
    return [posts[i] for i in keep]


def extra_training_posts(extra: ExtraTrain, index: int, data: DataConfig, train: list[Post]) -> list[Post]:
    """The posts of `data.extra_train[index]`, tagged by its `tags` file when it names one; their ids get the
    data's name in front (`twitter2015:train/train-7`), so they never meet a training post's id. Every entity
    type they use must be one the main training data has: the label set is the main data's."""

    from mmner.analysis.artifacts import read_tags
    from mmner.tagging import schemes

    where = f"data.extra_train[{index}]"
    posts = datadir.load_dataset(str(datadir.resolve(extra.data, data.dir)))
    if extra.tags is not None:
        if not Path(extra.tags).is_file():
            raise MmnerError(f"{where}.tags: {extra.tags} does not exist")
        posts = [replace(p, tags=t) for p, t in zip(posts, read_tags(extra.tags, posts))]
    elif any(p.tags is None for p in posts):
        raise MmnerError(f"{where}: {extra.data} has posts without tags; give a tags file (tags: ...)")
    if extra.exclude is not None:
        posts = _excluding(posts, extra.exclude, f"{where}.exclude", extra.data)
    known = {kind for p in train for kind, _, _ in schemes.entities(p.tags or [])}
    source = extra.tags or extra.data
    for p in posts:
        unknown = sorted({kind for kind, _, _ in schemes.entities(p.tags or [])} - known)
        if unknown:
            raise MmnerError(f"{where}: {source}: post {p.id} has entity type {unknown[0]}, which {data.train} "
                             f"has not (its types: {', '.join(sorted(known))})")
    return [replace(p, id=f"{extra.data}/{p.id}") for p in posts]


def _excluding(posts: list[Post], path: str, where: str, data: str) -> list[Post]:
    """`posts` without the ids that the file `path` lists (one a line; blank lines and `#` comments
    skipped); an id that is none of the posts' is an error naming its line."""
    if not Path(path).is_file():
        raise MmnerError(f"{where}: {path} does not exist")
    ids = {p.id for p in posts}
    out: set[str] = set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        pid = line.split("#", 1)[0].strip()
        if not pid:
            continue
        if pid not in ids:
            raise MmnerError(f"{path}:{n}: {pid} is not a post of {data}")
        out.add(pid)
    log.info("%s: %d of %d posts of %s left out (%s)", where, len(out), len(posts), data, path)
    return [p for p in posts if p.id not in out]


def merged_inputs(config: Config, names: list[str]) -> VisualInputs:
    """The visual inputs of training posts from several datasets: their caption files merged (image ids
    are distinct across the Twitter datasets; an id captioned differently is an error)."""
    from mmner.vision.captions import CaptionSource

    parts = [visual_inputs(config, name) for name in names]
    v = config.visual
    if v.source == "none":
        return parts[0]
    if v.source != "caption":
        raise MmnerError(f"data.extra_train: visual.source {v.source} is not supported with extra training data "
                         "(none or caption)")
    merged = CaptionSource.merged([(f"{name}'s caption file", part.captions)  # type: ignore[misc]
                                   for name, part in zip(names, parts)], "data.extra_train")
    return VisualInputs("caption", v.missing, captions=merged)


def _seed_everything(seed: int) -> None:
    import lightning as L

    L.seed_everything(seed, workers=True, verbose=False)


def train(config: Config, output: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train a model and write the run directory; returns metrics.json's content. Runs on
    `trainer.threads` torch threads (default: the cores this process may use), then restores the
    caller's thread count."""
    threads = config.trainer.threads or usable_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(config, output, resume, quiet, threads)
    finally:
        torch.set_num_threads(previous)


def _train(config: Config, output: str | Path, resume: bool, quiet: bool, threads: int) -> dict[str, Any]:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    run_dir = Path(output)
    ckpt_dir = run_dir / "checkpoints"
    if resume and (run_dir / "metrics.json").is_file() and (run_dir / "config.yaml").is_file():
        finished = json.loads((run_dir / "metrics.json").read_text())
        trained = max((split.get("epochs", 0) for split in finished.values() if isinstance(split, dict)), default=0)
        budget = max(load_config(run_dir / "config.yaml").trainer.max_epochs, trained)
        if config.trainer.max_epochs <= budget:
            # finished within this budget: nothing to continue; metrics.json and its provenance stay as they are
            log.info("%s: finished already (metrics.json, trainer.max_epochs %d); nothing to resume, nothing "
                     "changed (a larger trainer.max_epochs continues it)", run_dir, budget)
            return finished
    if resume and not (ckpt_dir / LAST).is_file():
        if not (run_dir / "config.yaml").is_file():
            raise MmnerError(f"{run_dir}: nothing to resume (no run directory with checkpoints/{LAST})")
        # stopped before its first epoch ended: nothing was kept, so `--resume` starts it again
        log.info("%s: no epoch had finished; starting the run again", run_dir)
        shutil.rmtree(run_dir)
        resume = False
    if not resume and (run_dir / "config.yaml").exists():
        raise MmnerError(f"{run_dir}: run directory exists; pass --resume to continue it or choose another --output")
    _seed_everything(config.seed)
    params = config.model_params()
    cls = registry.get(params.name)
    if cls.teacher_required and not config.distill.targets:
        raise MmnerError(f"distill.targets: {params.name} learns from a teacher's CRF marginals of the training posts; "
                         "name the marginals files (`mmner teacher` writes them)")
    if config.visual.source != "none" and not cls.uses_visual:
        raise MmnerError(
            f"visual.source: {params.name} is a text-only model and would ignore {config.visual.source!r} "
            "input; set visual.source: none or choose a multimodal model"
        )
    d = config.data
    names = {"train": d.train, "valid": d.valid, **({"test": d.test} if d.test else {})}
    paths = {split: datadir.resolve(name, d.dir) for split, name in names.items()}
    posts = {split: datadir.load_dataset(str(path)) for split, path in paths.items()}
    posts["train"] = training_subset(posts["train"], d, config.seed)
    for split, items in posts.items():
        if split != "predict" and any(p.tags is None for p in items):
            raise MmnerError(f"{paths[split]}: {split} data has posts without gold tags")
    extra = [extra_training_posts(x, i, d, posts["train"]) for i, x in enumerate(d.extra_train)]
    posts["train"] = posts["train"] + [p for part in extra for p in part]
    log.info("data: %s", ", ".join(f"{s} {len(p)} posts" for s, p in posts.items())
             + "".join(f" (train: {len(part)} from {x.data}{' tagged by ' + x.tags if x.tags else ''})"
                       for x, part in zip(d.extra_train, extra)))
    inputs = {split: visual_inputs(config, names[split]) for split in posts}
    if d.extra_train:
        inputs["train"] = merged_inputs(config, [names["train"], *(x.data for x in d.extra_train)])
    visual = check_visual(config, names, posts, inputs=inputs)  # before training: visual.missing=error stops here
    params = cls.resolve_params(params, inputs["train"])  # e.g. the width of grid regions, for config.yaml
    config = config.model_copy(update={"model": params.model_dump(mode="json")})

    if resume:
        saved = load_config(run_dir / "config.yaml")
        if saved.model_params() != params:
            raise MmnerError(f"{run_dir}: --resume with a different model section than the run's config.yaml")
        labels = LabelVocab.load(run_dir / "labels.json")
    else:
        labels = LabelVocab.from_posts(posts["train"], d.scheme)
    for split in ("valid", "test"):  # an entity type the model never saw in training cannot be scored
        if split in posts:
            labels.check_types(posts[split], str(paths[split]))
    if resume:
        model = cls.load(params, labels, run_dir)
    else:
        model = cls.create(params, labels, posts["train"])
        build_index = getattr(model, "build_index", None)  # models that retrieve from the training posts (rgcn)
        if build_index is not None:  # the training posts only: valid and test posts never enter an index
            build_index(posts["train"], inputs["train"], device=default_device())
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        labels.save(run_dir / "labels.json")
        model.save_artifacts(run_dir)

    t = config.trainer
    if t.dropout_mask == "fast":
        log.info("dropout: fast masks in %d dropout modules and the attention probabilities", use_fast_dropout(model))
    precision = resolve_precision(t.precision, t.accelerator)
    log.info("precision %s (trainer.precision: %s), %d threads, %s batches", precision, t.precision, threads,
             "length-bucketed" if t.batching == "bucket" else "random")
    _quiet_lightning()
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="valid_f1", mode="max", save_top_k=1, enable_version_counter=False,
    )
    # last.ckpt after every epoch, for --resume. Not ModelCheckpoint(save_last=True): that writes it only in
    # the epochs that also save a best checkpoint, so a resume would repeat the epochs since the best one.
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename=LAST.removesuffix(".ckpt"), monitor=None, save_top_k=1,
                             every_n_epochs=1, enable_version_counter=False)
    stopper = EarlyStopping(monitor="valid_f1", mode="max", patience=t.patience)
    averaging = [WeightEMA(t.ema)] if t.ema else []
    if averaging:
        log.info("ema: the weights' moving average (decay %g a step) is validated and saved", t.ema)
    trainer = L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,  # type: ignore[arg-type]
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=config.optim.grad_clip or None,
        # at least once an epoch, so that train_log.csv has train_loss on short runs too
        log_every_n_steps=max(1, min(t.log_every_n_steps, -(-len(posts["train"]) // t.batch_size))),
        limit_val_batches=None if t.limit_val_batches == 1.0 else t.limit_val_batches,  # (None: no notice)
        callbacks=[*averaging, checkpoint, latest, stopper, ProcessGroupCloser(),
                   *([] if quiet else [_progress_bar()])],
        logger=CSVLogger(str(run_dir), name="", version=_log_version(run_dir)),
        enable_progress_bar=not quiet,
        enable_model_summary=False,  # mmner's one line (_describe_model) instead
        num_sanity_val_steps=0,
        deterministic="warn",
    )
    # deterministic mode also fills every new tensor with NaN, a check for reads of uninitialised memory
    # that reproducibility does not need: off, each of the thousands of allocations a step is a memset
    # fewer (the same results; 1-4 s of a ~55 s UMT MiniLM epoch in alternating runs on this CPU)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    valid_gold = [p.tags for p in posts["valid"]]
    teacher = Teacher.from_config(config.distill.targets, config.distill.weight, d.train,
                                  [x.data for x in d.extra_train], posts["train"], labels,
                                  config.distill.temperature)
    if teacher is not None:
        log.info("distill: soft targets for %d of %d training posts (weight %g, temperature %g)",
                 teacher.record["posts_with_targets"], len(posts["train"]), teacher.weight, teacher.temperature)
    module = TaggerModule(model, config, valid_gold, teacher)  # type: ignore[arg-type]
    data = PostDataModule(model, posts["train"], posts["valid"], config, inputs)
    model.train()  # from_pretrained leaves encoders in eval mode, and Lightning keeps modules' modes
    _describe_model(model)
    commit = git_commit()  # the code of this start, taken as it begins (the checkout may change while it trains)
    commits = record_start(run_dir, resume, commit)
    clock = running_clock()  # train_seconds leaves out time the process was stopped, as the epoch times do
    started = clock.now()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_dir / LAST) if resume else None)
    except SystemExit as exc:  # Lightning ends on Ctrl-C with exit(1) and on SIGTERM with exit(0)
        if not trainer.interrupted:
            raise
        raise _interrupted(exc, run_dir, ckpt_dir / LAST, trainer.current_epoch) from None
    train_seconds = clock.now() - started
    if not trainer.is_global_zero:
        return {}

    best_path = checkpoint.best_model_path or str(ckpt_dir / LAST)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict({k.removeprefix("model."): v for k, v in best["state_dict"].items()})
    save_model(model, str(run_dir / "model.safetensors"))
    _readable(run_dir / "model.safetensors")
    epoch_seconds = [float(row["epoch_seconds"]) for row in _write_train_log(run_dir) if row.get("epoch_seconds")]

    model.to(default_device())
    common = {
        "encoder": getattr(params, "encoder", None) or getattr(params, "vectors", None),
        "model": params.name,
        "visual_source": config.visual.source,
        "seed": config.seed,
        "epochs": trainer.current_epoch,
        "best_epoch": int(best.get("epoch", -1)) + 1,
        "train_seconds": round(train_seconds, 1),
        # every epoch's own time, over all starts of a resumed run (this start's wall time covers only its epochs)
        "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds
                                   else train_seconds / max(trainer.current_epoch, 1), 1),
        "device": device_name(),
        "cpu": cpu_model(),
        "trainer_precision": precision,
        "threads": threads,
        "batching": t.batching,
        "dropout_mask": t.dropout_mask,
        **({"ema": t.ema} if t.ema else {}),
        "frozen_embeddings": bool(getattr(params, "freeze_embeddings", False)),
        "git_commit": commit,
        "git_commits": commits,  # every start's, a resumed run's included
        "train_masked_images": visual["train"]["masked_images"],
        "train_fraction": d.train_fraction,
        **({"holdout": d.holdout.model_dump()} if d.holdout is not None else {}),
        "train_posts": len(posts["train"]),
        **({"extra_train": [{"data": x.data, "tags": x.tags, "posts": len(part),
                             **({"tags_sha1": data_sha1(Path(x.tags))} if x.tags else {}),
                             **({"exclude": x.exclude, "exclude_sha1": data_sha1(Path(x.exclude))}
                                if x.exclude else {})}
                            for x, part in zip(d.extra_train, extra)]} if d.extra_train else {}),
        **({"distill": teacher.record} if teacher is not None else {}),
        "resumed": resume,
    }
    metrics: dict[str, Any] = {}
    (run_dir / "predictions").mkdir(exist_ok=True)
    for split in ("valid", "test"):
        if split not in posts:
            continue
        extras: list[dict[str, Any]] = []
        pred = predict_tags(model, posts[split], t.eval_batch_size, progress=not quiet, visual=inputs[split],
                            extras=extras)
        write_conll(run_dir / "predictions" / f"{split}.conll", posts[split], pred)
        # The tags alone too: the file a tracked copy of the run keeps (benchmarks/track_runs.py), so the run's
        # predictions outlive the git-ignored CoNLL file from the moment the run ends
        write_tags(tags_path(run_dir, split), [replace(p, tags=list(t)) for p, t in zip(posts[split], pred)])
        write_post_outputs(run_dir, split, posts[split], extras, pred)
        metrics[split] = {**score_posts(posts[split], pred), **dataset_record(names[split], paths[split]), **common,
                          **visual[split], **extras_summary(extras)}
    more = getattr(model, "auxiliary_evaluations", None)  # test-time scores of auxiliary tasks (RpBERT's TRC)
    if more is not None and "test" in metrics:
        metrics["test"].update(more(config, run_dir, t.eval_batch_size, posts=posts["test"], visual=inputs["test"]))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _readable(path: Path) -> None:
    """The file's mode as the run directory's other files get it (0644 under the usual umask): the
    safetensors writer creates its file private (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _log_version(run_dir: Path) -> str:
    """A fresh log folder per (re)start: Lightning's CSV logger would overwrite an existing one."""
    n = 0
    while (run_dir / "logs" / f"part{n}").exists():
        n += 1
    return f"logs/part{n}"


def _write_train_log(run_dir: Path) -> list[dict[str, str]]:
    """Lightning's CSV logs (one row per logged step or epoch, one file per start) become train_log.csv;
    returns its rows."""
    parts = sorted((run_dir / "logs").glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:]))
    rows: list[dict[str, str]] = []
    for part in parts:
        with open(part, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(run_dir / "train_log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return rows


