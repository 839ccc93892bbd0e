"""`--engine ray`: `mmner predict` and `mmner features extract` on a Ray cluster (Ray Data).

The work is a Ray Data dataset of small work items (a range of whole input lines; a batch of image
files) mapped by a fixed pool of Ray actors (`ActorPoolStrategy`): each actor loads the run, or the
image encoder, once, then does what the local engine does with the same functions
(`predict.parse_line` and `api.Tagger.try_tag_posts`; `GridEncoder.preprocess` and `encode_pixels`).
This process, the driver, plans the work items, receives the results in input order (Ray Data's
`preserve_order`) and writes every file itself, so the files are the local engine's:

- predict: each input file gets the output and errors file that `mmner predict --input FILE` writes
  for it, record for record. A bad line is an error record, never a failed dataset. Failures reach
  the errors file in the order the local engine writes them (a line that is not a post at once, a
  post the model could not tag at the end of its group of `batch_size * api.SORT_GROUP` posts), and `--resume`
  follows the local rules (`predict.resume_state`): the posts an output holds are skipped (the
  driver reads the input up to the last of them), as are the lines its errors file lists. Tags and
  entities do not depend on which posts share a model batch (tests/test_batch_effects.py); float
  extras (`relation_score`, `attention` weights) may differ from the local engine's in the last
  digits, as they do between two local runs with different `--batch-size`.
- features extract: the workers return the features in the cache's storage dtype and the driver
  puts them into the cache (`FeatureCache.put`, atomic per entry), so the cache folder needs no
  filesystem shared with the workers; the images do.

Why not `ray.data.read_text`: it numbers no lines and decodes a whole file at once, so a post's line
number (in its error record, in its generated id `#<line>`) would be lost, and one byte of bad UTF-8
would fail the dataset. The driver instead cuts each input file into ranges of whole lines (one pass
over the file, as the local engine makes to count the posts for its bar) and each worker reads its
range. Workers open paths as given, relative to the driver's folder, which they change into: on a
cluster of several machines inputs, images and the run directory must be mounted at the same path
on every machine.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmner.api import SORT_GROUP
from mmner.errors import MmnerError
from mmner.predict import (
    Failure,
    PredictSummary,
    _ErrorLog,
    errors_path,
    failure_message,
    is_jsonl,
    parse_line,
    resume_state,
)

__all__ = ["RAY_MISSING", "RayOptions", "extract_features_ray", "import_ray", "input_files", "predict_ray"]

log = logging.getLogger("mmner")

RAY_MISSING = '--engine ray needs Ray Data, which is not installed: pip install "mmner[ray]"'
CHUNK_BATCHES = 8  # model batches per work item: a worker's share of a small input is still several items


def import_ray() -> Any:
    """The `ray` module with Ray Data, or the one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MmnerError(RAY_MISSING) from None
    return ray


@dataclass
class RayOptions:
    """Where the work runs and how wide. `address`: a running cluster (None: start a local one, or
    join `RAY_ADDRESS` when it is set, Ray's own rule); `workers`: actors, each with one model (None:
    as many as the cluster's CPUs, or GPUs, hold); `gpus_per_worker` None: 0 (features extract with
    `--device cuda`: 1)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    progress: bool = True

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise MmnerError(f"--workers {self.workers}: must be at least 1")
        if self.cpus_per_worker <= 0:
            raise MmnerError(f"--cpus-per-worker {self.cpus_per_worker:g}: must be more than 0")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise MmnerError(f"--gpus-per-worker {self.gpus_per_worker:g}: must be 0 or more")

    @property
    def threads(self) -> int:
        """Torch threads of a worker: its CPUs."""
        return max(1, int(self.cpus_per_worker))


# --------------------------------------------------------------------------------------------------
# the cluster


@contextmanager
def _cluster(options: RayOptions) -> Iterator[Any]:
    """Ray, joined or started (and stopped again when started here), with Ray Data set to keep the
    input order and to leave the progress bar to mmner."""
    ray = import_ray()
    started = False
    # ray.init installs a SIGTERM handler and sets environment variables (PYTHONBREAKPOINT among them)
    # that outlive ray.shutdown: both are put back for the rest of the process
    sigterm, environ = signal.getsignal(signal.SIGTERM), dict(os.environ)
    if not ray.is_initialized():
        _check_reachable(options.address)
        try:
            ray.init(address=options.address, logging_level=logging.INFO if options.progress else logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            _restore(sigterm, environ)
            where = options.address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MmnerError(f"--engine ray: cannot start or join {where}: {first}") from None
        started = True
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    loggers = {"ray.data._internal.progress": logging.ERROR}  # "progress bars disabled": mmner draws its own
    if not options.progress:
        loggers["ray.data"] = logging.WARNING
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield ray
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if started:
            ray.shutdown()
            _restore(sigterm, environ)


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT address (or ray://HOST:PORT) that nothing answers on is an error now: `ray.init` would
    retry it for minutes."""
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    if m is None:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=10).close()
    except OSError as exc:
        raise MmnerError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
                         "`ray start --head` or leave --address out for a local one") from None


