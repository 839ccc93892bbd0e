"""`mmner sweep`: a benchmark matrix (blocks of configs x datasets x seeds) trained run by run.

Each run is `mmner train` in a subprocess, so a crash costs one run and memory is freed between runs.
The run directories are the state: `metrics.json` means done, `checkpoints/last.ckpt` resumable, a
directory with neither holds nothing worth keeping (no epoch had finished) and is started again. What
directories cannot say lives in `<root>/sweep-state.json`: the last error of each failed run and which
runs a live sweep is training. One sweep per root at a time (`<root>/.sweep.lock`, a kernel lock held
by the sweep and the trainings it started, dropped when they end).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmner.errors import MmnerError

STATE_FILE = "sweep-state.json"
LOCK_FILE = ".sweep.lock"
# A training stopped from outside: Ctrl-C / SIGTERM as mmner train reports them, or killed by them
# before Lightning had installed its handlers.
INTERRUPTED = {130: 130, 143: 143, -signal.SIGINT: 130, -signal.SIGTERM: 143}
DONE, RUNNING, FAILED, RESUMABLE, PENDING = "done", "running", "failed", "resumable", "pending"


# ---------------------------------------------------------------------------------------------------
# The matrix file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _flat(items: list) -> list:
    """Lists inside a list in line, at any depth (an alias of a list that holds an alias)."""
    return [x for item in items for x in (_flat(item) if isinstance(item, list) else [item])]


class Block(_Strict):
    name: str = Field(min_length=1)
    configs: list[str] = Field(min_length=1)
    set: list[str] = []  # --set overrides for every run of the block
    tag: str | None = None  # runs go to <root>/<tag>/<config>-s<seed>
    seeds: list[int] | None = Field(None, min_length=1)
    datasets: list[str] | None = Field(None, min_length=1)

    @field_validator("configs", "set", "datasets", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]  # `configs: umt-minilm-{dataset}` is a list of one
        if isinstance(value, list):  # `set: [*recipe, model.casing=0]`: YAML aliases of lists, in line
            return _flat(value)
        return value

    @field_validator("set")
    @classmethod
    def _overrides(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item:
                raise ValueError(f"{item!r}: expected key=value")
            if item.split("=", 1)[0].strip() == "seed":
                raise ValueError("the seed comes from `seeds`, not from `set`")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r}: a tag is one folder name (letters, digits, . _ -)")
        return value

    @model_validator(mode="after")
    def _tag_with_set(self) -> "Block":
        # changed settings under the same run name would mix into the tables, which read <root>/*/
        if self.set and not self.tag:
            raise ValueError("a block with `set` needs a `tag` (its runs go to <root>/<tag>/)")
        return self


class Matrix(_Strict):
    root: str = "runs/bench"
    seeds: list[int] = Field(min_length=1)
    datasets: list[str] = []
    configs_dir: str = "configs"
    blocks: list[Block] = Field(min_length=1)


@dataclass(frozen=True)
class Run:
    """One training of the matrix; `name` is its directory relative to the root."""

    block: str
    config: str
    seed: int
    config_path: Path
    sets: tuple[str, ...] = ()
    tag: str | None = None
    max_epochs: int = 0
    model: str = ""
    dataset: str = ""

    @property
    def name(self) -> str:
        base = f"{self.config}-s{self.seed}"
        return f"{self.tag}/{base}" if self.tag else base

    def overrides(self) -> list[str]:
        return [f"seed={self.seed}", *self.sets]


def _describe(exc: ValidationError) -> str:
    """The first validation error as one line naming the key (like config.py's, with list positions)."""
    err = exc.errors()[0]
    loc = err["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        target = Block if loc and loc[0] == "blocks" else Matrix
        return f"matrix key '{key}': unknown key (allowed: {', '.join(target.model_fields)}){more}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"matrix key '{key}': {msg}{more}"


def expand(matrix: Matrix, where: str = "matrix") -> list[Run]:
    """The runs in order: block by block; inside a block seed-major, then config, then dataset.
    Configs are only located here (no config is read)."""
    runs: list[Run] = []
    seen: dict[str, str] = {}
    configs_dir = Path(matrix.configs_dir)
    for block in matrix.blocks:
        datasets = block.datasets or matrix.datasets
        for seed in block.seeds or matrix.seeds:
            for pattern in block.configs:
                if "{dataset}" in pattern:
                    if not datasets:
                        raise MmnerError(f"{where}: block '{block.name}': config '{pattern}' has {{dataset}} but the "
                                         "matrix lists no `datasets`")
                    names = [pattern.replace("{dataset}", ds) for ds in datasets]
                else:
                    names = [pattern]
                for name in names:
                    path = configs_dir / f"{name}.yaml"
                    if not path.is_file():
                        raise MmnerError(f"{where}: block '{block.name}': config '{name}' not found (no {path})")
                    run = Run(block.name, name, seed, path, tuple(block.set), block.tag)
                    if run.name in seen:
                        raise MmnerError(f"{where}: run {run.name} is in block '{seen[run.name]}' and in block "
                                         f"'{block.name}' (one run directory); list it once or give a block a tag")
                    seen[run.name] = block.name
                    runs.append(run)
    return runs


def resolve(runs: list[Run], where: str = "matrix") -> list[Run]:
    """Each run with what its resolved config says: max epochs, model name, dataset (a bad config
    or override stops here, before anything trains)."""
    from mmner.config import load_config

    cache: dict[tuple, Any] = {}
    out = []
    for run in runs:
        key = (run.config_path, run.sets)
        if key not in cache:
            try:
                cache[key] = load_config(run.config_path, run.overrides())
            except MmnerError as exc:
                raise MmnerError(f"{where}: block '{run.block}': {exc}") from None
        cfg = cache[key]
        out.append(replace(run, max_epochs=cfg.trainer.max_epochs, model=str(cfg.model.get("name")),
                           dataset=cfg.data.train.split(":")[0]))
    return out


_PLACEHOLDER = "__mmner_dataset__"


def _restore(node: Any) -> Any:
    if isinstance(node, str):
        return node.replace(_PLACEHOLDER, "{dataset}")
    if isinstance(node, list):
        return [_restore(item) for item in node]
    if isinstance(node, dict):
        return {key: _restore(value) for key, value in node.items()}
    return node


def load_matrix(path: str | Path) -> tuple[Matrix, list[Run]]:
    """Read and check a matrix file; every config is resolved, so a bad one is an error now."""
    path = Path(path)
    from mmner.config import read_yaml

    # YAML reads `[umt-minilm-{dataset}]` as a mapping inside a list: names keep their {dataset} unquoted
    data = _restore(read_yaml(path, "matrix", lambda text: text.replace("{dataset}", _PLACEHOLDER)))
    if not isinstance(data, dict):
        raise MmnerError(f"{path}: a matrix is a mapping with `seeds`, `blocks`, ...")
    try:
        matrix = Matrix(**data)
    except ValidationError as exc:
        raise MmnerError(f"{path}: {_describe(exc)}") from None
    return matrix, resolve(expand(matrix, str(path)), str(path))


# ---------------------------------------------------------------------------------------------------
# State of each run, from its directory


@dataclass
class Status:
    run: Run
    state: str  # done / running / failed / resumable / pending
    epochs: int = 0  # finished epochs (done: metrics.json `epochs`)
    f1: float | None = None  # test F1 of a done run
    seconds_per_epoch: float | None = None  # measured on this run
    device: str | None = None  # where it was measured (None: in this root's logs, i.e. here)
    estimate: float | None = None  # s / epoch used for the ETA (measured or borrowed)
    error: str | None = None  # failed: the last error line
    retry: bool = False  # failed: this sweep runs it again
    stale: bool = False  # a directory with neither metrics.json nor a checkpoint

    @property
    def remaining_epochs(self) -> int:
        return 0 if self.state == DONE else max(self.run.max_epochs - self.epochs, 0)


def logged_epochs(run_dir: Path) -> tuple[int, float | None]:
    """Finished epochs and mean seconds per epoch of an unfinished run, from Lightning's CSV logs
    (`epoch_seconds` is logged once per finished epoch, after its checkpoint is saved)."""
    seconds: dict[tuple[int, str], float] = {}
    for part in sorted((run_dir / "logs").glob("part*/metrics.csv")):
        try:
            with open(part, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("epoch_seconds"):
                        seconds[(int(float(row.get("epoch") or 0)), part.parent.name)] = float(row["epoch_seconds"])
        except (OSError, ValueError, csv.Error):
            continue
    epochs = {epoch for epoch, _ in seconds}
    return len(epochs), (statistics.mean(seconds.values()) if seconds else None)


def _metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def scan(runs: list[Run], root: Path, failed: dict[str, dict] | None = None, running: set[str] | frozenset = frozenset(),
         retry_failed: bool = True) -> list[Status]:
    """The state of every run from its directory (and the failures and running runs of the state file)."""
    failed = failed or {}
    out = []
    for run in runs:
        d = root / run.name
        has_ckpt = (d / "checkpoints" / "last.ckpt").is_file()
        metrics = _metrics(d) if (d / "metrics.json").is_file() else None
        if metrics is not None:
            split = metrics.get("test") or next(iter(metrics.values()), {})
            status = Status(run, DONE, epochs=int(split.get("epochs", 0)), f1=metrics.get("test", {}).get("f1"),
                            seconds_per_epoch=split.get("seconds_per_epoch"), device=split.get("device"))
        else:
            epochs, seconds = logged_epochs(d) if has_ckpt or run.name in running else (0, None)
            if run.name in running:
                state = RUNNING
            elif run.name in failed:
                state = FAILED
            else:
                state = RESUMABLE if has_ckpt else PENDING
            status = Status(run, state, epochs=epochs, seconds_per_epoch=seconds,
                            stale=d.exists() and not has_ckpt and state != RUNNING,
                            error=failed.get(run.name, {}).get("error") if state == FAILED else None,
                            retry=state == FAILED and retry_failed)
        out.append(status)
    return out


def this_device() -> str:
    """What metrics.json would say for a run trained here (`device`)."""
    from mmner.inference import device_name

    return device_name()


def estimate(statuses: list[Status], device: str) -> None:
    """Fill `estimate` (seconds per epoch) for every run still to train, from, in order: the run's own
    logged epochs; measured runs (done, or with logged epochs) of the same config and overrides; of the
    same config; of the same model and dataset. Finished runs measured on another device (metrics.json
    `device`) are not used."""
    measured = [s for s in statuses if s.seconds_per_epoch and (s.device is None or s.device == device)]
    keys: list[Callable[[Run], tuple]] = [lambda r: (r.config, r.sets), lambda r: (r.config,),
                                          lambda r: (r.model, r.dataset)]
    pools: list[dict[tuple, list[float]]] = [{} for _ in keys]
    for s in measured:
        for key, pool in zip(keys, pools):
            pool.setdefault(key(s.run), []).append(s.seconds_per_epoch)  # type: ignore[arg-type]
    for s in statuses:
        s.estimate = s.seconds_per_epoch
        if s.estimate or s.state == DONE:
            continue
        for key, pool in zip(keys, pools):
            if key(s.run) in pool:
                s.estimate = statistics.mean(pool[key(s.run)])
                break


def eta(statuses: list[Status], jobs: int = 1) -> tuple[float, int]:
    """Seconds until every run has trained (remaining epochs x s / epoch, spread over `jobs`), and how many
    runs to train have no estimate (not counted)."""
    todo = [s for s in statuses if s.state != DONE and s.remaining_epochs]
    known = sum(s.estimate * s.remaining_epochs for s in todo if s.estimate is not None)
    return known / max(jobs, 1), sum(s.estimate is None for s in todo)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


# ---------------------------------------------------------------------------------------------------
# The status table


def _state_cell(s: Status) -> str:
    return "failed (retrying)" if s.state == FAILED and s.retry else s.state


def _note(s: Status) -> str:
    if s.state == FAILED:
        return s.error or ""
    if s.state == DONE and s.device and s.device != "cpu":
        return s.device
    if s.stale:
        return "partial directory without a checkpoint: starts again"
    return ""


def _seconds_cell(s: Status) -> str:
    seconds, mark = (s.seconds_per_epoch, "") if s.seconds_per_epoch else (s.estimate, "~")
    if not seconds:
        return "?"
    return f"{mark}{seconds:.0f}" if seconds >= 10 else f"{mark}{seconds:.1f}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def summary(statuses: list[Status], jobs: int = 1) -> str:
    """Counts per state and the ETA, one line."""
    counts = {state: sum(s.state == state for s in statuses) for state in (DONE, RUNNING, FAILED, RESUMABLE, PENDING)}
    line = f"{_runs(len(statuses))}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    todo = sum(s.state != DONE and s.remaining_epochs > 0 for s in statuses)
    if not todo:
        return line
    seconds, unknown = eta(statuses, jobs)
    if unknown == todo:
        return line + f" | ETA ? (no estimate yet for the {_runs(todo)} to train)"
    line += f" | ETA {duration(seconds)}" + (f" with {jobs} at once" if jobs > 1 else "")
    line += f" for {_runs(todo - unknown)} at their max epochs"
    return line + (f"; {_runs(unknown)} without an estimate" if unknown else "")


def format_table(statuses: list[Status], jobs: int = 1, all_rows: bool = True, pending_rows: int = 10) -> str:
    """Plain-text columns, one row per run, then the summary line. `all_rows=False` (while sweeping): the
    runs that are running, failed or resumable, and the next `pending_rows` pending ones."""
    if all_rows:
        rows = statuses
    else:
        pending = [s for s in statuses if s.state == PENDING][:pending_rows]
        rows = [s for s in statuses if s.state not in (DONE, PENDING) or any(s is p for p in pending)]
    header = ["block", "run", "state", "test F1", "epochs", "s/epoch", "note"]
    cells = [[s.run.block, s.run.name, _state_cell(s), f"{s.f1:.2f}" if s.f1 is not None else "-",
              f"{s.epochs}/{s.run.max_epochs}", _seconds_cell(s), _note(s)] for s in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths)), r[-1]]).rstrip() for r in [header, *cells]]
    if not rows:
        lines = []
    hidden = {state: sum(s.state == state for s in statuses) - sum(s.state == state for s in rows)
              for state in (PENDING, DONE)}
    if any(hidden.values()):
        lines.append("(not listed: " + ", ".join(f"{n} {state}" for state, n in hidden.items() if n)
                     + "; --dry-run lists every run)")
    lines.append(summary(statuses, jobs))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Running


