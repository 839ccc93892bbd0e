"""`mmner report` and its parts: entity slices, paired bootstrap, train_fraction, the HTML page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tiny_config
from mmner.analysis import slices
from mmner.analysis.artifacts import read_attention, read_relation, write_post_outputs
from mmner.analysis.bootstrap import Bootstrap
from mmner.config import DataConfig, load_config
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.train.run import training_subset

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _post(pid: str, pairs: list[tuple[str, str]]) -> Post:
    return Post(pid, [t for t, _ in pairs], [g for _, g in pairs])


def test_entity_slices_hand_built():
    train = [
        _post("t0", [("Obama", "B-PER"), ("in", "O"), ("Washington", "B-LOC")]),
        _post("t1", [("George", "O"), ("washington", "B-PER"), ("said", "O")]),
        _post("t2", [("Paris", "B-ORG"), ("wins", "O")]),
    ]
    test = _post("x0", [("obama", "B-PER"), ("and", "O"), ("Merkel", "B-PER"), ("in", "O"), ("Washington", "B-LOC"),
                        (",", "O"), ("Paris", "B-LOC")])
    # predictions: Obama right, Merkel missed, Washington with the wrong type, Paris right
    pred = ["B-PER", "O", "O", "O", "B-PER", "O", "B-LOC"]
    lexicon = slices.train_lexicon(train)
    assert lexicon == {"obama": {"PER"}, "washington": {"LOC", "PER"}, "paris": {"ORG"}}
    assert slices.entity_slices("obama", "PER", lexicon) == ["seen", "non-ambiguous"]
    assert slices.entity_slices("merkel", "PER", lexicon) == ["unseen"]
    assert slices.entity_slices("washington", "LOC", lexicon) == ["seen", "ambiguous"]
    assert slices.entity_slices("paris", "LOC", lexicon) == ["unseen"]  # in training, but only as ORG

    result = slices.slice_scores(slices.post_entities([test], [pred]), lexicon)
    gold = {name: row["gold"] for name, row in result.items()}
    assert gold == {"seen": 2, "unseen": 2, "ambiguous": 1, "non-ambiguous": 1}
    # seen: gold Obama, Washington/LOC; predicted Obama, Washington/PER (seen as PER too) -> 1 of 2 each way
    assert (result["seen"]["correct"], result["seen"]["pred"], result["seen"]["recall"]) == (1, 2, 50.0)
    # unseen: gold Merkel, Paris/LOC; predicted Paris/LOC -> P 100, R 50
    assert (result["unseen"]["precision"], result["unseen"]["recall"], result["unseen"]["f1"]) == (100.0, 50.0, 66.67)
    assert (result["ambiguous"]["gold"], result["ambiguous"]["pred"], result["ambiguous"]["correct"]) == (1, 1, 0)
    assert result["non-ambiguous"]["f1"] == 100.0


def test_length_buckets_cover_every_post():
    posts = [_post(f"p{n}", [("w", "O")] * n) for n in (1, 7, 8, 30, 90)]
    scores = slices.length_scores(slices.post_entities(posts, [p.tags for p in posts]))
    assert sum(row["posts"] for row in scores.values()) == 5
    assert scores["1-7"]["posts"] == 2 and scores["25+"]["posts"] == 2


def test_bootstrap_is_deterministic_and_paired():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, size=200)
    base = np.stack([np.minimum(gold, rng.integers(0, 4, size=200)), gold, gold], axis=1)
    better = np.stack([gold, gold, gold], axis=1)  # every entity right
    a = Bootstrap(200, resamples=300, seed=5).compare(base, better)
    b = Bootstrap(200, resamples=300, seed=5).compare(base, better)
    assert a == b
    assert a["delta"] > 0 and a["ci_low"] > 0 and a["p_value"] < 0.01
    same = Bootstrap(200, resamples=300, seed=5).compare(base, base.copy())
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    assert not np.array_equal(Bootstrap(200, 50, seed=5).weights, Bootstrap(200, 50, seed=6).weights)


def test_bootstrap_over_seeds_pairs_each_seed_and_averages():
    rng = np.random.default_rng(2)
    gold = rng.integers(1, 4, size=150)
    runs = [np.stack([np.minimum(gold, rng.integers(0, 4, size=150)), gold, gold], axis=1) for _ in range(4)]
    boot = Bootstrap(150, resamples=300, seed=5)
    one = boot.compare_seeds([runs[0]], [runs[1]])
    assert {k: v for k, v in one.items() if k != "seeds"} == boot.compare(runs[0], runs[1]) and one["seeds"] == 1
    two = boot.compare_seeds(runs[:2], runs[2:])
    first, second = boot.compare(runs[0], runs[2]), boot.compare(runs[1], runs[3])
    assert two["delta"] == pytest.approx((first["delta"] + second["delta"]) / 2, abs=0.01) and two["seeds"] == 2
    assert two["ci_low"] <= two["delta"] <= two["ci_high"]
    with pytest.raises(ValueError, match="one base and one other run per seed"):
        boot.compare_seeds(runs[:2], runs[2:3])


def test_train_fraction_takes_a_seeded_nested_subset():
    posts = [Post(f"p{i}", ["w"], ["O"]) for i in range(40)]
    half = training_subset(posts, DataConfig(train_fraction=0.5), seed=3)
    assert len(half) == 20 and half == training_subset(posts, DataConfig(train_fraction=0.5), seed=3)
    assert [p.id for p in half] == sorted((p.id for p in half), key=lambda s: int(s[1:]))  # file order kept
    assert half != training_subset(posts, DataConfig(train_fraction=0.5), seed=4)
    quarter = training_subset(posts, DataConfig(train_fraction=0.25), seed=3)
    assert {p.id for p in quarter} <= {p.id for p in half}
    assert training_subset(posts, DataConfig(limit_train=10, train_fraction=0.5), seed=3) == \
        training_subset(posts[:10], DataConfig(train_fraction=0.5), seed=3)
    assert training_subset(posts, DataConfig(), seed=3) == posts
    for bad in ("0", "1.5"):
        with pytest.raises(MmnerError, match="data.train_fraction"):
            load_config("configs/tiny.yaml", [f"data.train_fraction={bad}"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_params, tiny_corpus) -> tuple[Path, Path]:
    """Two one-epoch tiny bert-crf runs on the same test set: half and all of the training posts."""
    from mmner.train.run import train

    root = tmp_path_factory.mktemp("report-runs")
    out = []
    for name, fraction in (("half", 0.5), ("full", 1.0)):
        base = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)
        base["data"]["train_fraction"] = fraction
        train(load_config(None, base=base), root / name, quiet=True)
        out.append(root / name)
    return out[0], out[1]


def test_train_fraction_is_recorded(two_runs):
    half, full = (json.loads((d / "metrics.json").read_text())["test"] for d in two_runs)
    assert (half["train_fraction"], half["train_posts"]) == (0.5, 12)
    assert (full["train_fraction"], full["train_posts"]) == (1.0, 24)


def test_tracked_run_reads_tags_instead_of_conll(tmp_path, two_runs):
    """A tracked copy of a run (benchmarks/track_runs.py: predictions as tags, no CoNLL with the words)
    loads with the same predictions; a tags file that does not match the split is a one-line error."""
    import shutil
    import subprocess
    import sys

    from mmner.analysis import runs as run_data

    copy = tmp_path / "runs" / "full"
    shutil.copytree(two_runs[1], copy)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "track_runs.py"
    done = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "runs"), "--dry-run"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["full"]
    sys.path.insert(0, str(script.parent))
    try:
        import track_runs
    finally:
        sys.path.remove(str(script.parent))
    trained = {p.name: p.read_text() for p in (copy / "predictions").glob("*.tags")}
    assert set(trained) == {"valid.tags", "test.tags"}  # `mmner train` writes them at the end
    assert track_runs.write_tags(copy) == []  # up to date: nothing rewritten
    for tags in (copy / "predictions").glob("*.tags"):
        tags.unlink()
    assert {p.name for p in track_runs.write_tags(copy)} == {"valid.tags", "test.tags"}
    assert {p.name: p.read_text() for p in (copy / "predictions").glob("*.tags")} == trained
    for conll in (copy / "predictions").glob("*.conll"):
        conll.unlink()
    original, tracked = run_data.load(two_runs[1], "A"), run_data.load(copy, "B")
    assert tracked.pred == original.pred and len(tracked.pred) == len(original.posts)
    assert "\t" in (copy / "predictions" / "test.tags").read_text().splitlines()[0]
    lines = (copy / "predictions" / "test.tags").read_text().splitlines()
    (copy / "predictions" / "test.tags").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(MmnerError, match=r"test\.tags: .* posts but the split has"):
        run_data.load(copy, "B")
    pid, tags = lines[0].split("\t")
    (copy / "predictions" / "test.tags").write_text("\n".join([f"{pid}\t{tags} O", *lines[1:]]) + "\n")
    with pytest.raises(MmnerError, match=r"test\.tags:1: post .* tags, but"):
        run_data.load(copy, "B")


def test_report_one_run(monkeypatch, capsys, tmp_path, two_runs):
    out = tmp_path / "one" / "report.html"
    code, _, err = run_cli(monkeypatch, capsys, "report", str(two_runs[1]), "--output", str(out),
                                "--resamples", "200")
    assert code == 0, err
    page = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    assert not EXTERNAL.search(page) and "http://" not in page and "https://" not in page
    for section in ("scores", "entities", "length", "curves", "relation", "attention", "errors"):
        assert f'id="{section}"' in page
    assert page.count('<div class="runs">') == 1  # the run's identity heads the page, once
    assert "gives no relation score" in page and "gives no attention maps" in page
    assert data["scores"]["runs"]["R1"]["f1"] == json.loads((two_runs[1] / "metrics.json").read_text())["test"]["f1"]
    assert data["runs"][0]["seed"] == 7 and data["runs"][0]["visual_source"] == "none"
    assert not data["curves"]["plotted"]
    for p in data["errors"]["posts"]:
        assert f'id="post-{p["id"]}"' in page


def test_report_two_runs_side_by_side(tmp_path, two_runs):
    from mmner.analysis.report import write_report

    first = write_report(list(two_runs), tmp_path / "a.html", resamples=200, seed=1)
    again = write_report(list(two_runs), tmp_path / "b.html", resamples=200, seed=1)
    assert first[1].read_text() == again[1].read_text()  # deterministic, bootstrap included
    data = json.loads(first[1].read_text())
    diff = data["scores"]["differences"][0]
    assert diff["paired"] and diff["run"] == "R2" and diff["baseline"] == "R1"
    assert {"delta", "ci_low", "ci_high", "p_value"} <= set(diff["overall"])
    assert set(diff["per_type"]) == set(data["scores"]["types"])
    assert data["curves"]["plotted"] and {p["train_posts"] for p in data["curves"]["points"]} == {12, 24}
    assert data["entity_slices"]["runs"]["R1"]["train_posts"] == 12
    page = first[0].read_text()
    assert "R2 F1" in page and "Δ F1 R2−R1" in page and "paired bootstrap" in page
    assert not EXTERNAL.search(page)


def test_report_relation_and_attention_files(tmp_path, two_runs):
    """A run that carries relation scores and attention maps gets both sections drawn."""
    from mmner.analysis.report import write_report
    from mmner.analysis.runs import load

    run = tmp_path / "rp"
    shutil.copytree(two_runs[1], run, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors", "logs"))
    posts = load(run, "R1").posts
    extras = []
    for i, post in enumerate(posts):
        words = [[0.1 * (i % 3)] * 4 for _ in post.tokens]  # per word and region, as models.blocks.attention_rows
        extras.append({"relation_score": i / (len(posts) - 1),
                       "attention": {"weights": np.sum(words, axis=0), "words": words, "grid": [2, 2]}})
    written = write_post_outputs(run, "test", posts, extras, [p.tags for p in posts])
    assert [p.name for p in written] == ["test.relation.jsonl", "test.attention.jsonl"]
    metrics = json.loads((run / "metrics.json").read_text())  # TRC test scores, as rpbert's training adds them
    metrics["test"]["trc"] = {"rows": 10, "accuracy": 70.0, "precision": 75.0, "recall": 60.0, "f1": 66.67,
                              "confusion": {"tp": 3, "fp": 1, "fn": 2, "tn": 4}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert read_relation(written[0])[posts[-1].id] == 1.0
    maps = read_attention(written[1])
    assert maps[posts[0].id]["grid"] == [2, 2]
    gold = [slices.post_entities([p], [p.tags])[0].gold for p in posts]
    assert [{(x["type"], x["start"], x["end"]) for x in maps[p.id]["entities"]} for p in posts] == gold

    page_path, json_path = write_report([run], tmp_path / "rp.html", resamples=100)
    data = json.loads(json_path.read_text())
    rel = data["relation"]["runs"]["R1"]
    assert rel["posts_scored"] == len(posts)
    assert rel["image_adds"]["posts"] + rel["image_does_not_add"]["posts"] == len(posts)
    assert rel["s_tv"]["posts"] == len(posts)
    assert rel["trc"]["confusion"] == {"tp": 3, "fp": 1, "fn": 2, "tn": 4}
    att = data["attention"]["runs"]["R1"]
    assert att["shown"] and att["entity_maps"] == sum(len(g) for g in gold)
    page = page_path.read_text()
    assert 'alt="attention of R1: ' in page and 'alt="r against S_TV"' in page
    assert "TRC test rows" in page and "gold: image doesn&#x27;t add</td><td>1</td><td>4</td>" in page
    entity_panel = next(p for p in att["panels"] if p["entity"])
    assert entity_panel["title"] in page and f"({entity_panel['entity']['type']})" in entity_panel["title"]
    assert not EXTERNAL.search(page)

    (run / "predictions" / "test.relation.jsonl").write_text('{"id": "test-0", "relation_score": 2}\n')
    with pytest.raises(MmnerError, match=r"test.relation.jsonl:1: relation_score must be"):
        write_report([run], tmp_path / "bad.html")


def test_report_bad_input_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "nope"), "--output", str(tmp_path / "r.html"))
    assert code == 2 and "nope" in err and err.count("\n") == 1


def test_report_notes_unpaired_runs_and_a_changed_f1(tmp_path, two_runs, tiny_corpus):
    """Two runs tested on other posts are not compared post by post (a note says so), and a run whose
    F1 recomputed from its predictions differs from its metrics.json is named in a warning."""
    import shutil

    import yaml

    from mmner.analysis import runs as run_data
    from mmner.analysis.report import analyse, render

    other = tmp_path / "other"
    shutil.copytree(two_runs[1], other)  # the same run, "tested" on the valid posts instead
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["data"]["test"] = str(tiny_corpus["valid"])
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(other / "predictions" / "valid.conll", other / "predictions" / "test.conll")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["test"].update(f1=12.34, data_sha1=metrics["valid"]["data_sha1"],  # f1: not what the predictions give
                           dataset=metrics["valid"]["dataset"])
    (other / "metrics.json").write_text(json.dumps(metrics))
    runs = [run_data.load(two_runs[1], "A"), run_data.load(other, "B")]
    data = analyse(runs, resamples=200)
    (diff,) = data["scores"]["differences"]
    assert diff["paired"] is False and "B was tested on other posts than A: no paired comparison" in diff["note"]
    page = render(runs, data)
    assert "B was tested on other posts than A: no paired comparison" in page
    assert "differs from metrics.json for B" in page and "for A," not in page
    # the same two runs on the same posts: paired, no note, no warning
    same = analyse([runs[0], run_data.load(two_runs[0], "C")], resamples=200)
    assert [d["paired"] for d in same["scores"]["differences"]] == [True]
    assert "differs from metrics.json" not in render([runs[0], run_data.load(two_runs[0], "C")], same)
