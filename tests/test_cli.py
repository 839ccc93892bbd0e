"""The command line: the DESIGN §1 contract, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA, run_cli

SCORE_KEYS = {"precision", "recall", "f1", "gold_entities", "pred_entities", "correct_entities", "mode", "per_type"}


def test_score_json(monkeypatch, capsys, tmp_path):
    gold = tmp_path / "gold.txt"
    pred = tmp_path / "pred.txt"
    gold.write_text("IMGID:1\nObama\tB-PER\nin\tO\nParis\tB-LOC\n\nRT\tO\nNASA\tB-ORG\n")
    pred.write_text("IMGID:1\nObama\tB-PER\nin\tO\nParis\tB-ORG\n\nRT\tO\nNASA\tB-ORG\n")
    code, out, _ = run_cli(monkeypatch, capsys, "score", "--gold", str(gold), "--pred", str(pred), "--json")
    assert code == 0
    result = json.loads(out)
    assert SCORE_KEYS <= set(result)
    assert (result["gold_entities"], result["pred_entities"], result["correct_entities"]) == (3, 3, 2)
    assert result["f1"] == 66.67 and result["mode"] == "conlleval"
    assert result["per_type"]["PER"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 1}


@pytest.mark.skipif(not (SHARED_DATA / "twitter2015").is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("mode, gold_count", [("conlleval", 5207), ("strict", 5072)])
def test_score_counts_twitter2015(monkeypatch, capsys, mode, gold_count):
    test = str(SHARED_DATA / "twitter2015" / "test.txt")
    code, out, _ = run_cli(monkeypatch, capsys, "score", "--gold", test, "--pred", test, "--mode", mode, "--json")
    assert code == 0 and json.loads(out)["gold_entities"] == gold_count


@pytest.mark.parametrize(
    "content, message",
    [
        ("Obama\tB-PER\nParis\n", "gold.txt:2: "),
        ("Obama\tB_PER\n", "gold.txt:1: malformed tag 'B_PER'"),
    ],
)
def test_score_malformed_gold_is_one_line_exit_2(monkeypatch, capsys, tmp_path, content, message):
    gold = tmp_path / "gold.txt"
    gold.write_text(content)
    code, _, err = run_cli(monkeypatch, capsys, "score", "--gold", str(gold), "--pred", str(gold))
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_file_and_bad_config_key(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "score", "--gold", str(tmp_path / "nope.txt"), "--pred", str(tmp_path / "nope.txt"))
    assert code == 2 and "nope.txt" in err and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", "--set", "trainer.epochs=2")
    assert code == 2 and "config key 'trainer.epochs': unknown key" in err and err.count("\n") == 1


def test_train_evaluate_predict_resume(monkeypatch, capsys, tmp_path, tiny_encoder, tiny_corpus):
    run_dir = tmp_path / "run"
    sets = ["--set", f"model.encoder={tiny_encoder}"]
    for split, path in tiny_corpus.items():
        sets += ["--set", f"data.{split}={path}"]
    code, out, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", *sets, "--output", str(run_dir), "--quiet")
    assert code == 0, err
    assert "gold" in out

    # an existing run directory is never overwritten
    code, _, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", *sets, "--output", str(run_dir))
    assert code == 2 and "--resume" in err

    # resume continues from last.ckpt to the new epoch budget
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "configs/tiny.yaml", *sets, "--set", "trainer.max_epochs=2",
        "--output", str(run_dir), "--resume", "--quiet",
    )
    assert code == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["epochs"] == 2
    log = (run_dir / "train_log.csv").read_text().splitlines()
    epochs = {row.split(",")[log[0].split(",").index("epoch")] for row in log[1:]}
    assert epochs == {"0", "1"}  # the first start's log survives the resume
    column = log[0].split(",").index("epoch_seconds")
    times = [float(row.split(",")[column]) for row in log[1:] if row.split(",")[column]]
    assert len(times) == 2  # seconds per epoch: both epochs, not this start's time over both
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["seconds_per_epoch"] == round(sum(times) / 2, 1)

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run_dir), "--data", str(tiny_corpus["test"]), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert SCORE_KEYS <= set(result) and result["visual_source"] == "none"

    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "a", "text": "meet Obama at NASA !"}\n{"id": "b", "tokens": ["visit", "Paris"]}\n')
    preds = tmp_path / "out" / "preds.jsonl"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "--input", str(posts), "--output", str(preds))
    assert code == 0, err
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["tokens"] == ["meet", "Obama", "at", "NASA", "!"]
    for r in records:
        assert len(r["tags"]) == len(r["tokens"])
        for ent in r["entities"]:
            assert ent["text"] == " ".join(r["tokens"][ent["start"] : ent["end"]])
    assert any(r["entities"] for r in records)  # the loop above checked at least one entity

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "   "}\n')
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "--input", str(bad), "--output", str(tmp_path / "o.jsonl"))
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and last.startswith("error: ") and "bad.jsonl:1:" in last


def test_evaluate_not_a_run_dir(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path), "--data", "x")
    assert code == 2 and "not a finished run directory" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("IMGID:1\nObama\tB-PER\nParis\n", "train.txt:3: "),
        ("IMGID:1\nObama\tB_PER\n", "train.txt:2: "),
        ("IMGID:1\n\nIMGID:2\nObama\tB-PER\n", "train.txt:"),
    ],
)
def test_malformed_training_data_is_one_line_exit_2(monkeypatch, capsys, tmp_path, tiny_corpus, content, message):
    bad = tmp_path / "train.txt"
    bad.write_text(content)
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "configs/tiny.yaml", "--set", f"data.train={bad}",
        "--set", f"data.valid={tiny_corpus['valid']}", "--set", f"data.test={tiny_corpus['test']}",
        "--output", str(tmp_path / "run"),
    )
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_unknown_label_at_evaluation_names_the_post(monkeypatch, capsys, tmp_path, tiny_encoder, tiny_corpus):
    from conftest import tiny_config
    from mmner.config import load_config
    from mmner.train.run import train

    config = load_config(None, base=tiny_config({"name": "bert-crf", "encoder": str(tiny_encoder), "max_length": 24},
                                                tiny_corpus, max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    other = tmp_path / "other.txt"
    other.write_text("IMGID:9\nBerlin\tB-CITY\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "run"), "--data", str(other))
    assert code == 2 and "CITY" in err.strip().splitlines()[-1]


def test_text_only_model_refuses_a_visual_source(monkeypatch, capsys, tmp_path, tiny_corpus):
    sets = [f"data.{s}={p}" for s, p in tiny_corpus.items()] + ["visual.source=caption"]
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", *args, "--output", str(tmp_path / "r"))
    assert code == 2 and "bert-crf is a text-only model" in err and err.count("\n") == 1


def test_predict_needs_no_gold(monkeypatch, capsys, tmp_path, tiny_encoder, tiny_corpus):
    """Posts to tag may carry tags of types the model never saw: prediction ignores them."""
    from conftest import tiny_config
    from mmner.config import load_config
    from mmner.train.run import train

    config = load_config(None, base=tiny_config({"name": "bert-crf", "encoder": str(tiny_encoder), "max_length": 24},
                                                tiny_corpus, max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    posts = tmp_path / "posts.txt"
    posts.write_text("IMGID:9\nBerlin\tB-CITY\nrocks\tO\n")
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(tmp_path / "run"), "--input", str(posts),
                           "--output", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    assert len(json.loads((tmp_path / "out.jsonl").read_text())["tags"]) == 2


@pytest.mark.parametrize("how, code", [("sigterm", 143), ("ctrl-c", 130)])
def test_a_stopped_training_says_so_and_resumes(monkeypatch, capsys, tmp_path, tiny_encoder, tiny_corpus, how, code):
    """SIGTERM or Ctrl-C in the second epoch: a one-line message, its exit code (never 0), no finished-looking
    run directory, and --resume continues from the first epoch's checkpoint."""
    import os
    import signal

    from mmner.train.module import TaggerModule

    run_dir = tmp_path / "run"
    sets = ["--set", f"model.encoder={tiny_encoder}", "--set", "trainer.max_epochs=2"]
    for split, path in tiny_corpus.items():
        sets += ["--set", f"data.{split}={path}"]
    step = TaggerModule.training_step

    def stop_in_epoch_two(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler stops at the next batch
            else:
                raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(TaggerModule, "training_step", stop_in_epoch_two)
    rc, _, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", *sets, "--output", str(run_dir), "--quiet")
    assert rc == code
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: ") and "in epoch 2" in line and "--resume" in line
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.safetensors").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    monkeypatch.setattr(TaggerModule, "training_step", step)
    from mmner.train import run as train_run

    # the resume from other code, and the checkout moving on while it trains: the start's commit is the run's
    checkouts = iter(["b" * 40])
    monkeypatch.setattr(train_run, "git_commit", lambda: next(checkouts, "c" * 40))
    first = json.loads((run_dir / "starts.jsonl").read_text())
    rc, _, err = run_cli(monkeypatch, capsys, "train", "configs/tiny.yaml", *sets, "--output", str(run_dir),
                         "--resume", "--quiet")
    assert rc == 0, err
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["epochs"] == 2
    # both starts' code is named: the first start's commit (this checkout's), then the resume's
    assert first["resumed"] is False and test["git_commit"] == "b" * 40
    assert test["git_commits"] == [first["commit"], "b" * 40]
    starts = [json.loads(x) for x in (run_dir / "starts.jsonl").read_text().splitlines()]
    assert [x["resumed"] for x in starts] == [False, True] and all(x["at"] for x in starts)
