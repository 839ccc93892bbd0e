"""Training speed on this machine, old path against the defaults: writes docs/results/train_speed.md
(+ .json) from the runs of benchmarks/matrix-speed.yaml.

    mmner sweep benchmarks/matrix-speed.yaml
    python benchmarks/train_speed.py [--root benchmarks/runs/speed] [--output docs/results/train_speed.md]

"old" trains in fp32 on randomly drawn batches and updates every parameter (word embeddings included)
with AdamW's per-tensor loop; "new" is the defaults: precision `auto` (bf16-mixed on a CPU with
avx512_bf16 / AMX), length-bucketed batches, frozen word embeddings, the fused AdamW update.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.35  # new / old seconds per epoch (issue: at least 2.9x faster)
SPEED_CASES = ("bert-crf-minilm-twitter2017", "bert-crf-minilm-twitter2015", "umt-minilm-twitter2017")
F1_CONFIG = "bert-crf-minilm-twitter2017"
F1_PATHS = {"old": "old path", "new": "new path (defaults)", "unfrozen": "new path, word embeddings trained"}
MPNET = "bert-crf-mpnet-twitter2017"


def _run(root: Path, tag: str, config: str, seed: int) -> dict | None:
    """A finished run: metrics.json's valid and test records plus the logged time of each epoch."""
    run_dir = root / tag / f"{config}-s{seed}"
    if not (run_dir / "metrics.json").is_file():
        return None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "train_log.csv", newline="") as fh:
        epochs = [float(row["epoch_seconds"]) for row in csv.DictReader(fh) if row.get("epoch_seconds")]
    record = metrics.get("test") or metrics["valid"]
    return {"run": f"{tag}/{run_dir.name}", "valid_f1": metrics["valid"]["f1"], "test_f1": (metrics.get("test") or {}).get("f1"),
            "epoch_seconds": [round(s, 1) for s in epochs], **{k: record.get(k) for k in (
                "model", "encoder", "dataset", "variant", "visual_source", "seed", "epochs", "best_epoch",
                "train_seconds", "seconds_per_epoch", "trainer_precision", "batching", "dropout_mask", "frozen_embeddings",
                "threads", "device", "cpu", "git_commit")}}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def speed_section(root: Path, records: list[dict]) -> list[str]:
    lines = [
        "## Seconds per epoch",
        "",
        "Two epochs of each path, seed 13, one training at a time on an otherwise idle machine. `s / epoch`: the",
        "mean logged time of the two epochs (training batches and the validation pass); `epoch 2`: the second",
        "epoch alone (posts already featurised on both paths); `wall / epoch`: the whole `fit` (featurising,",
        f"setup, both epochs) over 2. Ratio: new / old (the goal: at most {GOAL}).",
        "",
        "| config | dataset | visual | old s / epoch | new s / epoch | ratio | speed-up | old epoch 2 | new epoch 2 | old wall / epoch | new wall / epoch | new precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, float] = {}
    for config in SPEED_CASES:
        old, new = _run(root, "old-2ep", config, 13), _run(root, "new-2ep", config, 13)
        if old is None or new is None:
            lines.append(f"| {config} | – | – | not run yet | | | | | | | | |")
            continue
        records += [old, new]
        ratio = new["seconds_per_epoch"] / old["seconds_per_epoch"]
        lines.append(
            f"| {config} | {new['dataset'].split(':')[0]} | {new['visual_source']} | {old['seconds_per_epoch']:.1f} | "
            f"{new['seconds_per_epoch']:.1f} | {ratio:.2f} | {1 / ratio:.2f}x | {old['epoch_seconds'][-1]:.1f} | "
            f"{new['epoch_seconds'][-1]:.1f} | {old['train_seconds'] / old['epochs']:.1f} | "
            f"{new['train_seconds'] / new['epochs']:.1f} | {new['trainer_precision']} |")
        ratios[config] = ratio
    if ratios:
        met = [c for c, r in ratios.items() if r <= GOAL]
        missed = [f"{c} ({r:.2f})" for c, r in ratios.items() if r > GOAL]
        lines += ["", f"At most {GOAL}x the old path: {', '.join(met) or 'none'}"
                  + (f"; not yet: {', '.join(missed)}." if missed else ".")]
    return lines


def f1_section(root: Path, records: list[dict]) -> list[str]:
    lines = [
        "",
        f"## Test F1 of `{F1_CONFIG}`, old and new path",
        "",
        "The config's full schedule (6 epochs, epoch chosen on valid F1), seeds 13, 21, 42, visual source none.",
        "(Their epoch times are not a speed measurement: the machine was not kept idle for them.)",
        "Δ: the mean over seeds of each seed's F1 minus the old path's F1 of the same seed (paired); the",
        "speed costs no accuracy when |Δ| is within the old path's seed spread (its std).",
        "",
        "| path | seeds | test F1 | valid F1 | Δ test vs old (paired) | per seed (test) | precision | embeddings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = {tag: [r for seed in (13, 21, 42) if (r := _run(root, tag, F1_CONFIG, seed)) is not None] for tag in F1_PATHS}
    old = {r["seed"]: r["test_f1"] for r in runs["old"]}
    verdicts = []
    for tag, label in F1_PATHS.items():
        rs = runs[tag]
        if not rs:
            lines.append(f"| {label} | – | not run yet | | | | | |")
            continue
        records += rs
        common = [r for r in rs if r["seed"] in old]
        delta = "–"
        if tag != "old" and common:
            diffs = [r["test_f1"] - old[r["seed"]] for r in common]
            delta = f"{statistics.mean(diffs):+.2f} ({len(diffs)} seeds)"
            if len(runs["old"]) > 1:
                spread = statistics.stdev(old.values())
                mean = statistics.mean(diffs)
                where = ("within the seed spread" if abs(mean) <= spread else
                         "above the seed spread (better than the old path)" if mean > 0 else
                         "below the seed spread: it costs accuracy")
                verdicts.append(f"- {label}: Δ {mean:+.2f} (per seed {', '.join(f'{d:+.2f}' for d in diffs)}) against "
                                f"the old path's seed std {spread:.2f}: {where}.")
        lines.append(
            f"| {label} | {', '.join(str(r['seed']) for r in rs)} | {_mean_std([r['test_f1'] for r in rs])} | "
            f"{_mean_std([r['valid_f1'] for r in rs])} | {delta} | {', '.join(format(r['test_f1'], '.2f') for r in rs)} | "
            f"{rs[0]['trainer_precision']} | "
            f"{'frozen' if rs[0]['frozen_embeddings'] else 'trained'} |")
    if verdicts:
        lines += [""] + verdicts
    if runs["new"] and runs["unfrozen"]:
        seeds = sorted({r["seed"] for r in runs["new"]} & {r["seed"] for r in runs["unfrozen"]})
        by_seed = {t: {r["seed"]: r for r in runs[t]} for t in ("new", "unfrozen")}
        frozen, trained = (statistics.mean(by_seed[t][s]["valid_f1"] for s in seeds) for t in ("new", "unfrozen"))
        diffs = [by_seed["unfrozen"][s]["valid_f1"] - by_seed["new"][s]["valid_f1"] for s in seeds]
        test_diffs = [by_seed["unfrozen"][s]["test_f1"] - by_seed["new"][s]["test_f1"] for s in seeds]
        line = (f"`model.freeze_embeddings` default: valid F1 {frozen:.2f} frozen vs {trained:.2f} trained (mean over "
                f"the seeds both have: {', '.join(map(str, seeds))}; trained - frozen per seed "
                f"{', '.join(f'{d:+.2f}' for d in diffs)}, test {', '.join(f'{d:+.2f}' for d in test_diffs)}). ")
        # The rule: trained embeddings become the default only if they gain more on validation than the
        # frozen runs' own seed spread; otherwise the two are the same within noise and frozen, which
        # costs less per step, stays.
        spread = statistics.stdev(by_seed["new"][s]["valid_f1"] for s in seeds) if len(seeds) > 1 else None
        if spread is None:
            line += "One seed: no decision yet."
        elif statistics.mean(diffs) > spread:
            line += (f"Trained gains {statistics.mean(diffs):+.2f} on validation, more than the frozen runs' seed std "
                     f"{spread:.2f}: trained should be the default.")
        else:
            line += (f"Mean gain of training them {statistics.mean(diffs):+.2f}, within the frozen runs' valid seed std "
                     f"{spread:.2f}: the same within noise, so frozen (cheaper per step) stays the default.")
        lines += ["", line]
    return lines


def mpnet_section(root: Path, records: list[dict]) -> list[str]:
    lines = ["", f"## `{MPNET}`, new path", ""]
    r = _run(root, "mpnet-1ep", MPNET, 13)
    if r is None:
        return lines + ["Not run yet."]
    records.append(r)
    return lines + [
        f"One epoch, seed 13: {r['seconds_per_epoch']:.0f} s (training batches and validation; "
        f"precision {r['trainer_precision']}, {r['threads']} threads), valid F1 after it {r['valid_f1']:.2f}.",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT / "benchmarks" / "runs" / "speed")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "train_speed.md")
    args = parser.parse_args(argv)
    records: list[dict] = []
    lines = [
        "# Training speed on the CPU",
        "",
        "Made by `benchmarks/train_speed.py` from the runs of `mmner sweep benchmarks/matrix-speed.yaml`",
        "(`benchmarks/runs/speed`). Dataset variant: UMT release of Twitter-2015/2017; encoder MiniLM-L6 unless named;",
        "visual source as the config says (`umt`: BLIP-2 captions). \"old\": fp32, randomly drawn batches, every",
        "parameter updated (word embeddings included) by AdamW's per-tensor loop, torch's dropout and attention.",
        "\"new\": the defaults: precision `auto`, length-bucketed batches, frozen word embeddings, fused AdamW (the",
        "gradient clipping inside its update), fast dropout masks in the dropout modules and the attention",
        "probabilities (`trainer.dropout_mask: fast`, mmner/models/dropout.py). Each run's commit is listed at the end.",
        "",
        *speed_section(args.root, records),
        *f1_section(args.root, records),
        *mpnet_section(args.root, records),
    ]
    machines = sorted({", ".join(filter(None, [r["cpu"], r["device"], f"{r['threads']} threads"])) for r in records})
    if machines:
        lines += ["", "Machine: " + "; ".join(machines) + "."]
    lines += ["", "Per run (git commit of the code that trained it):", ""]
    lines += [f"- `{r['run']}`: test F1 {r['test_f1'] if r['test_f1'] is not None else '–'}, valid F1 {r['valid_f1']}, "
              f"epochs {r['epoch_seconds']} s, precision {r['trainer_precision']}, commit {r['git_commit']}"
              for r in records]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.output} ({len(records)} runs)")


if __name__ == "__main__":
    sys.exit(main())
