"""A teacher from finished runs (`mmner teacher`): what `distill` and `data.extra_train` train on.

The members are run directories of one label set. For the posts of a split they give

- the mean of their CRF marginals, P(label | post) per word (`member_marginals`, `mean_marginals`): a
  marginals file for `distill.targets` (format: mmner.train.distill);
- their entity-level vote (`vote_tags`, mmner.analysis.ensemble), an entity kept when at least k members
  propose it, k chosen on the members' validation split: a tags file for `data.extra_train`.

Each member reads the posts with its own visual inputs for that split (its config's captions or features);
the posts' own tags, if any, are never read.

Cross-fitting (`--fold k/n`, `held_out`): a member's marginals of its own training posts are almost its gold
tags. Members trained without fold k of their training data (`data.holdout`) teach only that fold's posts,
so that every post's target comes from models that never saw it; one file per fold, all listed in
`distill.targets`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mmner.data.post import Post
from mmner.errors import MmnerError


def _posts(data: str) -> list[Post]:
    from mmner.data import datadir

    return [replace(p, tags=None) for p in datadir.load_dataset(data)]


def _load(run: Path):  # type: ignore[no-untyped-def]
    from mmner.inference import load_run

    if not (Path(run) / "config.yaml").is_file():
        raise MmnerError(f"{run}: not a run directory (no config.yaml)")
    return load_run(run)


def parse_fold(text: str) -> tuple[int, int]:
    """`k/n` -> (k, n): fold k of n (`data.holdout`)."""
    try:
        fold, folds = (int(x) for x in text.split("/"))
    except ValueError:
        raise MmnerError(f"--fold {text}: expected k/n, e.g. 0/2") from None
    if folds < 2 or not 0 <= fold < folds:
        raise MmnerError(f"--fold {text}: n must be at least 2 and k one of 0 to n - 1")
    return fold, folds


def held_out(runs: Sequence[Path], data: str, fold: tuple[int, int] | None) -> None:
    """Refuse a teacher whose targets would mix seen and unseen posts: with a fold, every member must have
    trained on `data` without exactly that fold; without one, no member may have left out part of `data`."""
    from mmner.config import load_config
    from mmner.data import datadir

    def same(a: str, b: str, data_dir: str | None) -> bool:
        try:
            return datadir.resolve(a, data_dir) == datadir.resolve(b, data_dir)
        except MmnerError:
            return a == b

    for run in runs:
        d = load_config(Path(run) / "config.yaml").data
        trained = same(d.train, data, d.dir)
        held = (d.holdout.fold, d.holdout.folds) if d.holdout is not None else None
        if fold is not None and (not trained or held != fold):
            raise MmnerError(f"--fold {fold[0]}/{fold[1]}: {run} trained on {d.train} with data.holdout "
                             f"{held and f'{held[0]}/{held[1]}'}; a member must train on {data} without fold "
                             f"{fold[0]} of {fold[1]}")
        if fold is None and held is not None and trained:
            raise MmnerError(f"{run} left out fold {held[0]} of {held[1]} of {data}: give --fold {held[0]}/{held[1]} "
                             "to teach only the posts it never saw")


def member_commits(runs: Sequence[Path]) -> dict[str, Any]:
    """Each member's commit (metrics.json), by run directory: what a teacher file records of its members."""
    out = {}
    for run in runs:
        metrics = Path(run) / "metrics.json"
        if not metrics.is_file():
            raise MmnerError(f"{run}: no metrics.json; a teacher's members are finished runs")
        splits = json.loads(metrics.read_text())
        out[str(run)] = (splits.get("test") or splits.get("valid") or {}).get("git_commit")
    return out


def member_marginals(runs: Sequence[Path], data: str, batch_size: int = 64, progress: bool = True,
                     fold: tuple[int, int] | None = None) -> tuple[list[str], list[Post], list[list[torch.Tensor]]]:
    """The labels (the first member's order), the posts of `data` (only those of `fold`, k of n, when given), and
    per member each post's [words, labels] marginals with the columns in that order."""
    from mmner.inference import predict_marginals, visual_inputs

    if not runs:
        raise MmnerError("a teacher needs at least one run")
    posts = fold_posts(data, fold)
    labels: list[str] | None = None
    out = []
    for run in runs:
        config, model = _load(run)
        own = list(model.labels.tags)
        labels = labels or own
        if sorted(own) != sorted(labels):
            raise MmnerError(f"{run}: labels {', '.join(own)} differ from {runs[0]}'s ({', '.join(labels)}); "
                             "a teacher's members share one label set")
        visual = visual_inputs(config, data) if model.uses_visual else None
        rows = predict_marginals(model, posts, batch_size, progress=progress, visual=visual)
        out.append([r[:, [own.index(t) for t in labels]] for r in rows])
    assert labels is not None
    return labels, posts, out


