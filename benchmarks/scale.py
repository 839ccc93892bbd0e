"""Tagging at scale: docs/results/scale.md, local `mmner predict` against `--engine ray` with 1 and 2 workers.

    python benchmarks/scale.py benchmarks/runs/bert-crf-caption-minilm-twitter2017-s13
    python benchmarks/scale.py RUN --limit 2000           # a quick look

Posts: every post of Twitter-2015 and Twitter-2017 (train, valid and test: ~12,700), as JSON lines with
their BLIP-2 caption (the run's visual input), written to a temporary folder (the dataset's words stay out of
the repository). Each engine tags them with `mmner predict` in a child process, one after the other, on this
machine, and its output is compared with local predict's, record for record. posts/s = posts / the child's
wall time, Ray's start and the workers' model loading included (reported apart: the engine's time on a
20-post input). The sizing for 100 million posts is derived from these measured rates only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POSTS_100M = 100_000_000


def write_posts(folder: Path, limit: int | None) -> tuple[Path, int]:
    """All Twitter-2015/2017 posts with their BLIP-2 captions (blank-image captions left out: those posts
    are tagged as the run masks them) as one JSON-lines file."""
    sys.path.insert(0, str(ROOT / "src"))
    from mmner.data import datadir
    from mmner.data.readers import read_blip2_captions

    path, n = folder / "posts.jsonl", 0
    with path.open("w", encoding="utf-8") as out:
        for ds in ("twitter2015", "twitter2017"):
            captions = read_blip2_captions(datadir.caption_file(ds))
            for split in ("train", "valid", "test"):
                for post in datadir.load_dataset(f"{ds}:{split}"):
                    record = {"id": f"{ds}-{split}-{post.id}", "text": " ".join(post.tokens)}
                    caption = captions.get(post.image_id or "")
                    if caption and caption != datadir.BLANK_IMAGE_CAPTION:
                        record["caption"] = caption
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    n += 1
                    if limit is not None and n >= limit:
                        return path, n
    return path, n


def run(run_dir: str, posts: Path, output: Path, *extra: str) -> float:
    """`mmner predict` in a child process; its wall time in seconds."""
    command = [sys.executable, "-m", "mmner", "predict", run_dir, "--input", str(posts), "--output", str(output),
               "--batch-size", "32", "--quiet", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory (bert-crf-caption MiniLM)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N posts")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "scale.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        posts, n = write_posts(folder, args.limit)
        small = folder / "small.jsonl"
        small.write_text("".join(posts.read_text(encoding="utf-8").splitlines(keepends=True)[:20]), encoding="utf-8")
        engines = [("local", ()), ("ray, 1 worker", ("--engine", "ray", "--workers", "1")),
                   ("ray, 2 workers", ("--engine", "ray", "--workers", "2"))]
        reference = None
        for name, extra in engines:
            start_cost = run(args.run, small, folder / f"small-{len(rows)}.jsonl", *extra)
            out = folder / f"out-{len(rows)}.jsonl"
            seconds = run(args.run, posts, out, *extra)
            text = out.read_text(encoding="utf-8")
            reference = text if reference is None else reference
            steady = (n - 20) / max(seconds - start_cost, 1e-9)  # the start-up run's cost taken out
            rows.append({"engine": name, "posts": n, "seconds": round(seconds, 1), "posts_per_s": round(n / seconds, 1),
                         "overhead_s": round(start_cost, 1), "steady_posts_per_s": round(steady, 1),
                         "same_as_local": text == reference})
            print(f"{name}: {n} posts in {seconds:.1f} s ({n / seconds:.1f} posts/s), 20-post run {start_cost:.1f} s",
                  file=sys.stderr)
    best = max(rows[1:], key=lambda r: r["steady_posts_per_s"])
    per_worker = best["steady_posts_per_s"] / int(best["engine"].split(", ")[1].split()[0])
    lines = [
        "# Tagging at scale: local predict and Ray",
        "",
        "Made by `benchmarks/scale.py` in one run on this machine "
        f"({os.cpu_count()} cores, {platform.machine()}, CPU only), run `{Path(args.run).name}`. Posts: every post of",
        f"Twitter-2015 and Twitter-2017 ({n} JSON lines, each with its BLIP-2 caption where the image had one),",
        "tagged by `mmner predict --batch-size 32` in a child process, one engine after the other. posts/s: posts over",
        "the child's wall time, start-up included; start-up: the same command on 20 posts (Ray: starting the local",
        "cluster and loading the run in each worker). Same as local: the output file is byte-identical to local",
        "predict's. Each Ray worker runs one torch thread (`--cpus-per-worker 1`); local predict uses both cores.",
        "Steady posts/s: the other posts over the time beyond the 20-post run's (start-up taken out).",
        "",
        "| engine | posts | seconds | posts/s | start-up on 20 posts (s) | steady posts/s | same as local |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['engine']} | {r['posts']} | {r['seconds']} | {r['posts_per_s']} | {r['overhead_s']} | "
              f"{r['steady_posts_per_s']} | {'yes' if r['same_as_local'] else 'NO'} |" for r in rows]
    days = POSTS_100M / best["steady_posts_per_s"] / 86400
    cores = math.ceil(POSTS_100M / 86400 / per_worker)
    machines = math.ceil(cores / 32)
    lines += [
        "",
        "## Sizing for 100 million posts",
        "",
        f"Measured here: {per_worker:.1f} posts/s (steady) per Ray worker of one CPU core ({best['engine']}, this model and",
        f"caption input). 100 million posts on this machine: {days:.1f} days. The rate grows with workers while each",
        "has its core and the input is split into enough work items (8 model batches each); at",
        f"{per_worker:.1f} posts/s per core, 100 million posts in 24 hours need {cores:,}",
        f"worker cores (e.g. {machines} machine{'s' if machines > 1 else ''} of 32 cores), each worker holding one",
        "copy of the run (about 100 MB of weights for MiniLM-L6), the inputs, images and run at the same paths on every",
        "machine (a shared filesystem), and the driver writing the outputs. No GPU was lent to this measurement; a",
        "GPU worker's rate is not measured here.",
    ]
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps({"posts": n, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r["same_as_local"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
