"""RpBERT (Sun et al. 2021) on Twitter-2015/2017: docs/results/rpbert.md and .json from the run
directories under benchmarks/runs, which `mmner sweep` trains.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/rpbert.py                     # the table from what has finished

Runs go to benchmarks/runs/<config>-s<seed>, next to those of benchmarks/baselines.py and benchmarks/chen.py:
each RpBERT row is compared with the text-only bert-crf (Δ text) and with rpbert-soft-no-rp (Δ w/o Rp: the
same model with the gate off, the paper's Table 6 ablation) of the same dataset, encoder and seeds, when
those runs have finished. Rows soft / soft-trc / soft-weak compare Task#1's relation supervision: none,
the TRC corpus (tweets without images), weak labels from the training posts' captions. Run directories made elsewhere (a GPU machine) can be
copied under benchmarks/runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from baselines import valid_f1
from compare import Benchmark, Reference, collect, main

# config variant -> (head, gate, the paper's name for the gate, Task#1 relation supervision)
GATES = {
    "soft": ("crf", "soft", "G_s", "none"),
    "soft-trc": ("crf", "soft", "G_s", "TRC, images masked"),
    "soft-weak": ("crf", "soft", "G_s", "weak labels (BLIP-2)"),
    "soft-no-rp": ("crf", "off (w/o Rp)", "w/o Rp", "none"),
    "hard": ("crf", "hard", "G_h1", "none"),
    "gumbel": ("crf", "gumbel", "G_h2", "none"),
    "bilstm-soft": ("bilstm-crf", "soft", "G_s", "none"),
}
# Sun et al., Table 4: test F1 of "biLSTM-CRF + RpBERT" (BERT-base, ResNet-152 grids, TRC multitask).
# Fudan Univ. = Twitter-2015; Snap Res. = Lu et al. 2018 with their 4817/1032/1033 split, not the UMT
# release of Twitter-2017 (3373/723/723) used here.
# "w/o Rp": Table 6, biLSTM-CRF + RpBERT G_s without relation propagation.
PAPER_GATE_F1 = {
    "twitter2015": {"G_h1": 73.8, "G_h2": 74.2, "G_s": 74.4, "w/o Rp": 72.6},
    "twitter2017": {"G_h1": 86.4, "G_h2": 86.6, "G_s": 87.4, "w/o Rp": 86.2},
}
# the table's rows: variant -> (head, "gate (paper's gate)", Task#1), and the paper's F1 of each variant's gate
VARIANTS = {v: (head, f"{gate} ({paper})" if gate != "off (w/o Rp)" else gate, task)
            for v, (head, gate, paper, task) in GATES.items()}
PAPER_F1 = {ds: {v: f1[paper] for v, (_, _, paper, _) in GATES.items()} for ds, f1 in PAPER_GATE_F1.items()}


def _variant(record: dict) -> str | None:
    """The run `rpbert-bilstm-soft-minilm-twitter2017-s13` -> `bilstm-soft`."""
    rest = record["run"].removeprefix("rpbert-")
    return next((v for v in sorted(VARIANTS, key=len, reverse=True) if rest.startswith(v + "-")), None)


def _stat(key: str, field: str, percent: bool = False) -> "Callable[[list[dict]], str]":
    """A cell of per-run test statistics (metrics.json test[key][field]), mean over the seeds that have it."""

    def cell(runs: list[dict]) -> str:
        values = [r[key][field] for r in runs if isinstance(r.get(key), dict) and field in r[key]]
        if not values:
            return "–"
        mean = sum(values) / len(values)
        return f"{100 * mean:.1f}%" if percent else f"{mean:.3f}"

    return cell


SUPERVISION = ("soft", "soft-trc", "soft-weak")  # Task#1: none, TRC, weak labels; rpbert-soft's default is "soft"
DEFAULT = "soft"


def choose_supervision(everything: list[dict], valid_f1: dict[str, float]) -> list[str]:
    """The relation supervision picked by validation F1 (the issue's rule), per dataset and encoder: the mean
    valid F1 of each of `SUPERVISION` over the seeds all of them have, and whether the winner is the default.
    `valid_f1`: run name -> its valid F1 (metrics.json `valid.f1`)."""
    by_key: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in everything:
        variant = _variant(r) if r.get("model") == "rpbert" else None
        if variant in SUPERVISION and r["run"] in valid_f1:
            key = (r["dataset"].split(":")[0], r["encoder"])
            by_key.setdefault(key, {}).setdefault(variant, {})[r["seed"]] = valid_f1[r["run"]]
    lines = []
    for (ds, enc), seeds_of in sorted(by_key.items()):
        if len(seeds_of) < len(SUPERVISION):
            continue
        common = sorted(set.intersection(*(set(s) for s in seeds_of.values())))
        if not common:
            continue
        means = {v: sum(seeds_of[v][s] for s in common) / len(common) for v in SUPERVISION}
        best = max(SUPERVISION, key=lambda v: means[v])
        cells = "; ".join(f"`{v}`, {GATES[v][3]}: {means[v]:.2f}" for v in SUPERVISION)
        verdict = ("the default of `rpbert-soft` (no relation supervision) stays" if best == DEFAULT else
                   f"better than the default of `rpbert-soft` (no relation supervision): `rpbert-{best}`'s Task#1 "
                   "should become the default")
        lines.append(f"- {ds}, {enc}, seeds {', '.join(map(str, common))}: {cells}; best on valid: `{best}`, {verdict}.")
    if not lines:
        return []
    return ["", "## Relation supervision chosen on validation F1", "",
            "Mean valid F1 of each kind of Task#1 supervision over the seeds all three have (the test split plays",
            "no part in the choice):", "", *lines]


def _supervision_section(output: Path, runs_dir: Path) -> list[str]:
    everything = collect(runs_dir)
    valid = {r["run"]: valid_f1(runs_dir, r["run"]) for r in everything if r.get("model") == "rpbert"}
    return choose_supervision(everything, valid)


SPEC = Benchmark(
    name="rpbert",
    doc=__doc__,
    title="RpBERT: text-image relation propagation",
    intro=[
        "Made by `benchmarks/rpbert.py` from the run directories under `benchmarks/runs` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Visual input: BLIP-2",
        "captions as visual tokens (`visual.source: caption`); posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column) and tagged from their text alone. Task#1: the",
        "relation supervision of Algorithm 1 (trained before MNER in every epoch): none (the relation classifier",
        "learns only from the tagging loss through the gate), the TRC corpus with its tweets seen without their",
        "images (not at hand), or weak labels of the training posts from their BLIP-2 captions",
        "(`mmner/models/relation_labels.py`). Δ text: F1 minus the text-only bert-crf; Δ w/o Rp: F1 minus",
        "`soft-no-rp` (the same model, settings and dropout with the gate off: the paper's Table 6 ablation);",
        "both of the same dataset and encoder, paired by seed (below). Paper: Sun et al., Table 4 / 6,",
        "biLSTM-CRF + RpBERT (BERT-base, ResNet-152 grids, TRC multitask; the Snap split differs from Twitter-2017's",
        "UMT release): a reference point, not the same setting. mean r, r > 0.5: the relation score of the test",
        "posts with an image (mean; share judged image-helpful); mean S_TV: their words' attention to the visual",
        "tokens (eq. 10), mean over those posts. relation acc.: Task#1's accuracy on its held-out labels (TRC test",
        "rows, or the test posts' weak labels; r > 0.5 = image adds).",
    ],
    row_columns=("variant", "head", "gate", "Task#1"),
    variants=VARIANTS,
    paper_f1=PAPER_F1,
    paper_format=".1f",
    models=("rpbert",),
    row_of=_variant,
    # any run of those models (not only this benchmark's); w/o Rp: with the row's own visual input
    references=(Reference("Δ text", model="bert-crf", visual="none"), Reference("Δ w/o Rp", row="soft-no-rp")),
    config_prefix="rpbert-",
    # relation score r of the test posts with an image (mean, share with r > 0.5) and S_TV (RpBERT eq. 10:
    # the attention of a post's words to its visual tokens in the gated pass, mean over those posts)
    extra_columns=(("mean r", _stat("relation", "mean")), ("r > 0.5", _stat("relation", "share_above_0.5", True)),
                   ("mean S_TV", _stat("attention", "s_tv_mean")), ("relation acc.", _stat("trc", "accuracy"))),
    sections=_supervision_section,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