def _restore(sigterm: Any, environ: dict[str, str]) -> None:
    """Put back the SIGTERM handler and the environment of before `ray.init`."""
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)


def _pool(ray: Any, options: RayOptions, gpus_per_worker: float) -> dict[str, Any]:
    """`map_batches` arguments of the actor pool: its size and each actor's resources."""
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    fit = int(cpus / options.cpus_per_worker + 1e-9)
    if gpus_per_worker:
        fit = min(fit, int(gpus / gpus_per_worker + 1e-9))
    each = f"{options.cpus_per_worker:g} CPU" + (f" and {gpus_per_worker:g} GPU" if gpus_per_worker else "")
    has = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus_per_worker else "")
    if fit < 1:
        raise MmnerError(f"the Ray cluster has {has}: not enough for one worker of {each} "
                         "(--cpus-per-worker, --gpus-per-worker)")
    workers = fit if options.workers is None else options.workers
    if workers > fit:
        raise MmnerError(f"--workers {workers}: the Ray cluster has {has}, room for {fit} workers of {each}")
    kwargs: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": options.cpus_per_worker}
    if gpus_per_worker:
        kwargs["num_gpus"] = gpus_per_worker
    log.info("Ray: %d worker%s of %s each", workers, "" if workers == 1 else "s", each)
    return kwargs


def _worker_failed(message: str) -> MmnerError:
    """A worker could not start (its run, caption file or encoder weights): the command ends on one line."""
    return MmnerError(f"on a Ray worker: {message}")


def _enter_worker(cwd: str, threads: int) -> None:
    """A worker process: in the driver's folder, so relative paths mean what they mean on the command
    line (when this machine has that folder), with as many torch threads as it has CPUs."""
    import torch

    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# predict: inputs and plans


