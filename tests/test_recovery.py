"""A stopped or finished run always has one documented next command: `mmner train ... --resume`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import yaml

from conftest import run_cli, tiny_config


def _config_file(tmp_path, tiny_model_params, tiny_corpus):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_params["bert-crf"], tiny_corpus)))
    return path


def test_a_run_stopped_before_its_first_epoch_ended_starts_again_with_resume(monkeypatch, capsys, tmp_path,
                                                                             tiny_model_params, tiny_corpus):
    config = _config_file(tmp_path, tiny_model_params, tiny_corpus)
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(config), "--output", str(run), "--quiet")[0] == 0
    # what a training stopped during its first epoch leaves: config, labels, encoder, logs; no checkpoint
    for name in ("metrics.json", "model.safetensors", "train_log.csv"):
        (run / name).unlink()
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "predictions")

    code, _, err = run_cli(monkeypatch, capsys, "train", str(config), "--output", str(run), "--quiet")
    assert code == 2 and "pass --resume" in err  # restarting without --resume is refused, and says what to do
    done = subprocess.run([sys.executable, "-m", "mmner", "train", str(config), "--output", str(run), "--resume",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no epoch had finished; starting the run again" in done.stderr
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["resumed"] is False and metrics["epochs"] == 2
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["part0"]  # the stale logs went with the rest


def test_resume_of_a_finished_run_changes_nothing(monkeypatch, capsys, tmp_path, tiny_model_params, tiny_corpus):
    config = _config_file(tmp_path, tiny_model_params, tiny_corpus)
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(config), "--output", str(run), "--quiet")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "-m", "mmner", "train", str(config), "--output", str(run), "--resume",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "finished already" in done.stderr and "nothing changed" in done.stderr
    assert "test (" in done.stdout  # its scores, as a finished training prints them
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert json.loads((run / "metrics.json").read_text())["test"]["resumed"] is False


def test_resume_where_there_is_no_run(monkeypatch, capsys, tmp_path, tiny_model_params, tiny_corpus):
    config = _config_file(tmp_path, tiny_model_params, tiny_corpus)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(config), "--output", str(tmp_path / "none"), "--resume")
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1
