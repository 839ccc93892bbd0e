"""UMT (Yu et al. 2020) and its ablations on Twitter-2015/2017: trains each config for each seed, then
writes docs/results/umt.md and docs/results/umt.json from the run directories.

    python benchmarks/umt.py run --encoders minilm --seeds 13 21 42
    python benchmarks/umt.py run --configs umt-no-gate-minilm-twitter2017 --seeds 13
    python benchmarks/umt.py table                         # rebuild the table from what has finished

Rows: the full model (`umt-*`), its ablations (`umt-no-aux-*`: no entity span detection, the paper's
MT-BERT-CRF; `umt-no-gate-*`: no visual gate; `umt-no-image-*`: the text-only branch) and the text-only
bert-crf, all with the same encoder, schedule (epochs, batch, learning rates) and seeds, so that every
difference is the model's. Runs go to runs/bench/<config>-s<seed>, next to those of benchmarks/baselines.py
and benchmarks/chen.py (the bert-crf runs are shared and reused when finished); a finished run is reused and
an interrupted one resumed; run directories made elsewhere (a GPU machine) can be copied under runs/bench.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from baselines import ROOT, _mean_std, collect, run

# config prefix -> its row in Yu et al. (Table 2 for bert-crf and UMT, Table 3 for the ablations)
VARIANTS = {
    "bert-crf": "BERT-CRF (Table 2)",
    "umt": "UMT-BERT-CRF (Table 2)",
    "umt-no-aux": "w/o ESD Module (Table 3; MT-BERT-CRF)",
    "umt-no-gate": "w/o Visual Gate (Table 3)",
    "umt-no-image": "text-only branch (not in the paper)",
}
# Yu et al.: test F1 (cased BERT-base, ResNet-152 7x7 grid features, max length 128, batch 16)
PAPER_F1 = {
    "twitter2015": {"bert-crf": 71.81, "umt": 73.41, "umt-no-aux": 72.58, "umt-no-gate": 73.19},
    "twitter2017": {"bert-crf": 83.44, "umt": 85.31, "umt-no-aux": 84.42, "umt-no-gate": 84.99},
}
ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}
DATASETS = ("twitter2015", "twitter2017")


def config_names(encoders: list[str]) -> list[str]:
    return [f"{variant}-{enc}-{ds}" for enc in encoders for ds in DATASETS for variant in VARIANTS]


def variant_of(run_name: str) -> str:
    """`umt-no-gate-minilm-twitter2017-s13` -> `umt-no-gate` (the config name minus encoder, dataset, seed)."""
    return re.sub(r"-s\d+$", "", run_name).rsplit("-", 2)[0]


def table(runs_dir: Path, output: Path) -> None:
    records = [{**r, "row": variant_of(r["run"])} for r in collect(runs_dir)]
    records = [r for r in records if r["row"] in VARIANTS and r.get("model") in ("umt", "bert-crf")
               and r.get("encoder") in ENCODERS.values() and r["dataset"].split(":")[0] in DATASETS]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"].split(":")[0], r["encoder"], r["row"], r["visual_source"], r.get("visual_detail", ""))
        groups.setdefault(key, []).append(r)
    lines = [
        "# UMT: unified multimodal transformer with auxiliary entity span detection",
        "",
        "Made by `benchmarks/umt.py` from the run directories under `runs/bench` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Every row of a table",
        "has the same encoder, schedule and seeds. Visual input of the multimodal rows: BLIP-2 captions",
        "(`visual.source: caption`) read as caption regions; posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column, docs/results/captions.md) and tagged from their",
        "text alone; `umt-no-image` and bert-crf read no visual input. Δ: F1 minus the text-only bert-crf of the",
        "same dataset and encoder; Δ UMT: minus the full UMT (means over seeds).",
        "Paper: Yu et al. 2020, Tables 2 and 3 (cased BERT-base, ResNet-152 grid features): a reference point,",
        "not the same setting.",
    ]

    def mean_f1(ds: str, enc: str, variant: str, visual: str) -> float | None:
        rs = [r for k, v in groups.items() if k[:4] == (ds, enc, variant, visual) for r in v]
        return statistics.mean(r["f1"] for r in rs) if rs else None

    order = list(VARIANTS)
    for ds in DATASETS:
        for enc in ENCODERS.values():
            keys = sorted((k for k in groups if k[0] == ds and k[1] == enc), key=lambda k: (order.index(k[2]), k[3]))
            if not keys:
                continue
            base, full = mean_f1(ds, enc, "bert-crf", "none"), mean_f1(ds, enc, "umt", "caption")
            lines += [
                "", f"## {ds}, {enc}", "",
                ("| config | Yu et al. | visual | seeds | test F1 | Δ | Δ UMT | P | R | masked | gold entities "
                 "| paper F1 | epochs (best) | s / epoch | device |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for key in keys:
                rs = sorted(groups[key], key=lambda r: r["seed"])
                f1 = statistics.mean(r["f1"] for r in rs)
                paper = PAPER_F1[ds].get(key[2])
                lines.append(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                        key[2], VARIANTS[key[2]], key[3], ", ".join(str(r["seed"]) for r in rs),
                        _mean_std([r["f1"] for r in rs]),
                        f"{f1 - base:+.2f}" if base is not None else "–",
                        f"{f1 - full:+.2f}" if full is not None else "–",
                        _mean_std([r["precision"] for r in rs]), _mean_std([r["recall"] for r in rs]),
                        rs[0].get("masked_images", 0), rs[0]["gold_entities"],
                        f"{paper:.2f}" if paper is not None else "–",
                        ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
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
    parser.add_argument("--configs", nargs="+", help="config names (default: every variant x --encoders x dataset)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "umt.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    from mmner.cli import _setup_logging

    _setup_logging()
    if args.command == "run":
        run(args.configs or config_names(args.encoders), args.seeds, args.runs_dir, args.overrides)
    table(args.runs_dir, args.output)


if __name__ == "__main__":
    sys.exit(main())
