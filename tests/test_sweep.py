"""`mmner sweep`: matrix expansion and errors, the state of run directories, the status table and ETA,
the runner (with a fake launch, and once with real tiny trainings stopped and resumed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import make_posts, run_cli, write_corpus
from mmner.errors import MmnerError
from mmner.train import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def write_configs(configs_dir: Path, names: list[str], **trainer) -> Path:
    """Config files named `names` (tiny.yaml, text-only bert-crf; the dataset from a -twitter20xx suffix)."""
    configs_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = json.loads(json.dumps(TINY))
        ds = "twitter2015" if name.endswith("twitter2015") else "twitter2017"
        data["data"] = {split: f"{ds}:{split}" for split in ("train", "valid", "test")}
        data["trainer"].update(trainer)
        (configs_dir / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return configs_dir


def write_matrix(path: Path, configs_dir: Path, blocks: list[dict], **top) -> Path:
    data = {"root": str(path.parent / "runs"), "seeds": [13, 21], "datasets": ["twitter2017", "twitter2015"],
            "configs_dir": str(configs_dir), "blocks": blocks, **top}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def configs(tmp_path) -> Path:
    return write_configs(tmp_path / "configs", [
        f"{m}-{ds}" for m in ("a", "b") for ds in ("twitter2017", "twitter2015")] + ["solo"], max_epochs=4)


def test_expansion_order_names_and_tags(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [
        {"name": "first", "configs": ["a-{dataset}", "b-{dataset}", "solo"]},
        {"name": "owl", "configs": ["a-{dataset}"], "set": ["trainer.max_epochs=2"], "tag": "owl", "seeds": [7],
         "datasets": ["twitter2015"]},
    ])
    m, runs = sw.load_matrix(matrix)
    assert m.root == str(tmp_path / "runs")
    assert [(r.block, r.name) for r in runs] == [
        ("first", "a-twitter2017-s13"), ("first", "a-twitter2015-s13"), ("first", "b-twitter2017-s13"),
        ("first", "b-twitter2015-s13"), ("first", "solo-s13"),
        ("first", "a-twitter2017-s21"), ("first", "a-twitter2015-s21"), ("first", "b-twitter2017-s21"),
        ("first", "b-twitter2015-s21"), ("first", "solo-s21"),
        ("owl", "owl/a-twitter2015-s7"),
    ]
    assert [r.max_epochs for r in runs] == [4] * 10 + [2]  # from the resolved config, with the block's --set
    assert runs[1].dataset == "twitter2015" and runs[0].model == "bert-crf"
    cmd = sw.train_command(runs[-1], Path("R/owl/a-twitter2015-s7"), resume=True)
    assert cmd[1:4] == ["-m", "mmner", "train"] and cmd[4] == str(configs / "a-twitter2015.yaml")
    assert cmd[5:] == ["--set", "seed=7", "--set", "trainer.max_epochs=2", "--output", "R/owl/a-twitter2015-s7",
                       "--quiet", "--resume"]


def test_dataset_names_unquoted_in_flow_lists(tmp_path, configs):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"seeds: [1]\ndatasets: [twitter2017]\nconfigs_dir: {configs}\nblocks:\n"
                      "  - {name: q, configs: [a-{dataset}, solo]}\n  - name: one\n    configs: b-{dataset}\n")
    _, runs = sw.load_matrix(matrix)
    assert [r.name for r in runs] == ["a-twitter2017-s1", "solo-s1", "b-twitter2017-s1"]
    matrix.write_text("seeds: [1\nblocks: []\n")
    with pytest.raises(MmnerError, match=r"m.yaml:2: invalid YAML"):
        sw.load_matrix(matrix)


def test_a_blocks_set_takes_a_yaml_alias_of_a_list_in_line(tmp_path, configs):
    """`set: [*recipe, key=value]`: the alias's overrides, then the block's own, in order (later ones win)."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"seeds: [1]\ndatasets: [twitter2017]\nconfigs_dir: {configs}\nblocks:\n"
                      "  - {name: p, configs: [solo], tag: p, set: &recipe [trainer.max_epochs=2, trainer.patience=1]}\n"
                      "  - {name: q, configs: [solo], tag: q, set: &more [*recipe, trainer.max_epochs=3]}\n"
                      "  - {name: r, configs: [solo], tag: r, set: [*more, trainer.patience=2]}\n")
    _, runs = sw.load_matrix(matrix)
    assert runs[1].sets == ("trainer.max_epochs=2", "trainer.patience=1", "trainer.max_epochs=3")
    assert runs[2].sets == runs[1].sets + ("trainer.patience=2",)  # an alias of a list that holds an alias
    assert [r.max_epochs for r in runs] == [2, 3, 3]


