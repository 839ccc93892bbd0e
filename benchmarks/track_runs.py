"""Stage the finished benchmark runs under benchmarks/runs for a commit.

A run is finished when its metrics.json exists. What is kept of it (benchmarks/runs/.gitignore): config.yaml,
labels.json, metrics.json, train_log.csv, and its predictions as tags only, `predictions/<split>.tags`
(`<post id>\\t<tags>` per post, which training writes beside the CoNLL predictions, which repeat the dataset's
words and so stay out of the repository; written here from the CoNLL file for runs that predate that), with the relation scores where the model has them. Every table
(benchmarks/*.py, the leaderboard's bootstrap) reads these files, so a fresh clone remakes them, and
`mmner sweep` there skips the runs already done.

    python benchmarks/track_runs.py            # writes the .tags files, then `git add`s the finished runs
    python benchmarks/track_runs.py --dry-run  # lists what it would stage
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def finished_runs(root: Path) -> list[Path]:
    """Run directories with a metrics.json, at <root>/<run>, <root>/<tag>/<run> and deeper (the speed
    benchmark's <root>/speed/<tag>/<run>)."""
    return sorted(p.parent for p in root.rglob("metrics.json"))


def write_tags(run: Path) -> list[Path]:
    """`predictions/<split>.tags` from `predictions/<split>.conll`, for each split the run predicted."""
    from mmner.analysis.artifacts import tags_path, write_tags as write
    from mmner.data.readers import read_conll

    written = []
    for conll in sorted((run / "predictions").glob("*.conll")):
        target = tags_path(run, conll.stem)
        if not target.is_file() or target.stat().st_mtime < conll.stat().st_mtime:
            write(target, read_conll(conll))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--dry-run", action="store_true", help="list the finished runs, write and stage nothing")
    args = parser.parse_args(argv)
    runs = finished_runs(args.root)
    for run in runs:
        if args.dry_run:
            print(run.relative_to(args.root))
            continue
        write_tags(run)
    if runs and not args.dry_run:
        subprocess.run(["git", "add", "--", *map(str, runs)], cwd=ROOT, check=True)
        print(f"staged {len(runs)} finished runs under {args.root}")
    elif not runs:
        print(f"no finished runs under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
