"""Tags for unlabelled posts from an ensemble of finished runs, for `data.extra_train` (self-training).

    python benchmarks/pseudo_label.py --data twitter2015:train --dataset twitter2017 \\
        --output benchmarks/pseudo/twitter2015-train.by-twitter2017-systems.tags

Members: the seed-13 run with `--encoder` (default MiniLM-L6) of each system of `benchmarks/ensemble.py` on
`--dataset` (or `--members`).
Each member tags the posts of `--data` (their own tags are never read) with its own visual inputs for that
data (e.g. the BLIP-2 captions of Twitter-2015 images); the tags are voted at entity level
(`mmner.analysis.ensemble`) with the number of votes k chosen on `--dataset`'s validation split from the
members' tracked validation predictions. Writes the `.tags` file and a `.json` beside it (members and
their commits, k, valid F1 by k).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from baselines import collect, variant_of
from compare import _dataset
from ensemble import ENCODER, SYSTEMS, _tags
from serve_load import code_commit

ROOT = Path(__file__).resolve().parents[1]


def members_of(runs_dir: Path, dataset: str, encoder: str = ENCODER) -> list[str]:
    records = [r for r in collect(runs_dir) if r.get("encoder") == encoder and _dataset(r) == dataset]
    return [r["run"] for s in SYSTEMS for r in records if variant_of(r["run"]) == s and r["seed"] == 13]


def member_arguments(doc: str, dataset_help: str) -> argparse.ArgumentParser:
    """The arguments of a script whose ensemble of member runs reads posts: --data, --dataset, --members,
    --runs-dir, --output, --batch-size."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the posts, e.g. twitter2015:train")
    parser.add_argument("--dataset", required=True, help=dataset_help)
    parser.add_argument("--members", nargs="*", help="run names under --runs-dir (default: see above)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--encoder", default=ENCODER, help=f"the members' encoder (default {ENCODER})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = member_arguments(__doc__, "the members' dataset, e.g. twitter2017 (k on its valid split)").parse_args(argv)

    from mmner.analysis.artifacts import write_tags
    from mmner.analysis.ensemble import best_min_votes, vote
    from mmner.data import datadir
    from mmner.inference import load_run, predict_tags, visual_inputs

    members = args.members or members_of(args.runs_dir, args.dataset, args.encoder)
    if len(members) < 2:
        raise SystemExit(f"pseudo_label: {len(members)} member runs for {args.dataset}; an ensemble needs 2 or more")
    valid = datadir.load_dataset(f"{args.dataset}:valid")
    k, valid_f1 = best_min_votes([p.tags for p in valid], [_tags(args.runs_dir, m, "valid", valid) for m in members])
    posts = [replace(p, tags=None) for p in datadir.load_dataset(args.data)]  # their own tags are never read
    predictions = []
    for m in members:
        config, model = load_run(args.runs_dir / m)
        visual = visual_inputs(config, args.data) if model.uses_visual else None
        predictions.append(predict_tags(model, posts, args.batch_size, progress=True, visual=visual))
        print(f"{m}: tagged {len(posts)} posts of {args.data}", flush=True)
    voted = vote(predictions, k)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_tags(args.output, [replace(p, tags=t) for p, t in zip(posts, voted)])
    commits = {}
    for m in members:
        metrics = json.loads((args.runs_dir / m / "metrics.json").read_text())["test"]
        commits[m] = metrics.get("git_commit")
    summary = {"data": args.data, "dataset": args.dataset, "members": commits, "min_votes": k,
               "valid_f1_by_min_votes": valid_f1, "posts": len(posts),
               "entities": sum(t.startswith("B-") for row in voted for t in row), "script_commit": code_commit()}
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.output}: k = {k} of {len(members)} (valid F1 {valid_f1[k]:.2f}), {summary['entities']} entities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
