"""mmner's own system, caption-distill: docs/results/best.md (+ .json) from the runs of benchmarks/matrix-best.yaml.

    mmner sweep benchmarks/matrix-best.yaml          # the system (3 seeds, both datasets), then its ablations
    python benchmarks/best.py                        # the tables from what has finished
    python benchmarks/best.py --resamples 5000

Tables: caption-distill with MiniLM-L6 per dataset (mean ± std over seeds, training time per run on the machine
that trained it), its Δ vs text-only bert-crf and vs bert-crf-caption (the same network without the teacher)
paired by seed (paired bootstrap over test posts), the goal and the published BERT-base systems beside it; then
one row per ablation (each idea removed alone, benchmarks/runs/<tag>/), paired with the full system by seed;
then ideas tried on other systems.

The system's runs: those of configs/caption-distill-minilm-<dataset>.yaml, and the runs under
benchmarks/runs/caption-distill/ that trained `bert-crf-caption` with every other key equal to that config's
(they were made before the model had a name of its own: the same network, data, teacher and schedule;
`caption-distill` only refuses to train without a teacher). A seed trained both ways counts once, by its named run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from baselines import ROOT, collect, device_cell, run_commits, training_seconds, variant_of
from compare import _dataset
from leaderboard import arguments, post_counts
from summary import _p

SYSTEM = "caption-distill"
ENCODER = "minilm-l6"
# runs of the system made as bert-crf-caption with the same keys, before it had a name: where, as which model
UNNAMED = ("caption-distill", "bert-crf-caption")
GOAL = {"twitter2015": 74.0, "twitter2017": 86.0}  # test F1, mean of 3 seeds (issue #19)
# Published multimodal systems with BERT-base (test F1 as each paper reports it; Twitter-2017 as released by UMT)
ANCHORS = [("UMT (Yu et al. 2020)", 73.41, 85.31), ("UMGF (Zhang et al. 2021)", 74.85, 85.51),
           ("HVPNeT (Chen et al. 2022)", 75.32, 86.87), ("MKGformer (Chen et al. 2022)", None, 87.49)]
# ablation tag -> (the model its runs train, what it removes) (benchmarks/matrix-best.yaml)
ABLATIONS = {
    "caption-distill-own": ("bert-crf-caption", "the other dataset's posts: soft targets for the dataset's own training "
                            "posts only (no data.extra_train)"),
    "caption-selftrain": ("bert-crf-caption", "the soft targets: the other dataset's posts with the ensemble's voted "
                          "tags, trained on the CRF loss alone (no distill)"),
    "caption-distill-text": ("bert-crf", "the caption: the same teacher and posts, text only (bert-crf, "
                             "visual.source: none)"),
}
REFERENCES = ("bert-crf", "bert-crf-caption")
# variant tag -> (the model its runs train, what it changes): the system's recipe with one change (teacher or schedule)
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
    "caption-distill-mpnet-casing": ("caption-distill", "three at once: the teacher one MPNet-base bert-crf-caption run "
                                     "with word shapes (model.casing 16; seed 13, trained on the same CPU) in place of "
                                     "the MiniLM-L6 ensemble, word shapes in the student too, and 20 epochs (patience 5)"),
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
    {"tag": "caption-distill-mpnet-casing-crossfit", "model": "caption-distill", "base": "caption-distill-mpnet-casing",
     "base_model": "caption-distill", "against": "caption-distill-mpnet-casing (the variant above, its runs)",
     "adds": "cross-fitting: the MPNet teacher's marginals of its own training posts are almost one-hot, so two more "
             "runs of it, each trained without one half of the dataset's training posts (data.holdout), give the "
             "soft targets of the half it never saw; the other dataset's posts as before (the full teacher's)"},
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
    members its first marginals file names (benchmarks/ensemble.py, k chosen on valid; one member: its own tags),
    with the members' training minutes; None when a member's run is not under `runs_dir`."""
    from ensemble import ensemble

    from mmner.config import load_config
    from mmner.train.distill import read_marginals

    header, _ = read_marginals(ROOT / load_config(config or system_config(dataset)).distill.targets[0])
    # a member under a tag folder is named with it (teacher/bert-crf-caption-mpnet-twitter2015-s13)
    folders = {m.rpartition("/")[0] for m in header.get("members", {})}
    records = {r["run"]: r for f in folders for r in ({**x, "run": f"{f}/{x['run']}" if f else x["run"]}
                                                       for x in collect(runs_dir / f))}
    if not all(m in records for m in header.get("members", {})):
        return None
    voted = ensemble(runs_dir, dataset, [records[m] for m in header["members"]], resamples, seed)
    minutes = round(sum(training_seconds(records[m]) for m in header["members"]) / 60, 1)
    return {"members": list(header["members"]), "min_votes": voted["min_votes"], "test_f1": voted["test_f1"],
            "train_minutes": minutes}


