"""UMT (Yu et al. 2020) and its ablations on Twitter-2015/2017: docs/results/umt.md and .json from the
run directories under benchmarks/runs, which `mmner sweep` trains.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/umt.py                        # the table from what has finished

Rows: the full model (`umt-*`), its ablations (`umt-no-aux-*`: no entity span detection, the paper's
MT-BERT-CRF; `umt-no-gate-*`: no visual gate; `umt-no-image-*`: the text-only branch) and the text-only
bert-crf, all with the same encoder, schedule (epochs, batch, learning rates) and seeds, so that every
difference is the model's. Runs go to benchmarks/runs/<config>-s<seed>, next to those of benchmarks/baselines.py
and benchmarks/chen.py (the bert-crf runs are shared); run directories made elsewhere (a GPU machine) can
be copied under benchmarks/runs.
"""

from __future__ import annotations

import sys

from baselines import variant_of
from compare import Benchmark, Reference, main

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

SPEC = Benchmark(
    name="umt",
    doc=__doc__,
    title="UMT: unified multimodal transformer with auxiliary entity span detection",
    intro=[
        "Made by `benchmarks/umt.py` from the run directories under `benchmarks/runs` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Every row of a table",
        "has the same encoder, schedule and seeds. Visual input of the multimodal rows: BLIP-2 captions",
        "(`visual.source: caption`) read as caption regions; posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column, docs/results/captions.md) and tagged from their",
        "text alone; `umt-no-image` and bert-crf read no visual input. Δ: F1 minus the text-only bert-crf of the",
        "same dataset and encoder; Δ UMT: minus the full UMT (paired by seed, below).",
        "Paper: Yu et al. 2020, Tables 2 and 3 (cased BERT-base, ResNet-152 grid features): a reference point,",
        "not the same setting.",
    ],
    row_columns=("config", "Yu et al."),
    variants=VARIANTS,
    paper_f1=PAPER_F1,
    models=("umt", "bert-crf"),
    row_of=lambda r: variant_of(r["run"]),
    references=(Reference("Δ", row="bert-crf", visual="none"), Reference("Δ UMT", row="umt", visual="caption")),
    record_row=True,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
