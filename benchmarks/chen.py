"""Chen et al. ("Can images help recognize entities?") on Twitter-2015/2017: trains each config for
each seed, then writes docs/results/chen.md and docs/results/chen.json from the run directories.

    python benchmarks/chen.py run --configs fusion-cm-minilm-twitter2017 --seeds 13 21 42
    python benchmarks/chen.py run --encoders minilm          # every model, MiniLM-L6 only
    python benchmarks/chen.py table                         # rebuild the table from what has finished

Runs go to runs/bench/<config>-s<seed>, next to those of benchmarks/baselines.py (the text-only
bert-crf rows are the same runs, reused when finished), so the table compares every multimodal model
with its text-only baseline on the same encoder, dataset and seeds. A finished run is reused and an
interrupted one resumed; run directories made elsewhere (a GPU machine) can be copied under runs/bench.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from baselines import ROOT, collect, run

# registry name -> (Chen et al.'s experiment, its name in their Table 1)
MODELS = {
    "bert-crf": ("1.1", "BERT + CRF"),
    "bert-crf-caption": ("4.1", "BERT + CRF + Captions"),
    "visualbert-crf": ("4.2", "VisualBERT + CRF + Captions"),
    "fusion-cm": ("2.1", "BERT + CM + CRF"),
    "fusion-vam": ("2.2", "BERT + VAM + CRF"),
    "fusion-cam": ("2.3", "BERT + CAM + CRF"),
    "fusion-tam": ("3.1", "VisualBERT + TAM + CRF"),
}
# Chen et al., Table 1: test F1 (BERT-base, ResNet-152 / Faster R-CNN features, BUTD captions)
PAPER_F1 = {
    "twitter2015": {"1.1": 71.48, "4.1": 71.49, "4.2": 69.71, "2.1": 71.46, "2.2": 69.80, "2.3": 71.71, "3.1": 70.09},
    "twitter2017": {"1.1": 85.44, "4.1": 86.82, "4.2": 84.92, "2.1": 86.40, "2.2": 85.34, "2.3": 85.71, "3.1": 84.72},
}
ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}
DATASETS = ("twitter2015", "twitter2017")


def config_names(encoders: list[str]) -> list[str]:
    return [f"{model}-{enc}-{ds}" for enc in encoders for ds in DATASETS for model in MODELS]


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(runs_dir: Path, output: Path) -> None:
    records = [r for r in collect(runs_dir)
               if r.get("model") in MODELS and r.get("encoder") in ENCODERS.values()
               and r["dataset"].split(":")[0] in DATASETS]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"].split(":")[0], r["encoder"], r["model"], r["visual_source"], r.get("visual_detail", ""))
        groups.setdefault(key, []).append(r)
    lines = [
        "# Chen et al.: can images help recognize entities?",
        "",
        "Made by `benchmarks/chen.py` from the run directories under `runs/bench` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Visual input of the",
        "multimodal models: BLIP-2 captions (`visual.source: caption`), the fusion heads and VisualBERT reading",
        "them as caption regions; posts without a usable caption are masked (`visual.missing: mask`, count in",
        "the `masked` column: 358 blank Twitter-2017 images, docs/results/captions.md) and tagged from their",
        "text alone. Δ: F1 minus the text-only bert-crf of the same dataset and encoder (mean over seeds).",
        "Paper: Chen et al., Table 1 (BERT-base; fusion heads on ResNet-152 grids, TAM on Faster R-CNN",
        "regions, captions from BUTD): a reference point, not the same setting.",
    ]
    baseline = {(ds, enc): statistics.mean(r["f1"] for r in rs)
                for (ds, enc, model, visual, _), rs in groups.items() if model == "bert-crf" and visual == "none"}
    order = list(MODELS)
    for ds in DATASETS:
        for enc in ENCODERS.values():
            keys = sorted((k for k in groups if k[0] == ds and k[1] == enc), key=lambda k: (order.index(k[2]), k[3]))
            if not keys:
                continue
            lines += [
                "", f"## {ds}, {enc}", "",
                "| model | Chen et al. | visual | seeds | test F1 | Δ | P | R | masked | gold entities "
                "| paper F1 | epochs (best) | s / epoch | device |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for key in keys:
                rs = sorted(groups[key], key=lambda r: r["seed"])
                exp, title = MODELS[key[2]]
                base = baseline.get((ds, enc))
                delta = f"{statistics.mean(r['f1'] for r in rs) - base:+.2f}" if base is not None else "–"
                lines.append(
                    "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {:.2f} | {} | {} | {} |".format(
                        key[2], title, exp, key[3], ", ".join(str(r["seed"]) for r in rs),
                        _mean_std([r["f1"] for r in rs]), delta, _mean_std([r["precision"] for r in rs]),
                        _mean_std([r["recall"] for r in rs]), rs[0].get("masked_images", 0), rs[0]["gold_entities"],
                        PAPER_F1[ds][exp], ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                        ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs), ", ".join(sorted({r["device"] for r in rs})),
                    )
                )
    details = sorted({r["visual_detail"] for r in records if r.get("visual_detail") and r["visual_source"] != "none"})
    if details:
        lines += ["", "Visual inputs:", ""] + [f"- {d}" for d in details]
    lines += ["", "Per run (git commit of the code that trained it):", ""]
    lines += [f"- `{r['run']}`: F1 {r['f1']:.2f}, seed {r['seed']}, visual {r['visual_source']}, "
              f"{r['train_seconds']:.0f} s, commit {r['git_commit']}" for r in records]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {output} ({len(records)} runs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--configs", nargs="+", help="config names (default: every model x --encoders x dataset)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "chen.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    from mmner.cli import _setup_logging

    _setup_logging()
    if args.command == "run":
        run(args.configs or config_names(args.encoders), args.seeds, args.runs_dir, args.overrides)
    table(args.runs_dir, args.output)


if __name__ == "__main__":
    sys.exit(main())