def _glob_root(pattern: str) -> Path:
    """The folder of a glob pattern before its first wildcard: output names are relative to it."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def input_files(input: str | Path) -> tuple[list[Path], Path | None]:
    """The JSON-lines files of `input` (a file, a folder searched recursively for `*.jsonl`, or a glob
    pattern), and the folder their output names are relative to (None for a single file: one output
    file, not a folder)."""
    text = str(input)
    path = Path(text)
    if path.is_file():
        if not is_jsonl(path):
            raise MmnerError(f"{path}: --engine ray reads JSON lines (.jsonl, .json); tag a CoNLL file or a "
                             "RiTUAL folder with --engine local")
        return [path], None
    if path.is_dir():
        files = [f for f in path.rglob("*.jsonl")
                 if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)]
        if not files:
            hint = " (a RiTUAL folder: tag it with --engine local)" if (path / "texts.json").is_file() else ""
            raise MmnerError(f"{path}: no .jsonl files in this folder{hint}")
        return sorted(files, key=lambda f: f.relative_to(path).as_posix()), path
    if any(c in text for c in "*?["):
        root = _glob_root(text)
        files = [Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file()]
        if not files:
            raise MmnerError(f"{text}: the pattern matches no file")
        for f in files:
            if not is_jsonl(f):
                raise MmnerError(f"{f} (matched by {text}): --engine ray reads JSON lines (.jsonl, .json)")
        return sorted(files, key=lambda f: f.relative_to(root).as_posix()), root
    raise MmnerError(f"{path}: no such file or folder")


@dataclass
class _Plan:
    """One input file: where it goes, what an earlier run left, and its work items."""

    path: Path
    output: Path
    errors: Path
    skip_ok: int = 0  # posts the output holds
    failed_before: set[int] = field(default_factory=set)  # input lines its errors file lists
    prefix_failures: list[Failure] = field(default_factory=list)  # bad lines among the posts held, unlisted
    posts: int = 0  # non-blank lines (the bar's total)
    done: int = 0  # non-blank lines an earlier run has dealt with


def _lines(data: bytes) -> Iterator[bytes]:
    """Lines with their `\\n`, as iterating over a file gives them (a JSON error's column depends on it)."""
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        yield data[pos:end]
        pos = end


def _plan_file(index: int, plan: _Plan, resume: bool, chunk_lines: int, chunks: list[dict[str, Any]]) -> None:
    """Ready `plan.output` as the local engine does, read past the posts it holds, and cut the rest of
    the input into work items of `chunk_lines` lines (appended to `chunks`)."""
    plan.skip_ok, plan.failed_before = resume_state(plan.output, plan.errors, resume)
    open(plan.output, "a" if resume else "w", encoding="utf-8").close()
    held = plan.skip_ok
    chunk: dict[str, Any] | None = None
    skip: list[int] = []
    offset = 0
    with open(plan.path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            blank = not raw.strip()
            plan.posts += not blank
            if held:  # a post the output may hold: parsed here, to know where the output ends
                plan.done += not blank
                if lineno in plan.failed_before:
                    continue
                item = parse_line(raw, plan.path, lineno)
                if isinstance(item, Failure):
                    plan.prefix_failures.append(item)  # the local engine reports it again
                elif item is not None:
                    held -= 1
                continue
            if chunk is None:
                chunk = {"file": index, "path": str(plan.path), "start": start, "first_line": lineno, "lines": 0}
            if lineno in plan.failed_before:
                plan.done += 1
                skip.append(lineno)
            chunk["lines"] += 1
            if chunk["lines"] == chunk_lines:
                chunks.append({**chunk, "end": offset, "skip": json.dumps(skip)})
                chunk, skip = None, []
    if chunk is not None:
        chunks.append({**chunk, "end": offset, "skip": json.dumps(skip)})
    if held:
        raise MmnerError(f"{plan.output}: --resume: the output has {held} more lines than {plan.path} has posts "
                         "(is it the output of another input?)")


# --------------------------------------------------------------------------------------------------
# predict: workers and the writer


def _predict_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("file", pa.int64()), ("line", pa.int64()), ("kind", pa.string()), ("id", pa.string()),
                      ("text", pa.string())])


class _PredictWorker:
    """A Ray actor: loads the run once, then tags work items. One row per non-blank line: `kind` is
    `post` (`text`: the output record, as JSON), `bad` (not a post) or `failed` (the model could not
    tag it); `text` of a failure is its errors-file message. A worker that could not load the run
    answers with one `fatal` row instead (Ray passes on an exception only as its traceback's text)."""

    def __init__(self, run_dir: str, batch_size: int, device: str, threads: int, cwd: str,
                 attention: bool = False, int8: bool = False) -> None:
        from mmner.api import Tagger

        _enter_worker(cwd, threads)
        self.batch_size, self.fatal = batch_size, None
        try:
            self.tagger = Tagger.load(run_dir, device=device, batch_size=batch_size, attention=attention, int8=int8)
        except MmnerError as exc:
            self.fatal = str(exc)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows: dict[str, list] = {"file": [], "line": [], "kind": [], "id": [], "text": []}
        if self.fatal is not None:
            rows.update(file=[-1], line=[-1], kind=["fatal"], id=[None], text=[self.fatal])
            return pa.Table.from_pydict(rows, schema=_predict_schema())
        for chunk in batch.to_pylist():
            for lineno, kind, pid, text in self._tag(chunk):
                for key, value in zip(rows, (chunk["file"], lineno, kind, pid, text)):
                    rows[key].append(value)
        return pa.Table.from_pydict(rows, schema=_predict_schema())

    def _tag(self, chunk: dict[str, Any]) -> list[tuple[int, str, str | None, str]]:
        path, skip = Path(chunk["path"]), set(json.loads(chunk["skip"]))
        with open(path, "rb") as fh:
            fh.seek(chunk["start"])
            data = fh.read(chunk["end"] - chunk["start"])
        items = []
        for lineno, raw in enumerate(_lines(data), chunk["first_line"]):
            item = None if lineno in skip else parse_line(raw, path, lineno)
            if item is not None:
                items.append((lineno, item))
        posts = [(lineno, item) for lineno, item in items if not isinstance(item, Failure)]
        results: dict[int, Any] = {}
        group = self.tagger.group_size()  # sorted by length within a work item, as the local engine's groups
        for i in range(0, len(posts), group):
            part = posts[i : i + group]
            for (lineno, _), result in zip(part, self.tagger.try_tag_posts([post for _, post in part])):
                results[lineno] = result
        out = []
        for lineno, item in items:
            if isinstance(item, Failure):
                out.append((lineno, "bad", item.id, item.error))
                continue
            result = results[lineno]
            if isinstance(result, Exception):
                out.append((lineno, "failed", item.id, failure_message(result)))
            else:
                out.append((lineno, "post", item.id, json.dumps(result, ensure_ascii=False)))
        return out


