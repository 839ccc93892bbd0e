"""Load test of `mmner serve` on the loopback: posts per second under batch load, latency of single posts.

    python benchmarks/serve_load.py runs/t17                       # defaults: bounded, about a minute
    python benchmarks/serve_load.py runs/t17 --json docs/results/serve_load.json

Starts `mmner serve RUN_DIR` in a child process on a free 127.0.0.1 port (the client runs in this
process, so client and server do not share a GIL), waits for /healthz, then runs three phases, each
stopped after its request count or `--time-limit` seconds, whichever comes first:

1. `single`: one client, one post per request, one request at a time: the latency a lone user sees.
2. `single-concurrent`: `--concurrency` clients sending single posts: throughput and latency when
   the service micro-batches concurrent requests into shared model calls.
3. `batch`: `--concurrency` clients sending `/v1/tag/batch` requests of `--posts-per-request` posts.
4. `many-clients`: `--many` clients (default 200) sending single posts, two requests each: failures, and
   refusals of the bounded queue (503 with Retry-After; `--max-queue` sets the server's bound) counted apart.

Then, with the server stopped, `model-call`: in this process, the model call of single posts with and
without what the model computes besides tags (region attention, relation score), alternating post by
post (`--extras-posts` posts, 4 rounds, medians): what those outputs cost.

Posts are the Twitter-2017 test texts with their BLIP-2 captions (from the data dir) or, without it, generated ones. Only
loopback addresses are used, and the child server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_posts(limit: int = 2000) -> tuple[list[dict], str]:
    """Request bodies: Twitter-2017 test texts with their BLIP-2 captions (the visual input the
    benchmarks use; a caption-free model ignores them), or generated posts without a data dir."""
    try:
        from mmner.data import datadir
        from mmner.data.readers import read_blip2_captions

        posts = datadir.load_dataset(str(datadir.resolve("twitter2017:test")))
        captions = read_blip2_captions(datadir.caption_file("twitter2017"))
    except Exception:  # noqa: BLE001 - no data dir: generated posts
        rng = random.Random(0)
        names, places = ["Obama", "Messi", "Adele", "Merkel"], ["Paris", "London", "New York", "Rome"]
        return [{"text": f"RT @{rng.choice(names)}: visit {rng.choice(places)} today #{i} 🙌 https://t.co/{i}"}
                for i in range(limit)], "generated"
    bodies = []
    for p in posts[:limit]:
        body = {"text": " ".join(p.tokens)}
        caption = captions.get(p.image_id or "")
        if caption and caption != datadir.BLANK_IMAGE_CAPTION:
            body["caption"] = caption
        bodies.append(body)
    return bodies, "twitter2017:test with BLIP-2 captions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(run_dir: Path, *options: str):
    """`mmner serve RUN_DIR OPTIONS` in a child process on a free loopback port, once /healthz answers;
    yields its base URL and stops it on exit."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mmner", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port), *options],
        env={**os.environ, "MMNER_LOG": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}:\n{server.stderr.read()[-2000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not answer /healthz within 180 s")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def code_commit() -> str:
    """The checkout's commit, `+dirty` when a tracked file outside docs/results (where results go) differs."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results"],
                             cwd=root, capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if changed else "")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def phase(base: str, name: str, make_request, requests: int, concurrency: int, time_limit: float,
                posts_per_request: int) -> dict:
    import httpx

    latencies: list[float] = []
    failures = refused = 0
    retry_after: set[str] = set()
    sent = 0
    deadline = time.perf_counter() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def worker() -> None:
            nonlocal sent, failures, refused
            while sent < requests and time.perf_counter() < deadline:
                i = sent
                sent += 1
                path, body = make_request(i)
                t0 = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - t0)
                if response.status_code == 503:  # the bounded queue was full: refused at once, with Retry-After
                    refused += 1
                    retry_after.add(response.headers.get("retry-after", "(none)"))
                elif response.status_code != 200:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    done = len(latencies)
    return {
        "phase": name, "requests": done, "failed": failures, "refused_503": refused,
        "retry_after": sorted(retry_after), "concurrency": concurrency,
        "posts_per_request": posts_per_request, "seconds": round(seconds, 2),
        # answered posts only: a refused or failed request tags nothing
        "posts_per_second": round((done - failures - refused) * posts_per_request / seconds, 1) if seconds else None,
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 50), 1), "p95": round(1000 * percentile(latencies, 95), 1),
            "mean": round(1000 * statistics.fmean(latencies), 1),
        } if latencies else None,
        "stopped_by": "count" if done >= requests else "time limit",
    }


def model_call_cost(run_dir: Path, bodies: list[dict], n: int, threads: int | None) -> dict | None:
    """Median model call of single posts, tags only vs with the model's extras, alternating post by post."""
    if n <= 0:
        return None
    import torch

    from mmner import Tagger
    from mmner.api import make_post
    from mmner.inference import predict_tags

    if threads:
        torch.set_num_threads(threads)
    tagger = Tagger.load(run_dir)
    posts = [make_post(b, i) for i, b in enumerate(bodies[:n])]
    tagger.tag_posts(posts[:4])  # warm up, and the visual inputs
    model, visual = tagger.model, tagger._visual
    plain, full = [], []
    for _ in range(4):
        for post in posts:
            started = time.perf_counter()
            predict_tags(model, [post], progress=False, visual=visual)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            predict_tags(model, [post], progress=False, visual=visual, extras=[])
            full.append(time.perf_counter() - started)
    extras = [k for k, on in (("region attention", model.region_attention), ("relation score", model.relation_score)) if on]
    return {"calls": len(plain), "extras": extras, "tags_only_ms": round(1000 * statistics.median(plain), 2),
            "with_extras_ms": round(1000 * statistics.median(full), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--single", type=int, default=200, help="requests in the sequential single-post phase")
    parser.add_argument("--requests", type=int, default=400, help="requests in each concurrent phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--posts-per-request", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    parser.add_argument("--threads", type=int, help="the server's --threads (default: torch's, all cores)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per phase at most")
    parser.add_argument("--many", type=int, default=200,
                        help="clients of the many-clients phase (single posts; 0: skip it)")
    parser.add_argument("--max-queue", type=int, help="the server's --max-queue (default: its own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--extras-posts", type=int, default=100,
                        help="posts in the model-call phase (0: skip it)")
    args = parser.parse_args(argv)

    bodies, source = load_posts()
    options = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               *(["--threads", str(args.threads)] if args.threads else []),
               *(["--max-queue", str(args.max_queue)] if args.max_queue else [])]
    with served(args.run_dir, *options) as base:
        import httpx

        info = httpx.get(base + "/v1/model").json()

        def single(i: int):
            return "/v1/tag", bodies[i % len(bodies)]

        def batch(i: int):
            k = args.posts_per_request
            return "/v1/tag/batch", {"posts": [bodies[(i * k + j) % len(bodies)] for j in range(k)]}

        results = []
        for name, make, n, conc, per in (
            ("single", single, args.single, 1, 1),
            ("single-concurrent", single, args.requests, args.concurrency, 1),
            ("batch", batch, args.requests, args.concurrency, args.posts_per_request),
            *([("many-clients", single, 2 * args.many, args.many, 1)] if args.many else []),
        ):
            before = httpx.get(base + "/healthz").json()["batching"]
            result = asyncio.run(phase(base, name, make, n, conc, args.time_limit, per))
            after = httpx.get(base + "/healthz").json()["batching"]
            calls = after["calls"] - before["calls"]
            result["model_calls"] = calls
            result["model_call_ms"] = round(1000 * (after["seconds"] - before["seconds"]) / calls, 2) if calls else None
            result["mean_posts_per_call"] = round((after["posts"] - before["posts"]) / calls, 1) if calls else None
            results.append(result)

    import torch

    extras_cost = model_call_cost(args.run_dir, bodies, args.extras_posts, args.threads)
    record = {
        "model": info["model"], "encoder": info["encoder"], "visual_source": info["visual_source"],
        "posts": source, "device": "cuda" if torch.cuda.is_available() else "cpu", "cpus": os.cpu_count(),
        "server": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "threads": args.threads,
                   "max_queue": info.get("limits", {}).get("max_queue")},
        "phases": results, "model_call": extras_cost,
        "command": " ".join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": code_commit(),
    }
    print(f"model {record['model']} ({record['encoder']}), visual {record['visual_source']}, posts from {source}, "
          f"{record['device']} with {record['cpus']} CPUs, server threads {args.threads or 'default'}")
    for r in results:
        lat = r["latency_ms"] or {}
        print(f"  {r['phase']:<18} {r['requests']:>5} requests x {r['posts_per_request']:>2} posts, "
              f"concurrency {r['concurrency']:>2}: {r['posts_per_second']:>7} posts/s, "
              f"latency p50 {lat.get('p50')} ms p95 {lat.get('p95')} ms, "
              f"{r['mean_posts_per_call']} posts per model call, {r['failed']} failed, {r['refused_503']} refused "
              f"(503, Retry-After {', '.join(r['retry_after']) or '-'}) ({r['stopped_by']})")
    if extras_cost:
        print(f"  model-call         {extras_cost['calls']} single posts: median {extras_cost['tags_only_ms']} ms tags only, "
              f"{extras_cost['with_extras_ms']} ms with {', '.join(extras_cost['extras']) or 'nothing else'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
