"""mmner's own system, caption-distill: docs/results/best.md (+ .json) from the runs of benchmarks/matrix-best.yaml.

    mmner sweep benchmarks/matrix-best.yaml          # the system (3 seeds, both datasets), then its ablations
    python benchmarks/best.py                        # the tables from what has finished
    python benchmarks/best.py --resamples 5000

Tables: caption-distill with MiniLM-L6 per dataset (mean ± std over seeds, training time per run on the machine
that trained it), its Δ vs text-only bert-crf and vs bert-crf-caption (the same network without the teacher)
paired by seed (paired bootstrap over test posts), the goal and the published BERT-base systems beside it; then
one row per ablation (each idea removed alone, benchmarks/runs/<tag>/), paired with the full system by seed;
then the earlier recipe (a MiniLM-L6 ensemble teacher), paired with the system, with its own ablations and the
variants that led from it to the system; then ideas tried on other systems or recipes.

The system's runs: those of configs/caption-distill-minilm-<dataset>.yaml, at the root and in the folders of
SYSTEM_PLACES, each run's keys checked against that config (a run under caption-distill/ trained
`bert-crf-caption`: it was made before the model had a name of its own; `caption-distill` only refuses to train
without a teacher). A seed trained in several places counts once, by the first. The earlier recipe's runs: those
under caption-distill/ that are not the system's.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from baselines import ROOT, collect, device_cell, run_commits, training_seconds, valid_f1, variant_of
from compare import _dataset
from leaderboard import arguments, post_counts
from summary import _p

SYSTEM = "caption-distill"
ENCODER = "minilm-l6"
# where else the system's runs are, as which model (each run's keys are checked against the system's config): the
# present recipe's runs, made while it was a variant; the earlier recipe's, made before the model had a name
SYSTEM_PLACES = (("caption-distill-mpnet-casing-crossfit", "caption-distill"), ("caption-distill", "bert-crf-caption"))
# the earlier recipe (a MiniLM-L6 ensemble teacher, no word shapes, 6 epochs): its runs' folder and model
EARLIER = ("caption-distill", "bert-crf-caption")
EARLIER_TEXT = ("the MiniLM-L6 ensemble teacher (the seed-13 runs of the dataset's systems, docs/results/ensemble.md: "
                "their mean CRF marginals and their vote on the other dataset's posts), no cross-fitting, no word shapes, "
                "6 epochs (patience 3)")
GOAL = {"twitter2015": 74.0, "twitter2017": 86.0}  # test F1, mean of 3 seeds (issue #19)
# Published multimodal systems with BERT-base (test F1 as each paper reports it; Twitter-2017 as released by UMT)
ANCHORS = [("UMT (Yu et al. 2020)", 73.41, 85.31), ("UMGF (Zhang et al. 2021)", 74.85, 85.51),
           ("HVPNeT (Chen et al. 2022)", 75.32, 86.87), ("MKGformer (Chen et al. 2022)", None, 87.49)]
# ablation tag -> (the model its runs train, what it removes) (benchmarks/matrix-best.yaml)
ABLATIONS = {
    "caption-distill-mpnet-casing": ("caption-distill", "cross-fitting: the full teacher's marginals of its own "
                                     "training posts (almost one-hot: it was trained on them) instead of the two fold "
                                     "teachers'; the recipe's runs under this name before cross-fitting joined it"),
    "without-mpnet-teacher": ("caption-distill", "the MPNet-base teacher and its fold runs: the earlier recipe's "
                              "MiniLM-L6 ensemble (its marginals and its vote on the other dataset's posts) instead"),
    "without-casing": ("caption-distill", "word shapes in the student (model.casing 0; the teacher keeps its own)"),
    "without-long-schedule": ("caption-distill", "the longer schedule: 6 epochs, patience 3"),
    "without-caption": ("bert-crf", "the caption: text-only bert-crf with the same teacher, posts, word shapes and "
                        "schedule"),
    "without-other-posts": ("caption-distill", "the other dataset's posts: soft targets for the dataset's own "
                            "training posts only"),
    "without-soft-targets": ("bert-crf-caption", "the soft targets: the other dataset's posts with the teacher's "
                             "tags, trained on the CRF loss alone (no distill)"),
}
# variant tag -> (the model its runs train, what it changes): the system with one key changed, a candidate for the
# recipe where its valid F1 is higher (benchmarks/matrix-best.yaml, Twitter-2017 seed 13 first)
SYSTEM_VARIANTS = {
    "caption-distill-30-epochs": ("caption-distill", "the schedule: up to 30 epochs (patience 5) instead of 20"),
    "caption-distill-weight-08": ("caption-distill", "the soft targets' weight: 0.8 instead of 0.5 (the CRF loss's "
                                  "0.2 instead of 0.5)"),
    "caption-distill-ema": ("caption-distill", "the weights' moving average (trainer.ema 0.999 a step) validated, "
                            "selected and saved instead of the trained weights"),
    "caption-distill-trc": ("caption-distill", "more untagged posts: the 4471 TRC tweets (text only; for Twitter-2015 "
                            "less the 9 near-copies of its valid and test posts) with the teacher's tags and "
                            "marginals, beside the other dataset's training posts"),
    "caption-distill-4fold": ("caption-distill", "4-fold cross-fitting: the dataset's own posts' marginals from four "
                              "fold teachers, each trained on three quarters of them, instead of two trained on "
                              "half"),
    "caption-distill-layer-decay": ("caption-distill", "layer-wise learning rates: the encoder's layer n of 6 at "
                                    "1e-4 x 0.9^(6 - n), its embeddings at 1e-4 x 0.9^6 (optim.layer_decay 0.9), "
                                    "instead of one rate"),
    "caption-distill-temperature-2": ("caption-distill", "a distillation temperature: the teacher's marginals of "
                                      "each word q^(1/2), renormalised, the model's of its CRF scores halved, the "
                                      "divergence x 4 (distill.temperature 2), instead of 1"),
    "caption-distill-folds2and4": ("caption-distill", "two held-out teachers of each of the dataset's own posts: "
                                   "the mean of the 2-fold teacher's marginals (trained on the other half) and the "
                                   "4-fold teacher's (on the other three quarters), instead of the 2-fold's alone"),
}
# the earlier recipe's ablations
EARLIER_ABLATIONS = {
    "caption-distill-own": ("bert-crf-caption", "the other dataset's posts: soft targets for the dataset's own training "
                            "posts only (no data.extra_train)"),
    "caption-selftrain": ("bert-crf-caption", "the soft targets: the other dataset's posts with the ensemble's voted "
                          "tags, trained on the CRF loss alone (no distill)"),
    "caption-distill-text": ("bert-crf", "the caption: the same teacher and posts, text only (bert-crf, "
                             "visual.source: none)"),
}
REFERENCES = ("bert-crf", "bert-crf-caption")
# variant tag -> (the model its runs train, what it changes): the earlier recipe with one change (teacher, word
# shapes or schedule), on the way to the system
VARIANTS = {
    "caption-distill-mpnet-teacher": ("caption-distill", "the teacher: one MPNet-base bert-crf-caption run of the dataset "
                                      "(seed 13, trained on the same CPU) in place of the MiniLM-L6 ensemble, for both its "
                                      "marginals and the other dataset's tags"),
    "caption-distill-mpnet-teacher-long": ("caption-distill", "the teacher as in caption-distill-mpnet-teacher, and a "
                                           "longer schedule: 10 epochs (patience 3) instead of 6"),
    "caption-distill-mpnet-teacher-20": ("caption-distill", "the teacher as in caption-distill-mpnet-teacher, and a "
                                         "longer schedule: 20 epochs (patience 5) instead of 6"),
    "caption-distill-casing": ("caption-distill", "word shapes: each word's casing class (lower, Title, UPPER, "
                               "mixed, ...) embedded in 16 dimensions beside its state (model.casing 16)"),
    "caption-distill-long": ("caption-distill", "the schedule: 20 epochs, early stopping after 5 without a better "
                             "valid F1 (instead of 6 epochs, patience 3); the same teacher"),
}
# ideas tried on another system or recipe: the runs under `tag` ("" for runs at the root) train `model`; they are
# paired with the runs of `base_model` under `base` (a tag folder, "" for the root), which `against` describes
IDEAS = [
    {"tag": "casing", "model": "bert-crf", "base": "casing-reference", "base_model": "bert-crf",
     "against": "bert-crf (its runs at the idea's commit, casing-reference/)",
     "adds": "word shapes: each word's casing class (lower, Title, UPPER, mixed, ...) embedded in 16 dimensions "
             "beside its state, the casing the uncased encoder loses (model.casing 16)"},
    {"tag": "", "model": "ctx-crf", "base": "", "base_model": "bert-crf-caption", "against": "bert-crf-caption",
     "adds": "the 3 training posts nearest to the post's text, their gold entities marked by type, after the caption "
             "(ctx-crf, a longer schedule: 12 epochs, patience 3)"},
]


def system_config(dataset: str) -> Path:
    return ROOT / "configs" / f"{SYSTEM}-{ENCODER.split('-')[0]}-{dataset}.yaml"


def same_recipe(run_config: Path, config: Path) -> bool:
    """Whether a run's config.yaml holds every key of `config` except the model's name and the seed."""
    from mmner.config import load_config

    def keys(c) -> dict:
        return {**c.model_dump(exclude={"model", "seed", "name"}),
                "model": {k: v for k, v in c.model_params().model_dump().items() if k != "name"}}

    return keys(load_config(run_config)) == keys(load_config(config))


def teacher_vote(runs_dir: Path, dataset: str, resamples: int, seed: int, config: Path | None = None) -> dict | None:
    """What the teacher of `config` (default: the system's config) reaches as an ensemble: entity-level vote of the
    members of its first marginals file that is not one fold's (benchmarks/ensemble.py, k chosen on valid; one
    member: its own tags), with the training minutes of every member of every file: cross-fitting's fold runs
    (`folds`, with their own test F1) count too. None when a member's run is not under `runs_dir`."""
    from ensemble import ensemble

    from mmner.config import load_config
    from mmner.train.distill import read_marginals

    headers = [read_marginals(ROOT / t)[0] for t in load_config(config or system_config(dataset)).distill.targets]
    whole = next((h for h in headers if "fold" not in h), headers[0])
    members = list(whole.get("members", {}))
    folds = list(dict.fromkeys(m for h in headers if "fold" in h for m in h.get("members", {}) if m not in members))
    # a member under a tag folder is named with it (teacher/bert-crf-caption-mpnet-twitter2015-s13)
    folders = {m.rpartition("/")[0] for m in members + folds}
    records = {r["run"]: r for f in folders for r in ({**x, "run": f"{f}/{x['run']}" if f else x["run"]}
                                                       for x in collect(runs_dir / f))}
    if not all(m in records for m in members + folds):
        return None
    voted = ensemble(runs_dir, dataset, [records[m] for m in members], resamples, seed)
    minutes = round(sum(training_seconds(records[m]) for m in members + folds) / 60, 1)
    return {"members": members, "min_votes": voted["min_votes"], "test_f1": voted["test_f1"],
            "folds": {m: records[m]["f1"] for m in folds}, "train_minutes": minutes}


