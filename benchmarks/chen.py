"""Chen et al. ("Can images help recognize entities?") on Twitter-2015/2017: docs/results/chen.md and
docs/results/chen.json from the run directories under benchmarks/runs, which `mmner sweep` trains.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/chen.py                       # the table from what has finished

The text-only bert-crf rows are the runs the other tables share, so the table compares every multimodal
model with its text-only baseline on the same encoder, dataset and seeds. Run directories made elsewhere
(a GPU machine) can be copied under benchmarks/runs.
"""

from __future__ import annotations

import sys

from compare import Benchmark, Reference, main

# registry name -> its name in Chen et al.'s Table 1 (experiment number)
VARIANTS = {
    "bert-crf": "BERT + CRF (1.1)",
    "bert-crf-caption": "BERT + CRF + Captions (4.1)",
    "visualbert-crf": "VisualBERT-style single stream + CRF + Captions (4.2; no V&L pretraining)",
    "fusion-cm": "BERT + CM + CRF (2.1)",
    "fusion-vam": "BERT + VAM + CRF (2.2)",
    "fusion-cam": "BERT + CAM + CRF (2.3)",
    "fusion-tam": "text encoder + cross-attention over regions (not 3.1's VisualBERT + TAM)",
}
# Chen et al., Table 1: test F1 (BERT-base, ResNet-152 / Faster R-CNN features, BUTD captions). No paper F1 for
# fusion-tam: it is a text encoder with cross-attention layers, not 3.1's VisualBERT + TAM (docs/fidelity.md).
PAPER_F1 = {
    "twitter2015": {"bert-crf": 71.48, "bert-crf-caption": 71.49, "visualbert-crf": 69.71, "fusion-cm": 71.46,
                    "fusion-vam": 69.80, "fusion-cam": 71.71},
    "twitter2017": {"bert-crf": 85.44, "bert-crf-caption": 86.82, "visualbert-crf": 84.92, "fusion-cm": 86.40,
                    "fusion-vam": 85.34, "fusion-cam": 85.71},
}

SPEC = Benchmark(
    name="chen",
    doc=__doc__,
    title="Chen et al.: can images help recognize entities?",
    intro=[
        "Made by `benchmarks/chen.py` from the run directories under `benchmarks/runs` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Visual input of the",
        "multimodal models: BLIP-2 captions (`visual.source: caption`), the fusion heads and VisualBERT reading",
        "them as caption regions; posts without a usable caption are masked (`visual.missing: mask`, count in",
        "the `masked` column: 358 blank Twitter-2017 images, docs/results/captions.md) and tagged from their",
        "text alone. Δ: F1 minus the text-only bert-crf of the same dataset and encoder (paired by seed, below).",
        "Paper: Chen et al., Table 1 (BERT-base; fusion heads on ResNet-152 grids, TAM on Faster R-CNN",
        "regions, captions from BUTD): a reference point, not the same setting. `visualbert-crf` is VisualBERT's",
        "single-stream layout on the text encoder without vision-and-language pretraining (no such weights are",
        "available offline); `fusion-tam` is a text encoder with cross-attention layers over the regions, not",
        "3.1's VisualBERT + TAM, so it has no paper F1 (docs/fidelity.md).",
    ],
    row_columns=("model", "Chen et al."),
    variants=VARIANTS,
    paper_f1=PAPER_F1,
    models=tuple(VARIANTS),
    row_of=lambda r: r.get("model"),
    references=(Reference("Δ", row="bert-crf", visual="none"),),
    row_noun="model",
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
