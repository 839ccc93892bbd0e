"""Baselines on Twitter-2015/2017: docs/results/baselines.md and .json from the run directories under
benchmarks/runs, which `mmner sweep` trains. Rows (`ROWS`): the text-only baselines (bert-crf,
bilstm-crf, the text-only VisualBERT of Chen et al. Exp 1.2, RpBERT's biLSTM-CRF + BERT) and the
biLSTM-CRF with the image at t = 0 (RpBERT Table 4), one row per config variant, with the F1 the
papers report for them.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/baselines.py                  # the table from what has finished

Run directories made elsewhere (e.g. on a GPU machine by `mmner sweep benchmarks/matrix-mpnet.yaml`)
can be copied under benchmarks/runs and are picked up.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# RpBERT Table 4's biLSTM rows (Fudan Univ. = Twitter-2015; Snap Res. is Lu et al.'s split, not the UMT release
# of Twitter-2017) and Chen et al. Table 1's text-only rows: variant -> (paper F1 2015, 2017, where)
PAPER_F1 = {
    "bert-crf": (71.48, 85.44, "Chen et al. Exp 1.1, BERT-base"),
    "visualbert-crf-text": (69.41, 83.90, "Chen et al. Exp 1.2, VisualBERT"),
    "bilstm-crf": (69.9, 80.1, "Sun et al. Table 4, fastText 300d"),
    "bilstm-crf-image": (70.0, 80.6, "Sun et al. Table 4, ResNet-152 at t = 0"),
    "bilstm-crf-bert": (71.6, 85.1, "Sun et al. Table 4, BERT-base"),
}
# rows with an image and the text-only row they are compared with (Δ image, paired by seed)
IMAGE_ROWS = {"bilstm-crf-image": "bilstm-crf"}
ROWS = ("bert-crf", "bilstm-crf", "visualbert-crf-text", "bilstm-crf-bert", "bilstm-crf-image")  # config variants


def variant_of(run_name: str) -> str:
    """`umt-no-gate-minilm-twitter2017-s13` -> `umt-no-gate` (the config name minus encoder, dataset, seed)."""
    return re.sub(r"-s\d+$", "", run_name).rsplit("-", 2)[0]


def collect(runs_dir: Path) -> list[dict]:
    records = []
    for metrics_file in sorted(runs_dir.glob("*/metrics.json")):
        test = json.loads(metrics_file.read_text()).get("test")
        if test and test.get("train_fraction", 1.0) == 1.0:  # low-resource runs are no benchmark rows
            records.append({"run": metrics_file.parent.name, **test})
    return records


def valid_f1(runs_dir: Path, run: str) -> float:
    """The valid F1 (of the selected epoch) of the run `run` under `runs_dir`; `collect` keeps the test split's."""
    return json.loads((runs_dir / run / "metrics.json").read_text())["valid"]["f1"]


def device_cell(records: list[dict]) -> str:
    """The devices and training precisions of a row's runs, e.g. `cpu 32-true` (runs made on other machines
    may differ: bf16-mixed where the CPU or GPU has bf16, see trainer.precision: auto)."""
    return ", ".join(sorted({f"{r['device']} {r.get('trainer_precision', '32-true')}" for r in records}))


def run_commits(record: dict) -> list:
    """The commits of every start of a run (metrics.json `git_commits`; older runs record only `git_commit`)."""
    return record.get("git_commits") or [record.get("git_commit")]


def training_seconds(record: dict) -> float:
    """A run's training time over every start: the sum of its epochs' times (mean `seconds_per_epoch` x
    `epochs`, training and validation); metrics.json `train_seconds` counts only a resumed run's last start."""
    return record["seconds_per_epoch"] * record["epochs"]


def commits_cell(record: dict) -> str:
    """`commit X`, or `commits X, Y` for a run resumed from other code."""
    commits = run_commits(record)
    return f"commit{'s' if len(commits) > 1 else ''} {', '.join(str(c) for c in commits)}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _vectors(record: dict) -> str:
    """`glove` / `spacy` for a biLSTM run (its config names the vectors), else its encoder."""
    return record["encoder"]