def _runs(runs_dir: Path, variant: str, dataset: str) -> list[dict]:
    return sorted((r for r in collect(runs_dir) if variant_of(r["run"]) == variant and _dataset(r) == dataset
                   and r.get("encoder") == ENCODER), key=lambda r: r["seed"])


def system_runs(runs_dir: Path, dataset: str) -> list[dict]:
    """caption-distill's MiniLM-L6 runs on `dataset`, by seed, at the root and in SYSTEM_PLACES (module
    docstring); a run in a folder has its path under `runs_dir` as its `run`."""
    named = {r["seed"]: r for r in _runs(runs_dir, SYSTEM, dataset)}
    for tag, model in SYSTEM_PLACES:
        for r in _runs(runs_dir / tag, model, dataset):
            if r["seed"] not in named and same_recipe(runs_dir / tag / r["run"] / "config.yaml", system_config(dataset)):
                named[r["seed"]] = {**r, "run": f"{tag}/{r['run']}"}
    return [named[s] for s in sorted(named)]


def earlier_runs(runs_dir: Path, dataset: str, system: list[dict]) -> list[dict]:
    """The earlier recipe's runs on `dataset` (EARLIER's folder, less any that are the system's), `run` as a path."""
    tag, model = EARLIER
    taken = {r["run"] for r in system}
    return [{**r, "run": f"{tag}/{r['run']}"} for r in _runs(runs_dir / tag, model, dataset)
            if f"{tag}/{r['run']}" not in taken]


