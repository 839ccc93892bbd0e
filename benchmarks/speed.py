"""Tagging speed beside the text-only Hugging Face pipeline, in one run on the same posts: docs/results/speed.md.

    python benchmarks/speed.py RUN [RUN ...]        # e.g. the bert-crf, bert-crf-caption and umt MiniLM runs
    python benchmarks/speed.py RUN ... --posts 200  # a quick look

Posts: the Twitter-2017 test split (with their BLIP-2 captions for caption models, as the runs were trained).
In this process, with the same torch threads; the throughput passes run in interleaved rounds (every
contender once per round, the fastest round counts), so a slow spell of the machine falls on all alike:

- the Hugging Face token-classification pipeline on MiniLM-L6 (text only; its classifier is untrained, which
  costs the same as a trained one), batch 32 and batch 1: posts/s;
- each mmner run through `Tagger.batch` (length-sorted groups of batches of 32, each record with its visual
  field and, where the model has one, relation score; region attention only in the `--attention` rows),
  and one post at a time: posts/s, the ratio to the pipeline's posts/s at the same batch size, the
  single-post latency p50 / p95, and the test F1 of the tags of the same posts;
- over HTTP: `mmner serve RUN` in a child process on a loopback port, one client sending single posts
  (`--http` requests): latency p50 / p95 (benchmarks/serve_load.py's single phase).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from serve_load import code_commit, percentile, phase, served

ROOT = Path(__file__).resolve().parents[1]
INT8_F1_BUDGET = 0.2  # the most test F1 an inference speed-up may cost to be on by default
REPEATS = 3  # throughput: the fastest of 3 passes over the posts, for the pipeline and mmner alike


def test_posts(limit: int | None):
    from mmner.data import datadir
    from mmner.data.readers import read_blip2_captions

    posts = datadir.load_dataset("twitter2017:test")[:limit]
    captions = read_blip2_captions(datadir.caption_file("twitter2017"))
    return posts, {p.id: c for p in posts if (c := captions.get(p.image_id or "")) and c != datadir.BLANK_IMAGE_CAPTION}


def timed(fn, repeats: int = 1) -> float:
    """The fastest of `repeats` calls of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def hf_pipeline():
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from mmner.text.encoders import resolve_encoder

    path = resolve_encoder("minilm-l6")
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=9)
    return pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(path), device=-1)


def mmner_run(run: Path, posts, captions: dict[str, str], attention: bool = False, int8: bool = False):
    """The run's tagger (loaded once), its items for the posts, and its record without timings."""
    from mmner import Tagger
    from mmner.inference import score_posts

    tagger = Tagger.load(run, device="cpu", attention=attention, int8=int8)
    uses_captions = tagger.visual_source == "caption"
    items = [{"id": p.id, "tokens": p.tokens, **({"caption": captions[p.id]} if uses_captions and p.id in captions else {})}
             for p in posts]
    records = tagger.batch(items, batch_size=32)  # also the warm-up
    info = tagger.info()
    return tagger, items, {
        "run": str(run), "model": info["model"], "visual_source": info["visual_source"], "attention": attention,
        "int8": int8,
        "region_attention": bool(tagger.model.region_attention),
        "f1": score_posts(posts, [r["tags"] for r in records])["f1"], "captions": sum("caption" in i for i in items)}


def single_latency(tagger, items, single: int) -> dict:
    latencies = []
    for item in items[:single]:
        started = time.perf_counter()
        tagger.batch([item], batch_size=1)
        latencies.append(time.perf_counter() - started)
    return {"batch_1": round(len(latencies) / sum(latencies), 1),
            "latency_ms": {"p50": round(1000 * percentile(latencies, 50), 1),
                           "p95": round(1000 * percentile(latencies, 95), 1)}}


