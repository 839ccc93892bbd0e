"""Small command-line contracts: --version, `score` with dataset names, a busy port, readable weights."""

from __future__ import annotations

import socket
import stat
import time

import yaml

from conftest import SHARED_DATA, run_cli, tiny_config


def test_version(monkeypatch, capsys):
    from mmner import __version__

    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"mmner {__version__}"


def test_score_takes_dataset_names(monkeypatch, capsys, tmp_path):
    import pytest

    if not (SHARED_DATA / "twitter2017").is_dir():
        pytest.skip("no data dir beside the repository")
    from mmner.data import datadir
    from mmner.data.readers import read_conll, write_conll

    gold = datadir.resolve("twitter2017:test", None)
    posts = read_conll(gold)
    pred = tmp_path / "pred.conll"
    write_conll(pred, posts, [["O"] * len(p.tokens) for p in posts])  # tags nothing
    code, out, err = run_cli(monkeypatch, capsys, "score", "--gold", "twitter2017:test", "--pred", str(pred), "--json")
    assert code == 0, err
    import json

    result = json.loads(out)
    assert result["gold_entities"] == 1351 and result["pred_entities"] == 0 and result["recall"] == 0.0
    code, _, err = run_cli(monkeypatch, capsys, "score", "--gold", "twitter2017:tset", "--pred", str(pred))
    assert code == 2 and "unknown split 'tset'" in err and err.count("\n") == 1


def test_serve_on_a_busy_port_says_so_before_loading(monkeypatch, capsys, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        started = time.monotonic()
        # the run directory does not even exist: the port is checked before anything is loaded
        code, out, err = run_cli(monkeypatch, capsys, "serve", str(tmp_path / "no-run"), "--port", str(port))
    assert code == 2 and time.monotonic() - started < 5
    assert err.startswith(f"error: cannot serve at 127.0.0.1:{port}") and "--port" in err and err.count("\n") == 1
    assert "serving" not in out


def test_model_weights_are_readable_like_the_other_run_files(monkeypatch, capsys, tmp_path, tiny_model_params,
                                                           tiny_corpus):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)))
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(config), "--output", str(run), "--quiet")[0] == 0
    mode = stat.S_IMODE((run / "model.safetensors").stat().st_mode)
    assert mode == stat.S_IMODE((run / "config.yaml").stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_evaluate_says_what_it_tags_unless_quiet(tmp_path, tiny_model_params, tiny_corpus):
    import subprocess
    import sys

    from mmner.config import load_config
    from mmner.train.run import train

    run = tmp_path / "run"
    train(load_config(None, base=tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)), run, quiet=True)
    command = [sys.executable, "-m", "mmner", "evaluate", str(run), "--data", str(tiny_corpus["test"]), "--json"]
    loud = subprocess.run(command, capture_output=True, text=True, timeout=300)
    quiet = subprocess.run(command + ["--quiet"], capture_output=True, text=True, timeout=300)
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "tagging 8 posts of" in loud.stderr and "tagging" not in quiet.stderr
    assert loud.stdout == quiet.stdout  # one JSON object either way


def test_training_prints_mmner_lines_not_library_notices(tmp_path, tiny_model_params, tiny_corpus):
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model_params["bert-crf"], tiny_corpus)))
    done = subprocess.run([sys.executable, "-m", "mmner", "train", str(config), "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for noise in ("GPU available", "TPU available", "Total FLOPs", "site-packages", "v_num"):
        assert noise not in done.stderr, noise
    assert "mmner: model: " in done.stderr and "mmner: epoch 2: valid" in done.stderr
