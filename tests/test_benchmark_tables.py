"""The benchmark tables (benchmarks/compare.py, baselines.py) from hand-made run directories: rows,
Δ paired by seed, the † fallback, configs not yet run, low-resource runs kept out, and the R-GCN rows'
graph settings (rgcn.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("baselines", "compare", "chen"):
        sys.modules.pop(name, None)
    import baselines
    import chen
    import compare

    return baselines, compare, chen


def make_run(runs: Path, name: str, model: str, seed: int, f1: float, visual: str = "none", fraction: float = 1.0) -> None:
    run = runs / name
    run.mkdir(parents=True)
    test = {"f1": f1, "precision": f1, "recall": f1, "gold_entities": 1351, "dataset": "twitter2017:test",
            "model": model, "encoder": "minilm-l6", "visual_source": visual, "seed": seed, "epochs": 6,
            "best_epoch": 5, "seconds_per_epoch": 100.0, "train_seconds": 600.0, "device": "cpu",
            "git_commit": "abc", "masked_images": 50 if visual != "none" else 0, "train_fraction": fraction}
    if visual != "none":
        test["visual_detail"] = "BLIP-2 caption (captions/blip2_twitter2017.txt)"
    (run / "metrics.json").write_text(json.dumps({"test": test, "valid": {"f1": round(f1 + seed / 100, 2)}}))


def test_chen_table_pairs_deltas_by_seed(bench, tmp_path):
    _, compare, chen = bench
    runs = tmp_path / "runs"
    for seed, f1 in ((13, 80.0), (21, 82.0), (42, 84.0)):
        make_run(runs, f"bert-crf-minilm-twitter2017-s{seed}", "bert-crf", seed, f1)
    make_run(runs, "bert-crf-caption-minilm-twitter2017-s13", "bert-crf-caption", 13, 81.0, "caption")
    make_run(runs, "bert-crf-caption-minilm-twitter2017-s21", "bert-crf-caption", 21, 83.5, "caption")
    make_run(runs, "fusion-cm-minilm-twitter2017-s99", "fusion-cm", 99, 85.0, "caption")
    make_run(runs, "fusion-cm-minilm-twitter2017-f0.1-s13", "fusion-cm", 13, 60.0, "caption", fraction=0.1)
    out = tmp_path / "chen.md"
    compare.table(chen.SPEC, runs, out)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    assert rows["bert-crf-caption"][4] == "82.25 ± 1.77" and rows["bert-crf-caption"][5] == "+1.25"  # 82.25 vs 81.0 (s13, 21)
    assert rows["fusion-cm"][4] == "85.00" and rows["fusion-cm"][5] == "+3.00 †"  # no seed 99: vs all seeds
    assert rows["bert-crf"][4] == "82.00 ± 2.00" and rows["bert-crf"][5] == "+0.00"  # the reference itself
    text = out.read_text()
    assert "60.00" not in text and "f0.1" not in text  # the low-resource run is no row
    assert "`fusion-vam-minilm-twitter2017`" in text.split("Not run yet")[1]
    assert "`bert-crf-caption-minilm-twitter2017`" not in text.split("Not run yet")[1]


def rgcn_config(run: Path, **model) -> None:
    (run / "config.yaml").write_text(json.dumps({"seed": 13, "model": {"name": "rgcn", **model}}))  # JSON is YAML


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """The markdown table's rows by their first cell, as {header: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:] if not line.startswith("| config")]
    return {cells[0]: dict(zip(header, cells)) for cells in rows}


