"""Shared table and command line of the model-comparison benchmarks (chen.py, umt.py, rpbert.py, rgcn.py).

Each of those scripts is a `Benchmark` spec (which runs are its rows, what the paper reported, which
reference rows every row is compared with, any columns of its own) and `main(SPEC)`. The table: runs of
benchmarks/runs (`baselines.collect`) grouped by dataset, encoder, row (model or config variant) and visual
source, one section per dataset and encoder, mean ± std over seeds, Δ against the references, the paper's
F1, epochs / s per epoch / device, then the visual inputs and one line per run with its git commit;
written as <output>.md and <output>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from baselines import ROOT, _mean_std, collect, commits_cell, device_cell, training_seconds

ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}
DATASETS = ("twitter2015", "twitter2017")


@dataclass(frozen=True)
class Reference:
    """A "Δ" column: each row's mean F1 minus that of the reference runs of the same dataset and encoder.

    `row`: the benchmark's own runs of that row ("Δ vs variant X"); `model`: any collected run of that
    registry model, in this benchmark or not ("Δ vs model X"). `visual`: the reference's visual source
    (None: the same as the row's). Row and reference are compared over the seeds both have (a paired
    comparison); when they share none, over all the seeds of each, marked "†".
    """

    column: str
    row: str | None = None
    model: str | None = None
    visual: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str  # benchmarks/<name>.py, docs/results/<name>.md
    doc: str  # the script's docstring: its --help
    title: str  # the table's "# " heading
    intro: list[str]  # the lines under the heading
    row_columns: tuple[str, ...]  # the row's name, then one header per label cell
    variants: dict[str, str | tuple[str, ...]]  # row -> its label cell(s), e.g. its name in the paper
    paper_f1: dict[str, dict[str, float]]  # dataset -> row -> F1 reported in the paper ("–" where absent)
    models: tuple[str, ...]  # registry models whose runs can be rows
    row_of: Callable[[dict], str | None]  # a run's row (None or not in `variants`: not in this benchmark)
    references: tuple[Reference, ...] = ()
    config_prefix: str = ""  # config name: <prefix><row>-<encoder>-<dataset>
    row_noun: str = "variant"  # for --help
    paper_format: str = ".2f"
    record_row: bool = False  # the JSON records carry their row ("row")
    prepare: Callable[[list[dict], Path], None] | None = None  # adds fields to the records, in place
    extra_columns: tuple[tuple[str, Callable[[list[dict]], str]], ...] = ()  # after "paper F1"
    sections: Callable[[Path, Path], list[str]] | None = None  # more lines after the tables (output, runs dir)
    commands: dict[str, Callable[[argparse.Namespace], None]] = field(default_factory=dict)  # besides run, table

    def config_names(self, encoders: Iterable[str]) -> list[str]:
        """The configs of this benchmark's rows that exist in configs/."""
        names = [f"{self.config_prefix}{row}-{enc}-{ds}" for enc in encoders for ds in DATASETS for row in self.variants]
        return [name for name in names if (ROOT / "configs" / f"{name}.yaml").is_file()]

    def records(self, everything: list[dict]) -> list[dict]:
        """The runs that are rows of this benchmark, in run-name order."""
        out = []
        for r in everything:
            row = self.row_of(r)
            if (row in self.variants and r.get("model") in self.models and r.get("encoder") in ENCODERS.values()
                    and _dataset(r) in DATASETS):
                out.append({**r, "row": row} if self.record_row else r)
        return out


def _dataset(record: dict) -> str:
    return record["dataset"].split(":")[0]


def _cells(label: str | tuple[str, ...]) -> list[str]:
    return [label] if isinstance(label, str) else list(label)


