"""Does the image help? docs/results/summary.md (+ .json, + summary.png) from the runs under benchmarks/runs.

    python benchmarks/summary.py                      # after `mmner sweep benchmarks/matrix-minilm.yaml`
    python benchmarks/summary.py --resamples 5000

For each multimodal system (every leaderboard row with a visual input) and dataset: its F1 minus that of
the text-only bert-crf of the same encoder, paired by seed, with the paired bootstrap's 95% interval and p
(the leaderboard's numbers, `benchmarks/leaderboard.py`), whether the gain is distinguishable from 0 (the
interval excludes it), and beside it the gain its paper claims over its own text-only baseline. At
MiniLM-L6 size the absolute F1 of a BERT-base paper is not comparable; the paper's Δ is. Then the
caption-source comparison: the runs of the owl-captions block (benchmarks/runs/owl/, mPLUG-Owl
descriptions) against the same configs and seeds with BLIP-2 captions, and how many posts had a caption.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from baselines import collect, variant_of
from compare import _dataset
from leaderboard import REFERENCE, arguments, build, post_counts

# The gain each paper reports for a system over its own text-only baseline, test F1 (Twitter-2015, -2017),
# and that baseline: Chen et al. Table 1 (BERT-base, captions by BUTD, ResNet / Faster R-CNN features);
# Yu et al. (UMT) Table 2; Sun et al. (RpBERT) Table 4 (biLSTM-CRF heads); Zhao et al. (R-GCN) slides.
PAPER_DELTA: dict[str, dict[str, Any]] = {
    "bert-crf-caption": {"baseline": "BERT + CRF (Chen et al., Exp 1.1)", "delta": (71.49 - 71.48, 86.82 - 85.44)},
    "fusion-cm": {"baseline": "BERT + CRF (Chen et al., Exp 1.1)", "delta": (71.46 - 71.48, 86.40 - 85.44)},
    "fusion-vam": {"baseline": "BERT + CRF (Chen et al., Exp 1.1)", "delta": (69.80 - 71.48, 85.34 - 85.44)},
    "fusion-cam": {"baseline": "BERT + CRF (Chen et al., Exp 1.1)", "delta": (71.71 - 71.48, 85.71 - 85.44)},
    "visualbert-crf": {"baseline": "VisualBERT + CRF (Chen et al., Exp 1.2; captions, Exp 4.2; VisualBERT pretrained)",
                       "delta": (69.71 - 69.41, 84.92 - 83.90)},
    "umt": {"baseline": "BERT-CRF (Yu et al., Table 2)", "delta": (73.41 - 71.81, 85.31 - 83.44)},
    "rpbert-soft": {"baseline": "biLSTM-CRF + BERT (Sun et al., Table 4; the paper's G_s with TRC)",
                    "delta": (74.4 - 71.6, 87.4 - 85.1)},
    "rpbert-bilstm-soft": {"baseline": "biLSTM-CRF + BERT (Sun et al., Table 4; the paper's G_s with TRC)",
                           "delta": (74.4 - 71.6, 87.4 - 85.1)},
    "rgcn": {"baseline": "BERT-CRF (Zhao et al., slides)", "delta": (75.00 - 71.81, 87.11 - 83.44)},
}
DATASETS = ("twitter2015", "twitter2017")
# Leaderboard rows that are no answer to the question: systems trained towards a teacher, whose Δ vs bert-crf is
# mostly the teacher's; where their image Δ is measured instead
NOT_THE_IMAGE = {"caption-distill": "mmner's own system, trained towards a larger teacher: its Δ vs bert-crf is "
                                    "mostly the teacher's; its ablation without the caption (docs/results/best.md, "
                                    "`without-caption`) is the image's part"}


def paper_delta(system: str, dataset: str) -> tuple[float | None, str | None]:
    entry = PAPER_DELTA.get(system)
    if entry is None:
        return None, None
    return round(entry["delta"][DATASETS.index(dataset)], 2), entry["baseline"]  # type: ignore[index]


def question_rows(sections: list[dict]) -> list[dict]:
    """One row per multimodal system, dataset and encoder, with its Δ vs text-only bert-crf."""
    rows = []
    for sec in sections:
        for row in sec["rows"]:
            if row["visual_source"] == "none" or row["system"] == REFERENCE or row["system"] in NOT_THE_IMAGE:
                continue
            vs, own = row.get("vs_reference"), row.get("vs_own_baseline")
            paper, baseline = paper_delta(row["system"], sec["dataset"])
            rows.append({
                "dataset": sec["dataset"], "encoder": sec["encoder"], "system": row["system"],
                "visual": row["visual_source"], "seeds": row["seeds"], "f1": row["f1"], "f1_std": row["f1_std"],
                "delta": vs["delta"] if vs else None, "ci": [vs["ci_low"], vs["ci_high"]] if vs else None,
                "p": vs["p_value"] if vs else None, "paired_seeds": vs["seeds"] if vs else [],
                "distinguishable": bool(vs and (vs["ci_low"] > 0 or vs["ci_high"] < 0)),
                "paper_delta": paper, "paper_baseline": baseline,
                "own_baseline": own and {"system": own["baseline"], "delta": own["delta"], "ci": [own["ci_low"], own["ci_high"]],
                                         "p": own["p_value"], "seeds": own["seeds"]},
            })
    return sorted(rows, key=lambda r: (r["encoder"], r["dataset"], -(r["delta"] if r["delta"] is not None else -99)))


def caption_sources(runs_dir: Path, resamples: int, seed: int) -> list[dict]:
    """Each config run with mPLUG-Owl descriptions (runs_dir/owl) against the same config with BLIP-2
    captions, paired by seed: Δ (owl - BLIP-2) with the paired bootstrap, and caption coverage."""
    from mmner.analysis.bootstrap import Bootstrap

    owl_dir = runs_dir / "owl"
    if not owl_dir.is_dir():
        return []
    blip = {r["run"]: r for r in collect(runs_dir)}
    groups: dict[str, list[dict]] = {}
    for r in collect(owl_dir):
        groups.setdefault(variant_of(r["run"]) + "|" + _dataset(r), []).append(r)
    out = []
    for key, owl_runs in sorted(groups.items()):
        pairs = [(blip[r["run"]], r) for r in sorted(owl_runs, key=lambda r: r["seed"]) if r["run"] in blip]
        entry = {"config": key.split("|")[0], "dataset": key.split("|")[1],
                 "seeds": [o["seed"] for o in sorted(owl_runs, key=lambda r: r["seed"])],
                 "owl_f1": round(sum(o["f1"] for o in owl_runs) / len(owl_runs), 2),
                 "owl_masked_test": owl_runs[0].get("masked_images"), "owl_masked_train": owl_runs[0].get("train_masked_images"),
                 "train_posts": owl_runs[0].get("train_posts"), "test_posts": len(post_counts(owl_dir, owl_runs[0]["run"])),
                 "owl_detail": owl_runs[0].get("visual_detail")}
        if pairs:
            bases = [post_counts(runs_dir, b["run"]) for b, _ in pairs]
            others = [post_counts(owl_dir, o["run"]) for _, o in pairs]
            vs = Bootstrap(len(bases[0]), resamples=resamples, seed=seed).compare_seeds(bases, others)
            entry.update(blip2_f1=round(sum(b["f1"] for b, _ in pairs) / len(pairs), 2), paired_seeds=[b["seed"] for b, _ in pairs],
                         blip2_masked_test=pairs[0][0].get("masked_images"), delta=vs["delta"],
                         ci=[vs["ci_low"], vs["ci_high"]], p=vs["p_value"])
        out.append(entry)
    return out


def _p(p: float | None, resamples: int) -> str:
    if p is None:
        return "–"
    return f"< {1 / (resamples + 1):.4f}".rstrip("0") if p <= 1 / (resamples + 1) + 1e-9 else f"{p:.3f}"


def plot(rows: list[dict], output: Path) -> Path | None:
    """A forest plot of Δ vs bert-crf per system and dataset (MiniLM-L6 rows first), the paper's Δ beside it."""
    shown = [r for r in rows if r["delta"] is not None]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["encoder"], r["dataset"]) for r in shown})
    height = 0.45 * max(len(shown), 4) + 2.4
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.5 * len(panels), 8.0), height), squeeze=False, sharex=True)
    for ax, (enc, ds) in zip(axes[0], panels):
        part = [r for r in shown if (r["encoder"], r["dataset"]) == (enc, ds)][::-1]
        ys = range(len(part))
        for y, r in zip(ys, part):
            colour = "tab:blue" if r["distinguishable"] else "tab:gray"
            ax.errorbar(r["delta"], y, xerr=[[r["delta"] - r["ci"][0]], [r["ci"][1] - r["delta"]]], fmt="o",
                        color=colour, capsize=3)
            if r["paper_delta"] is not None:
                ax.plot(r["paper_delta"], y, marker="x", color="tab:red", linestyle="none")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(list(ys), [f"{r['system']} ({len(r['paired_seeds'])} seed{'s' if len(r['paired_seeds']) != 1 else ''})" for r in part])
        ax.set_title(f"{ds}, {enc}")
        ax.set_xlabel("Δ test F1 vs text-only bert-crf")
    handles = [plt.Line2D([], [], marker="o", color="tab:blue", linestyle="none", label="mmner Δ, 95% interval excludes 0"),
               plt.Line2D([], [], marker="o", color="tab:gray", linestyle="none", label="mmner Δ, interval contains 0"),
               plt.Line2D([], [], marker="x", color="tab:red", linestyle="none", label="paper's Δ over its own text-only baseline")]
    fig.legend(handles=handles, loc="lower center", ncol=1, frameon=False, fontsize="small")
    fig.tight_layout(rect=(0, 1.1 / height, 1, 1))
    target = output.with_suffix(".png")
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def render(rows: list[dict], sources: list[dict], resamples: int, figure: Path | None) -> str:
    lines = [
        "# Does the image help?",
        "",
        "Made by `benchmarks/summary.py` from the runs under `benchmarks/runs` (`mmner sweep",
        "benchmarks/matrix-minilm.yaml`; runs, configs and commits in the per-paper tables). For each multimodal",
        "system and dataset: test F1 (mean ± std over seeds), Δ = its F1 minus text-only `bert-crf` of the same",
        "encoder, paired by seed, with the paired bootstrap's 95% interval and p over test posts",
        f"({resamples} resamples; the leaderboard's numbers). A gain is distinguishable from 0 when the interval",
        "excludes 0; with this many rows some p < 0.05 are expected by chance. Paper Δ: the gain the system's paper",
        "reports over its own text-only baseline (BERT-base, the paper's image features): at MiniLM-L6 size the",
        "paper's absolute F1 is not comparable, its Δ is. Δ vs own baseline: where the paper's text-only baseline",
        "is another model than BERT-CRF (Chen et al.'s VisualBERT rows: Exp 1.2; RpBERT's biLSTM-CRF + RpBERT:",
        "biLSTM-CRF + BERT), the Δ against mmner's row of that model (`visualbert-crf-text`, `bilstm-crf-bert`),",
        "paired by seed with its interval: the figure to set beside the paper's Δ.",
    ]
    if figure is not None:
        lines += ["", f"![Δ vs text-only bert-crf]({figure.name})"]
    if not rows:
        lines += ["", "No multimodal run has finished yet."]
    for enc in sorted({r["encoder"] for r in rows}):
        for ds in DATASETS:
            part = [r for r in rows if r["encoder"] == enc and r["dataset"] == ds]
            if not part:
                continue
            lines += ["", f"## {ds}, {enc}", "",
                      "| system | visual | seeds | test F1 | Δ vs bert-crf | 95% interval | p | distinguishable from 0 | Δ vs own baseline [95%] | paper Δ | paper's baseline |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in part:
                f1 = f"{r['f1']:.2f}" + (f" ± {r['f1_std']:.2f}" if r["f1_std"] is not None else "")
                if r["delta"] is None:
                    delta = interval = "–"
                else:
                    shared = "" if len(r["paired_seeds"]) == len(r["seeds"]) else f" ({len(r['paired_seeds'])} paired)"
                    delta, interval = f"{r['delta']:+.2f}{shared}", f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                verdict = ("yes, a gain" if r["distinguishable"] and r["delta"] > 0 else "yes, a loss"
                           if r["distinguishable"] else "no" if r["delta"] is not None else "–")
                paper = f"{r['paper_delta']:+.2f}" if r["paper_delta"] is not None else "–"
                own = r.get("own_baseline")
                own_cell = (f"{own['delta']:+.2f} [{own['ci'][0]:+.2f}, {own['ci'][1]:+.2f}] vs `{own['system']}`"
                            if own else "–")
                lines.append(f"| `{r['system']}` | {r['visual']} | {', '.join(map(str, r['seeds']))} | {f1} | {delta} | "
                             f"{interval} | {_p(r['p'], resamples)} | {verdict} | {own_cell} | {paper} | "
                             f"{r['paper_baseline'] or '–'} |")
    measured = [r for r in rows if r["delta"] is not None]
    if measured:
        gains = [r for r in measured if r["distinguishable"] and r["delta"] > 0]
        losses = [r for r in measured if r["delta"] < 0]
        lines += ["", "Gains distinguishable from 0: "
                  + (", ".join(f"`{r['system']}` on {r['dataset']} ({r['delta']:+.2f})" for r in gains) or "none") + ".",
                  "Systems below text-only bert-crf: "
                  + (", ".join(f"`{r['system']}` on {r['dataset']} ({r['delta']:+.2f})" for r in losses) or "none") + "."]
        few = sorted({r["system"] for r in measured if len(r["paired_seeds"]) < 3})
        if few:
            lines += ["", "Fewer than 3 paired seeds so far (the matrix is still running): "
                      + ", ".join(f"`{s}`" for s in few) + "."]
    lines += [""] + [f"Not in these tables: `{system}`, {why}." for system, why in NOT_THE_IMAGE.items()]
    lines += ["", "## Caption source: mPLUG-Owl descriptions vs BLIP-2 captions", ""]
    if not sources:
        lines += ["No run of the owl-captions block (benchmarks/runs/owl/) has finished yet."]
    else:
        lines += ["The same config and seeds with `visual.caption: owl` instead of `blip2`. The mPLUG-Owl descriptions",
                  "cover only part of the images: posts without one are tagged from their text alone (`visual.missing:",
                  "mask`); the counts are those posts.", "",
                  "| config | dataset | seeds | F1 owl | F1 BLIP-2 | Δ owl − BLIP-2 | 95% interval | p | train posts without an owl description | test posts without one (BLIP-2: without a caption) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in sources:
            delta = f"{s['delta']:+.2f}" if "delta" in s else "–"
            interval = f"[{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]" if "ci" in s else "–"
            lines.append(f"| `{s['config']}` | {s['dataset']} | {', '.join(map(str, s['seeds']))} | {s['owl_f1']:.2f} | "
                         f"{s.get('blip2_f1', '–')} | {delta} | {interval} | {_p(s.get('p'), resamples)} | "
                         f"{s['owl_masked_train']} of {s['train_posts']} | {s['owl_masked_test']} of {s['test_posts']} "
                         f"({s.get('blip2_masked_test', '–')}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "summary.md", argv)
    from mmner.errors import MmnerError

    try:
        rows = question_rows(build(args.runs_dir, args.resamples, args.seed))
        sources = caption_sources(args.runs_dir, args.resamples, args.seed)
    except MmnerError as exc:
        sys.exit(f"error: {exc}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, args.output)
    args.output.write_text(render(rows, sources, args.resamples, figure))
    args.output.with_suffix(".json").write_text(json.dumps(
        {"resamples": args.resamples, "bootstrap_seed": args.seed, "rows": rows, "caption_sources": sources}, indent=1) + "\n")
    print(f"wrote {args.output} ({len(rows)} rows, {len(sources)} caption-source comparisons)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