def interleaved(passes: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Seconds of each pass, the fastest of `rounds` rounds, each round running every pass once in turn,
    so that a slow spell of the machine falls on all of them alike."""
    best = {name: float("inf") for name in passes}
    for _ in range(rounds):
        for name, fn in passes.items():
            best[name] = min(best[name], timed(fn))
    return best


def http_latency(run: Path, posts, captions: dict[str, str], requests: int, attention: bool = False,
                 int8: bool = False) -> dict:
    bodies = [{"text": " ".join(p.tokens), **({"caption": captions[p.id]} if p.id in captions else {})} for p in posts]
    with served(run, *(["--attention"] if attention else []), *(["--int8"] if int8 else [])) as base:
        result = asyncio.run(phase(base, "single", lambda i: ("/v1/tag", bodies[i % len(bodies)]), requests, 1, 120.0, 1))
    return {"requests": result["requests"], "failed": result["failed"], **(result["latency_ms"] or {})}


def render(result: dict) -> str:
    hf = result["hf_pipeline"]
    lines = [
        "# Tagging speed",
        "",
        "Made by `benchmarks/speed.py` in one run on this machine "
        f"({result['device']}, {result['threads']} torch threads, precision fp32), on the first {result['posts']}",
        "posts of the Twitter-2017 test split (caption models get each post's BLIP-2 caption, as in training).",
        f"posts/s: the fastest of {REPEATS} rounds, each round one pass of the pipeline and of every run in turn.",
        "Ratio: mmner's posts/s over the Hugging Face pipeline's at the same batch size (MiniLM-L6, text only).",
        "mmner: `Tagger.batch(posts, batch_size=32)` (posts in groups of 16 batches, each group sorted by length",
        "into its batches, records in input order; the pipeline's batches are in input order).",
        "Latency: one post per call, in process (`Tagger.batch([post])`) and over HTTP (`mmner serve RUN` with its",
        "defaults, `POST /v1/tag`, one client on the loopback). F1: the test F1 of the tags of the same posts.",
        "Rows marked `--attention`: the same run with region attention in the records (asked for with",
        "`Tagger.load(..., attention=True)`, `mmner serve/predict --attention` or `?attention=true`; the default",
        "leaves it out). Rows marked `--int8`: the same run with its encoder's linear layers in dynamic int8",
        "(`Tagger.load(..., int8=True)`, `mmner serve/predict --int8`; weights per output channel, activations",
        "quantised per call; off by default, see below).",
        f"Code: commit {result.get('commit', '?')}.",
        "",
        f"Hugging Face token-classification pipeline, MiniLM-L6: {hf['batch_32']} posts/s at batch 32, "
        f"{hf['batch_1']} posts/s at batch 1.",
        "",
        "| run | model | visual | posts/s (batch 32) | ratio | posts/s (batch 1) | ratio | p50 ms | p95 ms | HTTP p50 ms | HTTP p95 ms | test F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        http = r.get("http") or {}
        name = f"`{Path(r['run']).name}`" + (" `--attention`" if r.get("attention") else "") + \
            (" `--int8`" if r.get("int8") else "")
        lines.append(f"| {name} | {r['model']} | {r['visual_source']} | {r['batch_32']} | "
                     f"{r['batch_32'] / hf['batch_32']:.2f}x | {r['batch_1']} | {r['batch_1'] / hf['batch_1']:.2f}x | "
                     f"{r['latency_ms']['p50']} | {r['latency_ms']['p95']} | {http.get('p50', '–')} | {http.get('p95', '–')} | "
                     f"{r['f1']:.2f} |")
    int8 = [(r, plain) for r in result["runs"] if r.get("int8")
            for plain in result["runs"] if plain["run"] == r["run"] and not plain.get("int8") and not plain.get("attention")]
    if int8:
        lines += ["", f"int8 against fp32, the same run (the default stays fp32 where int8 costs more than {INT8_F1_BUDGET} F1 on",
                  "these posts):", ""]
        for r, plain in int8:
            cost = plain["f1"] - r["f1"]
            http = (r.get("http") or {}).get("p50"), (plain.get("http") or {}).get("p50")
            change = f"{cost:.2f} lower" if cost >= 0 else f"{-cost:.2f} higher"
            lines.append(f"- `{Path(r['run']).name}`: test F1 {change} ({'over' if cost > INT8_F1_BUDGET else 'within'} "
                         f"the {INT8_F1_BUDGET} budget); single post p50 {r['latency_ms']['p50']} ms vs "
                         f"{plain['latency_ms']['p50']} ms in process"
                         + (f", {http[0]} vs {http[1]} ms over HTTP" if None not in http else "")
                         + f"; batch 32 {r['batch_32'] / plain['batch_32']:.2f}x the fp32 posts/s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--posts", type=int, default=None, help="the first N test posts (default: all 723)")
    parser.add_argument("--single", type=int, default=100, help="posts for the single-post latency")
    parser.add_argument("--http", type=int, default=100, help="single-post HTTP requests per run (0: skip)")
    parser.add_argument("--int8", action="store_true", help="also each run with its encoder in dynamic int8")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "speed.md")
    args = parser.parse_args(argv)
    import torch

    posts, captions = test_posts(args.posts)
    texts = [" ".join(p.tokens) for p in posts]
    hf = hf_pipeline()
    hf(texts[:32], batch_size=32)  # warm-up
    loaded = []
    for run in args.runs:
        for attention, int8 in ((False, False), (True, False), (False, True)):
            if int8 and not args.int8:
                continue
            tagger, items, record = mmner_run(run, posts, captions, attention, int8)
            if attention and not record["region_attention"]:
                continue  # the model computes none
            loaded.append((tagger, items, record))
    passes = {"hf_32": lambda: hf(texts, batch_size=32), "hf_1": lambda: hf(texts, batch_size=1)}
    for i, (tagger, items, _) in enumerate(loaded):
        passes[f"run_{i}"] = lambda tagger=tagger, items=items: tagger.batch(items, batch_size=32)
    seconds = interleaved(passes, REPEATS)
    result = {"device": "cpu", "threads": torch.get_num_threads(), "posts": len(posts),
              "hf_pipeline": {"batch_32": round(len(posts) / seconds["hf_32"], 1),
                              "batch_1": round(len(posts) / seconds["hf_1"], 1)}, "runs": []}
    result["commit"] = code_commit()
    for i, (tagger, items, record) in enumerate(loaded):
        record["batch_32"] = round(len(items) / seconds[f"run_{i}"], 1)
        record.update(single_latency(tagger, items, args.single))
        if args.http:
            record["http"] = http_latency(Path(record["run"]), posts, captions, args.http, record["attention"],
                                          record["int8"])
        result["runs"].append(record)
        print(json.dumps(record))
    args.output.write_text(render(result))
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