def baseline_rows(records: list[dict]) -> list[dict]:
    """The runs of this table: those of ROWS (a multimodal system's text-only ablations, such as umt-no-image,
    are in its own table)."""
    return [r for r in records if variant_of(r["run"]) in ROWS
            and (r.get("visual_source", "none") == "none" or variant_of(r["run"]) in IMAGE_ROWS)]


def _paper(variant: str, dataset: str) -> str:
    entry = PAPER_F1.get(variant)
    if entry is None:
        return "–"
    return f"{entry[0 if dataset.startswith('twitter2015') else 1]:g} ({entry[2]})"


def _image_delta(rs: list[dict], variant: str, groups: dict[tuple, list[dict]], key: tuple) -> str:
    """F1 minus the text-only row's, over the seeds both have (same dataset and vectors / encoder)."""
    base = groups.get((key[0], IMAGE_ROWS[variant], key[2]), []) if variant in IMAGE_ROWS else []
    seeds = {r["seed"] for r in rs} & {r["seed"] for r in base}
    if not seeds:
        return "–"
    mine = statistics.mean(r["f1"] for r in rs if r["seed"] in seeds)
    theirs = statistics.mean(r["f1"] for r in base if r["seed"] in seeds)
    return f"{mine - theirs:+.2f} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"


def table(runs_dir: Path, output: Path) -> None:
    # the multimodal runs beside them in benchmarks/runs belong to chen.py, umt.py, ...
    records = baseline_rows(collect(runs_dir))
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], variant_of(r["run"]), _vectors(r)), []).append(r)
    lines = [
        "# Baselines",
        "",
        "Made by `benchmarks/baselines.py` from the run directories under `benchmarks/runs` (one per config",
        "and seed). Test split, entity-level F1 in conlleval mode at the word level (first sub-token),",
        "epoch selected on valid F1. Dataset variant: UMT release of Twitter-2015/2017. Rows: the text-only",
        "runs (visual input none): `bert-crf`; `bilstm-crf` (GloVe or spaCy vectors); `visualbert-crf-text`, the",
        "text-only VisualBERT + CRF of Chen et al. (Exp 1.2; no vision-and-language pretraining, so the encoder",
        "over the text alone); `bilstm-crf-bert`, RpBERT's biLSTM-CRF + BERT ([e_k; e_k^BERT], `rpbert` without",
        "the image); and `bilstm-crf-image`, the biLSTM-CRF with the image at t = 0 (RpBERT Table 4), whose image",
        "vector is the mean word vector of the post's BLIP-2 caption (the images are not at hand; posts without",
        "a caption start with their words). Δ image: its F1 minus `bilstm-crf` with the same vectors, paired by",
        "seed. Paper F1: what the paper reports for the row (BERT-base, fastText 300d, ResNet-152 features; the",
        "paper's Twitter-2017 for Sun et al. is Lu et al.'s split): a reference point, not the same setting.",
        "Seconds per epoch are wall-clock training time over epochs on the device named; on `cpu` rows the",
        "machine may have been shared with other jobs, so they are not a speed benchmark. A commit marked",
        "`+dirty` had uncommitted changes in the checkout that trained it.",
        "",
        "| dataset | row | model | encoder / vectors | visual | seeds | test F1 | P | R | Δ image | paper F1 | gold entities | epochs (best) | s / epoch | device, precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, variant, encoder), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                dataset, variant, rs[0]["model"], encoder, rs[0]["visual_source"], ", ".join(str(r["seed"]) for r in rs),
                _mean_std([r["f1"] for r in rs]), _mean_std([r["precision"] for r in rs]),
                _mean_std([r["recall"] for r in rs]), _image_delta(rs, variant, groups, (dataset, variant, encoder)),
                _paper(variant, dataset), rs[0]["gold_entities"],
                ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs),
                device_cell(rs),
            )
        )
    lines += ["", "Per run (git commit of the code that trained it):", ""]
    lines += [f"- `{r['run']}`: F1 {r['f1']:.2f}, seed {r['seed']}, {training_seconds(r):.0f} s of epochs, {commits_cell(r)}" for r in records]
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
