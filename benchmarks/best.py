"""mmner's own system, ctx-crf: docs/results/best.md (+ .json) from the runs of benchmarks/matrix-best.yaml.

    mmner sweep benchmarks/matrix-best.yaml          # the system (3 seeds, both datasets), then its ablations
    python benchmarks/best.py                        # the tables from what has finished
    python benchmarks/best.py --resamples 5000

Tables: ctx-crf with MiniLM-L6 per dataset (mean ± std over seeds, training time per run on the machine that
trained it), its Δ vs text-only bert-crf and vs bert-crf-caption paired by seed (paired bootstrap over test
posts), the goal and the published BERT-base systems beside it; then one row per ablation (each idea removed
alone, benchmarks/runs/<tag>/), paired with the full system by seed.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from baselines import collect, device_cell, run_commits, variant_of
from compare import _dataset
from leaderboard import arguments, post_counts
from summary import _p

SYSTEM = "ctx-crf"
ENCODER = "minilm-l6"
GOAL = {"twitter2015": 74.0, "twitter2017": 86.0}  # test F1, mean of 3 seeds (issue #19)
# Published multimodal systems with BERT-base (test F1 as each paper reports it; Twitter-2017 as released by UMT)
ANCHORS = [("UMT (Yu et al. 2020)", 73.41, 85.31), ("UMGF (Zhang et al. 2021)", 74.85, 85.51),
           ("HVPNeT (Chen et al. 2022)", 75.32, 86.87), ("MKGformer (Chen et al. 2022)", None, 87.49)]
# ablation tag -> what it removes (benchmarks/matrix-best.yaml)
ABLATIONS = {
    "ctx-no-labels": "the context posts' entity marks (model.context_labels: false)",
    "ctx-no-retrieval": "the retrieved training posts (model.neighbors: 0; = bert-crf-caption on the longer schedule)",
    "ctx-no-caption": "the caption (visual.source: none: text and retrieved posts only)",
    "ctx-short": "the longer schedule (trainer.max_epochs: 6, bert-crf's)",
    "ctx-agreement": "(an addition, not a removal) the agreement loss between the views (model.agreement: 0.5)",
}
REFERENCES = ("bert-crf", "bert-crf-caption")
# ideas tried on another system before they join ctx-crf: tag -> (the system it changes, what it adds)
IDEAS = {
    "caption-selftrain": ("bert-crf-caption", "the other dataset's training posts tagged by the ensemble of this dataset's "
                          "seed-13 systems (data.extra_train; benchmarks/pseudo_label.py, docs/results/ensemble.md)"),
    "caption-distill": ("bert-crf-caption", "caption-selftrain's extra posts, and every training post also trained "
                        "towards the mean CRF marginals of the same ensemble (distill, weight 0.5; "
                        "benchmarks/teacher_marginals.py)"),
    "caption-distill-own": ("bert-crf-caption", "the ensemble's mean CRF marginals of the dataset's own training posts "
                            "only (distill, weight 0.5; no extra posts)"),
}


def _runs(runs_dir: Path, variant: str, dataset: str) -> list[dict]:
    return sorted((r for r in collect(runs_dir) if variant_of(r["run"]) == variant and _dataset(r) == dataset
                   and r.get("encoder") == ENCODER), key=lambda r: r["seed"])


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


def build(runs_dir: Path, resamples: int, seed: int) -> dict:
    out: dict = {"system": [], "ablations": [], "ideas": []}
    for (tag, (system, what)), ds in ((idea, ds) for idea in IDEAS.items() for ds in ("twitter2015", "twitter2017")):
        tried = _runs(runs_dir / tag, system, ds)
        if tried:
            out["ideas"].append({"dataset": ds, "tag": tag, "system": system, "adds": what,
                                 "seeds": [r["seed"] for r in tried], "f1_cell": _f1(tried),
                                 "vs_system": _paired(runs_dir, runs_dir, _runs(runs_dir, system, ds), runs_dir / tag,
                                                      tried, resamples, seed),
                                 "train_minutes": [round(r["train_seconds"] / 60, 1) for r in tried],
                                 "commits": sorted({c for r in tried for c in run_commits(r)})})
    for ds in ("twitter2015", "twitter2017"):
        runs = _runs(runs_dir, SYSTEM, ds)
        if not runs:
            continue
        row = {"dataset": ds, "seeds": [r["seed"] for r in runs], "f1": round(statistics.mean(r["f1"] for r in runs), 2),
               "f1_std": round(statistics.stdev(r["f1"] for r in runs), 2) if len(runs) > 1 else None,
               "f1_cell": _f1(runs), "goal": GOAL[ds], "train_minutes": [round(r["train_seconds"] / 60, 1) for r in runs],
               "epochs": [f"{r['epochs']} ({r['best_epoch']})" for r in runs], "device": device_cell(runs),
               "runs": [r["run"] for r in runs], "commits": sorted({c for r in runs for c in run_commits(r)})}
        for ref in REFERENCES:
            row[f"vs_{ref}"] = _paired(runs_dir, runs_dir, _runs(runs_dir, ref, ds), runs_dir, runs, resamples, seed)
        out["system"].append(row)
        for tag, what in ABLATIONS.items():
            ablated = _runs(runs_dir / tag, SYSTEM, ds)
            if not ablated:
                continue
            out["ablations"].append({"dataset": ds, "tag": tag, "removes": what, "seeds": [r["seed"] for r in ablated],
                                     "f1_cell": _f1(ablated),
                                     "vs_system": _paired(runs_dir, runs_dir, runs, runs_dir / tag, ablated, resamples, seed),
                                     "train_minutes": [round(r["train_seconds"] / 60, 1) for r in ablated]})
    return out


def render(data: dict, resamples: int) -> str:
    lines = [
        "# ctx-crf, mmner's own system",
        "",
        "Made by `benchmarks/best.py` from the runs of `benchmarks/matrix-best.yaml` under `benchmarks/runs`. ctx-crf",
        "(`mmner/models/context_crf.py`): the post's text, its BLIP-2 caption and the 3 training posts nearest to",
        "its text (with their gold entities marked by type) in one MiniLM-L6 window, CRF over the text. Test split,",
        "entity-level F1 (conlleval), epoch selected on valid F1, mean ± std over seeds. Δ: paired by seed against",
        f"the same dataset's runs of the reference, paired bootstrap over test posts ({resamples} resamples), 95%",
        "interval and p. Goal (issue #19): Twitter-2015 ≥ 74.0, Twitter-2017 ≥ 86.0 with MiniLM-L6 on a 2-core",
        "CPU, mean of 3 seeds. Training time: wall-clock minutes per run on the device named.",
        "",
        "## The system",
        "",
        "| dataset | seeds | test F1 | goal | Δ vs bert-crf | Δ vs bert-crf-caption | epochs (best) | minutes / run | device, precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["system"]:
        lines.append(f"| {r['dataset']} | {', '.join(map(str, r['seeds']))} | {r['f1_cell']} | {r['goal']:.1f} | "
                     f"{_delta(r['vs_bert-crf'], resamples)} | {_delta(r['vs_bert-crf-caption'], resamples)} | "
                     f"{', '.join(r['epochs'])} | {', '.join(map(str, r['train_minutes']))} | {r['device']} |")
    if not data["system"]:
        lines.append("| – | – | no run has finished yet | | | | | | |")
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
    lines += ["", "## Ideas tried on another system", "",
              "Each row adds one idea to an existing system (benchmarks/runs/<tag>/), paired by seed with that system;",
              "a positive Δ means the idea helps. The ensemble the self-training tags come from is in",
              "docs/results/ensemble.md (voting over the systems' runs: the target a single distilled model aims at).", "",
              "| dataset | tag | system | adds | seeds | test F1 | Δ vs the system | minutes / run |",
              "|---|---|---|---|---|---|---|---|"]
    for a in data.get("ideas", []):
        lines.append(f"| {a['dataset']} | `{a['tag']}` | {a['system']} | {a['adds']} | {', '.join(map(str, a['seeds']))} | "
                     f"{a['f1_cell']} | {_delta(a['vs_system'], resamples)} | {', '.join(map(str, a['train_minutes']))} |")
    if not data.get("ideas"):
        lines.append("| – | – | – | no run has finished yet | | | | |")
    runs = [run for r in data["system"] for run in r["runs"]]
    if runs:
        lines += ["", "Runs: " + ", ".join(f"`{x}`" for x in runs) + "; commits "
                  + ", ".join(sorted({c for r in data["system"] for c in r["commits"]})) + "."]
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
