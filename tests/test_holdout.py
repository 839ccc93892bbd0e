"""Cross-fitting: `data.holdout` leaves a fold of the training posts out, and `mmner teacher --fold k/n` teaches
only that fold's posts, from members that never saw them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_config
from mmner.config import Config, DataConfig, load_config
from mmner.data import datadir
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.train.distill import read_marginals
from mmner.train.run import training_subset
from mmner.train.teacher import parse_fold

ROOT = Path(__file__).resolve().parents[1]


def test_holdout_leaves_out_every_nth_post_and_the_folds_partition_the_posts():
    posts = [Post(f"p{i}", ["w"], ["O"]) for i in range(10)]
    kept = [[p.id for p in training_subset(posts, DataConfig(holdout={"fold": k, "folds": 3}), seed=1)]
            for k in range(3)]
    assert kept[1] == ["p0", "p2", "p3", "p5", "p6", "p8", "p9"]
    left_out = [{p.id for p in posts} - set(ids) for ids in kept]
    assert set().union(*left_out) == {p.id for p in posts} and sum(map(len, left_out)) == len(posts)
    # after limit_train (a prefix, so positions agree), before train_fraction
    assert training_subset(posts, DataConfig(limit_train=6, holdout={"fold": 0, "folds": 2}), seed=1) == \
        [posts[1], posts[3], posts[5]]
    half = training_subset(posts, DataConfig(holdout={"fold": 0, "folds": 2}, train_fraction=0.6), seed=1)
    assert len(half) == 3 and all(int(p.id[1:]) % 2 == 1 for p in half)


def test_a_bad_holdout_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: bert-crf}\ndata: {holdout: {fold: 2, folds: 2}}\n")
    with pytest.raises(MmnerError, match=r"data.holdout.*fold 2 is not one of the 2 folds") as err:
        load_config(path)
    assert "\n" not in str(err.value)
    path.write_text("model: {name: bert-crf}\ndata: {holdout: {fold: 0, folds: 1}}\n")
    with pytest.raises(MmnerError, match=r"data.holdout.folds"):
        load_config(path)
    for text in ("1", "a/b", "2/2", "0/1", "-1/2"):
        with pytest.raises(MmnerError, match=rf"^--fold {text}: "):
            parse_fold(text)
    assert parse_fold("1/3") == (1, 3)


def test_teacher_fold_holds_the_left_out_posts_from_members_that_never_saw_them(tmp_path, tiny_corpus,
                                                                              tiny_model_params, monkeypatch, capsys):
    import json

    from mmner.train.run import train

    raw = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)
    runs = {}
    for fold in (0, 1):
        config = {**raw, "data": {**raw["data"], "holdout": {"fold": fold, "folds": 2}}}
        runs[fold] = tmp_path / f"fold{fold}"
        train(Config.model_validate(config), runs[fold], quiet=True)
    train(Config.model_validate(raw), tmp_path / "full", quiet=True)
    data = str(tiny_corpus["train"])
    posts = datadir.load_dataset(data)
    metrics = json.loads((runs[0] / "metrics.json").read_text())["test"]
    assert metrics["holdout"] == {"fold": 0, "folds": 2} and metrics["train_posts"] == len(posts) // 2

    files = []
    for fold in (0, 1):
        out = tmp_path / f"fold{fold}.marginals.jsonl.gz"
        code, _, err = run_cli(monkeypatch, capsys, "teacher", str(runs[fold]), "--data", data, "--output", str(out),
                               "--fold", f"{fold}/2", "--quiet")
        assert code == 0, err
        header, rows = read_marginals(out)
        ids = [pid for _, pid, _ in rows]
        assert ids == [p.id for i, p in enumerate(posts) if i % 2 == fold]
        assert header["fold"] == {"fold": fold, "folds": 2} and list(header["members"]) == [str(runs[fold])]
        files.append(str(out))
    # the two files teach every training post once
    from mmner.tagging.vocab import LabelVocab
    from mmner.train.distill import Teacher

    teacher = Teacher.from_config(files, 0.5, data, [], posts, LabelVocab(["LOC", "ORG", "OTHER", "PER"]))
    assert teacher.record["posts_with_targets"] == len(posts)
    assert all(torch.allclose(r.sum(-1), torch.ones(r.shape[0]), atol=1e-3) for r in teacher.rows)

    # the benchmark script writes the same fold, from members named under --runs-dir
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import teacher_marginals

    script_out = tmp_path / "script.marginals.jsonl.gz"
    assert teacher_marginals.main(["--runs-dir", str(tmp_path), "--members", "fold1", "--dataset", "tiny",
                                   "--data", data, "--fold", "1/2", "--output", str(script_out)]) == 0
    header, rows = read_marginals(script_out)
    assert header["fold"] == {"fold": 1, "folds": 2} and list(header["members"]) == ["fold1"]
    assert [pid for _, pid, _ in rows] == [p.id for i, p in enumerate(posts) if i % 2 == 1]
    with pytest.raises(SystemExit, match="teacher_marginals: --fold 0/2: .*fold1 trained on"):
        teacher_marginals.main(["--runs-dir", str(tmp_path), "--members", "fold1", "--dataset", "tiny",
                                "--data", data, "--fold", "0/2", "--output", str(script_out)])

    out = str(tmp_path / "x.marginals.jsonl.gz")
    for args, message in (
            ((str(runs[0]), "--fold", "1/2"), r"--fold 1/2: .*fold0 trained on .* with data.holdout 0/2; a member "
                                              r"must train on .* without fold 1 of 2"),
            ((str(tmp_path / "full"), "--fold", "0/2"), r"--fold 0/2: .*full trained on .* with data.holdout None"),
            ((str(runs[0]),), r"fold0 left out fold 0 of 2 of .*: give --fold 0/2"),
            ((str(runs[0]), "--fold", "0/2", "--tags", str(tmp_path / "t.tags")), r"--fold with --tags")):
        code, _, err = run_cli(monkeypatch, capsys, "teacher", *args, "--data", data, "--output", out, "--quiet")
        assert code != 0 and len(err.strip().splitlines()) == 1
        assert re.search(message, err), err