class _Writer:
    """One input's output and errors file, written as `predict.predict_file` writes them: a bad line
    is reported at once, the posts of a group (every `batch_size * SORT_GROUP` posts) when it ends,
    records in input order and failures in the order the local engine lists them. An interrupted
    run leaves at most its last group unwritten, so `--resume` finds output and errors file agreeing."""

    def __init__(self, plan: _Plan, summary: PredictSummary, bar: Any, batch_size: int) -> None:
        self.summary, self.group = summary, batch_size * SORT_GROUP
        self.out = open(plan.output, "a", encoding="utf-8")
        self.errs = _ErrorLog(plan.errors, summary, plan.path, bar)
        self.batch: list[tuple[int, str, str | None, str]] = []
        for failure in plan.prefix_failures:
            self.errs.add(failure)

    def add(self, line: int, kind: str, pid: str | None, text: str) -> None:
        if kind == "bad":
            self.errs.add(Failure(line, pid, text))
            return
        self.batch.append((line, kind, pid, text))
        if len(self.batch) == self.group:
            self._end_batch()

    def _end_batch(self) -> None:
        for line, kind, pid, text in self.batch:
            if kind == "post":
                self.out.write(text + "\n")
                self.summary.tagged += 1
            else:
                self.errs.add(Failure(line, pid, text))
        self.batch.clear()
        self.out.flush()
        self.errs.flush()

    def close(self) -> None:
        self._end_batch()
        self.out.close()
        self.errs.close()


