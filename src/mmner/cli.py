"""The `mmner` command line (DESIGN §1). Every user error ends as one line on stderr, exit 2."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from mmner.errors import Interrupted, MmnerError

if TYPE_CHECKING:
    from mmner.ray_engine import RayOptions


def _plain_metavars(params: list) -> list:
    """Help screens name what to type, not Python types (typer shows `<bool>`, `<list[str]>`, `<path>`):
    a flag shows nothing after its name, a value option its kind (PATH, TEXT, INTEGER, NUMBER) or its
    own metavar (`--set KEY=VALUE`), an argument its upper-case name alone."""
    for param in params:
        if getattr(param, "_mmner_metavar", False):
            continue
        param._mmner_metavar = True
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = param.name.upper()  # the usage line adds "..." to one that takes several
            param.display_type_rich = lambda ctx: None  # the name column already shows the metavar
        elif getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = _value_kind(param)
    return params


def _value_kind(param: typer.core.TyperOption) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is not None:  # typer >= 0.20: the Python annotation
        args = get_args(annotation)
        name = getattr(args[0] if get_origin(annotation) in (list, List) and args else annotation, "__name__", "")
    else:  # click's parameter type
        name = getattr(getattr(param, "type", None), "name", "")
    kinds = {"Path": "PATH", "path": "PATH", "str": "TEXT", "text": "TEXT", "int": "INTEGER", "integer": "INTEGER",
             "float": "NUMBER"}
    return kinds.get(name, "VALUE")


class _Command(TyperCommand):
    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _plain_metavars(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _plain_metavars(super().get_params(ctx))


class _Typer(typer.Typer):
    """`typer.Typer` whose commands and groups print help without Python type placeholders."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args, cls=None, **kwargs):  # type: ignore[no-untyped-def, override]
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Multimodal named entity recognition for social-media posts.",
)


