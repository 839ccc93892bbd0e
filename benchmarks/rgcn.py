"""R-GCN (Zhao et al. 2022) and its ablations on Twitter-2015/2017: docs/results/rgcn.md and .json from
the run directories under benchmarks/runs, which `mmner sweep` trains.

    mmner sweep benchmarks/matrix-minilm.yaml       # trains (and resumes) every run of the matrix
    python benchmarks/rgcn.py                       # the table from what has finished
    python benchmarks/rgcn.py scale                 # also: nearest-neighbour search time vs collection size

R-GCN here is what mmner builds from the slides: retrieval-based graphs over caption/text embeddings
(src/mmner/models/rgcn.py; docs/fidelity.md lists the choices the slides leave open).

Rows: the full model (`rgcn-*`: inter- and intra-modal relation graphs), its ablations (`rgcn-inter-only-*`,
the paper's "w/o IntraRG"; `rgcn-intra-only-*`, "w/o InterRG") and the text-only bert-crf, all with the same
encoder, schedule (epochs, batch, learning rates) and seeds, so that every difference is the model's. Runs go
to benchmarks/runs/<config>-s<seed>, next to those of the other benchmarks (the bert-crf runs are shared and reused
when finished); run directories made elsewhere (a GPU machine) can be copied under benchmarks/runs.

Each R-GCN row states its graph settings, read from each run's config.yaml (`graph_record`): the similarity
threshold an edge needs (per graph where they differ), the GCN depth, k and the edge weights; keys an older
config lacks have their defaults, which are what that run was trained with. A row whose runs differ lists
each run's settings in seed order.

Besides F1, each R-GCN row records the index: its build time (embedding every training post with the frozen
encoder, written by `train` into rgcn_index/index.json) and the retrieval time per post (exact top-k search of
the saved index, on the device named, with the index's own text embeddings as queries; measured the first time
the table is made on the machine that has the index, and kept in rgcn_index/retrieval.json). Both are copied to
the run directory's rgcn_index_summary.json, which is committed with the run, so that a checkout without the
index (a fresh clone) shows them too. `scale` times the
same search on random collections of growing size (docs/results/rgcn_scale.json), to show how retrieval grows
with the collection.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from baselines import variant_of
from compare import Benchmark, Reference, main

SUMMARY = "rgcn_index_summary.json"  # the index record, committed with the run

# the model config keys of the graph settings a row states (defaults: mmner.models.rgcn.RGCNParams)
GRAPH_KEYS = ("inter", "intra", "neighbors", "threshold", "inter_threshold", "intra_threshold", "edge_weights",
              "gcn_layers")

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
SCALE_SIZES = (4_000, 40_000, 400_000, 2_000_000)


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
    """The saved index's size and build time, and its retrieval time per post: measured the first time on
    this device (k, batch), then kept beside the index (rgcn_index/retrieval.json), so that remaking the
    table does not change it. The record is also written to the run directory (SUMMARY, committed with the
    run; the index itself is not), from which a checkout without the index reads it."""
    import torch

    from mmner.models.rgcn import INDEX_DIR, RelationIndex

    folder = run_dir / INDEX_DIR
    summary = run_dir / SUMMARY
    if not (folder / "index.json").is_file():
        return json.loads(summary.read_text()) if summary.is_file() else None
    index = RelationIndex(1, 1)
    index.load(folder)
    device = _device()
    measured_file = folder / "retrieval.json"
    measured = json.loads(measured_file.read_text()) if measured_file.is_file() else {}
    key = f"{device} k={k} batch={batch}"
    if key not in measured:
        index.on(device)
        with torch.inference_mode():
            measured[key] = round(_time_search(index.text_keys, index.image_keys, index.valid, k, batch, repeats=3), 4)
        measured_file.write_text(json.dumps(measured, indent=2) + "\n")
    record = {"index_posts": index.meta["posts"], "index_build_seconds": index.meta.get("build_seconds"),
              "retrieval_ms_per_post": measured[key], "retrieval_device": str(device)}
    summary.write_text(json.dumps(record, indent=2) + "\n")
    return record


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


def graph_record(run_dir: Path) -> dict | None:
    """The run's graph settings from its config.yaml: `neighbors`, the threshold of each graph it has
    (`inter_threshold`, `intra_threshold`: the graph's own or `threshold`; None for a graph switched off),
    `edge_weights`, `gcn_layers`. A key the config lacks (a run from before the key existed) has its default,
    which is what the run was trained with. None without config.yaml."""
    import yaml

    from mmner.models.rgcn import RGCNParams

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    given = {key: model.get(key, RGCNParams.model_fields[key].default) for key in GRAPH_KEYS}
    out = {key: given[key] for key in ("neighbors", "edge_weights", "gcn_layers")}
    for graph in ("inter", "intra"):
        own = given[f"{graph}_threshold"]
        out[f"{graph}_threshold"] = (given["threshold"] if own is None else own) if given[graph] else None
    return out


def _prepare(records: list[dict], runs_dir: Path) -> None:
    for r in records:
        if r["model"] == "rgcn":
            graph = graph_record(runs_dir / r["run"])
            r["graph"] = graph  # None: the run has no config.yaml to read them from
            r.update(index_record(runs_dir / r["run"], k=graph["neighbors"] if graph else 5) or {})


def _threshold(graph: dict) -> str:
    values = {g: graph[f"{g}_threshold"] for g in ("inter", "intra") if graph[f"{g}_threshold"] is not None}
    if len(set(values.values())) == 1:
        return str(float(next(iter(values.values()))))
    return ", ".join(f"{g} {float(v)}" for g, v in values.items())


def _graph_cell(describe):
    """A column of graph settings: the one value of the row's runs, or each run's (seed order, "; ")
    where they differ; "?" for a run without config.yaml, "–" for a row that is not R-GCN."""

    def cell(rs: list[dict]) -> str:
        if not any(r["model"] == "rgcn" for r in rs):
            return "–"
        values = [describe(r["graph"]) if r.get("graph") else "?" for r in rs]
        return values[0] if len(set(values)) == 1 else "; ".join(values)

    return cell


def _index_cell(rs: list[dict]) -> str:
    indexed = [r for r in rs if r.get("index_posts") is not None]
    if not indexed:
        return "–"
    return f"{indexed[0]['index_posts']}, " + ", ".join(f"{r['index_build_seconds']:.1f}" for r in indexed)


def _retrieval_cell(rs: list[dict]) -> str:
    indexed = [r for r in rs if r.get("index_posts") is not None]
    if not indexed:
        return "–"
    return f"{statistics.mean(r['retrieval_ms_per_post'] for r in indexed):.4f} ({indexed[0]['retrieval_device']})"


def _scale_section(output: Path, runs_dir: Path) -> list[str]:
    scale_file = output.parent / "rgcn_scale.json"
    if not scale_file.is_file():
        return []
    lines = ["", "## Retrieval time vs collection size (`benchmarks/rgcn.py scale`)", "",
             "Exact top-5 cosine search, random unit vectors, 64 queries per batch.", "",
             "| collection | dim | ms / post | device |", "|---|---|---|---|"]
    return lines + [f"| {r['collection']} | {r['dim']} | {r['ms_per_post']:.4f} | {r['device']} |"
                    for r in json.loads(scale_file.read_text())]


SPEC = Benchmark(
    name="rgcn",
    doc=__doc__,
    title="R-GCN: relation-enhanced graph convolutional network",
    intro=[
        "Made by `benchmarks/rgcn.py` from the run directories under `benchmarks/runs` (one per config and seed).",
        "Test split, entity-level F1 in conlleval mode at the word level (first sub-token), epoch selected on",
        "valid F1, mean ± std over seeds. Dataset variant: UMT release of Twitter-2015/2017. Every row of a table",
        "has the same encoder, schedule and seeds. Visual input of the R-GCN rows: BLIP-2 captions",
        "(`visual.source: caption`); the index over the training posts holds their caption and text embeddings",
        "(frozen copy of the pretrained encoder, mean-pooled); posts without a usable caption are masked",
        "(`visual.missing: mask`, count in the `masked` column, docs/results/captions.md): no own-image node, never",
        "retrieved. R-GCN as built here from the slides: retrieval-based graphs over caption/text embeddings",
        "(docs/fidelity.md lists every choice the slides leave open). Graph settings of each row, from its runs'",
        "config.yaml: threshold (an edge to a retrieved post is kept when its cosine to the centre is at least",
        "this; per graph where the two differ), GCN layers (graph convolutions per graph), k (posts retrieved per",
        "graph) and edge weights (cosine or binary); where a row's runs differ, each run's in seed order.",
        "Δ: F1 minus the text-only bert-crf of the same dataset and encoder; Δ R-GCN: minus the full",
        "R-GCN (paired by seed, below). Index: posts indexed and build seconds (per seed); retrieval: exact top-k",
        "search per post and graph, measured on the device given when this table was made.",
        "Paper: Zhao et al. 2022, Tables 1 and 2 (BERT-base, features of the images themselves): a reference",
        "point, not the same setting.",
    ],
    row_columns=("config", "Zhao et al."),
    variants=VARIANTS,
    paper_f1=PAPER_F1,
    models=("rgcn", "bert-crf"),
    row_of=lambda r: variant_of(r["run"]),
    references=(Reference("Δ", row="bert-crf", visual="none"), Reference("Δ R-GCN", row="rgcn", visual="caption")),
    record_row=True,
    prepare=_prepare,
    extra_columns=(("threshold", _graph_cell(_threshold)), ("GCN layers", _graph_cell(lambda g: str(g["gcn_layers"]))),
                   ("k, edges", _graph_cell(lambda g: f"{g['neighbors']}, {g['edge_weights']}")),
                   ("index posts, build s", _index_cell), ("retrieval ms / post", _retrieval_cell)),
    sections=_scale_section,
    commands={"scale": lambda args: scale(args.output.parent / "rgcn_scale.json")},
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
