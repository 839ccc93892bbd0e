"""Text-only baselines on Twitter-2015/2017: docs/results/baselines.md and .json from the run
directories under benchmarks/runs, which `mmner sweep` trains.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/baselines.py                  # the table from what has finished

Run directories made elsewhere (e.g. on a GPU machine by `mmner sweep benchmarks/matrix-mpnet.yaml`)
can be copied under benchmarks/runs and are picked up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("bert-crf", "bilstm-crf")  # the registry models of this table


def collect(runs_dir: Path) -> list[dict]:
    records = []
    for metrics_file in sorted(runs_dir.glob("*/metrics.json")):
        test = json.loads(metrics_file.read_text()).get("test")
        if test and test.get("train_fraction", 1.0) == 1.0:  # low-resource runs are no benchmark rows
            records.append({"run": metrics_file.parent.name, **test})
    return records


def device_cell(records: list[dict]) -> str:
    """The devices and training precisions of a row's runs, e.g. `cpu 32-true` (runs made on other machines
    may differ: bf16-mixed where the CPU or GPU has bf16, see trainer.precision: auto)."""
    return ", ".join(sorted({f"{r['device']} {r.get('trainer_precision', '32-true')}" for r in records}))


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(runs_dir: Path, output: Path) -> None:
    # the text-only rows; the multimodal runs beside them in benchmarks/runs belong to chen.py, umt.py, ...
    records = [r for r in collect(runs_dir) if r.get("visual_source", "none") == "none" and r.get("model") in BASELINES]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["model"], r["encoder"], r["visual_source"]), []).append(r)
    lines = [
        "# Text-only baselines",
        "",
        "Made by `benchmarks/baselines.py` from the run directories under `benchmarks/runs` (one per config",
        "and seed). Test split, entity-level F1 in conlleval mode at the word level (first sub-token),",
        "epoch selected on valid F1. Dataset variant: UMT release of Twitter-2015/2017. Visual input: none.",
        "Seconds per epoch are wall-clock training time over epochs on the device named; on `cpu` rows the",
        "machine may have been shared with other jobs, so they are not a speed benchmark. A commit marked",
        "`+dirty` had uncommitted changes in the checkout that trained it.",
        "",
        "| dataset | model | encoder / vectors | visual | seeds | test F1 | P | R | gold entities | epochs (best) | s / epoch | device, precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, model, encoder, visual), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                dataset, model, encoder, visual, ", ".join(str(r["seed"]) for r in rs),
                _mean_std([r["f1"] for r in rs]), _mean_std([r["precision"] for r in rs]),
                _mean_std([r["recall"] for r in rs]), rs[0]["gold_entities"],
                ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs),
                device_cell(rs),
            )
        )
    lines += ["", "Per run (git commit of the code that trained it):", ""]
    lines += [f"- `{r['run']}`: F1 {r['f1']:.2f}, seed {r['seed']}, {r['train_seconds']:.0f} s, commit {r['git_commit']}" for r in records]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {output} ({len(records)} runs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["table"], default="table", help="(the only one; kept for old scripts)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "baselines.md")
    args = parser.parse_args(argv)
    table(args.runs_dir, args.output)


if __name__ == "__main__":
    sys.exit(main())