def _version(value: bool) -> None:
    if value:
        from mmner import __version__

        typer.echo(f"mmner {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Multimodal named entity recognition for social-media posts."""


def _print_score(result: dict, title: str) -> None:
    from mmner.tagging.scorer import format_score

    typer.echo(title)
    typer.echo(format_score(result))


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a config key: --set trainer.max_epochs=3 (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (default: runs/<config name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a model and write a run directory."""
    from mmner.config import load_config
    from mmner.train.run import train as run_train

    cfg = load_config(config, set_)
    out = output or Path("runs") / (cfg.name or config.stem)
    metrics = run_train(cfg, out, resume=resume, quiet=quiet)
    if metrics:
        for split, result in metrics.items():
            _print_score(result, f"{split} ({result['dataset']}):")
        typer.echo(f"run directory: {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmner train`."),
    data: str = typer.Option(..., "--data", help="A CoNLL file, or a name such as twitter2017:test."),
    mode: str = typer.Option("conlleval", "--mode", help="conlleval or strict."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the predictions as CoNLL."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress messages or bar."),
) -> None:
    """Score a trained model on a labelled split."""
    from mmner.inference import evaluate as run_evaluate

    result = run_evaluate(run_dir, data, mode=mode, batch_size=batch_size, output=output, progress=not quiet)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_score(result, f"{result['model']} ({result['encoder']}) on {data}:")


# `predict` and `serve`: region attention in the records of models that compute it.
_ATTENTION = typer.Option(False, "--attention/--no-attention", help="Region attention in each record of a model "
                          "that computes it (slower: the encoder then runs its eager attention kernel, which returns "
                          "the weights).")


_INT8 = typer.Option(False, "--int8/--no-int8", help="The transformer encoder's linear layers in dynamic int8 on "
                     "the CPU: faster single posts, slightly different tags (docs/results/speed.md measures both).")


# Options of `--engine ray`, shared by `predict` and `features extract`.
_ADDRESS = typer.Option(None, "--address", help="--engine ray: join this running Ray cluster (auto, HOST:6379, "
                        "ray://HOST:10001); default: start a local one (or join RAY_ADDRESS when set).")
_WORKERS = typer.Option(None, "--workers", help="--engine ray: Ray actors, each loading the model once (default: "
                        "as many as the cluster's CPUs hold, or its GPUs with --gpus-per-worker).")
_CPUS_PER_WORKER = typer.Option(None, "--cpus-per-worker", help="--engine ray: CPUs per worker, also its torch "
                                "threads (default 1).")


def _ray_options(engine: str, address: Optional[str], workers: Optional[int], cpus_per_worker: Optional[float],
                 gpus_per_worker: Optional[float], quiet: bool) -> "RayOptions | None":
    """The `RayOptions` of `--engine ray`, None for `--engine local` (which takes none of them)."""
    if engine not in ("local", "ray"):
        raise MmnerError(f"--engine {engine}: choose local or ray")
    given = [name for name, value in (("--address", address), ("--workers", workers),
                                      ("--cpus-per-worker", cpus_per_worker), ("--gpus-per-worker", gpus_per_worker))
             if value is not None]
    if engine == "local":
        if given:
            raise MmnerError(f"{', '.join(given)}: only with --engine ray")
        return None
    from mmner.ray_engine import RayOptions

    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker, progress=not quiet,
                      cpus_per_worker=1.0 if cpus_per_worker is None else cpus_per_worker)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmner train`."),
    input: Path = typer.Option(..., "--input", "-i", help="Posts: JSON lines, a RiTUAL texts.json or a CoNLL file "
                               "(--engine ray: JSON lines, or a folder or a quoted glob pattern of .jsonl files)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON lines with tokens, tags and entities (for a folder "
                                "or pattern of inputs: a folder, one output per input)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted --output: skip the posts it holds, append."),
    errors: Optional[Path] = typer.Option(None, "--errors", help="Where failed posts go (default: <output>.errors.jsonl)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    attention: bool = _ATTENTION,
    int8: bool = _INT8,
    engine: str = typer.Option("local", "--engine", help="local: in this process; ray: on a Ray cluster (Ray Data, "
                               "one model per worker; needs pip install mmner\\[ray])."),
    address: Optional[str] = _ADDRESS,
    workers: Optional[int] = _WORKERS,
    cpus_per_worker: Optional[float] = _CPUS_PER_WORKER,
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="--engine ray: GPUs per worker, "
                                                    "a fraction shares one (default 0: the model runs on CPUs)."),
) -> None:
    """Tag new posts (with their images or captions), batched, streaming and resumable.

    A post that cannot be tagged is reported with its line number, written to the errors file and
    skipped; the others are tagged. Exit code 2 when any post failed.
    """
    options = _ray_options(engine, address, workers, cpus_per_worker, gpus_per_worker, quiet)
    if options is not None:
        from mmner.ray_engine import predict_ray

        summary = predict_ray(run_dir, input, output, batch_size=batch_size, resume=resume, errors=errors,
                              options=options, attention=attention, int8=int8)
    else:
        from mmner.api import Tagger
        from mmner.predict import predict_file

        if not input.exists():
            raise MmnerError(f"{input}: no such file or folder")
        tagger = Tagger.load(run_dir, batch_size=batch_size, attention=attention, int8=int8)
        summary = predict_file(tagger, input, output, batch_size=batch_size, resume=resume, progress=not quiet,
                               errors=errors)
    typer.echo(summary.line())
    if summary.failed:
        raise MmnerError(f"{summary.failed} of {summary.failed + summary.tagged} posts failed, the first at "
                         f"{summary.first_failure}; all are listed in {summary.errors_file}")
    if summary.failed_total:  # a resumed run: the posts that failed before are still not tagged
        raise MmnerError(f"{summary.failed_total} posts failed in earlier runs of this output and are not in it; "
                         f"they are listed in {summary.errors_file}")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmner train`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port"),
    max_batch: int = typer.Option(32, "--max-batch", help="Most posts in one model call (micro-batching)."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a request waits for others to batch "
                                      "with, when there is company (a lone request does not wait)."),
    max_chars: int = typer.Option(2000, "--max-chars", help="Longest post text accepted (characters)."),
    max_body_mb: float = typer.Option(10.0, "--max-body-mb", help="Largest request body accepted (MiB)."),
    max_queue: int = typer.Option(512, "--max-queue", help="Most posts waiting for the model; beyond it a request "
                                  "is answered 503 with Retry-After at once."),
    shutdown_timeout: float = typer.Option(30.0, "--shutdown-timeout", help="On SIGTERM / Ctrl-C, how long "
                                           "requests in flight may take to finish (seconds)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the model (torch's default: all cores)."),
    attention: bool = _ATTENTION,
    int8: bool = _INT8,
) -> None:
    """HTTP API (POST /v1/tag, /v1/tag/batch, /v1/tag/upload; GET /v1/model, /healthz) and a web page at /."""
    from mmner.serve import Limits, run_server

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    limits = Limits(max_chars=max_chars, max_body_bytes=int(max_body_mb * 2**20), max_batch=max_batch,
                    max_wait_ms=max_wait_ms, max_queue=max_queue)
    run_server(run_dir, host=host, port=port, limits=limits, shutdown_timeout=shutdown_timeout, attention=attention,
               int8=int8)


@app.command()
def score(
    gold: str = typer.Option(..., "--gold", help="Gold CoNLL file (token, tag per line), or a name such as twitter2017:test."),
    pred: Path = typer.Option(..., "--pred", help="Predicted CoNLL file, same tokens."),
    mode: str = typer.Option("conlleval", "--mode", help="conlleval (default) or strict IOB2."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score predicted tags against gold tags."""
    from mmner.data import datadir
    from mmner.tagging.scorer import score_files

    result = score_files(datadir.resolve(gold, None), pred, mode)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_score(result, f"{pred} against {gold}:")


@app.command()
def teacher(
    run_dirs: List[Path] = typer.Argument(None, metavar="[RUN_DIR]...", help="Finished runs of one label set: the "
                                          "members (none where --add names them all)."),
    data: str = typer.Option(..., "--data", help="The posts to teach: a CoNLL file, or a name such as twitter2017:train "
                             "(as the training config will name them)."),
    output: Path = typer.Option(..., "--output", "-o", help="The members' mean CRF marginals of the posts, for "
                                "distill.targets (FILE.marginals.jsonl.gz)."),
    tags: Optional[Path] = typer.Option(None, "--tags", help="Also the members' entity-level vote on the posts, for "
                                        "data.extra_train (FILE.tags; k chosen on the members' validation split)."),
    fold: Optional[str] = typer.Option(None, "--fold", help="k/n: only fold k of n of the posts (cross-fitting); "
                                       "every member trained on them without that fold (data.holdout)."),
    add: List[Path] = typer.Option([], "--add", help="A marginals file of (some of) the posts by another member, "
                                   "e.g. one whose checkpoint is gone: each post's mean is over the members that "
                                   "cover it (repeatable; not with --tags)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Soft targets (distill) and voted tags (data.extra_train) from an ensemble of finished runs: the teacher
    that caption-distill learns from."""
    from mmner.analysis.artifacts import write_tags
    from mmner.train.distill import write_marginals
    from mmner.train.teacher import (
        file_marginals,
        fold_posts,
        held_out,
        mean_over_members,
        member_commits,
        member_marginals,
        parse_fold,
        vote_tags,
    )

    run_dirs = run_dirs or []
    if not run_dirs and not add:
        raise MmnerError("a teacher needs members: RUN_DIR arguments, --add files, or both")
    k_of_n = parse_fold(fold) if fold is not None else None
    if k_of_n is not None and tags is not None:
        raise MmnerError("--fold with --tags: a tags file covers every post of its data; make it without --fold")
    if add and tags is not None:
        raise MmnerError("--add with --tags: the vote needs every member's tags, and a marginals file holds none; "
                         "make the tags file without --add")
    members = member_commits(run_dirs)
    held_out(run_dirs, data, k_of_n)
    by_id: list[dict] = []  # per member: post id -> its marginals
    if run_dirs:
        labels, posts, per_run = member_marginals(run_dirs, data, batch_size, progress=not quiet, fold=k_of_n)
        by_id = [{p.id: r for p, r in zip(posts, rows)} for rows in per_run]
    else:
        posts, labels = fold_posts(data, k_of_n), []
    for path in add:
        header, rows = file_marginals(path, data, labels or None, posts, k_of_n)
        labels = labels or header["labels"]
        by_id.append(rows)
        members.update(header.get("members") or {str(path): None})
    mean, counts = mean_over_members(posts, by_id)
    write_marginals(output, data, labels, [(p.id, m) for p, m in zip(posts, mean)], members=members,
                    **({"added": [str(p) for p in add], "members_per_post": counts} if add else {}),
                    **({"fold": {"fold": k_of_n[0], "folds": k_of_n[1]}} if k_of_n else {}))
    sure = sum(int((m.max(-1).values > 0.9).sum()) for m in mean) / max(1, sum(m.shape[0] for m in mean))
    covered = "; posts by number of members: " + ", ".join(f"{k}: {n}" for k, n in counts.items()) if add else ""
    typer.echo(f"{output}: the mean CRF marginals of {len(by_id)} members for {len(posts)} posts of {data}"
               f"{f' (fold {k_of_n[0]} of {k_of_n[1]})' if k_of_n else ''} "
               f"({100 * sure:.1f}% of words with one label above 0.9{covered})")
    if tags is not None:
        voted = vote_tags(run_dirs, data, batch_size, progress=not quiet)
        tags.parent.mkdir(parents=True, exist_ok=True)
        write_tags(tags, voted.posts)
        entities = sum(t.startswith("B-") for p in voted.posts for t in p.tags or [])
        typer.echo(f"{tags}: the vote of {len(run_dirs)} runs (an entity kept with at least k = {voted.min_votes} "
                   f"votes, valid F1 {voted.valid_f1_by_min_votes[voted.min_votes]:.2f} on {voted.valid}), "
                   f"{entities} entities in {len(voted.posts)} posts")


@app.command()
def report(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR", help="Run directories; differences are to the first."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML file; its numbers go to the same stem with .json."),
    resamples: int = typer.Option(1000, "--resamples", help="Paired bootstrap resamples over posts."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    top_errors: int = typer.Option(30, "--errors", help="How many of the posts with the most errors to show."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data dir (default: each run's, else the usual lookup)."),
) -> None:
    """Analysis report of finished runs: scores per type with bootstrap tests, entity and length slices,
    low-resource curves, relation split, attention maps and the worst posts, as one HTML file."""
    from mmner.analysis.report import write_report

    page, numbers = write_report(run_dirs, output, resamples=resamples, seed=seed, top_errors=top_errors,
                                 data_dir=data_dir)
    typer.echo(f"report: {page}\nnumbers: {numbers}")


@app.command()
def sweep(
    matrix: Path = typer.Argument(..., help="Matrix YAML: blocks of configs x datasets x seeds (benchmarks/matrix-*.yaml)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Run root (default: the matrix's `root`)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Trainings at once; more than 1 needs a GPU."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every run's state and the ETA; run nothing."),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Leave runs that failed before (default: retry them)."),
) -> None:
    """Train every run of a benchmark matrix that has not finished, one `mmner train` each.

    Runs go to <root>/<config>-s<seed> (<root>/<tag>/... for tagged blocks),
    their output to <run>.log. Finished runs are skipped, interrupted ones
    resumed; a failed run is recorded in <root>/sweep-state.json and the sweep
    goes on. Ctrl-C or SIGTERM stops the training in progress (it keeps its
    last finished epoch); the same command continues. Ctrl-Z (SIGTSTP) pauses
    the sweep and its training, `fg` / `bg` / `kill -CONT` continues both.
    Exit 0: all done, 1: a run failed.
    """
    from mmner.train.sweep import run_sweep

    code = run_sweep(matrix, root=root, jobs=jobs, dry_run=dry_run, skip_failed=skip_failed)
    if code:
        raise typer.Exit(code)


features_app = _Typer(no_args_is_help=True, help="Image features: precompute and cache grid features.")
app.add_typer(features_app, name="features")


@features_app.callback()
def features() -> None:
    """Image features: precompute and cache grid features."""


@features_app.command("extract")
def features_extract(
    images: Path = typer.Option(..., "--images", help="Folder of images (searched recursively)."),
    encoder: str = typer.Option("efficientnet-lite0", "--encoder", help="efficientnet-lite0..4, resnet[N], timm:<arch>."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights file (.pth / .safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Cache folder (created; reruns resume)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float16", "--dtype", help="Storage dtype: float16 or float32."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Encode at most N new images this run."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    engine: str = typer.Option("local", "--engine", help="local: in this process; ray: the encoding on a Ray cluster's "
                               "workers (Ray Data), the cache written by this process; needs pip install mmner\\[ray]."),
    address: Optional[str] = _ADDRESS,
    workers: Optional[int] = _WORKERS,
    cpus_per_worker: Optional[float] = _CPUS_PER_WORKER,
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="--engine ray: GPUs per worker, "
                                                    "a fraction shares one (default: 1 with --device cuda, else 0)."),
) -> None:
    """Compute grid features for every image in a folder into an on-disk cache, skipping cached ones."""
    options = _ray_options(engine, address, workers, cpus_per_worker, gpus_per_worker, quiet)
    if options is not None:
        from mmner.ray_engine import extract_features_ray

        summary = extract_features_ray(images, encoder, output, weights=weights, batch_size=batch_size, dtype=dtype,
                                       device=device, limit=limit, options=options)
    else:
        from mmner.vision.cache import extract_features

        summary = extract_features(
            images, encoder, output, weights=weights, batch_size=batch_size, dtype=dtype, device=device,
            limit=limit, progress=not quiet,
        )
    typer.echo(summary.line())
    if summary.skipped:
        typer.echo(f"skipped files and reasons: {summary.skipped_file}")


def _setup_logging() -> None:
    """mmner's own messages as `mmner: ...` on stderr; Lightning keeps its own handler."""
    logger = logging.getLogger("mmner")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("mmner: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(os.environ.get("MMNER_LOG", "INFO"))
    # Lightning 2.6 under torch 2.13 warns about its own use of a deprecated pytree class.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def main() -> None:
    _setup_logging()
    try:
        app()
    except MmnerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