def predict_ray(run_dir: str | Path, input: str | Path, output: str | Path, *, batch_size: int = 32,
                resume: bool = False, errors: str | Path | None = None,
                options: RayOptions | None = None, attention: bool = False, int8: bool = False) -> PredictSummary:
    """`predict.predict_file` on a Ray cluster (see the module docstring). `input` is a JSON-lines
    file (`output` is then a file), or a folder or glob pattern of them (`output` is then a folder
    that gets each input's output under its name relative to the folder, or to the pattern's folder
    before its first wildcard, with its errors file beside it)."""
    from mmner.inference import read_run_config

    import_ray()
    options = options or RayOptions()
    options.check()
    gpus = options.gpus_per_worker or 0.0
    if int8 and gpus:
        raise MmnerError("--int8 runs on the CPU only: leave out --gpus-per-worker")
    if batch_size < 1:
        raise MmnerError(f"--batch-size {batch_size}: must be at least 1")
    read_run_config(run_dir)  # a wrong run directory fails here, not in every worker
    plans, chunks, summary = _plan_inputs(input, output, errors, resume, batch_size)
    if not chunks:
        _write_results(plans, summary, batch_size, options.progress, [])
        return summary
    with _cluster(options) as ray:
        pool = _pool(ray, options, gpus)
        dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
            _PredictWorker, batch_size=1, batch_format="pyarrow",
            fn_constructor_kwargs={"run_dir": str(Path(run_dir).resolve()), "batch_size": batch_size,
                                   "device": "cuda" if gpus else "cpu", "threads": options.threads, "cwd": os.getcwd(),
                                   "attention": attention, "int8": int8},
            **pool,
        )
        _write_results(plans, summary, batch_size, options.progress,
                       dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    return summary


def _plan_inputs(input: str | Path, output: str | Path, errors: str | Path | None, resume: bool,
                 batch_size: int) -> tuple[list[_Plan], list[dict[str, Any]], PredictSummary]:
    """Each input file's plan, the work items of them all, and the summary to fill."""
    files, root = input_files(input)
    out = Path(output)
    if root is None:
        err = Path(errors) if errors is not None else errors_path(out)
        plans = [_Plan(files[0], out, err)]
        summary = PredictSummary(out, err)
    else:
        if errors is not None:
            raise MmnerError(f"--errors names one file; with a folder or pattern of inputs each errors file goes "
                             f"beside its output ({out}/<name>.errors.jsonl)")
        if out.exists() and not out.is_dir():
            raise MmnerError(f"{out}: exists and is not a folder (with a folder or pattern of inputs --output "
                             "names a folder)")
        if Path(input).is_dir() and (out.resolve() == root.resolve() or root.resolve() in out.resolve().parents):
            raise MmnerError(f"--output {out} is inside the input folder {root}: the next run would read its "
                             "outputs as posts")
        plans = [_Plan(f, out / f.relative_to(root), errors_path(out / f.relative_to(root))) for f in files]
        nested = any(len(f.relative_to(root).parts) > 1 for f in files)
        summary = PredictSummary(out, out / ("**/*.errors.jsonl" if nested else "*.errors.jsonl"))
    written = {p.output.resolve() for p in plans} | {p.errors.resolve() for p in plans}
    for plan in plans:
        if plan.path.resolve() in written or (root is not None and out.resolve() in plan.path.resolve().parents):
            raise MmnerError(f"{plan.path}: is an input and would be written by this run (--output {out})")
    chunks: list[dict[str, Any]] = []
    for index, plan in enumerate(plans):
        _plan_file(index, plan, resume, batch_size * CHUNK_BATCHES, chunks)
    summary.resumed = sum(p.skip_ok for p in plans)
    summary.resumed_failed = sum(len(p.failed_before) for p in plans)
    return plans, chunks, summary


def _write_results(plans: list[_Plan], summary: PredictSummary, batch_size: int, progress: bool,
                   blocks: Iterable[Any]) -> None:
    """Write the workers' rows (pyarrow tables, in input order) into every input's output and errors file."""
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(p.posts for p in plans), initial=sum(p.done for p in plans), desc="tagging", unit="post",
               disable=not progress)
    writer: _Writer | None = None
    current = -1

    def writer_of(index: int) -> _Writer:
        """The writer of input `index`, after closing those before it (inputs with no rows included)."""
        nonlocal writer, current
        while current < index:
            if writer is not None:
                writer.close()
            current += 1
            writer = _Writer(plans[current], summary, bar, batch_size)
        assert writer is not None
        return writer

    try:
        last = (-1, 0)
        for block in blocks:
            cols = block.to_pydict()
            for row in zip(cols["file"], cols["line"], cols["kind"], cols["id"], cols["text"]):
                if row[2] == "fatal":
                    raise _worker_failed(row[4])
                if row[:2] <= last:  # never expected: Ray Data keeps the order it is asked to keep
                    raise RuntimeError(f"Ray returned line {row[1]} of input {row[0]} after line {last[1]} "
                                       f"of input {last[0]}")
                last = row[:2]
                writer_of(row[0]).add(*row[1:])
            bar.update(len(cols["line"]))
        writer_of(len(plans) - 1)
    finally:
        if writer is not None:
            writer.close()
        bar.close()


# --------------------------------------------------------------------------------------------------
# features extract


class _FeatureWorker:
    """A Ray actor: builds the image encoder once, then encodes batches of image files. One row per
    image: its `features` ([regions, dim] in the cache's storage dtype, as bytes), or the `reason` it
    could not be read. A worker that could not build the encoder answers with one row without `id`,
    its `reason` the error."""

    def __init__(self, encoder: str, weights: str | None, device: str, dtype: str, threads: int, cwd: str) -> None:
        from mmner.vision.cache import _DTYPES
        from mmner.vision.grid import build_encoder

        _enter_worker(cwd, threads)
        self.dtype, self.fatal = _DTYPES[dtype][0], None
        try:
            self.encoder = build_encoder(encoder, weights, device)
        except MmnerError as exc:
            self.fatal = str(exc)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        import torch

        from mmner.vision.cache import _prepare, unreadable_reason

        if self.fatal is not None:
            return pa.table({"id": pa.array([None], pa.string()), "reason": [self.fatal],
                             "features": pa.array([None], pa.binary()), "regions": [0], "dim": [0]})
        rows = batch.to_pylist()
        reasons: list[str | None] = [None] * len(rows)
        pixels, good = [], []
        for i, row in enumerate(rows):
            path = Path(row["path"])
            try:
                pixels.append(_prepare(path, self.encoder))
                good.append(i)
            except MmnerError as exc:
                reasons[i] = unreadable_reason(exc, path)
        features: list[bytes | None] = [None] * len(rows)
        shape = (0, 0)
        if pixels:
            encoded = self.encoder.encode_pixels(torch.stack(pixels)).detach().to("cpu", self.dtype).contiguous()
            shape = tuple(encoded.shape[1:])
            for i, values in zip(good, encoded):
                features[i] = values.numpy().tobytes()
        return pa.table({"id": [r["id"] for r in rows], "reason": pa.array(reasons, pa.string()),
                         "features": pa.array(features, pa.binary()),
                         "regions": [shape[0]] * len(rows), "dim": [shape[1]] * len(rows)})