def _delta(ref: Reference, row_runs: list[dict], row_visual: str, ds: str, enc: str,
           groups: dict[tuple, list[dict]], everything: list[dict]) -> str:
    """The Δ cell: mean F1 of the row minus that of the reference over the seeds both have (paired by
    seed); when they share none, the means over all seeds of each, marked "†"; "–" without reference."""
    visual = row_visual if ref.visual is None else ref.visual
    if ref.model is not None:
        runs = [r for r in everything if _dataset(r) == ds and r.get("encoder") == enc
                and r.get("model") == ref.model and r.get("visual_source") == visual]
    else:
        runs = [r for key, rs in groups.items() if key[:4] == (ds, enc, ref.row, visual) for r in rs]
    if not runs:
        return "–"
    common = {r["seed"] for r in row_runs} & {r["seed"] for r in runs}
    if common:
        mine = statistics.mean(r["f1"] for r in row_runs if r["seed"] in common)
        theirs = statistics.mean(r["f1"] for r in runs if r["seed"] in common)
        return f"{mine - theirs:+.2f}"
    return f"{statistics.mean(r['f1'] for r in row_runs) - statistics.mean(r['f1'] for r in runs):+.2f} †"


def table(spec: Benchmark, runs_dir: Path, output: Path) -> None:
    everything = collect(runs_dir)
    records = spec.records(everything)
    if spec.prepare is not None:
        spec.prepare(records, runs_dir)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        # text-only runs have no visual detail to tell apart (older runs lack the field, newer say "text only")
        detail = r.get("visual_detail", "") if r["visual_source"] != "none" else ""
        key = (_dataset(r), r["encoder"], spec.row_of(r), r["visual_source"], detail)
        groups.setdefault(key, []).append(r)
    lines = [f"# {spec.title}", "", *spec.intro, "",
             "What each row implements of its paper, and every deviation: [docs/fidelity.md](../fidelity.md)."]
    columns = [*spec.row_columns, "visual", "seeds", "test F1", *(ref.column for ref in spec.references), "P", "R",
               "masked", "gold entities", "paper F1", *(header for header, _ in spec.extra_columns),
               "epochs (best)", "s / epoch", "device, precision"]
    order = list(spec.variants)
    for ds in DATASETS:
        for enc in ENCODERS.values():
            keys = sorted((k for k in groups if k[0] == ds and k[1] == enc), key=lambda k: (order.index(k[2]), k[3]))
            if not keys:
                continue
            lines += ["", f"## {ds}, {enc}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            for key in keys:
                rs = sorted(groups[key], key=lambda r: r["seed"])
                deltas = [_delta(ref, rs, key[3], ds, enc, groups, everything) for ref in spec.references]
                paper = spec.paper_f1[ds].get(key[2])
                cells = [
                    key[2], *_cells(spec.variants[key[2]]), key[3], ", ".join(str(r["seed"]) for r in rs),
                    _mean_std([r["f1"] for r in rs]), *deltas,
                    _mean_std([r["precision"] for r in rs]), _mean_std([r["recall"] for r in rs]),
                    rs[0].get("masked_images", 0), rs[0]["gold_entities"],
                    format(paper, spec.paper_format) if paper is not None else "–",
                    *(cell(rs) for _, cell in spec.extra_columns),
                    ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                    ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs), device_cell(rs),
                ]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if spec.references:
        lines += ["", "Δ: mean F1 of the row minus that of the reference over the seeds both have (paired by seed); "
                  "† where they share no seed: the means over all their seeds."]
    finished = {re.sub(r"-s\d+$", "", r["run"]) for r in records}
    missing = [name for name in spec.config_names(ENCODERS) if name not in finished]
    if missing:
        lines += ["", f"Not run yet ({len(missing)} configs, no finished seed): "
                  + ", ".join(f"`{name}`" for name in missing) + "."]
    if spec.sections is not None:
        lines += spec.sections(output, runs_dir)
    details = sorted({r["visual_detail"] for r in records if r.get("visual_detail") and r["visual_source"] != "none"})
    if details:
        lines += ["", "Visual inputs:", ""] + [f"- {d}" for d in details]
    lines += ["", "Per run (git commit of the code that trained it):", ""]
    lines += [f"- `{r['run']}`: F1 {r['f1']:.2f}, seed {r['seed']}, visual {r['visual_source']}, "
              f"{training_seconds(r):.0f} s of epochs, {commits_cell(r)}" for r in records]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {output} ({len(records)} runs)")


def main(spec: Benchmark, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=spec.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=[*spec.commands, "table"], default="table")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / f"{spec.name}.md")
    args = parser.parse_args(argv)
    if args.command in spec.commands:
        spec.commands[args.command](args)
    table(spec, args.runs_dir, args.output)
