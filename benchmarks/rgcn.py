"""R-GCN (Zhao et al. 2022) and its ablations on Twitter-2015/2017: trains each config for each seed, then
writes docs/results/rgcn.md and docs/results/rgcn.json from the run directories.

    python benchmarks/rgcn.py run --encoders minilm --seeds 13 21 42
    python benchmarks/rgcn.py run --configs rgcn-inter-only-minilm-twitter2017 --seeds 13
    python benchmarks/rgcn.py scale                        # nearest-neighbour search time vs collection size
    python benchmarks/rgcn.py table                        # rebuild the table from what has finished

Rows: the full model (`rgcn-*`: inter- and intra-modal relation graphs), its ablations (`rgcn-inter-only-*`,
the paper's "w/o IntraRG"; `rgcn-intra-only-*`, "w/o InterRG") and the text-only bert-crf, all with the same
encoder, schedule (epochs, batch, learning rates) and seeds, so that every difference is the model's. Runs go
to runs/bench/<config>-s<seed>, next to those of the other benchmarks (the bert-crf runs are shared and reused
when finished); a finished run is reused and an interrupted one resumed; run directories made elsewhere (a GPU
machine) can be copied under runs/bench.

Besides F1, each R-GCN row records the index: its build time (embedding every training post with the frozen
encoder, written by `train` into rgcn_index/index.json) and the retrieval time per post (exact top-k search of
the saved index, measured when the table is made, on the device named, with the index's own text embeddings as
queries). `scale` times the same search on random collections of growing size (docs/results/rgcn_scale.json),
to show how retrieval grows with the collection.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from baselines import ROOT, _mean_std, collect, run

# config prefix -> its row in Zhao et al. (Table 1 for bert-crf and R-GCN, Table 2 for the ablations)
VARIANTS = {
    "bert-crf": "BERT-CRF (Table 1)",
    "rgcn": "R-GCN (Table 1)",
    "rgcn-inter-only": "w/o IntraRG (Table 2)",
    "rgcn-intra-only": "w/o InterRG (Table 2)",
}
# Zhao et al. (slides, Tables 1 and 2): test F1 (BERT-base, features of the images themselves)
PAPER_F1 = {
    "twitter2015": {"bert-crf": 71.81, "rgcn": 75.00, "rgcn-inter-only": 74.29, "rgcn-intra-only": 74.05},
    "twitter2017": {"bert-crf": 83.44, "rgcn": 87.11, "rgcn-inter-only": 86.22, "rgcn-intra-only": 86.17},
}
ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}
DATASETS = ("twitter2015", "twitter2017")
SCALE_SIZES = (4_000, 40_000, 400_000, 2_000_000)


def config_names(encoders: list[str]) -> list[str]:
    return [f"{variant}-{enc}-{ds}" for enc in encoders for ds in DATASETS for variant in VARIANTS]


def variant_of(run_name: str) -> str:
    """`rgcn-inter-only-minilm-twitter2017-s13` -> `rgcn-inter-only` (the config name minus encoder, dataset, seed)."""
    return re.sub(r"-s\d+$", "", run_name).rsplit("-", 2)[0]


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _time_search(queries, keys, valid, k: int, batch: int, repeats: int) -> float:
    """Milliseconds per query of `nearest` over `keys`, in batches of `batch` queries (each excluding a row)."""
    import torch

    from mmner.models.rgcn import nearest

    def once() -> None:
        for start in range(0, len(queries), batch):
            q = queries[start : start + batch]
            nearest(q, keys, valid, torch.arange(start, start + len(q), device=q.device) % len(keys), k)
        if q.is_cuda:
            torch.cuda.synchronize()

    once()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return 1000 * (time.perf_counter() - started) / (repeats * len(queries))


def index_record(run_dir: Path, k: int = 5, batch: int = 64) -> dict | None:
    """The saved index's size and build time, and its retrieval time per post (measured now)."""
    import torch

    from mmner.models.rgcn import INDEX_DIR, RelationIndex

    folder = run_dir / INDEX_DIR
    if not (folder / "index.json").is_file():
        return None
    index = RelationIndex(1, 1)
    index.load(folder)
    device = _device()
    index.on(device)
    with torch.inference_mode():
        ms = _time_search(index.text_keys, index.image_keys, index.valid, k, batch, repeats=3)
    return {"index_posts": index.meta["posts"], "index_build_seconds": index.meta.get("build_seconds"),
            "retrieval_ms_per_post": round(ms, 4), "retrieval_device": str(device)}