@pytest.mark.parametrize("top, blocks, message", [
    ({"sedes": [1]}, [{"name": "x", "configs": ["solo"]}], "matrix key 'sedes': unknown key (allowed: root, seeds,"),
    ({}, [{"name": "x", "configs": ["solo"]}, {"name": "y", "configs": ["solo"], "sett": []}],
     "matrix key 'blocks[1].sett': unknown key (allowed: name, configs, set, tag, seeds, datasets)"),
    ({}, [{"name": "x", "configs": ["a-{dataset}", "nope-{dataset}"]}],
     "block 'x': config 'nope-twitter2017' not found (no "),
    ({}, [{"name": "x", "configs": ["solo"], "set": ["visual.caption=owl"]}], "a block with `set` needs a `tag`"),
    ({}, [{"name": "x", "configs": ["solo"], "set": ["seed=3"], "tag": "t"}], "the seed comes from `seeds`"),
    ({}, [{"name": "x", "configs": ["solo"]}, {"name": "y", "configs": ["solo"]}],
     "run solo-s13 is in block 'x' and in block 'y'"),
    ({}, [{"name": "x", "configs": ["solo"], "set": ["trainer.epochs=3"], "tag": "t"}],
     "block 'x': ", ),
    ({"datasets": []}, [{"name": "x", "configs": ["a-{dataset}"]}], "has {dataset} but the matrix lists no `datasets`"),
])
def test_matrix_errors_are_one_line(tmp_path, configs, top, blocks, message):
    matrix = write_matrix(tmp_path / "m.yaml", configs, blocks, **top)
    with pytest.raises(MmnerError) as exc:
        sw.load_matrix(matrix)
    text = str(exc.value)
    assert message in text and "\n" not in text and text.startswith(str(matrix))
    if "trainer.epochs" in str(blocks):
        assert "config key 'trainer.epochs': unknown key" in text


def test_unknown_key_on_the_command_line(monkeypatch, capsys, tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "x", "configs": ["solo"], "tagg": "t"}])
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(matrix), "--dry-run")
    assert code == 2 and err.startswith("error: ") and "'blocks[0].tagg': unknown key" in err and err.count("\n") == 1


def write_done(run_dir: Path, f1: float, epochs: int, seconds: float, device: str = "cpu") -> None:
    run_dir.mkdir(parents=True)
    test = {"f1": f1, "epochs": epochs, "seconds_per_epoch": seconds, "device": device}
    (run_dir / "metrics.json").write_text(json.dumps({"valid": test, "test": test}))