def _runs(runs_dir: Path, variant: str, dataset: str) -> list[dict]:
    return sorted((r for r in collect(runs_dir) if variant_of(r["run"]) == variant and _dataset(r) == dataset
                   and r.get("encoder") == ENCODER), key=lambda r: r["seed"])


def system_runs(runs_dir: Path, dataset: str) -> list[dict]:
    """caption-distill's MiniLM-L6 runs on `dataset`, by seed, named and unnamed (module docstring); an
    unnamed run's `run` is its path under `runs_dir`."""
    named = {r["seed"]: r for r in _runs(runs_dir, SYSTEM, dataset)}
    tag, model = UNNAMED
    for r in _runs(runs_dir / tag, model, dataset):
        if r["seed"] not in named and same_recipe(runs_dir / tag / r["run"] / "config.yaml", system_config(dataset)):
            named[r["seed"]] = {**r, "run": f"{tag}/{r['run']}"}
    return [named[s] for s in sorted(named)]


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


def _tried(runs_dir: Path, tag: str, tried: list[dict], system: list[dict], resamples: int, seed: int,
           base: str = "") -> dict:
    """A changed recipe's runs (benchmarks/runs/<tag>/) against those of the system it changes (under
    benchmarks/runs/<base>/), paired by seed, with their times and commits."""
    return {"seeds": [r["seed"] for r in tried], "f1_cell": _f1(tried),
            "vs_system": _paired(runs_dir, runs_dir / base, system, runs_dir / tag, tried, resamples, seed),
            "train_minutes": [round(training_seconds(r) / 60, 1) for r in tried],
            "commits": sorted({c for r in tried for c in run_commits(r)})}


def build(runs_dir: Path, resamples: int, seed: int) -> dict:
    out: dict = {"system": [], "ablations": [], "variants": [], "ideas": []}
    for ds in ("twitter2015", "twitter2017"):
        runs = system_runs(runs_dir, ds)
        if not runs:
            continue
        row = {"dataset": ds, "seeds": [r["seed"] for r in runs], "f1": round(statistics.mean(r["f1"] for r in runs), 2),
               "f1_std": round(statistics.stdev(r["f1"] for r in runs), 2) if len(runs) > 1 else None,
               "f1_cell": _f1(runs), "goal": GOAL[ds], "train_minutes": [round(training_seconds(r) / 60, 1) for r in runs],
               "epochs": [f"{r['epochs']} ({r['best_epoch']})" for r in runs], "device": device_cell(runs),
               "runs": [r["run"] for r in runs], "commits": sorted({c for r in runs for c in run_commits(r)})}
        for ref in REFERENCES:
            row[f"vs_{ref}"] = _paired(runs_dir, runs_dir, _runs(runs_dir, ref, ds), runs_dir, runs, resamples, seed)
        row["teacher"] = teacher_vote(runs_dir, ds, resamples, seed)
        out["system"].append(row)
        for tag, (model, what) in ABLATIONS.items():
            ablated = _runs(runs_dir / tag, model, ds)
            if ablated:
                out["ablations"].append({"dataset": ds, "tag": tag, "model": model, "removes": what,
                                         **_tried(runs_dir, tag, ablated, runs, resamples, seed)})
        for tag, (model, what) in VARIANTS.items():
            tried = _runs(runs_dir / tag, model, ds)
            if tried:
                out["variants"].append({
                    "dataset": ds, "tag": tag, "model": model, "changes": what,
                    **_tried(runs_dir, tag, tried, runs, resamples, seed),
                    "vs_bert-crf-caption": _paired(runs_dir, runs_dir, _runs(runs_dir, "bert-crf-caption", ds),
                                                   runs_dir / tag, tried, resamples, seed),
                    "teacher": teacher_vote(runs_dir, ds, resamples, seed, runs_dir / tag / tried[0]["run"] / "config.yaml")})
    for idea, ds in ((idea, ds) for idea in IDEAS for ds in ("twitter2015", "twitter2017")):
        tried = _runs(runs_dir / idea["tag"], idea["model"], ds)
        if tried:
            base = _runs(runs_dir / idea["base"], idea["base_model"], ds)
            out["ideas"].append({"dataset": ds, "tag": idea["tag"] or idea["model"], "adds": idea["adds"],
                                 "system": idea["against"],
                                 **_tried(runs_dir, idea["tag"], tried, base, resamples, seed, idea["base"])})
    return out