def file_marginals(path: Path, data: str, labels: Sequence[str] | None, posts: Sequence[Post],
                   fold: tuple[int, int] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A member known by its marginals file (`mmner teacher --add`, e.g. a run whose checkpoint is gone): its
    header and its marginals of those of `posts` that it covers, by id, [words, labels] with the columns in
    `labels` order (None: the file's own). The file must be of `data` with the same label set; for a `fold`,
    made by held-out members (a fold in its header: the posts it covers are ones its members never saw)."""
    from mmner.train.distill import marginals_row, read_marginals

    header, items = read_marginals(path, where="--add")
    if header["data"] != data:
        raise MmnerError(f"--add {path}: it holds marginals of {header['data']}, not of {data}")
    if fold is not None and not isinstance(header.get("fold"), dict):
        raise MmnerError(f"--add {path}: no fold in its header, so its members may have trained on its posts; "
                         f"with --fold {fold[0]}/{fold[1]} every file must come from held-out members (--fold)")
    labels = labels or header["labels"]
    if sorted(header["labels"]) != sorted(labels):
        raise MmnerError(f"--add {path}: labels {', '.join(header['labels'])} differ from the members' "
                         f"({', '.join(labels)})")
    columns = [header["labels"].index(t) for t in labels]
    words = {p.id: len(p.tokens) for p in posts}
    rows: dict[str, torch.Tensor] = {}
    for n, pid, values in items:
        if pid not in words:
            continue  # outside the fold
        rows[pid] = marginals_row(path, n, pid, values, words[pid], data, columns)
    if not rows:
        raise MmnerError(f"--add {path}: none of its posts is one of the {len(words)} posts to teach")
    return header, rows


def mean_over_members(posts: Sequence[Post], members: Sequence[dict[str, torch.Tensor]]) -> tuple[list[torch.Tensor], dict[int, int]]:
    """Each post's mean marginals over the members that cover it (a run covers every post, a file those it
    holds), and how many posts had how many members; a post that none covers is an error."""
    out, counts = [], {}
    for p in posts:
        rows = [m[p.id] for m in members if p.id in m]
        if not rows:
            uncovered = sum(not any(q.id in m for m in members) for q in posts)
            raise MmnerError(f"no member covers post {p.id} ({uncovered} of the {len(posts)} posts): add the files "
                             "or runs that teach them")
        out.append(torch.stack(rows).mean(0))
        counts[len(rows)] = counts.get(len(rows), 0) + 1
    return out, dict(sorted(counts.items()))


def fold_posts(data: str, fold: tuple[int, int] | None = None) -> list[Post]:
    """The posts of `data` without their tags (only fold k of n when given)."""
    from mmner.train.run import in_fold

    return [p for i, p in enumerate(_posts(data)) if fold is None or in_fold(i, *fold)]


def mean_marginals(per_member: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """The members' mean marginals of each post."""
    return [torch.stack(rows).mean(0) for rows in zip(*per_member)]


@dataclass
class Vote:
    """The members' vote on a split's posts: the tags, k, and the validation F1 of every k."""

    posts: list[Post]  # with the voted tags
    min_votes: int
    valid: str
    valid_f1_by_min_votes: dict[int, float]


def vote_tags(runs: Sequence[Path], data: str, batch_size: int = 64, progress: bool = True) -> Vote:
    """The members' entity-level vote on the posts of `data`, k chosen on their shared validation split
    (each member tags it now; the k with the best F1, the smaller on ties)."""
    from mmner.analysis.ensemble import best_min_votes, vote
    from mmner.data import datadir
    from mmner.inference import predict_tags, visual_inputs

    if not runs:
        raise MmnerError("a teacher needs at least one run")
    posts, loaded = _posts(data), [(run, *_load(run)) for run in runs]
    valids = {config.data.valid for _, config, _ in loaded}
    if len(valids) != 1:
        raise MmnerError(f"the members validate on different splits ({', '.join(sorted(map(str, valids)))}); "
                         "their vote's k is chosen on one")
    valid_name = valids.pop()
    valid = datadir.load_dataset(valid_name, loaded[0][1].data.dir)
    on_valid, on_posts = [], []
    for run, config, model in loaded:
        for split, items, out in ((valid_name, valid, on_valid), (data, posts, on_posts)):
            visual = visual_inputs(config, split) if model.uses_visual else None
            out.append(predict_tags(model, [replace(p, tags=None) for p in items], batch_size, progress=progress,
                                    visual=visual))
    k, f1 = best_min_votes([p.tags for p in valid], on_valid)
    voted = vote(on_posts, k)
    return Vote([replace(p, tags=t) for p, t in zip(posts, voted)], k, valid_name, f1)