def _paired(runs_dir: Path, base_dir: Path, bases: list[dict], other_dir: Path, others: list[dict], resamples: int,
            seed: int) -> dict | None:
    from mmner.analysis.bootstrap import Bootstrap

    by_seed = {r["seed"]: r for r in bases}
    pairs = [(by_seed[o["seed"]], o) for o in others if o["seed"] in by_seed]
    if not pairs:
        return None
    b = [post_counts(base_dir, x["run"]) for x, _ in pairs]
    o = [post_counts(other_dir, y["run"]) for _, y in pairs]
    vs = Bootstrap(len(b[0]), resamples=resamples, seed=seed).compare_seeds(b, o)
    return {"delta": vs["delta"], "ci": [vs["ci_low"], vs["ci_high"]], "p": vs["p_value"],
            "seeds": [x["seed"] for x, _ in pairs]}


def _f1(runs: list[dict]) -> str:
    f1s = [r["f1"] for r in runs]
    return f"{f1s[0]:.2f}" if len(f1s) == 1 else f"{statistics.mean(f1s):.2f} ± {statistics.stdev(f1s):.2f}"


def _delta(vs: dict | None, resamples: int) -> str:
    if vs is None:
        return "–"
    return f"{vs['delta']:+.2f} [{vs['ci'][0]:+.2f}, {vs['ci'][1]:+.2f}] p {_p(vs['p'], resamples)}"


