"""Tags for unlabelled posts from an ensemble of finished runs (or one run), for `data.extra_train` (self-training).

    python benchmarks/pseudo_label.py --data twitter2015:train --dataset twitter2017 \\
        --output benchmarks/pseudo/twitter2015-train.by-twitter2017-systems.tags

Members: the seed-13 run with `--encoder` (default MiniLM-L6) of each system of `benchmarks/ensemble.py` on
`--dataset` (or `--members`). Each member tags the posts of `--data` (their own tags are never read) with its
own visual inputs for that data (e.g. the BLIP-2 captions of Twitter-2015 images) and `--dataset`'s
validation split; the tags are voted at entity level (`mmner.train.teacher.vote_tags`, as `mmner teacher
--tags`) with the number of votes k chosen on that split. Writes the `.tags` file and a `.json` beside it
(members and their commits, k, valid F1 by k).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from baselines import collect, variant_of
from compare import _dataset
from ensemble import ENCODER, SYSTEMS
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
    from mmner.train.teacher import member_commits, vote_tags

    members = args.members or members_of(args.runs_dir, args.dataset, args.encoder)
    if not members:  # one member is a one-model teacher (e.g. a larger encoder's run)
        raise SystemExit(f"pseudo_label: no member runs for {args.dataset} with encoder {args.encoder} under {args.runs_dir}")
    voted = vote_tags([args.runs_dir / m for m in members], args.data, args.batch_size)
    if voted.valid != f"{args.dataset}:valid":
        raise SystemExit(f"pseudo_label: the members validate on {voted.valid}, not {args.dataset}:valid")
    k, valid_f1 = voted.min_votes, voted.valid_f1_by_min_votes
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_tags(args.output, voted.posts)
    commits = dict(zip(members, member_commits([args.runs_dir / m for m in members]).values()))
    summary = {"data": args.data, "dataset": args.dataset, "members": commits, "min_votes": k,
               "valid_f1_by_min_votes": valid_f1, "posts": len(voted.posts),
               "entities": sum(t.startswith("B-") for p in voted.posts for t in p.tags or []),
               "script_commit": code_commit()}
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.output}: k = {k} of {len(members)} (valid F1 {valid_f1[k]:.2f}), {summary['entities']} entities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
