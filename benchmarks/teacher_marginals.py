"""An ensemble's (or one run's) CRF marginals of posts, as soft targets for `distill` (mmner.train.distill).

    python benchmarks/teacher_marginals.py --data twitter2017:train --dataset twitter2017 \\
        --output benchmarks/teachers/twitter2017-train.by-twitter2017-systems.marginals.jsonl.gz
    python benchmarks/teacher_marginals.py --data twitter2015:train --dataset twitter2017 \\
        --output benchmarks/teachers/twitter2015-train.by-twitter2017-systems.marginals.jsonl.gz

Members: the seed-13 run with `--encoder` (default MiniLM-L6) of each system of `benchmarks/ensemble.py` on
`--dataset` (or `--members`), as benchmarks/pseudo_label.py takes them. Each member computes the marginals
P(label | post) of every word of the posts of `--data` (forward-backward over its CRF, with its own visual
inputs for that data; the posts' own tags are never read); the teacher's marginals are their mean. With
`--score SPLIT` the teacher's per-word argmax is also scored on a split with gold tags (e.g.
`twitter2017:valid`), beside each member's.
The file's header records the members and their commits, and the script's commit.

Cross-fitting (mmner.train.teacher): a teacher's marginals of its own training posts are almost one-hot (its
gold tags). With `--fold k/n` the file holds only fold k of n of `--data`'s posts (`data.holdout`: position i
mod n), and every member must have been trained on `--data` without that fold, so each post's target comes
from a model that never saw it. One file per fold, each from its own members; `distill.targets` lists them:

    python benchmarks/teacher_marginals.py --members teacher-fold0/bert-crf-caption-mpnet-twitter2017-s13 \\
        --dataset twitter2017 --data twitter2017:train --fold 0/2 \\
        --output benchmarks/teachers/twitter2017-train-fold0.by-twitter2017-mpnet-casing.marginals.jsonl.gz
"""

from __future__ import annotations

import sys
from pathlib import Path

from pseudo_label import member_arguments, members_of
from serve_load import code_commit


def member_marginals(runs_dir: Path, members: list[str], data: str, batch_size: int,
                     fold: tuple[int, int] | None = None) -> tuple[list[str], list, list]:
    """The labels (the first member's order), the posts (of `fold` when given) and, per member, each post's
    [words, labels] marginals."""
    from mmner.train.teacher import member_marginals as marginals

    labels, posts, out = marginals([runs_dir / m for m in members], data, batch_size, fold=fold)
    print(f"marginals of {len(posts)} posts of {data} by {', '.join(members)}", flush=True)
    return labels, posts, out


def main(argv: list[str] | None = None) -> int:
    parser = member_arguments(__doc__, "the members' dataset, e.g. twitter2017")
    parser.add_argument("--score", help="also score the teacher's argmax on this split (e.g. twitter2017:valid)")
    parser.add_argument("--fold", help="k/n: only fold k of n of --data's posts, which every member left out "
                                       "(data.holdout)")
    args = parser.parse_args(argv)

    from mmner.data import datadir
    from mmner.errors import MmnerError
    from mmner.tagging.scorer import score
    from mmner.train.distill import write_marginals
    from mmner.train.teacher import held_out, mean_marginals, member_commits, parse_fold

    try:
        fold = parse_fold(args.fold) if args.fold else None
    except MmnerError as exc:
        raise SystemExit(f"teacher_marginals: {exc}") from None
    members = args.members or members_of(args.runs_dir, args.dataset, args.encoder)
    if not members:  # one member is a one-model teacher (e.g. a larger encoder's run)
        raise SystemExit(f"teacher_marginals: no member runs for {args.dataset} with encoder {args.encoder} under {args.runs_dir}")
    try:
        held_out([args.runs_dir / m for m in members], args.data, fold)
    except MmnerError as exc:
        raise SystemExit(f"teacher_marginals: {exc}") from None
    commits = dict(zip(members, member_commits([args.runs_dir / m for m in members]).values()))
    header = {"members": commits, "dataset": args.dataset, "script_commit": code_commit(),
              **({"fold": {"fold": fold[0], "folds": fold[1]}} if fold else {})}
    if args.score:
        labels, _, per_member = member_marginals(args.runs_dir, members, args.score, args.batch_size)
        gold = [p.tags for p in datadir.load_dataset(args.score)]

        def argmax_f1(rows) -> float:  # IOB2 labels; conlleval reads an I- after O as an entity's start
            return round(score(gold, [[labels[i] for i in r.argmax(-1).tolist()] for r in rows])["f1"], 2)

        mean = mean_marginals(per_member)
        header["score"] = {"split": args.score, "teacher_argmax_f1": argmax_f1(mean),
                           "members_argmax_f1": {m: argmax_f1(rows) for m, rows in zip(members, per_member)}}
        print(f"{args.score}: teacher argmax F1 {header['score']['teacher_argmax_f1']}", flush=True)
    labels, posts, per_member = member_marginals(args.runs_dir, members, args.data, args.batch_size, fold)
    mean = mean_marginals(per_member)
    write_marginals(args.output, args.data, labels, [(p.id, m) for p, m in zip(posts, mean)], **header)
    confident = sum(int((m.max(-1).values > 0.9).sum()) for m in mean) / sum(m.shape[0] for m in mean)
    print(f"wrote {args.output}: {len(posts)} posts, {len(members)} members, {100 * confident:.1f}% of words "
          "with one label above 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