def _valid_f1(base_dir: Path, runs: list[dict]) -> float | None:
    """The mean valid F1 (of the selected epoch) of `runs`, each under `base_dir`; None without runs."""
    f1s = [valid_f1(base_dir, r["run"]) for r in runs]
    return round(statistics.mean(f1s), 2) if f1s else None


def _tried(runs_dir: Path, tag: str, tried: list[dict], system: list[dict], resamples: int, seed: int,
           base: str = "") -> dict:
    """A changed recipe's runs (benchmarks/runs/<tag>/) against those of the system it changes (under
    benchmarks/runs/<base>/), paired by seed, with their times and commits."""
    seeds = {r["seed"] for r in tried}
    return {"seeds": [r["seed"] for r in tried], "f1_cell": _f1(tried),
            "valid_f1": _valid_f1(runs_dir / tag, tried),
            "valid_f1_system": _valid_f1(runs_dir / base, [r for r in system if r["seed"] in seeds]),
            "vs_system": _paired(runs_dir, runs_dir / base, system, runs_dir / tag, tried, resamples, seed),
            "train_minutes": [round(training_seconds(r) / 60, 1) for r in tried], "device": _devices(tried),
            "commits": sorted({c for r in tried for c in run_commits(r)})}


def _devices(runs: list[dict]) -> str:
    """The device and precision of a row's runs: one, where all ran alike; else each run's, in seed order."""
    cells = [device_cell([r]) for r in runs]
    return cells[0] if len(set(cells)) == 1 else ", ".join(cells)


def _row(runs_dir: Path, dataset: str, runs: list[dict], resamples: int, seed: int, config: Path | None = None) -> dict:
    """A recipe's row: its runs' F1, Δ vs the references paired by seed, its teacher, epochs and times."""
    row = {"dataset": dataset, "seeds": [r["seed"] for r in runs], "f1": round(statistics.mean(r["f1"] for r in runs), 2),
           "f1_std": round(statistics.stdev(r["f1"] for r in runs), 2) if len(runs) > 1 else None,
           "f1_cell": _f1(runs), "goal": GOAL[dataset], "train_minutes": [round(training_seconds(r) / 60, 1) for r in runs],
           "epochs": [f"{r['epochs']} ({r['best_epoch']})" for r in runs], "device": device_cell(runs),
           "runs": [r["run"] for r in runs], "commits": sorted({c for r in runs for c in run_commits(r)})}
    for ref in REFERENCES:
        row[f"vs_{ref}"] = _paired(runs_dir, runs_dir, _runs(runs_dir, ref, dataset), runs_dir, runs, resamples, seed)
    row["teacher"] = teacher_vote(runs_dir, dataset, resamples, seed, config)
    return row


