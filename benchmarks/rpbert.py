"""RpBERT (Sun et al. 2021) on Twitter-2015/2017: trains each config for each seed, then writes
docs/results/rpbert.md and docs/results/rpbert.json from the run directories.

    python benchmarks/rpbert.py run --configs rpbert-soft-minilm-twitter2017 --seeds 13 21 42
    python benchmarks/rpbert.py run --encoders minilm          # every variant, MiniLM-L6 only
    python benchmarks/rpbert.py table                         # rebuild the table from what has finished

Runs go to runs/bench/<config>-s<seed>, next to those of benchmarks/baselines.py and benchmarks/chen.py:
each RpBERT row is compared with the text-only bert-crf (Δ text) and with visualbert-crf (Δ w/o Rp: the
same single-stream input without relation propagation, the paper's Table 6 ablation) of the same dataset,
encoder and seeds, when those runs have finished. A finished run is reused and an interrupted one
resumed; run directories made elsewhere (a GPU machine) can be copied under runs/bench.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from baselines import ROOT, _mean_std, collect, run

# config variant -> (head, gate, the paper's name for the gate)
VARIANTS = {
    "soft": ("crf", "soft", "G_s"),
    "hard": ("crf", "hard", "G_h1"),
    "gumbel": ("crf", "gumbel", "G_h2"),
    "bilstm-soft": ("bilstm-crf", "soft", "G_s"),
}
# Sun et al., Table 4: test F1 of "biLSTM-CRF + RpBERT" (BERT-base, ResNet-152 grids, TRC multitask).
# Fudan Univ. = Twitter-2015; Snap Res. = Lu et al. 2018 with their 4817/1032/1033 split, not the UMT
# release of Twitter-2017 (3373/723/723) used here.
PAPER_F1 = {
    "twitter2015": {"G_h1": 73.8, "G_h2": 74.2, "G_s": 74.4},
    "twitter2017": {"G_h1": 86.4, "G_h2": 86.6, "G_s": 87.4},
}
ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}
DATASETS = ("twitter2015", "twitter2017")


def config_names(encoders: list[str]) -> list[str]:
    return [f"rpbert-{variant}-{enc}-{ds}" for enc in encoders for ds in DATASETS for variant in VARIANTS]


def _variant(run_name: str) -> str | None:
    """`rpbert-bilstm-soft-minilm-twitter2017-s13` -> `bilstm-soft`."""
    rest = run_name.removeprefix("rpbert-")
    return next((v for v in sorted(VARIANTS, key=len, reverse=True) if rest.startswith(v + "-")), None)


def _mean_f1(records: list[dict], dataset: str, encoder: str, model: str, visual: str) -> float | None:
    f1 = [r["f1"] for r in records if r["dataset"].split(":")[0] == dataset and r.get("encoder") == encoder
          and r.get("model") == model and r.get("visual_source") == visual]
    return statistics.mean(f1) if f1 else None


def table(runs_dir: Path, output: Path) -> None:
    everything = collect(runs_dir)
    records = [r for r in everything if r.get("model") == "rpbert" and _variant(r["run"]) is not None
               and r.get("encoder") in ENCODERS.values() and r["dataset"].split(":")[0] in DATASETS]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"].split(":")[0], r["encoder"], _variant(r["run"]), r["visual_source"],
               r.get("visual_detail", ""))
        groups.setdefault(key, []).append(r)
    lines = [
        "# RpBERT: text-image relation propagation",
        "",
        "Made by `benchmarks/rpbert.py` from the run directories under `runs/bench` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Visual input: BLIP-2",
        "captions as visual tokens (`visual.source: caption`); posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column) and tagged from their text alone. TRC multitask",
        "training is off in these runs (the TRC tweets' images are not at hand), so the relation classifier",
        "learns only from the tagging loss through the gate. Δ text: F1 minus the text-only bert-crf; Δ w/o Rp:",
        "F1 minus visualbert-crf (the same input without relation propagation); both of the same dataset and",
        "encoder, mean over seeds. Paper: Sun et al., Table 4, biLSTM-CRF + RpBERT (BERT-base, ResNet-152 grids,",
        "TRC multitask; the Snap split differs from Twitter-2017's UMT release): a reference point, not the same",
        "setting.",
    ]
    order = list(VARIANTS)
    for ds in DATASETS:
        for enc in ENCODERS.values():
            keys = sorted((k for k in groups if k[0] == ds and k[1] == enc), key=lambda k: (order.index(k[2]), k[3]))
            if not keys:
                continue
            text_only = _mean_f1(everything, ds, enc, "bert-crf", "none")
            lines += [
                "", f"## {ds}, {enc}", "",
                ("| variant | head | gate | visual | seeds | test F1 | Δ text | Δ w/o Rp | P | R | masked "
                 "| gold entities | paper F1 | epochs (best) | s / epoch | device |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for key in keys:
                rs = sorted(groups[key], key=lambda r: r["seed"])
                head, gate, paper_gate = VARIANTS[key[2]]
                f1 = statistics.mean(r["f1"] for r in rs)
                without = _mean_f1(everything, ds, enc, "visualbert-crf", key[3])
                lines.append(
                    "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} | {} | {} | {} |".format(
                        key[2], head, gate, paper_gate, key[3], ", ".join(str(r["seed"]) for r in rs),
                        _mean_std([r["f1"] for r in rs]),
                        f"{f1 - text_only:+.2f}" if text_only is not None else "–",
                        f"{f1 - without:+.2f}" if without is not None else "–",
                        _mean_std([r["precision"] for r in rs]), _mean_std([r["recall"] for r in rs]),
                        rs[0].get("masked_images", 0), rs[0]["gold_entities"], PAPER_F1[ds][paper_gate],
                        ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                        ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs), ", ".join(sorted({r["device"] for r in rs})),
                    )
                )
    details = sorted({r["visual_detail"] for r in records if r.get("visual_detail")})
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
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "rpbert.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    from mmner.cli import _setup_logging

    _setup_logging()
    if args.command == "run":
        run(args.configs or config_names(args.encoders), args.seeds, args.runs_dir, args.overrides)
    table(args.runs_dir, args.output)


if __name__ == "__main__":
    sys.exit(main())
