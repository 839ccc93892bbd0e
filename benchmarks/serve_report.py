"""docs/results/serve.md from the files of two `benchmarks/serve_load.py` runs: the default queue bound and a
small one (every number in the page is read from them).

    python benchmarks/serve_load.py benchmarks/runs/bert-crf-caption-minilm-twitter2017-s13 --threads 2 \\
        --json docs/results/serve_load.json
    python benchmarks/serve_load.py benchmarks/runs/bert-crf-caption-minilm-twitter2017-s13 --threads 2 \\
        --max-queue 16 --single 20 --requests 50 --extras-posts 0 --json docs/results/serve_load_queue16.json
    python benchmarks/serve_report.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
GOAL_MS = 15.0  # single-post p50 over HTTP that the service aims at


def table(record: dict) -> list[str]:
    lines = ["| phase | requests x posts | concurrency | posts / s | p50 latency | p95 latency | posts per model call "
             "| failed | refused (503) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["phases"]:
        lat = r["latency_ms"] or {}
        name = "batch (`/v1/tag/batch`)" if r["phase"] == "batch" else r["phase"]
        limit = " (time limit)" if r["stopped_by"] == "time limit" else ""
        lines.append(f"| {name} | {r['requests']} x {r['posts_per_request']}{limit} | {r['concurrency']} | "
                     f"{r['posts_per_second']} | {lat.get('p50')} ms | {lat.get('p95')} ms | {r['mean_posts_per_call']} | "
                     f"{r['failed']} | {r['refused_503']} |")
    return lines


def phase(record: dict, name: str) -> dict:
    return next(r for r in record["phases"] if r["phase"] == name)


def render(main: dict, bounded: dict, speed: dict | None) -> str:
    single, many = phase(main, "single"), phase(main, "many-clients")
    server = main["server"]
    in_process = row = int8 = None
    if speed:
        row = next((r for r in speed["runs"] if r["model"] == main["model"] and not r.get("attention")
                    and not r.get("int8")), None)
        in_process = row and row["latency_ms"]["p50"]
        int8 = next((r for r in speed["runs"] if r["model"] == main["model"] and r.get("int8")), None)
    p50 = single["latency_ms"]["p50"]
    lines = [
        "# The HTTP service under load",
        "",
        f"Made by `{main['command']}` and, for the bounded queue, `{bounded['command']}` (commits {main.get('commit', '?')}",
        f"and {bounded.get('commit', '?')}), then `python benchmarks/serve_report.py`: every number below is in",
        "docs/results/serve_load.json and serve_load_queue16.json. Loopback only; the client runs in its own process.",
        "",
        f"- Model: `{main['model']}` with `{main['encoder']}`, visual input: {main['visual_source']} "
        f"({main['posts']}).",
        f"- Machine: {main['device']}, {main['cpus']} CPUs; server with {server['threads'] or 'all'} torch threads, "
        f"micro-batching `--max-batch {server['max_batch']} --max-wait-ms {server['max_wait_ms']}` (a lone request is "
        f"tagged at once), queue bound `--max-queue` {server['max_queue']}; records without region attention (the "
        "default; `?attention=true` asks for it).",
        "",
        *table(main),
        "",
        f"A lone user sees {p50} ms per post (p50) over HTTP"
        + (f", against {in_process} ms in process (docs/results/speed.md)" if in_process else "")
        + f": the goal of {GOAL_MS:g} ms is {'met' if p50 <= GOAL_MS else 'not met'}.",
    ]
    if row and int8 and row.get("http") and int8.get("http"):
        fast = int8["http"]["p50"]
        lines.append(f"With `mmner serve --int8` (the encoder's linear layers in dynamic int8, off by default) the same "
                     f"model answers in {fast} ms (p50 over HTTP, docs/results/speed.md, against {row['http']['p50']} ms "
                     f"there without it): the goal is {'met' if fast <= GOAL_MS else 'not met'} that way, at "
                     f"{row['f1'] - int8['f1']:.2f} test F1 ({row['f1']:.2f} -> {int8['f1']:.2f}).")
    inside = single.get("model_call_ms")
    if inside is not None:
        cost = main.get("model_call")
        against = f", against {cost['tags_only_ms']} ms for the same call in the client's own process (below)" if cost else ""
        lines.append(f"Inside the service the model call of a single post took {inside} ms on average{against}, so "
                     f"{p50 - inside:.1f} ms of the p50 is the service and the client around it (the model is loaded and "
                     "called in the micro-batcher's worker thread, so that the process holds one OpenMP team: "
                     "mmner/serve/batcher.py).")
    cost = main.get("model_call")
    if cost:
        lines.append(f"The model call alone takes {cost['tags_only_ms']} ms for one post (median of {cost['calls']}, "
                     f"in process), {cost['with_extras_ms']} ms with {', '.join(cost['extras']) or 'its extras'}: "
                     + ("on this machine the model call alone is at or above the goal, so it needs a cheaper model "
                        "call, not a leaner service." if cost["tags_only_ms"] >= GOAL_MS else
                        f"the service adds {p50 - cost['tags_only_ms']:.1f} ms."))
    lines += [
        "",
        f"{many['concurrency']} concurrent clients ({many['requests']} requests): {many['failed']} failed, "
        f"{many['refused_503']} refused, p95 latency {many['latency_ms']['p95']} ms, "
        f"{many['mean_posts_per_call']} posts per model call.",
        "",
        "## The bounded queue",
        "",
        f"With `--max-queue {bounded['server']['max_queue']}` (at most that many posts admitted and unanswered), "
        "the same phases:",
        "",
        *table(bounded),
        "",
        "Requests over the bound are answered at once with 503 and `Retry-After` (seconds, estimated from the posts",
        "waiting and the recent time per post; seen: "
        + (", ".join(sorted({v for r in bounded["phases"] for v in r["retry_after"]})) or "none") + ") instead of",
        "waiting. Latencies count refused requests too (they come back in milliseconds).",
        "",
        "The page (`mmner serve`, `/`) tagging a Twitter-2017 sample post with its image and caption, the second",
        "entity clicked to show its attention over the caption words (the page asks for it), with a bert-crf-caption",
        "MiniLM-L6 run trained briefly for the screenshot (1500 training posts, 2 epochs), and the same post on the",
        "text-only bert-crf benchmark run (`web-page-text.png`, no image or caption inputs)",
        "(`python benchmarks/web_screenshot.py docs --text-run RUN --caption-run RUN`; one page alone:",
        "`python benchmarks/web_screenshot.py page RUN --sample twitter2017_samples:test:1 --entity 2 --output X.png`):",
        "",
        "![the web page](../screenshots/web-page.png)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=Path, default=RESULTS / "serve_load.json")
    parser.add_argument("--bounded", type=Path, default=RESULTS / "serve_load_queue16.json")
    parser.add_argument("--output", type=Path, default=RESULTS / "serve.md")
    args = parser.parse_args(argv)
    speed_file = RESULTS / "speed.json"
    speed = json.loads(speed_file.read_text()) if speed_file.is_file() else None
    args.output.write_text(render(json.loads(args.main.read_text()), json.loads(args.bounded.read_text()), speed))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