class Process(Protocol):
    """What `launch` returns: a started training (`subprocess.Popen` is one)."""

    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass(frozen=True)
class Job:
    run: Run
    run_dir: Path
    log: Path
    resume: bool
    command: list[str] = field(default_factory=list)
    keep_fds: tuple[int, ...] = ()  # the sweep's lock: held by the training too, so none outlives it unseen


def train_command(run: Run, run_dir: Path, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "mmner", "train", str(run.config_path)]
    for item in run.overrides():
        command += ["--set", item]
    return command + ["--output", str(run_dir), "--quiet"] + (["--resume"] if resume else [])


def launch_subprocess(job: Job) -> subprocess.Popen:
    """`mmner train` in its own session (a Ctrl-C in the terminal reaches the sweep only, which stops
    the training with SIGTERM), its output appended to the run's log. It inherits the sweep's lock, so
    a training left running by a killed sweep keeps the next sweep from starting in its directory."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # output in order, so the last line is the error
    with open(job.log, "ab") as log:
        return subprocess.Popen(job.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, pass_fds=job.keep_fds)


def last_error(log: Path, offset: int, code: int) -> str:
    """The line that says why a training failed: its last `error: ` line (mmner's one-line errors), else
    its last non-empty line (a traceback's exception), from the part of the log this attempt wrote."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error: ")]
    line = (errors or lines or [f"exit code {code}, no output"])[-1]
    if code < 0:
        try:
            line = f"killed by {signal.Signals(-code).name}: {line}"
        except ValueError:
            pass
    return line


def suspend_self() -> None:
    """Stop this process until it is continued. SIGSTOP, not SIGTSTP: the kernel discards SIGTSTP's
    stop in an orphaned process group (a sweep started by `setsid`, `nohup` from a script, or CI)."""
    os.kill(os.getpid(), signal.SIGSTOP)


class SweepLock:
    """`<root>/.sweep.lock`, held by a running sweep; the kernel drops it when that process ends."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fh: Any = None

    def acquire(self) -> bool:
        import fcntl

        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            return False
        return True

    def fileno(self) -> int:
        return self._fh.fileno()

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def held_elsewhere(self) -> bool:
        """Whether another live sweep holds it (for --dry-run: then the state file's running runs are)."""
        if not self.path.is_file():
            return False
        if self.acquire():
            self.release()
            return False
        return True


class Sweep:
    """The runner: scans the runs, trains those not done through `launch` (`jobs` at once), records
    failures, stops cleanly on Ctrl-C / SIGTERM. `run()` returns the exit status."""

    def __init__(self, runs: list[Run], root: Path, jobs: int = 1, launch: Callable[[Job], Process] = launch_subprocess,
                 skip_failed: bool = False, out: Callable[[str], None] | None = None, poll_seconds: float = 0.5,
                 rerun: str = "the same `mmner sweep` command", device: str | None = None) -> None:
        self.runs, self.root, self.jobs, self.launch = runs, Path(root), jobs, launch
        self.skip_failed, self.poll_seconds, self.rerun = skip_failed, poll_seconds, rerun
        self.out = out or (lambda line: print(line, flush=True))
        self._device = device
        self.state: dict[str, Any] = {"failed": {}, "running": []}
        self._running: dict[str, tuple[Process, Job, int, float]] = {}
        self._signal: int | None = None  # the exit status a stop asks for (130 / 143)
        self._announced = False
        self._keep_fds: tuple[int, ...] = ()
        self.suspend = suspend_self

    # -- state file

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load_state(self) -> None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            data = {}
        self.state = {"failed": dict(data.get("failed") or {}), "running": list(data.get("running") or [])}

    def _save_state(self) -> None:
        self.state["running"] = list(self._running)
        self.state["pid"] = os.getpid()
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.state_path)

    def device(self) -> str:
        if self._device is None:
            self._device = this_device()
        return self._device

    def statuses(self, running: set[str] | None = None, retry_failed: bool | None = None) -> list[Status]:
        statuses = scan(self.runs, self.root, self.state["failed"], running if running is not None else set(self._running),
                        not self.skip_failed if retry_failed is None else retry_failed)
        estimate(statuses, self.device())
        return statuses

    # -- commands

    def dry_run(self) -> int:
        """Print every run's state and the ETA; nothing runs or is written."""
        self._load_state()
        running = set(self.state["running"]) if SweepLock(self.root).held_elsewhere() else set()
        if running:
            self.out(f"a sweep is running in {self.root} now (pid {self._pid_of_state()})")
        self.out(format_table(self.statuses(running=running), self.jobs, all_rows=True))
        return 0

    def _pid_of_state(self) -> str:
        try:
            return str(json.loads(self.state_path.read_text()).get("pid", "?"))
        except (OSError, ValueError):
            return "?"

    def run(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = SweepLock(self.root)
        if not lock.acquire():
            raise MmnerError(f"{self.root}: another `mmner sweep` (pid {self._pid_of_state()}) or a training it "
                             "started is running here; `--dry-run` shows its progress")
        self._keep_fds = (lock.fileno(),)
        handlers = self._install_handlers()
        try:
            self._load_state()
            self._save_state()
            return self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._running.clear()
            self._save_state()
            lock.release()

    def _install_handlers(self) -> dict[int, Any]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if hasattr(signal, "SIGTSTP"):  # job control (POSIX): Ctrl-Z / `kill -TSTP` pauses the trainings too
            handlers[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_pause)
            handlers[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._on_continue)
        return handlers

    def _on_pause(self, signum: int, frame: Any) -> None:
        # The trainings run in sessions of their own, out of reach of the terminal's Ctrl-Z: stop each,
        # then the sweep itself; `fg`, `bg` or `kill -CONT` continues the sweep, whose SIGCONT continues them.
        self._send_all(signal.SIGSTOP)
        self.suspend()

    def _on_continue(self, signum: int, frame: Any) -> None:
        self._send_all(signal.SIGCONT)

    def _send_all(self, sig: int) -> None:
        for process, *_ in list(self._running.values()):
            try:
                process.send_signal(sig)
            except (ProcessLookupError, OSError):
                pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only flags and os.kill here; the loop prints. A second signal forwards SIGTERM again.
        if self._signal is None:
            self._signal = 130 if signum == signal.SIGINT else 143
        self._forward()

    def _forward(self) -> None:
        if hasattr(signal, "SIGCONT"):
            self._send_all(signal.SIGCONT)  # a paused training must run to stop cleanly
        self._send_all(signal.SIGTERM)

    def _loop(self) -> int:
        statuses = self.statuses()
        self.out(format_table(statuses, self.jobs, all_rows=False))
        todo = [s.run for s in statuses if s.state not in (DONE, RUNNING) and not (s.state == FAILED and self.skip_failed)]
        total, started = len(todo), 0
        stopped: list[Job] = []
        while self._running or (todo and self._signal is None):
            while todo and len(self._running) < self.jobs and self._signal is None:
                run = todo.pop(0)
                started += 1
                self._start(run, started, total)
            finished = False
            for name, (process, job, offset, began) in list(self._running.items()):
                code = process.poll()
                if code is None:
                    continue
                del self._running[name]
                finished = True
                if self._finish(job, code, offset, began):
                    stopped.append(job)
            if self._signal is not None and self._running and not self._announced:
                self._announced = True
                self.out(f"stopping: waiting for {', '.join(self._running)} to stop (a training keeps its last "
                         "finished epoch)")
            if finished:
                self._save_state()
                if self._signal is None:
                    self.out(format_table(self.statuses(), self.jobs, all_rows=False))
            elif self._running:
                time.sleep(self.poll_seconds)
        if self._signal is not None:
            for job in stopped:
                kept = ("resumes from its last finished epoch" if (job.run_dir / "checkpoints" / "last.ckpt").is_file()
                        else "starts again (no epoch had finished)")
                self.out(f"stopped {job.run.name}; rerunning {self.rerun} {kept}")
            if not stopped:
                self.out(f"stopped; rerunning {self.rerun} goes on where this one ended")
            return self._signal
        final = self.statuses()
        failed = [s for s in final if s.state == FAILED]
        if failed:
            self.out(f"{_runs(len(failed))} failed (errors in {self.state_path}, output in <run>.log): "
                     + ", ".join(s.run.name for s in failed))
            return 1
        return 0 if all(s.state == DONE for s in final) else 1

    def _start(self, run: Run, index: int, total: int) -> None:
        run_dir = self.root / run.name
        if (run_dir / "metrics.json").is_file():  # finished meanwhile (copied in from another machine)
            self.out(f"[{index}/{total}] {run.block}: {run.name}: done already")
            return
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        if not resume and run_dir.exists():
            self.out(f"{run.name}: removing a partial run directory without a checkpoint (no epoch had finished)")
            shutil.rmtree(run_dir)
        log = self.root / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        job = Job(run, run_dir, log, resume, train_command(run, run_dir, resume), self._keep_fds)
        stamp = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        with open(log, "a") as fh:
            fh.write(f"\n=== {stamp} mmner sweep: {' '.join(job.command)}\n")
        offset = log.stat().st_size
        self.out(f"[{index}/{total}] {run.block}: {run.name}: {'resuming' if resume else 'training'} (log: {log})")
        try:
            process = self.launch(job)
        except OSError as exc:
            self._record_failure(job, f"could not start {job.command[0]}: {exc}", -1, "0s")
            self._save_state()
            return
        self._running[run.name] = (process, job, offset, time.monotonic())
        self._save_state()
        if self._signal is not None:  # a stop that came while it was starting
            self._forward()

    def _finish(self, job: Job, code: int, offset: int, began: float) -> bool:
        """Record a finished training; True when it was stopped (interrupted, to resume later)."""
        name, took = job.run.name, duration(time.monotonic() - began)
        metrics = _metrics(job.run_dir) if code == 0 else None
        if code == 0 and metrics is not None:
            self.state["failed"].pop(name, None)
            f1 = (metrics.get("test") or {}).get("f1")
            self.out(f"{name}: done in {took}" + (f", test F1 {f1:.2f}" if f1 is not None else ""))
            return False
        if code in INTERRUPTED:
            if self._signal is None:  # stopped from elsewhere: the sweep stops too
                self._signal = INTERRUPTED[code]
                self.out(f"{name}: training was stopped from outside the sweep (exit {code}); stopping the sweep")
                self._forward()
            return True
        error = last_error(job.log, offset, code) if code != 0 else "exited 0 without writing metrics.json"
        self._record_failure(job, error, code, took)
        return False

    def _record_failure(self, job: Job, error: str, code: int, took: str) -> None:
        self.state["failed"][job.run.name] = {"error": error, "exit_code": code, "log": str(job.log),
                                              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.out(f"{job.run.name}: failed after {took} (exit {code}): {error}")


def run_sweep(matrix_path: str | Path, root: str | Path | None = None, jobs: int = 1, dry_run: bool = False,
              skip_failed: bool = False, launch: Callable[[Job], Process] = launch_subprocess,
              out: Callable[[str], None] | None = None) -> int:
    """`mmner sweep`: the exit status (0 all done, 1 a run failed, 130 / 143 stopped)."""
    if jobs < 1:
        raise MmnerError(f"--jobs {jobs}: needs at least 1")
    if jobs > 1:
        import torch

        if not torch.cuda.is_available():
            raise MmnerError(f"`--jobs {jobs}` needs a GPU; on a CPU trainings run one at a time")
    matrix, runs = load_matrix(matrix_path)
    root = Path(root if root is not None else matrix.root)
    rerun = f"`mmner sweep {matrix_path}" + (f" --root {root}" if root != Path(matrix.root) else "") + \
        (f" --jobs {jobs}" if jobs > 1 else "") + "`"
    sweep = Sweep(runs, root, jobs=jobs, launch=launch, skip_failed=skip_failed, out=out, rerun=rerun)
    return sweep.dry_run() if dry_run else sweep.run()