def extract_features_ray(images: str | Path, encoder: str, output: str | Path, *, weights: str | Path | None = None,
                         batch_size: int = 16, dtype: str = "float16", device: str = "cpu", limit: int | None = None,
                         options: RayOptions | None = None) -> Any:
    """`vision.cache.extract_features` on a Ray cluster: the same cache entries, `skipped.txt` and
    summary. `seconds` here includes starting the workers and loading their encoders."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from mmner.vision.cache import (
        _DTYPES,
        ExtractSummary,
        FeatureCache,
        check_output,
        finish_extraction,
        iter_image_files,
        plan_extraction,
        skip_unreadable,
    )
    from mmner.vision.grid import build_encoder

    import_ray()
    options = options or RayOptions()
    options.check()
    if device.startswith("cuda"):
        if device != "cuda":
            raise MmnerError(f"--device {device}: with --engine ray say --device cuda (Ray gives each worker its GPU)")
        gpus = 1.0 if options.gpus_per_worker is None else options.gpus_per_worker
        if not gpus:
            raise MmnerError("--device cuda with --gpus-per-worker 0: give each worker a GPU (or a share of one)")
    elif device != "cpu":
        raise MmnerError(f"--device {device}: with --engine ray choose cpu or cuda")
    elif options.gpus_per_worker:
        raise MmnerError(f"--gpus-per-worker {options.gpus_per_worker:g}: needs --device cuda")
    else:
        gpus = 0.0
    options = replace(options, gpus_per_worker=gpus)
    if batch_size < 1:
        raise MmnerError(f"--batch-size {batch_size}: must be at least 1")
    root = Path(images)
    files = iter_image_files(root)
    check_output(output)
    identity = build_encoder(encoder, weights, "cpu").identity  # the cache's key; a wrong name fails here
    cache = FeatureCache(output, identity, dtype)
    summary = ExtractSummary(cache_folder=str(cache.folder))
    todo = plan_extraction(root, files, cache, summary, limit)
    paths = dict(todo)
    np_dtype = _DTYPES[dtype][1]

    bar = tqdm(total=len(files), initial=summary.cached + len(summary.skipped), desc="features", unit="img",
               disable=not options.progress)
    start = time.perf_counter()
    try:
        if todo:
            with _cluster(options) as ray:
                pool = _pool(ray, options, gpus)
                items = [{"id": i, "path": str(p)} for i, p in todo]
                dataset = ray.data.from_items(items, override_num_blocks=-(-len(items) // batch_size)).map_batches(
                    _FeatureWorker, batch_size=batch_size, batch_format="pyarrow",
                    fn_constructor_kwargs={"encoder": encoder, "device": device, "dtype": dtype,
                                           "weights": str(Path(weights).resolve()) if weights else None,
                                           "threads": options.threads, "cwd": os.getcwd()},
                    **pool,
                )
                for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    cols = block.to_pydict()
                    for image_id, reason, data, regions, dim in zip(cols["id"], cols["reason"], cols["features"],
                                                                    cols["regions"], cols["dim"]):
                        if image_id is None:
                            raise _worker_failed(reason)
                        if reason is not None:
                            skip_unreadable(summary, root, paths[image_id], reason)
                            continue
                        values = np.frombuffer(data, dtype=np_dtype).reshape(regions, dim)
                        cache.put(image_id, torch.from_numpy(values.copy()))
                        summary.encoded += 1
                    bar.update(len(cols["id"]))
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        finish_extraction(output, summary)
    return summary