def _changed(runs_dir: Path, dataset: str, table: dict, against: list[dict], resamples: int, seed: int,
             key: str) -> list[dict]:
    """One row per tag of `table` (tag -> (model, what)) with runs on `dataset`, paired with `against` by seed."""
    rows = []
    for tag, (model, what) in table.items():
        tried = _runs(runs_dir / tag, model, dataset)
        if tried:
            rows.append({"dataset": dataset, "tag": tag, "model": model, key: what,
                         **_tried(runs_dir, tag, tried, against, resamples, seed)})
    return rows


def build(runs_dir: Path, resamples: int, seed: int) -> dict:
    out: dict = {"system": [], "system_variants": [], "ablations": [], "earlier": [], "earlier_ablations": [],
                 "variants": [], "ideas": []}
    for ds in ("twitter2015", "twitter2017"):
        runs = system_runs(runs_dir, ds)
        if runs:
            out["system"].append(_row(runs_dir, ds, runs, resamples, seed))
            out["ablations"] += _changed(runs_dir, ds, ABLATIONS, runs, resamples, seed, "removes")
            out["system_variants"] += _changed(runs_dir, ds, SYSTEM_VARIANTS, runs, resamples, seed, "changes")
        earlier = earlier_runs(runs_dir, ds, runs)
        if not earlier:
            continue
        row = _row(runs_dir, ds, earlier, resamples, seed, runs_dir / earlier[0]["run"] / "config.yaml")
        row["vs_system"] = _paired(runs_dir, runs_dir, runs, runs_dir, earlier, resamples, seed) if runs else None
        out["earlier"].append(row)
        out["earlier_ablations"] += _changed(runs_dir, ds, EARLIER_ABLATIONS, earlier, resamples, seed, "removes")
        for variant in _changed(runs_dir, ds, VARIANTS, earlier, resamples, seed, "changes"):
            tag, tried = variant["tag"], _runs(runs_dir / variant["tag"], variant["model"], ds)
            variant["vs_bert-crf-caption"] = _paired(runs_dir, runs_dir, _runs(runs_dir, "bert-crf-caption", ds),
                                                     runs_dir / tag, tried, resamples, seed)
            variant["teacher"] = teacher_vote(runs_dir, ds, resamples, seed,
                                              runs_dir / tag / tried[0]["run"] / "config.yaml")
            out["variants"].append(variant)
    for idea, ds in ((idea, ds) for idea in IDEAS for ds in ("twitter2015", "twitter2017")):
        tried = _runs(runs_dir / idea["tag"], idea["model"], ds)
        if tried:
            base = _runs(runs_dir / idea["base"], idea["base_model"], ds)
            out["ideas"].append({"dataset": ds, "tag": idea["tag"] or idea["model"], "adds": idea["adds"],
                                 "system": idea["against"],
                                 **_tried(runs_dir, idea["tag"], tried, base, resamples, seed, idea["base"])})
    return out


def _teacher(t: dict | None) -> str:
    """The teacher's test F1 (the vote of its runs, or the one run's own tags), its runs and training minutes."""
    if not t:
        return "–"
    n = len(t["members"])
    how = f"{n} runs, k {t['min_votes']}" if n > 1 else "1 run"
    folds = t.get("folds") or {}
    if folds:
        how += f" and {len(folds)} fold runs, " + ", ".join(f"{f1:.2f}" for f1 in folds.values())
    return f"{t['test_f1']:.2f} ({how}; {t['train_minutes']} min)"


def _minutes(r: dict) -> str:
    return ", ".join(map(str, r["train_minutes"]))