def write_partial(run_dir: Path, epoch_seconds: list[float]) -> None:
    """A run stopped after len(epoch_seconds) epochs: its checkpoint and Lightning's CSV log."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (run_dir / "logs" / "part0").mkdir(parents=True)
    rows = ["epoch,step,train_loss,epoch_seconds,valid_f1"]
    for epoch, seconds in enumerate(epoch_seconds):
        rows += [f"{epoch},{epoch * 10 + 5},0.5,,", f"{epoch},{epoch * 10 + 9},,{seconds},50.0"]
    (run_dir / "logs" / "part0" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_states_table_and_eta(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}", "b-{dataset}"]}],
                          seeds=[13, 21])
    _, runs = sw.load_matrix(matrix)
    root = tmp_path / "runs"
    write_done(root / "a-twitter2017-s13", 81.234, 3, 100.0)  # early-stopped at 3 of 4 epochs
    write_done(root / "b-twitter2017-s13", 70.0, 4, 50.0, device="NVIDIA H100")  # elsewhere: not an estimate here
    write_partial(root / "a-twitter2015-s13", [30.0, 50.0])  # resumable: its own 40 s / epoch
    (root / "b-twitter2015-s13").mkdir()
    (root / "b-twitter2015-s13" / "config.yaml").write_text("x")  # stopped before its first epoch ended
    failed = {"a-twitter2017-s21": {"error": "error: twitter2017: no such data", "exit_code": 2}}
    statuses = sw.scan(runs, root, failed)
    by_name = {s.run.name: s for s in statuses}
    assert [s.state for s in statuses] == ["done", "resumable", "done", "pending", "failed", "pending", "pending",
                                           "pending"]
    assert by_name["a-twitter2015-s13"].epochs == 2 and by_name["a-twitter2015-s13"].seconds_per_epoch == 40.0
    assert by_name["b-twitter2015-s13"].stale and not by_name["b-twitter2017-s21"].stale
    assert by_name["a-twitter2017-s21"].error == "error: twitter2017: no such data"

    sw.estimate(statuses, "cpu")
    assert by_name["a-twitter2015-s13"].estimate == 40.0  # its own log
    assert by_name["a-twitter2017-s21"].estimate == 100.0  # the finished run of its config
    # a-twitter2015-s21: the config's only measurement is the resumable run's log
    assert by_name["a-twitter2015-s21"].estimate == 40.0
    # b-twitter2017-s21: its config's finished run is from another device; same model and dataset: a-twitter2017
    assert by_name["b-twitter2017-s21"].estimate == 100.0
    # b-twitter2015: same model and dataset as a-twitter2015 (its log)
    assert by_name["b-twitter2015-s13"].estimate == 40.0
    seconds, unknown = sw.eta(statuses)
    # remaining epochs x s/epoch: resumable 2 x 40, then 4 epochs each for the five runs not started
    assert (seconds, unknown) == (2 * 40 + 4 * (100 + 40 + 100 + 40) + 4 * 40, 0)
    assert sw.eta(statuses, jobs=2)[0] == seconds / 2

    sw.estimate(statuses, "NVIDIA H100")  # on the GPU machine only the GPU run and the logs count
    assert by_name["b-twitter2017-s21"].estimate == 50.0 and by_name["a-twitter2017-s21"].estimate == 50.0

    sw.estimate(statuses, "cpu")
    table = sw.format_table(statuses).splitlines()
    assert table[0].split() == ["block", "run", "state", "test", "F1", "epochs", "s/epoch", "note"]
    row = {line.split()[1]: line for line in table[1:-1]}
    assert row["a-twitter2017-s13"].split()[2:6] == ["done", "81.23", "3/4", "100"]
    assert row["a-twitter2015-s13"].split()[2:6] == ["resumable", "-", "2/4", "40"]
    assert row["a-twitter2017-s21"].split()[2:7] == ["failed", "(retrying)", "-", "0/4", "~100"]
    assert row["a-twitter2017-s21"].endswith("error: twitter2017: no such data")
    assert "partial directory without a checkpoint" in row["b-twitter2015-s13"]
    assert "NVIDIA H100" in row["b-twitter2017-s13"]
    assert table[-1] == f"8 runs: 2 done, 1 failed, 1 resumable, 4 pending | ETA {sw.duration(seconds)} for 6 runs at " \
        "their max epochs"
    short = sw.format_table(statuses, all_rows=False, pending_rows=2).splitlines()
    assert [line.split()[1] for line in short[1:-2]] == ["a-twitter2015-s13", "b-twitter2015-s13", "a-twitter2017-s21",
                                                         "a-twitter2015-s21"]
    assert short[-2] == "(not listed: 2 pending, 2 done; --dry-run lists every run)"

    # the same config with other overrides (another block) comes after the same config and overrides
    tagged = sw.Run("t", "a-twitter2017", 13, runs[0].config_path, ("optim.lr=0.1",), "t", 4, "bert-crf", "twitter2017")
    twin = sw.Run("t", "a-twitter2017", 21, runs[0].config_path, ("optim.lr=0.1",), "t", 4, "bert-crf", "twitter2017")
    mixed = [sw.Status(tagged, "resumable", epochs=1, seconds_per_epoch=7.0), sw.Status(twin, "pending"),
             sw.Status(runs[4], "pending"), *statuses[:1]]
    sw.estimate(mixed, "cpu")
    assert [s.estimate for s in mixed] == [7.0, 7.0, 100.0, 100.0]

    lonely = [s for s in sw.scan(runs, tmp_path / "empty")]
    sw.estimate(lonely, "cpu")
    assert sw.summary(lonely) == "8 runs: 8 pending | ETA ? (no estimate yet for the 8 runs to train)"
    assert [sw.duration(s) for s in (42, 125, 3 * 3600 + 7 * 60, 2 * 86400 + 5 * 3600)] == \
        ["42s", "2m 05s", "3h 07m", "2d 05h"]


class Finished:
    """A fake training that has already ended with `code`."""

    def __init__(self, code: int) -> None:
        self.pid, self.code = 0, code

    def poll(self) -> int:
        return self.code

    def send_signal(self, sig: int) -> None:
        pass


def fake_launch(outcomes: dict[str, int], calls: list):
    """Trainings that finish at once: 0 writes metrics.json, 2 prints a one-line error, others crash."""

    def launch(job: sw.Job) -> Finished:
        calls.append((job.run.name, job.resume, job.run_dir.exists()))
        code = outcomes.get(job.run.name, 0)
        with open(job.log, "a") as log:
            log.write("Seed set to 13\n")
            if code == 0:
                write_done(job.run_dir, 80.0, 4, 12.0) if not job.run_dir.exists() else \
                    (job.run_dir / "metrics.json").write_text(json.dumps({"test": {"f1": 80.0, "epochs": 4}}))
            elif code == 2:
                log.write("error: data/train.txt:3: malformed tag 'B_PER' (expected O or B-/I-/E-/S- plus a type)\n\n")
            elif code == 1:
                log.write("Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n")
        return Finished(code)

    return launch


def test_runner_skips_done_records_failures_and_goes_on(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}", "solo"]}],
                          seeds=[13])
    _, runs = sw.load_matrix(matrix)
    root = tmp_path / "runs"
    write_done(root / "a-twitter2017-s13", 81.0, 4, 10.0)
    write_partial(root / "a-twitter2015-s13", [10.0])
    calls: list = []
    lines: list[str] = []
    sweep = sw.Sweep(runs, root, launch=fake_launch({"a-twitter2015-s13": 2}, calls), out=lines.append,
                     poll_seconds=0, device="cpu")
    assert sweep.run() == 1
    assert calls == [("a-twitter2015-s13", True, True), ("solo-s13", False, False)]  # the failure did not stop it
    state = json.loads((root / sw.STATE_FILE).read_text())
    entry = state["failed"]["a-twitter2015-s13"]
    assert entry["error"] == "error: data/train.txt:3: malformed tag 'B_PER' (expected O or B-/I-/E-/S- plus a type)"
    assert entry["exit_code"] == 2 and state["running"] == []
    text = "\n".join(lines)
    assert "a-twitter2015-s13: failed after" in text and "malformed tag 'B_PER'" in text
    assert "solo-s13: done in" in text and "1 run failed" in text
    assert (root / "solo-s13.log").read_text().count("=== ") == 1

    # the next sweep retries it (the table says so); a crash is recorded with its last line
    lines.clear()
    sweep = sw.Sweep(runs, root, launch=fake_launch({"a-twitter2015-s13": 1}, calls), out=lines.append,
                     poll_seconds=0, device="cpu")
    assert sweep.run() == 1
    assert "failed (retrying)" in lines[0]
    entry = json.loads((root / sw.STATE_FILE).read_text())["failed"]["a-twitter2015-s13"]
    assert entry["error"] == "RuntimeError: CUDA out of memory"

    # --skip-failed leaves it; then a retry that succeeds clears the failure
    calls.clear()
    assert sw.Sweep(runs, root, launch=fake_launch({}, calls), skip_failed=True, out=lines.append, poll_seconds=0,
                    device="cpu").run() == 1
    assert calls == []
    assert sw.Sweep(runs, root, launch=fake_launch({}, calls), out=lines.append, poll_seconds=0, device="cpu").run() == 0
    assert calls == [("a-twitter2015-s13", True, True)]
    assert json.loads((root / sw.STATE_FILE).read_text())["failed"] == {}


def test_runner_restarts_a_stale_directory_and_stops_on_a_stopped_training(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    _, runs = sw.load_matrix(matrix)
    root = tmp_path / "runs"
    (root / "a-twitter2017-s13").mkdir(parents=True)
    (root / "a-twitter2017-s13" / "config.yaml").write_text("x")
    calls: list = []
    lines: list[str] = []
    # the first training is stopped from elsewhere (SIGTERM, exit 143): the sweep stops, nothing is marked failed
    sweep = sw.Sweep(runs, root, launch=fake_launch({"a-twitter2017-s13": 143}, calls), out=lines.append,
                     poll_seconds=0, device="cpu")
    assert sweep.run() == 143
    assert calls == [("a-twitter2017-s13", False, False)]  # the partial directory was removed first
    text = "\n".join(lines)
    assert "removing a partial run directory" in text and "stopped from outside" in text
    assert "stopped a-twitter2017-s13; rerunning" in text
    assert json.loads((root / sw.STATE_FILE).read_text())["failed"] == {}


def test_a_training_that_cannot_start_is_a_failure(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    _, runs = sw.load_matrix(matrix)
    ok = fake_launch({}, [])

    def launch(job):
        if job.run.name == "a-twitter2017-s13":
            raise FileNotFoundError(2, "No such file or directory")
        return ok(job)

    lines: list[str] = []
    assert sw.Sweep(runs, tmp_path / "runs", launch=launch, out=lines.append, poll_seconds=0, device="cpu").run() == 1
    failed = json.loads((tmp_path / "runs" / sw.STATE_FILE).read_text())["failed"]
    assert list(failed) == ["a-twitter2017-s13"] and failed["a-twitter2017-s13"]["error"].startswith("could not start")
    assert (tmp_path / "runs" / "a-twitter2015-s13" / "metrics.json").is_file()


def test_ctrl_c_stops_the_training_with_sigterm_and_exits_130(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    _, runs = sw.load_matrix(matrix)
    lines: list[str] = []
    started: list[str] = []

    class Training(Finished):
        def __init__(self, job):
            super().__init__(0)
            self.job, self.signals = job, []

        def poll(self):
            if not self.signals:  # Ctrl-C in the terminal reaches the sweep while this one trains
                sweep._on_signal(signal.SIGINT, None)
                return None
            write_partial(self.job.run_dir, [10.0])
            return 143 if self.signals == [signal.SIGCONT, signal.SIGTERM] else -9

        def send_signal(self, sig):
            self.signals.append(sig)

    def launch(job):
        started.append(job.run.name)
        return Training(job)

    sweep = sw.Sweep(runs, tmp_path / "runs", launch=launch, out=lines.append, poll_seconds=0, device="cpu")
    assert sweep.run() == 130
    assert started == ["a-twitter2017-s13"]
    assert lines[-1].startswith("stopped a-twitter2017-s13; rerunning the same `mmner sweep` command resumes")
    assert json.loads((tmp_path / "runs" / sw.STATE_FILE).read_text()) == {"failed": {}, "running": [],
                                                                           "pid": os.getpid()}


def test_one_sweep_per_root(monkeypatch, capsys, tmp_path, configs):
    """While a sweep holds the root's lock another one refuses to start, and --dry-run shows its running runs."""
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    root = tmp_path / "runs"
    write_partial(root / "a-twitter2017-s13", [30.0])
    (root / sw.STATE_FILE).write_text(json.dumps({"failed": {}, "running": ["a-twitter2017-s13"], "pid": 4242}))
    lock = sw.SweepLock(root)
    assert lock.acquire()
    try:
        code, out, err = run_cli(monkeypatch, capsys, "sweep", str(matrix), "--dry-run")
        assert code == 0, err
        assert out.splitlines()[0] == f"a sweep is running in {root} now (pid 4242)"
        assert out.splitlines()[2].split()[1:6] == ["a-twitter2017-s13", "running", "-", "1/4", "30"]
        code, _, err = run_cli(monkeypatch, capsys, "sweep", str(matrix))
        assert code == 2 and "another `mmner sweep` (pid 4242)" in err and err.count("\n") == 1
    finally:
        lock.release()
    code, out, _ = run_cli(monkeypatch, capsys, "sweep", str(matrix), "--dry-run")  # the lock died with its holder
    assert out.splitlines()[1].split()[2] == "resumable"