def render(data: dict, resamples: int) -> str:
    lines = [
        "# caption-distill, mmner's own system",
        "",
        "Made by `benchmarks/best.py` from the runs of `benchmarks/matrix-best.yaml` under `benchmarks/runs`.",
        "caption-distill (`mmner/models/caption_distill.py`, `configs/caption-distill-*.yaml`): bert-crf-caption's",
        "network (`[CLS] text [SEP] caption [SEP]`, BLIP-2 captions, MiniLM-L6, CRF over the text) trained towards an",
        "ensemble of the dataset's systems (one seed-13 run each, docs/results/ensemble.md): every training post on",
        "(1 - 0.5) x its CRF loss + 0.5 x KL(the ensemble's mean CRF marginals || the model's), and the other Twitter",
        "dataset's training posts added with the ensemble's voted tags. One model is left: tagging costs what",
        "bert-crf-caption costs. Test split, entity-level F1 (conlleval), epoch selected on valid F1, mean ± std over",
        "seeds. Δ: paired by seed against the same dataset's runs of the reference, paired bootstrap over test posts",
        f"({resamples} resamples), 95% interval and p. Goal (issue #19): Twitter-2015 ≥ 74.0, Twitter-2017 ≥ 86.0",
        "with MiniLM-L6 on a 2-core CPU, mean of 3 seeds. Minutes / run: the sum of the run's epochs (training and",
        "validation, wall clock, over every start of a resumed run) on the device named. The runs under",
        "`caption-distill/` trained `bert-crf-caption` with every other key of the system's config (checked by this",
        "script): they predate the model's name, which only adds the check that a teacher is set.",
        "",
        "## The system",
        "",
        "| dataset | seeds | test F1 | goal | Δ vs bert-crf | Δ vs bert-crf-caption (no teacher) | the teacher's vote | epochs (best) | minutes / run | device, precision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["system"]:
        t = r.get("teacher")
        vote = f"{t['test_f1']:.2f} ({len(t['members'])} runs, k {t['min_votes']}; {t['train_minutes']} min)" if t else "–"
        lines.append(f"| {r['dataset']} | {', '.join(map(str, r['seeds']))} | {r['f1_cell']} | {r['goal']:.1f} | "
                     f"{_delta(r['vs_bert-crf'], resamples)} | {_delta(r['vs_bert-crf-caption'], resamples)} | {vote} | "
                     f"{', '.join(r['epochs'])} | {', '.join(map(str, r['train_minutes']))} | {r['device']} |")
    if not data["system"]:
        lines.append("| – | – | no run has finished yet | | | | | | | |")
    lines += ["", "The teacher's vote: the test F1 of the ensemble whose CRF marginals the system learns from, as an",
              "entity-level vote of its member runs (benchmarks/ensemble.py, k votes chosen on valid); it costs every",
              "member's model to run, the system one; min: the minutes that training its members took (once, for",
              "every seed of the system)."]
    lines += ["", "Published multimodal systems with BERT-base (110M parameters; their papers' test F1), for reference:", "",
              "| system | Twitter-2015 | Twitter-2017 |", "|---|---|---|"]
    lines += [f"| {name} | {a if a is not None else '–'} | {b} |" for name, a, b in ANCHORS]
    lines += ["", "## Ablations: each idea removed alone", "",
              "Each row is the system with one change (benchmarks/runs/<tag>/), paired by seed with the full system;",
              "a negative Δ means the idea helps.", "",
              "| dataset | tag | removes | seeds | test F1 | Δ vs the system | minutes / run |", "|---|---|---|---|---|---|---|"]
    for a in data["ablations"]:
        lines.append(f"| {a['dataset']} | `{a['tag']}` | {a['removes']} | {', '.join(map(str, a['seeds']))} | "
                     f"{a['f1_cell']} | {_delta(a['vs_system'], resamples)} | {', '.join(map(str, a['train_minutes']))} |")
    if not data["ablations"]:
        lines.append("| – | – | no ablation run has finished yet | | | | |")
    lines += ["", "## Variants: the same recipe with another teacher or schedule", "",
              "Each row is the system's recipe with one change (benchmarks/runs/<tag>/), paired by seed with the system;",
              "a positive Δ means the variant is better. The teacher: its test F1 (the vote of its runs, or the one run's",
              "own tags) and the minutes that training it took, once for every seed of the student.", "",
              "| dataset | tag | changes | seeds | test F1 | Δ vs the system | Δ vs bert-crf-caption (no teacher) | "
              "the teacher | minutes / run | teacher minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for a in data["variants"]:
        t = a.get("teacher")
        teacher = f"{t['test_f1']:.2f} ({len(t['members'])} run{'s' if len(t['members']) > 1 else ''})" if t else "–"
        lines.append(f"| {a['dataset']} | `{a['tag']}` | {a['changes']} | {', '.join(map(str, a['seeds']))} | "
                     f"{a['f1_cell']} | {_delta(a['vs_system'], resamples)} | {_delta(a['vs_bert-crf-caption'], resamples)} | "
                     f"{teacher} | {', '.join(map(str, a['train_minutes']))} | {t['train_minutes'] if t else '–'} |")
    if not data["variants"]:
        lines.append("| – | – | no run has finished yet | | | | | | | |")
    lines += ["", "## Ideas tried on another system or recipe", "",
              "Each row adds one idea to an existing system or recipe (benchmarks/runs/<tag>/), paired by seed with it;",
              "a positive Δ means the idea helps. ctx-crf was mmner's candidate system before caption-distill.", "",
              "| dataset | tag | system | adds | seeds | test F1 | Δ vs the system | minutes / run |",
              "|---|---|---|---|---|---|---|---|"]
    for a in data.get("ideas", []):
        lines.append(f"| {a['dataset']} | `{a['tag']}` | {a['system']} | {a['adds']} | {', '.join(map(str, a['seeds']))} | "
                     f"{a['f1_cell']} | {_delta(a['vs_system'], resamples)} | {', '.join(map(str, a['train_minutes']))} |")
    if not data.get("ideas"):
        lines.append("| – | – | – | no run has finished yet | | | | |")
    runs = [run for r in data["system"] for run in r["runs"]]
    if runs:
        lines += ["", "Runs of the system: " + ", ".join(f"`{x}`" for x in runs) + "; commits "
                  + ", ".join(sorted({c for r in data["system"] for c in r["commits"]})) + "."]
    ablation_commits = sorted({c for a in data["ablations"] + data["variants"] + data["ideas"] for c in a["commits"]})
    if ablation_commits:
        lines += ["", "Commits of the ablation, variant and idea runs: " + ", ".join(ablation_commits) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "best.md", argv)
    data = build(args.runs_dir, args.resamples, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(data, args.resamples))
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output} ({len(data['system'])} system rows, {len(data['ablations'])} ablations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