def test_rgcn_table_states_each_rows_threshold_and_depth(bench, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("rgcn", None)
    import rgcn

    _, compare, _ = bench
    runs = tmp_path / "runs"
    make_run(runs, "bert-crf-minilm-twitter2017-s13", "bert-crf", 13, 80.0)
    for seed in (13, 21):  # the graph keys as configs write them now, one graph with its own threshold
        make_run(runs, f"rgcn-minilm-twitter2017-s{seed}", "rgcn", seed, 82.0, "caption")
        rgcn_config(runs / f"rgcn-minilm-twitter2017-s{seed}", neighbors=5, threshold=0.2, inter_threshold=0.4,
                    intra_threshold=None, edge_weights="binary", gcn_layers=3, inter=True, intra=True)
    # a run from before the per-graph thresholds and edge weights: their defaults, as it was trained
    make_run(runs, "rgcn-inter-only-minilm-twitter2017-s13", "rgcn", 13, 81.0, "caption")
    rgcn_config(runs / "rgcn-inter-only-minilm-twitter2017-s13", neighbors=5, threshold=0.0, gcn_layers=2, intra=False)
    # runs of one row that differ are listed per run in seed order; a run without config.yaml is "?"
    for seed, layers in ((13, 1), (21, 2), (42, None)):
        make_run(runs, f"rgcn-intra-only-minilm-twitter2017-s{seed}", "rgcn", seed, 81.0, "caption")
        if layers is not None:
            rgcn_config(runs / f"rgcn-intra-only-minilm-twitter2017-s{seed}", gcn_layers=layers, inter=False,
                        intra_threshold=0.5)
    out = tmp_path / "rgcn.md"
    compare.table(rgcn.SPEC, runs, out)
    rows = table_rows(out.read_text())
    assert {k: rows["rgcn"][k] for k in ("threshold", "GCN layers", "k, edges")} == {
        "threshold": "inter 0.4, intra 0.2", "GCN layers": "3", "k, edges": "5, binary"}
    assert {k: rows["rgcn-inter-only"][k] for k in ("threshold", "GCN layers", "k, edges")} == {
        "threshold": "0.0", "GCN layers": "2", "k, edges": "5, cosine"}
    assert {k: rows["rgcn-intra-only"][k] for k in ("threshold", "GCN layers", "k, edges")} == {
        "threshold": "0.5; 0.5; ?", "GCN layers": "1; 2; ?", "k, edges": "5, cosine; 5, cosine; ?"}
    assert {k: rows["bert-crf"][k] for k in ("threshold", "GCN layers", "k, edges")} == {
        "threshold": "–", "GCN layers": "–", "k, edges": "–"}
    records = {r["run"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert records["rgcn-minilm-twitter2017-s13"]["graph"] == {
        "neighbors": 5, "edge_weights": "binary", "gcn_layers": 3, "inter_threshold": 0.4, "intra_threshold": 0.2}
    assert records["rgcn-inter-only-minilm-twitter2017-s13"]["graph"]["intra_threshold"] is None
    assert records["rgcn-intra-only-minilm-twitter2017-s42"]["graph"] is None


def test_baselines_table_keeps_text_only_baselines(bench, tmp_path):
    baselines, _, _ = bench
    runs = tmp_path / "runs"
    make_run(runs, "bert-crf-minilm-twitter2017-s13", "bert-crf", 13, 80.0)
    make_run(runs, "bert-crf-caption-minilm-twitter2017-s13", "bert-crf-caption", 13, 81.0, "caption")
    make_run(runs, "umt-no-image-minilm-twitter2017-s13", "umt", 13, 79.0)
    make_run(runs, "bert-crf-minilm-twitter2017-f0.5-s13", "bert-crf", 13, 70.0, fraction=0.5)
    out = tmp_path / "baselines.md"
    baselines.table(runs, out)
    records = json.loads(out.with_suffix(".json").read_text())
    assert [r["run"] for r in records] == ["bert-crf-minilm-twitter2017-s13"]


def test_baselines_table_has_the_papers_baselines_and_the_image_at_t0(bench, tmp_path):
    """Chen et al.'s text-only VisualBERT, RpBERT's biLSTM-CRF + BERT and biLSTM-CRF w/ image at t = 0 are rows;
    the last with its F1 minus biLSTM-CRF's (same vectors, paired by seed) and every row with its paper's F1."""
    baselines, _, _ = bench
    runs = tmp_path / "runs"
    make_run(runs, "visualbert-crf-text-minilm-twitter2017-s13", "visualbert-crf", 13, 80.5)
    make_run(runs, "bilstm-crf-bert-minilm-twitter2017-s13", "rpbert", 13, 79.0)
    for seed, f1, f1_image in ((13, 60.0, 61.5), (21, 62.0, 62.5)):
        make_run(runs, f"bilstm-crf-glove-twitter2017-s{seed}", "bilstm-crf", seed, f1)
        make_run(runs, f"bilstm-crf-image-glove-twitter2017-s{seed}", "bilstm-crf", seed, f1_image, "caption")
    make_run(runs, "bilstm-crf-image-glove-twitter2017-s42", "bilstm-crf", 42, 70.0, "caption")  # no pair
    for run in runs.glob("bilstm-crf-*glove*"):
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test"]["encoder"] = "glove-50d"
        (run / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "baselines.md"
    baselines.table(runs, out)
    lines = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = {r["row"]: r for r in (dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[1:])}
    assert set(rows) == {"visualbert-crf-text", "bilstm-crf-bert", "bilstm-crf", "bilstm-crf-image"}
    assert rows["bilstm-crf-image"]["Δ image"] == "+1.00 (2 seeds)"  # (61.5 - 60 + 62.5 - 62) / 2; seed 42 unpaired
    assert rows["bilstm-crf-image"]["visual"] == "caption" and rows["bilstm-crf"]["Δ image"] == "–"
    assert rows["bilstm-crf-image"]["paper F1"].startswith("80.6 (Sun et al. Table 4")
    assert rows["bilstm-crf-bert"]["model"] == "rpbert" and rows["bilstm-crf-bert"]["paper F1"].startswith("85.1 ")
    assert rows["visualbert-crf-text"]["paper F1"].startswith("83.9 (Chen et al. Exp 1.2")


# -- the leaderboard: every system against bert-crf, with a paired bootstrap over test posts ------


def make_scored_run(runs: Path, name: str, model: str, seed: int, gold: Path, wrong: int, visual: str = "none") -> float:
    """A run whose test predictions are the gold tags with the entities of the first `wrong` posts removed;
    returns its F1."""
    from mmner.data.readers import read_conll, write_conll
    from mmner.tagging.scorer import score

    posts = read_conll(gold)
    pred = [["O"] * len(p.tokens) if i < wrong else list(p.tags) for i, p in enumerate(posts)]
    f1 = score([p.tags for p in posts], pred)["f1"]
    make_run(runs, name, model, seed, f1, visual)
    run = runs / name
    (run / "config.yaml").write_text(f"seed: {seed}\ndata:\n  train: {gold}\n  test: {gold}\n")
    (run / "predictions").mkdir()
    write_conll(run / "predictions" / "test.conll", posts, pred)
    return f1


def test_leaderboard_ranks_systems_and_pairs_them_with_bert_crf_by_seed(bench, monkeypatch, tmp_path, tiny_corpus):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("leaderboard", None)
    import leaderboard

    gold, runs = tiny_corpus["test"], tmp_path / "runs"
    ref = {s: make_scored_run(runs, f"bert-crf-minilm-twitter2017-s{s}", "bert-crf", s, gold, w)
           for s, w in ((13, 6), (21, 4))}
    cap = {s: make_scored_run(runs, f"bert-crf-caption-minilm-twitter2017-s{s}", "bert-crf-caption", s, gold, w,
                              "caption") for s, w in ((13, 2), (21, 2), (42, 0))}
    worse = make_scored_run(runs, "umt-no-gate-minilm-twitter2017-s13", "umt", 13, gold, 10, "caption")
    sections = leaderboard.build(runs, resamples=300, seed=0)
    (sec,) = sections
    assert [r["system"] for r in sec["rows"]] == ["bert-crf-caption", "bert-crf", "umt-no-gate"]
    top, base, last = sec["rows"]
    assert "vs_reference" not in base and base["seeds"] == [13, 21]
    vs = top["vs_reference"]
    assert vs["seeds"] == [13, 21]  # seed 42 has no bert-crf to pair with
    assert vs["delta"] == pytest.approx(((cap[13] - ref[13]) + (cap[21] - ref[21])) / 2, abs=0.01)  # (F1s rounded)
    assert vs["delta"] > 0
    assert vs["ci_low"] <= vs["delta"] <= vs["ci_high"] and 0 < vs["p_value"] <= 1
    assert last["vs_reference"]["delta"] == pytest.approx(worse - ref[13], abs=0.01) and worse < ref[13]
    text = leaderboard.render(sections, 300)
    assert "| 1 | `bert-crf-caption` | caption | 13, 21, 42 |" in text and "(seeds 13, 21)" in text
    assert leaderboard.build(runs, 300, 0) == sections  # the bootstrap is a function of its seed


def test_summary_answers_the_question_and_compares_caption_sources(bench, monkeypatch, tmp_path, tiny_corpus):
    """benchmarks/summary.py: each multimodal row's Δ vs bert-crf with the paper's Δ beside it, which gains
    the interval separates from 0, the losses, and owl runs paired with their BLIP-2 twins by seed."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("leaderboard", "summary"):
        sys.modules.pop(name, None)
    import summary

    gold, runs = tiny_corpus["test"], tmp_path / "runs"
    for s in (13, 21):
        make_scored_run(runs, f"bert-crf-minilm-twitter2017-s{s}", "bert-crf", s, gold, 5)
        make_scored_run(runs, f"umt-minilm-twitter2017-s{s}", "umt", s, gold, 0, "caption")  # every post right
        make_scored_run(runs, f"fusion-cm-minilm-twitter2017-s{s}", "fusion-cm", s, gold, 7, "caption")  # worse
        make_scored_run(runs / "owl", f"umt-minilm-twitter2017-s{s}", "umt", s, gold, 3, "caption")
        make_scored_run(runs, f"visualbert-crf-text-minilm-twitter2017-s{s}", "visualbert-crf", s, gold, 6)
        make_scored_run(runs, f"visualbert-crf-minilm-twitter2017-s{s}", "visualbert-crf", s, gold, 5, "caption")
    out = tmp_path / "summary.md"
    assert summary.main(["--runs-dir", str(runs), "--output", str(out), "--resamples", "300"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {r["system"]: r for r in data["rows"]}
    assert set(rows) == {"umt", "fusion-cm", "visualbert-crf"}  # text-only runs are no rows
    own = rows["visualbert-crf"]["own_baseline"]  # the paper's own text-only baseline, Exp 1.2
    assert own["system"] == "visualbert-crf-text" and own["delta"] > 0 and own["seeds"] == [13, 21]
    assert rows["visualbert-crf"]["delta"] == pytest.approx(0, abs=0.01) and rows["umt"]["own_baseline"] is None
    assert rows["umt"]["delta"] > 0 and rows["umt"]["paper_delta"] == pytest.approx(1.87)
    assert rows["fusion-cm"]["delta"] < 0 and rows["fusion-cm"]["paper_delta"] == pytest.approx(0.96)
    for r in rows.values():
        assert r["ci"][0] <= r["delta"] <= r["ci"][1] and r["paired_seeds"] == [13, 21]
        assert r["distinguishable"] == (r["ci"][0] > 0 or r["ci"][1] < 0)
    (owl,) = data["caption_sources"]
    assert owl["config"] == "umt" and owl["paired_seeds"] == [13, 21] and owl["delta"] < 0  # 3 posts wrong vs 0
    text = out.read_text()
    assert "Systems below text-only bert-crf: `fusion-cm` on twitter2017" in text
    assert "| `umt` | caption | 13, 21 |" in text and out.with_suffix(".png").is_file()


def test_speed_table_sets_int8_rows_beside_their_fp32_run(monkeypatch):
    """benchmarks/speed.py: an int8 row is named so, and its F1 cost and speed-up are stated against the
    same run's fp32 row, over or within the budget for being on by default."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("speed", None)
    import speed

    def row(run: str, f1: float, p50: float, int8: bool) -> dict:
        return {"run": f"runs/{run}", "model": "bert-crf-caption", "visual_source": "caption", "attention": False,
                "int8": int8, "f1": f1, "batch_32": 150.0 if not int8 else 210.0, "batch_1": 60.0,
                "latency_ms": {"p50": p50, "p95": p50 + 2}, "http": {"p50": p50 + 3, "p95": p50 + 6}}

    result = {"device": "cpu", "threads": 2, "posts": 723, "commit": "abc",
              "hf_pipeline": {"batch_32": 150.0, "batch_1": 50.0},
              "runs": [row("caption-s13", 82.95, 14.5, False), row("caption-s13", 82.37, 10.5, True),
                       row("crf-s13", 82.86, 12.0, False), row("crf-s13", 82.80, 9.0, True)]}
    text = speed.render(result)
    assert "| `caption-s13` `--int8` | bert-crf-caption | caption | 210.0 | 1.40x |" in text
    assert ("- `caption-s13`: test F1 0.58 lower (over the 0.2 budget); single post p50 10.5 ms vs 14.5 ms in "
            "process, 13.5 vs 17.5 ms over HTTP; batch 32 1.40x the fp32 posts/s.") in text
    assert "- `crf-s13`: test F1 0.06 lower (within the 0.2 budget)" in text


def test_a_resumed_runs_commits_are_all_named(bench):
    baselines, _, _ = bench
    assert baselines.commits_cell({"git_commit": "abc"}) == "commit abc"
    assert baselines.commits_cell({"git_commit": "def", "git_commits": ["abc", "def"]}) == "commits abc, def"


def test_best_counts_the_systems_runs_made_before_it_had_a_name(bench, monkeypatch, tmp_path, tiny_corpus):
    """benchmarks/best.py: a bert-crf-caption run under caption-distill/ whose every other key equals the
    system's config is one of the system's runs (a named run comes first for its seed); one with another key
    is not. The leaderboard ranks them as caption-distill, paired with bert-crf by seed; the summary leaves it out."""
    import yaml

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("leaderboard", "best", "summary"):
        sys.modules.pop(name, None)
    import best
    import leaderboard

    from mmner.config import load_config

    gold, runs = tiny_corpus["test"], tmp_path / "runs"
    system = tmp_path / "caption-distill-minilm-twitter2017.yaml"
    system.write_text(yaml.safe_dump({
        "model": {"name": "caption-distill", "encoder": "minilm-l6"},
        "data": {"train": str(gold), "valid": str(gold), "test": str(gold)}, "visual": {"source": "caption"},
        "distill": {"targets": ["teacher.marginals.jsonl.gz"], "weight": 0.5}}))
    monkeypatch.setattr(best, "system_config", lambda dataset: system)

    def unnamed(seed: int, wrong: int, *keys: str) -> float:
        name = f"bert-crf-caption-minilm-twitter2017-s{seed}"
        f1 = make_scored_run(runs / "caption-distill", name, "bert-crf-caption", seed, gold, wrong, "caption")
        config = load_config(system, ["model.name=bert-crf-caption", f"seed={seed}", *keys])
        (runs / "caption-distill" / name / "config.yaml").write_text(config.to_yaml())
        return f1

    f13 = unnamed(13, 1)
    unnamed(21, 2)
    unnamed(42, 3, "distill.weight=1.0")  # another recipe: not the system
    f21 = make_scored_run(runs, "caption-distill-minilm-twitter2017-s21", "caption-distill", 21, gold, 0, "caption")
    got = best.system_runs(runs, "twitter2017")
    assert [(r["seed"], r["run"]) for r in got] == [(13, "caption-distill/bert-crf-caption-minilm-twitter2017-s13"),
                                                    (21, "caption-distill-minilm-twitter2017-s21")]
    make_scored_run(runs, "bert-crf-minilm-twitter2017-s13", "bert-crf", 13, gold, 4)
    (sec,) = leaderboard.build(runs, resamples=100, seed=0)
    row = next(r for r in sec["rows"] if r["system"] == "caption-distill")
    assert row["seeds"] == [13, 21] and row["vs_reference"]["seeds"] == [13] and row["results"] == "best"
    assert row["f1"] == pytest.approx((f13 + f21) / 2, abs=0.01) and row["vs_reference"]["delta"] > 0
    import summary  # its gain is the teacher's: no row of "does the image help?"

    assert "caption-distill" not in {r["system"] for r in summary.question_rows([sec])}


def test_best_pairs_ablations_with_the_system_and_variants_with_the_earlier_recipe(bench, monkeypatch, tmp_path,
                                                                                   tiny_corpus):
    """benchmarks/best.py: an ablation's runs are paired with the system's of the same seed; the earlier recipe's
    runs (under caption-distill/, not the system's) are paired with the system, and its variants with them and
    with bert-crf-caption; the tables name each teacher and its training minutes."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("leaderboard", "best", "summary"):
        sys.modules.pop(name, None)
    import best

    gold, runs = tiny_corpus["test"], tmp_path / "runs"
    system = {s: make_scored_run(runs, f"caption-distill-minilm-twitter2017-s{s}", "caption-distill", s, gold, w,
                                 "caption") for s, w in ((13, 1), (21, 2))}
    earlier = {s: make_scored_run(runs / "caption-distill", f"bert-crf-caption-minilm-twitter2017-s{s}",
                                  "bert-crf-caption", s, gold, w, "caption") for s, w in ((13, 3), (21, 2))}
    monkeypatch.setattr(best, "same_recipe", lambda run_config, config: False)  # the earlier runs: another recipe
    make_scored_run(runs, "bert-crf-caption-minilm-twitter2017-s13", "bert-crf-caption", 13, gold, 5, "caption")
    ablation = make_scored_run(runs / "without-casing", "caption-distill-minilm-twitter2017-s13", "caption-distill", 13,
                               gold, 4, "caption")
    candidate = make_scored_run(runs / "caption-distill-30-epochs", "caption-distill-minilm-twitter2017-s21",
                                "caption-distill", 21, gold, 0, "caption")
    tag = next(iter(best.VARIANTS))
    variant = make_scored_run(runs / tag, "caption-distill-minilm-twitter2017-s13", "caption-distill", 13, gold, 0,
                              "caption")
    teachers = []

    def teacher(runs_dir, dataset, resamples, seed, config=None):
        teachers.append(config)
        return {"members": ["bert-crf-caption-mpnet-twitter2017-s13"], "min_votes": 1, "test_f1": 88.23,
                "train_minutes": 20.5}

    monkeypatch.setattr(best, "teacher_vote", teacher)
    data = best.build(runs, resamples=200, seed=0)
    assert [r["seeds"] for r in data["system"]] == [[13, 21]]
    (row,) = data["ablations"]
    assert row["tag"] == "without-casing" and row["vs_system"]["delta"] == pytest.approx(ablation - system[13], abs=0.02)
    (row,) = data["system_variants"]  # paired with the system's seed 21; valid F1 on the same seeds
    assert row["tag"] == "caption-distill-30-epochs" and row["vs_system"]["seeds"] == [21]
    assert row["vs_system"]["delta"] == pytest.approx(candidate - system[21], abs=0.02)
    assert row["valid_f1"] == round(candidate + 0.21, 2) and row["valid_f1_system"] == round(system[21] + 0.21, 2)
    (old,) = data["earlier"]
    assert old["runs"] == ["caption-distill/bert-crf-caption-minilm-twitter2017-s13",
                           "caption-distill/bert-crf-caption-minilm-twitter2017-s21"]
    assert old["vs_system"]["seeds"] == [13, 21] and old["vs_system"]["delta"] == pytest.approx(
        (earlier[13] + earlier[21] - system[13] - system[21]) / 2, abs=0.02)
    (row,) = data["variants"]
    assert row["tag"] == tag and row["seeds"] == [13] and row["f1_cell"] == f"{variant:.2f}"
    assert row["vs_system"]["seeds"] == [13] and row["vs_system"]["delta"] == pytest.approx(variant - earlier[13], abs=0.02)
    assert row["vs_bert-crf-caption"]["seeds"] == [13] and row["vs_bert-crf-caption"]["delta"] > 0
    assert teachers == [None, runs / "caption-distill" / "bert-crf-caption-minilm-twitter2017-s13" / "config.yaml",
                        runs / tag / "caption-distill-minilm-twitter2017-s13" / "config.yaml"]
    text = best.render(data, 200)
    line = next(x for x in text.splitlines() if f"`{tag}`" in x)
    assert "88.23 (1 run; 20.5 min)" in line and line.rstrip(" |").endswith("10.0")
    assert "| twitter2017 | `without-casing` | word shapes in the student" in text
    line = next(x for x in text.splitlines() if "`caption-distill-30-epochs`" in x)
    assert f"| 21 | {candidate + 0.21:.2f} | {system[21] + 0.21:.2f} | {candidate:.2f} | +" in line


def test_rpbert_supervision_is_chosen_on_valid_f1(bench, tmp_path):
    """The choice reads valid F1 only, over the seeds all three supervisions have, and says whether the
    default (no relation supervision) stays."""
    sys.modules.pop("rpbert", None)
    import rpbert

    runs = tmp_path / "runs"
    valid = {("soft", 13): 84.0, ("soft", 21): 83.0, ("soft", 42): 90.0,  # seed 42: not shared by all three
             ("soft-trc", 13): 85.0, ("soft-trc", 21): 83.5, ("soft-weak", 13): 80.0, ("soft-weak", 21): 81.0}
    for (variant, seed), f1 in valid.items():
        make_run(runs, f"rpbert-{variant}-minilm-twitter2017-s{seed}", "rpbert", seed, 99.0 - f1, "caption")
        metrics = runs / f"rpbert-{variant}-minilm-twitter2017-s{seed}" / "metrics.json"
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "valid": {"f1": f1}}))
    lines = rpbert._supervision_section(tmp_path / "rpbert.md", runs)
    (line,) = [x for x in lines if x.startswith("- ")]
    assert line.startswith("- twitter2017, minilm-l6, seeds 13, 21: `soft`, none: 83.50; `soft-trc`, TRC, images masked: "
                           "84.25; `soft-weak`, weak labels (BLIP-2): 80.50; best on valid: `soft-trc`, better than")
    (runs / "rpbert-soft-trc-minilm-twitter2017-s21" / "metrics.json").unlink()  # now seed 13 only: 84.0 vs 85.0
    (runs / "rpbert-soft-trc-minilm-twitter2017-s13" / "metrics.json").write_text(
        (runs / "rpbert-soft-minilm-twitter2017-s13" / "metrics.json").read_text().replace('"f1": 84.0', '"f1": 83.9'))
    (line,) = [x for x in rpbert._supervision_section(tmp_path / "rpbert.md", runs) if x.startswith("- ")]
    assert "seeds 13:" in line and "best on valid: `soft`, the default of `rpbert-soft` (no relation supervision) stays" in line


def test_rgcn_index_record_is_kept_with_the_run_for_a_checkout_without_the_index(monkeypatch, tmp_path):
    import shutil

    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("rgcn", None)
    import rgcn

    from mmner.models.rgcn import INDEX_DIR, RelationIndex

    run = tmp_path / "rgcn-minilm-twitter2017-s13"
    index = RelationIndex(4, 4)
    valid = torch.tensor([True, True, False])
    index.set(torch.randn(3, 4), torch.randn(3, 4), valid, ["a", "b", "c"], build_seconds=1.5)
    index.save(run / INDEX_DIR)
    record = rgcn.index_record(run, k=2, batch=2)
    assert record["index_posts"] == 3 and record["index_build_seconds"] == 1.5
    assert record["retrieval_ms_per_post"] > 0
    shutil.rmtree(run / INDEX_DIR)  # a fresh clone: the index stays on the machine that trained the run
    assert rgcn.index_record(run, k=2, batch=2) == record
    (run / rgcn.SUMMARY).unlink()
    assert rgcn.index_record(run, k=2, batch=2) is None


def test_best_names_the_teacher_and_its_fold_runs(bench, monkeypatch, tmp_path):
    """benchmarks/best.py: with cross-fitted targets, the teacher is the members of the first file that is not one
    fold's; the fold runs add their training minutes and their own test F1 to its cell."""
    import torch
    import yaml

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("leaderboard", "best", "summary", "ensemble"):
        sys.modules.pop(name, None)
    import best
    import ensemble

    from mmner.train.distill import write_marginals

    rows = [("1", torch.full((2, 3), 1 / 3))]
    files = []
    for name, members, fold in (("fold0", "teacher-fold0/t-s13", {"fold": 0, "folds": 2}),
                                ("fold1", "teacher-fold1/t-s13", {"fold": 1, "folds": 2}),
                                ("other", "teacher/t-s13", None)):
        files.append(tmp_path / f"{name}.marginals.jsonl.gz")
        write_marginals(files[-1], "twitter2017:train", ["O", "B-PER", "I-PER"], rows, members={members: "abc"},
                        **({"fold": fold} if fold else {}))
    config = tmp_path / "system.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "caption-distill", "encoder": "minilm-l6"}, "data": {"train": "twitter2017:train"},
        "visual": {"source": "caption"}, "distill": {"targets": [str(f) for f in files], "weight": 0.5}}))
    f1 = {"teacher": 88.3, "teacher-fold0": 86.75, "teacher-fold1": 87.27}
    monkeypatch.setattr(best, "collect", lambda folder: [{"run": "t-s13", "f1": f1[folder.name], "seconds": 600}])
    monkeypatch.setattr(best, "training_seconds", lambda r: r["seconds"])
    voted = []
    monkeypatch.setattr(ensemble, "ensemble", lambda runs_dir, dataset, members, resamples, seed: voted.append(
        [m["run"] for m in members]) or {"min_votes": 1, "test_f1": members[0]["f1"]})
    got = best.teacher_vote(tmp_path / "runs", "twitter2017", 100, 0, config)
    assert voted == [["teacher/t-s13"]]
    assert got == {"members": ["teacher/t-s13"], "min_votes": 1, "test_f1": 88.3,
                   "folds": {"teacher-fold0/t-s13": 86.75, "teacher-fold1/t-s13": 87.27}, "train_minutes": 30.0}
    assert best._teacher(got) == "88.30 (1 run and 2 fold runs, 86.75, 87.27; 30.0 min)"
    assert best._teacher({**got, "folds": {}}) == "88.30 (1 run; 30.0 min)"


def test_overlap_finds_near_copies_of_evaluation_posts(monkeypatch):
    """benchmarks/overlap.py: a post whose word set mostly matches an evaluation post is a near-copy (links,
    `RT`, punctuation and case aside); a different post, or one of fewer than 3 words, is not."""
    from mmner.data.post import Post

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("overlap", None)
    import overlap

    test = [Post("t1", "RT @ ann : Paris is lovely in May !".split()), Post("t2", "Go Spurs Go".split())]
    extra = [Post("x1", "Paris is lovely in May https://t.co/z".split()),  # 5 of its 6 words (the handle aside)
             Post("x2", "Paris is rainy in November".split()),  # 3 of 8 words: 0.375
             Post("x3", "Go Spurs".split())]  # fewer than 3 words
    found = overlap.near_copies(extra, test, 0.6)
    assert [(f["id"], f["other"], f["jaccard"]) for f in found] == [("x1", "t1", 0.833)]
