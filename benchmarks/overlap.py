"""Near-copies of evaluation posts in extra training data: how many posts of `--data` (e.g. the untagged TRC
tweets, `trc:all`) read almost like a post of each validation and test split.

    python benchmarks/overlap.py --data trc:all --output benchmarks/pseudo/trc-all.overlap.json \
        --ids benchmarks/pseudo/trc-all.overlap.ids

Two posts are near-copies when the Jaccard overlap of their word sets is at least `--threshold` (default 0.6).
Words: tokens of letters, digits and `_`, lowercased, without `RT` and links; posts of fewer than 3 words are
not compared. Writes, per split, the count and the pairs (ids and both texts); with `--ids`, the ids of
every near-copy, for `data.extra_train[i].exclude`; prints the counts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from serve_load import code_commit

SPLITS = [f"{ds}:{split}" for ds in ("twitter2015", "twitter2017") for split in ("valid", "test")]
WORD = re.compile(r"\w+")
# a word in more posts than this says little about a near-copy; it is skipped when gathering candidates
COMMON = 200


def words(tokens: list[str]) -> frozenset[str]:
    return frozenset(t.lower() for t in tokens
                     if WORD.fullmatch(t) and t.lower() != "rt" and not t.lower().startswith("http"))


def near_copies(posts, others, threshold: float) -> list[dict]:
    """Each post of `posts` with its closest post of `others` where their Jaccard overlap reaches `threshold`."""
    sets = [words(p.tokens) for p in others]
    index: dict[str, set[int]] = defaultdict(set)
    for i, s in enumerate(sets):
        for w in s:
            index[w].add(i)
    found = []
    for post in posts:
        mine = words(post.tokens)
        if len(mine) < 3:
            continue
        shared: dict[int, int] = defaultdict(int)
        for w in mine:
            if len(index[w]) <= COMMON:
                for i in index[w]:
                    shared[i] += 1
        jaccard = {i: n / len(mine | sets[i]) for i, n in shared.items()}
        best = max(jaccard, key=jaccard.__getitem__, default=None)
        if best is not None and jaccard[best] >= threshold:
            found.append({"id": post.id, "other": others[best].id, "jaccard": round(jaccard[best], 3),
                          "text": " ".join(post.tokens), "other_text": " ".join(others[best].tokens)})
    return found


def main(argv: list[str] | None = None) -> int:
    from mmner.data.datadir import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the extra posts, e.g. trc:all")
    parser.add_argument("--splits", nargs="*", default=SPLITS, help=f"the evaluation splits (default: {' '.join(SPLITS)})")
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--ids", type=Path, help="also write the near-copies' ids here, one a line")
    args = parser.parse_args(argv)
    posts = load_dataset(args.data)
    out = {"data": args.data, "posts": len(posts), "threshold": args.threshold, "script_commit": code_commit(),
           "splits": {}}
    for split in args.splits:
        pairs = near_copies(posts, load_dataset(split), args.threshold)
        out["splits"][split] = {"near_copies": len(pairs), "pairs": pairs}
        print(f"{split}: {len(pairs)} of {len(posts)} posts of {args.data} are near-copies of one of its posts")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    if args.ids:
        ids = sorted({pair["id"] for split in out["splits"].values() for pair in split["pairs"]})
        args.ids.write_text(f"# near-copies of a post of {', '.join(args.splits)} among {args.data}'s posts "
                            f"(benchmarks/overlap.py, Jaccard >= {args.threshold}, at {out['script_commit']})\n"
                            + "".join(f"{i}\n" for i in ids), encoding="utf-8")
        print(f"wrote {args.ids}: {len(ids)} ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
