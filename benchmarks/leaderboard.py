"""Every system on one table per dataset and encoder: which multimodal models beat text-only bert-crf,
by how much, and whether the difference is more than the choice of test posts would give.

    python benchmarks/leaderboard.py                     # docs/results/leaderboard.md and .json
    python benchmarks/leaderboard.py --resamples 5000

Rows are the finished runs under benchmarks/runs (those of baselines.py, chen.py, umt.py, rpbert.py,
rgcn.py and best.py; low-resource runs are left out), one row per config variant (`umt-no-gate`, `rpbert-soft`,
...), ranked by mean test F1 over seeds. Each row is compared with bert-crf of the same dataset and
encoder over the seeds both have: Δ is the mean over those seeds of the paired F1 difference, and the
95% interval and p-value come from a paired bootstrap over test posts (`mmner.analysis.bootstrap`,
seeds paired, the same resampled posts for every seed). The biLSTM baselines, whose "encoder" is a
word-vector table, are in docs/results/baselines.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from baselines import ROOT, collect
from baselines import variant_of
from compare import DATASETS, ENCODERS, _dataset

REFERENCE = "bert-crf"
# systems whose paper measures them against a text-only model other than bert-crf, and that model's row here:
# Chen et al.'s VisualBERT rows against Exp 1.2, RpBERT's biLSTM-CRF + RpBERT against biLSTM-CRF + BERT
OWN_BASELINE = {"visualbert-crf": "visualbert-crf-text", "rpbert-bilstm-soft": "bilstm-crf-bert"}
# which committed table each row's run also appears in
DOCS = {"bert-crf": "baselines", "bert-crf-caption": "chen", "visualbert-crf": "chen", "fusion-cm": "chen",
        "fusion-vam": "chen", "fusion-cam": "chen", "fusion-tam": "chen", "umt": "umt", "rpbert": "rpbert",
        "rgcn": "rgcn", "visualbert-crf-text": "baselines", "bilstm-crf-bert": "baselines",
        "ctx-crf": "best", "caption-distill": "best"}  # by row, else by model


def post_counts(runs_dir: Path, run: str) -> np.ndarray:
    """Per test post [correct, predicted, gold] entity counts of a run, scored as the run was."""
    from mmner.analysis import runs as run_data
    from mmner.analysis.slices import counts

    return counts(run_data.load(runs_dir / run, "R").items)


def build(runs_dir: Path, resamples: int, seed: int) -> list[dict]:
    """One entry per dataset and encoder: its rows, best first."""
    from mmner.analysis.bootstrap import Bootstrap

    from best import SYSTEM, system_runs

    records = [r for r in collect(runs_dir) if r.get("encoder") in ENCODERS.values() and _dataset(r) in DATASETS]
    # mmner's own system: also its runs made before it had a name (benchmarks/best.py), under its tag
    records += [{**r, "system": SYSTEM} for ds in DATASETS for r in system_runs(runs_dir, ds) if "/" in r["run"]]
    sections = []
    for ds in DATASETS:
        for enc in ENCODERS.values():
            section = [r for r in records if _dataset(r) == ds and r["encoder"] == enc]
            if not section:
                continue
            groups: dict[str, list[dict]] = {}
            for r in section:
                groups.setdefault(r.get("system") or variant_of(r["run"]), []).append(r)
            cache: dict[str, np.ndarray] = {}

            def counts_of(run: str) -> np.ndarray:
                if run not in cache:
                    cache[run] = post_counts(runs_dir, run)
                return cache[run]

            def paired(rs: list[dict], base: str) -> dict | None:
                """The rows' F1 against the `base` row's over the seeds both have (paired bootstrap)."""
                reference = {r["seed"]: r for r in groups.get(base, [])}
                shared = [r for r in rs if r["seed"] in reference]
                if not shared:
                    return None
                bases = [counts_of(reference[r["seed"]]["run"]) for r in shared]
                boot = Bootstrap(len(bases[0]), resamples=resamples, seed=seed)
                return {**boot.compare_seeds(bases, [counts_of(r["run"]) for r in shared]),
                        "seeds": [r["seed"] for r in shared]}

            rows = []
            for variant, rs in groups.items():
                rs = sorted(rs, key=lambda r: r["seed"])
                f1s = [r["f1"] for r in rs]
                row = {"system": variant, "model": rs[0]["model"], "visual_source": rs[0]["visual_source"],
                       "seeds": [r["seed"] for r in rs], "f1": round(statistics.mean(f1s), 2),
                       "f1_std": round(statistics.stdev(f1s), 2) if len(f1s) > 1 else None,
                       "gold_entities": rs[0]["gold_entities"], "runs": [r["run"] for r in rs],
                       "precision": sorted({r.get("trainer_precision", "32-true") for r in rs}),
                       "results": DOCS.get(variant, DOCS.get(rs[0]["model"]))}
                vs = paired(rs, REFERENCE) if variant != REFERENCE else None
                if vs is not None:
                    row["vs_reference"] = vs
                own = paired(rs, OWN_BASELINE[variant]) if variant in OWN_BASELINE else None
                if own is not None:
                    row["vs_own_baseline"] = {**own, "baseline": OWN_BASELINE[variant]}
                rows.append(row)
            rows.sort(key=lambda row: -row["f1"])
            sections.append({"dataset": ds, "encoder": enc, "reference": REFERENCE, "rows": rows,
                             "variant": ", ".join(sorted({str(r.get("variant")) for r in section})),
                             "visual_details": sorted({r["visual_detail"] for r in section
                                                       if r.get("visual_detail") and r["visual_source"] != "none"})})
    return sections


def render(sections: list[dict], resamples: int) -> str:
    lines = [
        "# Leaderboard",
        "",
        "Made by `benchmarks/leaderboard.py` from the run directories under `benchmarks/runs`: every system with a",
        "finished run, ranked by mean test F1 (conlleval, entity level) over its seeds. Δ: mean over the seeds",
        f"shared with `{REFERENCE}` (same dataset and encoder) of the paired F1 difference; 95% interval and",
        f"p-value: paired bootstrap over test posts ({resamples} resamples, seeds paired). An interval that",
        "contains 0 means the test set cannot tell the system from text-only bert-crf; with many rows, some",
        "p < 0.05 are expected by chance alone. The seed-to-seed spread (±: std over seeds) is a second,",
        "separate source of variation. Runs, configs and commits: the per-paper tables named in `table`.",
        "Precision: the training precision of the row's runs (`trainer.precision: auto` picks bf16-mixed on",
        "a machine with bf16, else 32-true; the runs were made on whichever machine the sweep had).",
    ]
    for sec in sections:
        ref = next((r for r in sec["rows"] if r["system"] == REFERENCE), None)
        lines += ["", f"## {sec['dataset']}, {sec['encoder']}", ""]
        lines += [f"Dataset variant: {sec['variant']}. Visual inputs: "
                  + ("; ".join(sec["visual_details"]) or "none") + "."]
        if ref and ref["f1_std"] is not None:
            lines += ["", f"`{REFERENCE}` over seeds {', '.join(map(str, ref['seeds']))}: "
                      f"{ref['f1']:.2f} ± {ref['f1_std']:.2f}."]
        header = ["rank", "system", "visual", "seeds", "test F1", "Δ vs bert-crf", "95% interval", "p", "precision",
                  "table"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rank, row in enumerate(sec["rows"], 1):
            vs = row.get("vs_reference")
            f1 = f"{row['f1']:.2f}" + (f" ± {row['f1_std']:.2f}" if row["f1_std"] is not None else "")
            if vs:
                seeds = "" if len(vs["seeds"]) == len(row["seeds"]) else f" (seeds {', '.join(map(str, vs['seeds']))})"
                delta, interval, p = f"{vs['delta']:+.2f}{seeds}", f"[{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}]", \
                    f"{vs['p_value']:.3f}"
            else:
                delta = interval = p = "–"
            table = f"[{row['results']}]({row['results']}.md)" if row["results"] else "–"
            lines.append("| " + " | ".join([str(rank), f"`{row['system']}`", row["visual_source"],
                                             ", ".join(map(str, row["seeds"])), f1, delta, interval, p,
                                             ", ".join(row["precision"]), table]) + " |")
    if not sections:
        lines += ["", "No finished runs yet."]
    return "\n".join(lines) + "\n"


def arguments(doc: str, output: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of the bootstrap tables (leaderboard.py, summary.py): runs, output, resampling."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / output)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "leaderboard.md", argv)
    from mmner.errors import MmnerError

    try:
        sections = build(args.runs_dir, args.resamples, args.seed)
    except MmnerError as exc:
        sys.exit(f"error: {exc}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(sections, args.resamples))
    args.output.with_suffix(".json").write_text(json.dumps(
        {"resamples": args.resamples, "bootstrap_seed": args.seed, "sections": sections}, indent=1) + "\n")
    print(f"wrote {args.output} ({sum(len(s['rows']) for s in sections)} rows)")


if __name__ == "__main__":
    main()