def test_jobs_above_one_needs_a_gpu(monkeypatch, capsys, tmp_path, configs):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["solo"]}])
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(matrix), "--jobs", "2")
    assert code == 2 and err == "error: `--jobs 2` needs a GPU; on a CPU trainings run one at a time\n"


def test_jobs_run_at_once(tmp_path, configs):
    """Two slots: both trainings are started before either is seen to finish."""
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    _, runs = sw.load_matrix(matrix)
    events: list[str] = []

    class Slow(Finished):
        def __init__(self, job: sw.Job) -> None:
            super().__init__(0)
            self.job, self.polls = job, 0

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            if not (self.job.run_dir / "metrics.json").exists():
                write_done(self.job.run_dir, 80.0, 4, 12.0)
                events.append(f"end {self.job.run.name}")
            return 0

    def launch(job):
        events.append(f"start {job.run.name}")
        return Slow(job)

    assert sw.Sweep(runs, tmp_path / "runs", jobs=2, launch=launch, out=lambda _: None, poll_seconds=0,
                    device="cpu").run() == 0
    assert events[:2] == ["start a-twitter2017-s13", "start a-twitter2015-s13"]


def test_dry_run_command(monkeypatch, capsys, tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [
        {"name": "q", "configs": ["a-{dataset}"]}, {"name": "tagged", "configs": ["solo"], "tag": "x",
                                                    "set": ["optim.lr=0.1"], "seeds": [13]}])
    root = tmp_path / "elsewhere"
    write_done(root / "a-twitter2017-s13", 81.5, 4, 20.0)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(matrix), "--dry-run", "--root", str(root))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("block") and len(lines) == 1 + 5 + 1
    assert lines[1].split()[:5] == ["q", "a-twitter2017-s13", "done", "81.50", "4/4"]
    assert lines[5].split()[:3] == ["tagged", "x/solo-s13", "pending"]
    assert lines[-1].startswith("5 runs: 1 done, 4 pending | ETA ")
    assert sorted(p.name for p in root.iterdir()) == ["a-twitter2017-s13"]  # a dry run writes nothing