def _table(rows: list[dict], columns: list[tuple[str, object]], empty: str) -> list[str]:
    """A markdown table: `columns` are (header, the cell of a row); one row saying `empty` when there are none."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell(r)) for _, cell in columns) + " |" for r in rows]  # type: ignore[operator]
    if not rows:
        lines.append("| – | " + empty + " |" + " |" * (len(columns) - 2))
    return lines


def _seeds(r: dict) -> str:
    return ", ".join(map(str, r["seeds"]))


def render(data: dict, resamples: int) -> str:
    lines = [
        "# caption-distill, mmner's own system",
        "",
        "Made by `benchmarks/best.py` from the runs of `benchmarks/matrix-best.yaml` under `benchmarks/runs`.",
        "caption-distill (`mmner/models/caption_distill.py`, `configs/caption-distill-*.yaml`): bert-crf-caption's",
        "network (`[CLS] text [SEP] caption [SEP]`, BLIP-2 captions, MiniLM-L6, CRF over the text) with word shapes",
        "(each word's casing class embedded in 16 dimensions beside its state, `model.casing`), trained towards a",
        "larger teacher: one MPNet-base bert-crf-caption run with word shapes (seed 13, trained on the same CPU).",
        "Every training post is trained on (1 - 0.5) x its CRF loss + 0.5 x KL(the teacher's CRF marginals || the",
        "model's), and the other Twitter dataset's training posts are added with the teacher's tags; up to 20 epochs,",
        "stopped after 5 without a better valid F1. The dataset's own training posts are cross-fitted: their",
        "marginals come from two more runs of the teacher, each trained without one half of them (`data.holdout`),",
        "each giving the half it never saw (the full teacher's are almost one-hot there: it was trained on them).",
        "One model is left: tagging costs what bert-crf-caption costs.",
        "Test split, entity-level F1 (conlleval), epoch selected on valid F1, mean ± std over seeds. Δ: paired by",
        "seed against the same dataset's runs of the reference, paired bootstrap over test posts",
        f"({resamples} resamples), 95% interval and p. Goal (issue #19): Twitter-2015 ≥ 74.0, Twitter-2017 ≥ 86.0",
        "with MiniLM-L6 on a 2-core CPU, mean of 3 seeds. Minutes / run: the sum of the run's epochs (training and",
        "validation, wall clock, over every start of a resumed run) on the device named. The system's runs are",
        "under `caption-distill-mpnet-casing-crossfit/` (the recipe's name while it was a variant; this script",
        "checks each run's keys against the system's config).",
        "",
        "## The system",
        "",
    ]

    def delta(key: str):
        return lambda r: _delta(r.get(key), resamples)

    def cell(key: str):
        return lambda r: r[key]

    def code(r: dict) -> str:
        return f"`{r['tag']}`"

    teacher = ("the teacher", lambda r: _teacher(r.get("teacher")))
    times = [("epochs (best)", lambda r: ", ".join(r["epochs"])), ("minutes / run", _minutes),
             ("device, precision", cell("device"))]
    lines += _table(data["system"], [("dataset", cell("dataset")), ("seeds", _seeds), ("test F1", cell("f1_cell")),
                                     ("goal", lambda r: f"{r['goal']:.1f}"), ("Δ vs bert-crf", delta("vs_bert-crf")),
                                     ("Δ vs bert-crf-caption (no teacher)", delta("vs_bert-crf-caption")), teacher,
                                     *times], "no run has finished yet")
    lines += ["", "The teacher: its test F1 (the one run's own tags; for an ensemble, the entity-level vote of its runs,",
              "benchmarks/ensemble.py, k votes chosen on valid), the test F1 of its fold runs (each trained without one",
              "half of the training posts), and the minutes that training them all took, once for every seed of the",
              "student. It costs its own models to run; the system, one MiniLM-L6 model."]
    lines += ["", "Published multimodal systems with BERT-base (110M parameters; their papers' test F1), for reference:", "",
              "| system | Twitter-2015 | Twitter-2017 |", "|---|---|---|"]
    lines += [f"| {name} | {a if a is not None else '–'} | {b} |" for name, a, b in ANCHORS]

    def changed(rows: list[dict], key: str, against: str) -> list[str]:
        return _table(rows, [("dataset", cell("dataset")), ("tag", code), (key, cell(key)), ("seeds", _seeds),
                             ("test F1", cell("f1_cell")), (f"Δ vs {against}", delta("vs_system")),
                             ("minutes / run", _minutes), ("device, precision", cell("device"))],
                      "no run has finished yet")

    lines += ["", "## Variants of the system: one key changed", "",
              "Each row is the system with one change (benchmarks/runs/<tag>/), paired by seed with the full system;",
              "a positive Δ means the variant is better. A variant is a candidate for the recipe where its valid F1",
              "(the selected epoch's, mean over its seeds) is above the system's on the same seeds; test F1 decides",
              "nothing. The precision is the CPU's (trainer.precision: auto): bf16-mixed where it computes in bf16,",
              "32-true where it does not; the system's is in its table above.", ""]
    lines += _table(data["system_variants"], [("dataset", cell("dataset")), ("tag", code), ("changes", cell("changes")),
                                              ("seeds", _seeds), ("valid F1", lambda r: f"{r['valid_f1']:.2f}"),
                                              ("the system's valid F1", lambda r: f"{r['valid_f1_system']:.2f}"),
                                              ("test F1", cell("f1_cell")), ("Δ vs the system", delta("vs_system")),
                                              ("minutes / run", _minutes), ("device, precision", cell("device"))],
                    "no run has finished yet")
    lines += ["", "## Ablations: each idea removed alone", "",
              "Each row is the system with one change (benchmarks/runs/<tag>/), paired by seed with the full system;",
              "a negative Δ means the idea helps.", ""]
    lines += changed(data["ablations"], "removes", "the system")
    lines += ["", "## The earlier recipe: a MiniLM-L6 ensemble teacher", "",
              f"caption-distill as first made: {EARLIER_TEXT}; the rest as the system (runs under",
              "`caption-distill/`, which trained `bert-crf-caption` with the recipe's keys before the model had a name).",
              "Δ vs the system: the earlier recipe minus the system, paired by seed (negative: the system is better).", ""]
    lines += _table(data["earlier"], [("dataset", cell("dataset")), ("seeds", _seeds), ("test F1", cell("f1_cell")),
                                      ("Δ vs the system", delta("vs_system")), ("Δ vs bert-crf", delta("vs_bert-crf")),
                                      ("Δ vs bert-crf-caption (no teacher)", delta("vs_bert-crf-caption")), teacher,
                                      *times], "no run has finished yet")
    lines += ["", "### Its ablations", "",
              "Each row is the earlier recipe with one idea removed, paired by seed with it; a negative Δ means the",
              "idea helps.", ""]
    lines += changed(data["earlier_ablations"], "removes", "the earlier recipe")
    lines += ["", "### Its variants: the way to the system", "",
              "Each row is the earlier recipe with one change (benchmarks/runs/<tag>/), paired by seed with it; a",
              "positive Δ means the variant is better. The teacher as above.", ""]
    lines += _table(data["variants"], [("dataset", cell("dataset")), ("tag", code), ("changes", cell("changes")),
                                       ("seeds", _seeds), ("test F1", cell("f1_cell")),
                                       ("Δ vs the earlier recipe", delta("vs_system")),
                                       ("Δ vs bert-crf-caption (no teacher)", delta("vs_bert-crf-caption")), teacher,
                                       ("minutes / run", _minutes)], "no run has finished yet")
    lines += ["", "## Ideas tried on another system or recipe", "",
              "Each row adds one idea to an existing system or recipe (benchmarks/runs/<tag>/), paired by seed with it;",
              "a positive Δ means the idea helps. ctx-crf was mmner's candidate system before caption-distill.", ""]
    lines += _table(data.get("ideas", []), [("dataset", cell("dataset")), ("tag", code), ("system", cell("system")),
                                            ("adds", cell("adds")), ("seeds", _seeds), ("test F1", cell("f1_cell")),
                                            ("Δ vs the system", delta("vs_system")), ("minutes / run", _minutes)],
                    "no run has finished yet")
    for title, rows in (("Runs of the system", data["system"]), ("Runs of the earlier recipe", data["earlier"])):
        runs = [run for r in rows for run in r["runs"]]
        if runs:
            lines += ["", f"{title}: " + ", ".join(f"`{x}`" for x in runs) + "; commits "
                      + ", ".join(sorted({c for r in rows for c in r["commits"]})) + "."]
    others = data["system_variants"] + data["ablations"] + data["earlier_ablations"] + data["variants"] + data["ideas"]
    commits = sorted({c for a in others for c in a["commits"]})
    if commits:
        lines += ["", "Commits of the ablation, variant and idea runs: " + ", ".join(commits) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "best.md", argv)
    data = build(args.runs_dir, args.resamples, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(data, args.resamples))
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output} ({len(data['system'])} system rows, {len(data['ablations'])} ablations, "
          f"{len(data['earlier'])} rows of the earlier recipe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
