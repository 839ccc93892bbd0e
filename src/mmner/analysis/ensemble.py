"""Entity-level voting over the predictions of several runs on the same posts.

Each run's tags give entities `(type, start, end)`; an entity proposed by at least `min_votes` runs is a
candidate. Candidates are kept in order of votes (most first; ties: the longer span, then the earlier),
each unless it overlaps one already kept, and written back as IOB2 tags. `min_votes` is chosen on the
validation split (`best_min_votes`), never on the test split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mmner.errors import MmnerError
from mmner.tagging import schemes
from mmner.tagging.scorer import score


def vote(predictions: Sequence[Sequence[Sequence[str]]], min_votes: int, mode: str = "conlleval") -> list[list[str]]:
    """IOB2 tags per post from `predictions[run][post]` (tags per word, the same posts in every run)."""
    if not predictions:
        raise MmnerError("an ensemble needs the predictions of at least one run")
    n_posts = len(predictions[0])
    if any(len(run) != n_posts for run in predictions):
        raise MmnerError(f"runs to vote over predict different numbers of posts: {[len(run) for run in predictions]}")
    if not 1 <= min_votes <= len(predictions):
        raise MmnerError(f"min_votes {min_votes}: choose from 1 to {len(predictions)} (the runs voting)")
    out = []
    for i in range(n_posts):
        rows = [run[i] for run in predictions]
        if len({len(r) for r in rows}) != 1:
            raise MmnerError(f"post {i}: the runs tag different numbers of words: {[len(r) for r in rows]}")
        votes = Counter(e for r in rows for e in set(schemes.entities(r, mode)))
        taken = [False] * len(rows[0])
        tags = ["O"] * len(rows[0])
        for (kind, start, end), n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0][1] - kv[0][2], kv[0][1])):
            if n < min_votes or any(taken[start:end]):
                continue
            taken[start:end] = [True] * (end - start)
            tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
        out.append(tags)
    return out


def best_min_votes(gold: Sequence[Sequence[str]], predictions: Sequence[Sequence[Sequence[str]]],
                   mode: str = "conlleval") -> tuple[int, dict[int, float]]:
    """The `min_votes` with the highest F1 against `gold` (the validation split; ties: the smaller), and
    the F1 of every choice."""
    f1 = {k: score(list(map(list, gold)), vote(predictions, k, mode), mode)["f1"] for k in range(1, len(predictions) + 1)}
    return max(f1, key=lambda k: (f1[k], -k)), f1