@pytest.fixture
def tiny_sweep(tmp_path, tiny_encoder):
    """A matrix of two tiny trainings: `slow` (600 training posts, 4 epochs) and `quick` (1 epoch)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    data = {"train": str(write_corpus(corpus / "train.txt", make_posts(600, 1))),
            "small": str(write_corpus(corpus / "small.txt", make_posts(24, 4))),
            "valid": str(write_corpus(corpus / "valid.txt", make_posts(8, 2))),
            "test": str(write_corpus(corpus / "test.txt", make_posts(8, 3)))}
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, train, epochs in (("slow", data["train"], 4), ("quick", data["small"], 1)):
        config = json.loads(json.dumps(TINY))
        config["model"]["encoder"] = str(tiny_encoder)
        config["data"] = {"train": train, "valid": data["valid"], "test": data["test"]}
        config["trainer"].update(max_epochs=epochs, patience=100)
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(config))
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "tiny", "configs": ["slow", "quick"]}], seeds=[5])
    return matrix, tmp_path / "runs"


@contextmanager
def one_core():
    """This process and the trainings it starts on one core (children inherit the affinity): tiny models
    are fastest on one thread, and two threads on a shared 2-core machine can take minutes per epoch."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def test_real_sweep_stopped_and_resumed(tmp_path, tiny_sweep):
    matrix, root = tiny_sweep
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mmner", "sweep", str(matrix)]
    slow = root / "slow-s5"
    with one_core():
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    deadline = time.monotonic() + 120
    while not (slow / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert not (slow / "metrics.json").exists() and (slow / "checkpoints" / "last.ckpt").is_file()
    assert not (root / "quick-s5").exists()
    assert "stopped slow-s5; rerunning" in out and "resumes from its last finished epoch" in out
    assert "interrupted: " in (root / "slow-s5.log").read_text()  # the training's own one-line message

    with one_core():
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slow-s5: resuming" in done.stdout and "quick-s5: training" in done.stdout
    slow_metrics = json.loads((slow / "metrics.json").read_text())["test"]
    assert slow_metrics["resumed"] is True and slow_metrics["epochs"] == 4 and slow_metrics["seed"] == 5
    assert json.loads((root / "quick-s5" / "metrics.json").read_text())["test"]["resumed"] is False
    assert done.stdout.strip().splitlines()[-1].startswith("2 runs: 2 done")


def test_ctrl_z_pauses_the_training_and_continue_resumes_it(tmp_path, configs):
    matrix = write_matrix(tmp_path / "m.yaml", configs, [{"name": "q", "configs": ["a-{dataset}"]}], seeds=[13])
    _, runs = sw.load_matrix(matrix)
    events: list = []

    class Training(Finished):
        def __init__(self, job):
            super().__init__(0)
            self.job, self.polls = job, 0

        def poll(self):
            self.polls += 1
            if self.polls == 1 and not events:  # Ctrl-Z while the first run trains, then `fg`
                sweep._on_pause(signal.SIGTSTP, None)
                sweep._on_continue(signal.SIGCONT, None)
                return None
            write_done(self.job.run_dir, 80.0, 4, 12.0)
            return 0

        def send_signal(self, sig):
            events.append(sig)

    sweep = sw.Sweep(runs, tmp_path / "runs", launch=Training, out=[].append, poll_seconds=0, device="cpu")
    sweep.suspend = lambda: events.append("sweep stopped")
    assert sweep.run() == 0
    assert events == [signal.SIGSTOP, "sweep stopped", signal.SIGCONT]


PAUSE_SCRIPT = """
import subprocess, sys, time
from mmner.train import sweep as sw
sweep = sw.Sweep([], sys.argv[1])
training = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
sweep._running["a"] = (training, None, 0, 0.0)
sweep._install_handlers()
print(training.pid, flush=True)
time.sleep(120)
"""


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or not hasattr(signal, "SIGTSTP"), reason="needs POSIX /proc")
def test_real_sigtstp_stops_sweep_and_training_sigcont_continues_both(tmp_path):
    sweep = subprocess.Popen([sys.executable, "-c", PAUSE_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    training = int(sweep.stdout.readline())
    try:
        def wait_for(state: str) -> None:
            deadline = time.monotonic() + 30
            while {process_state(sweep.pid), process_state(training)} != {state}:
                assert time.monotonic() < deadline, (process_state(sweep.pid), process_state(training))
                time.sleep(0.02)

        sweep.send_signal(signal.SIGTSTP)
        wait_for("T")
        sweep.send_signal(signal.SIGCONT)
        wait_for("S")
    finally:
        sweep.kill()
        sweep.wait()
        os.kill(training, signal.SIGKILL)