def scale(output: Path, dim: int = 768, k: int = 5, batch: int = 64, queries: int = 1024) -> list[dict]:
    """Search time per post on random unit vectors, as the collection grows (exact batched search)."""
    import torch

    device = _device()
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for n in SCALE_SIZES:
            keys = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1).to(device)
            q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=g), dim=-1).to(device)
            valid = torch.ones(n, dtype=torch.bool, device=device)
            ms = _time_search(q, keys, valid, k, batch, repeats=3)
            rows.append({"collection": n, "dim": dim, "k": k, "batch": batch, "ms_per_post": round(ms, 4),
                         "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"})
            print(f"{n:>9} posts: {ms:.4f} ms / post ({rows[-1]['device']})", flush=True)
            del keys
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def table(runs_dir: Path, output: Path) -> None:
    records = [{**r, "row": variant_of(r["run"])} for r in collect(runs_dir)]
    records = [r for r in records if r["row"] in VARIANTS and r.get("model") in ("rgcn", "bert-crf")
               and r.get("encoder") in ENCODERS.values() and r["dataset"].split(":")[0] in DATASETS]
    for r in records:
        if r["model"] == "rgcn":
            r.update(index_record(runs_dir / r["run"]) or {})
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"].split(":")[0], r["encoder"], r["row"], r["visual_source"], r.get("visual_detail", ""))
        groups.setdefault(key, []).append(r)
    lines = [
        "# R-GCN: relation-enhanced graph convolutional network",
        "",
        "Made by `benchmarks/rgcn.py` from the run directories under `runs/bench` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Every row of a table",
        "has the same encoder, schedule and seeds. Visual input of the R-GCN rows: BLIP-2 captions",
        "(`visual.source: caption`); the index over the training posts holds their caption and text embeddings",
        "(frozen copy of the pretrained encoder, mean-pooled); posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column, docs/results/captions.md): no own-image node, never",
        "retrieved. Δ: F1 minus the text-only bert-crf of the same dataset and encoder; Δ R-GCN: minus the full",
        "R-GCN (means over seeds). Index: posts indexed and build seconds (per seed); retrieval: exact top-5",
        "search per post and graph, measured on the device given when this table was made.",
        "Paper: Zhao et al. 2022, Tables 1 and 2 (BERT-base, features of the images themselves): a reference",
        "point, not the same setting.",
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
            base, full = mean_f1(ds, enc, "bert-crf", "none"), mean_f1(ds, enc, "rgcn", "caption")
            lines += [
                "", f"## {ds}, {enc}", "",
                ("| config | Zhao et al. | visual | seeds | test F1 | Δ | Δ R-GCN | P | R | masked | gold entities "
                 "| paper F1 | index posts, build s | retrieval ms / post | epochs (best) | s / epoch | device |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for key in keys:
                rs = sorted(groups[key], key=lambda r: r["seed"])
                f1 = statistics.mean(r["f1"] for r in rs)
                paper = PAPER_F1[ds].get(key[2])
                indexed = [r for r in rs if r.get("index_posts") is not None]
                lines.append(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                        key[2], VARIANTS[key[2]], key[3], ", ".join(str(r["seed"]) for r in rs),
                        _mean_std([r["f1"] for r in rs]),
                        f"{f1 - base:+.2f}" if base is not None else "–",
                        f"{f1 - full:+.2f}" if full is not None else "–",
                        _mean_std([r["precision"] for r in rs]), _mean_std([r["recall"] for r in rs]),
                        rs[0].get("masked_images", 0), rs[0]["gold_entities"],
                        f"{paper:.2f}" if paper is not None else "–",
                        (f"{indexed[0]['index_posts']}, " + ", ".join(f"{r['index_build_seconds']:.1f}" for r in indexed))
                        if indexed else "–",
                        (f"{statistics.mean(r['retrieval_ms_per_post'] for r in indexed):.4f} "
                         f"({indexed[0]['retrieval_device']})") if indexed else "–",
                        ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
                        ", ".join(f"{r['seconds_per_epoch']:.0f}" for r in rs), ", ".join(sorted({r["device"] for r in rs})),
                    )
                )
    scale_file = output.parent / "rgcn_scale.json"
    if scale_file.is_file():
        lines += ["", "## Retrieval time vs collection size (`benchmarks/rgcn.py scale`)", "",
                  "Exact top-5 cosine search, random unit vectors, 64 queries per batch.", "",
                  "| collection | dim | ms / post | device |", "|---|---|---|---|"]
        lines += [f"| {r['collection']} | {r['dim']} | {r['ms_per_post']:.4f} | {r['device']} |"
                  for r in json.loads(scale_file.read_text())]
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
    parser.add_argument("command", choices=["run", "scale", "table"])
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--configs", nargs="+", help="config names (default: every variant x --encoders x dataset)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "rgcn.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    from mmner.cli import _setup_logging

    _setup_logging()
    if args.command == "run":
        run(args.configs or config_names(args.encoders), args.seeds, args.runs_dir, args.overrides)
    if args.command == "scale":
        scale(args.output.parent / "rgcn_scale.json")
    table(args.runs_dir, args.output)


if __name__ == "__main__":
    sys.exit(main())
