"""Per-post outputs beyond tags that a run directory may hold, and that `mmner report` reads.

Both are JSON lines next to the run's predictions, one object per test post, keyed by the post id
that the split's data file gives (`<file stem>-<n>` for CoNLL, e.g. `test-12`); order is free and
posts may be missing (they are left out of the section, and the count is shown).

`predictions/<split>.relation.jsonl` (models with a text-image relation score, e.g. rpbert):
    {"id": "test-12", "relation_score": 0.83}
    relation_score: probability that the image adds to the text's meaning (RpBERT's r, in [0, 1]);
    the report splits posts at r > 0.5 ("image adds") as RpBERT's Table 6 does.

`predictions/<split>.attention.jsonl` (models that attend over visual regions):
    {"id": "test-12", "attention": [0.01, ...], "grid": [7, 7], "regions": ["a", "man", ...]}
    attention: one weight per visual region j, a_j^v of RpBERT eq. (11): the attention from the
    post's words to region j, summed over words and averaged over layers and heads (any
    non-negative weights are drawn; S_TV of eq. (10) is their sum).
    grid (optional): [rows, cols] when the regions are an image grid (7x7 CNN features, row-major);
    without it the regions are a sequence (e.g. caption tokens), named by `regions` (optional).

`write_post_outputs` writes both from `predict_tags(..., extras=...)`, whose rows carry
`relation_score` and `attention` for models that compute them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmner.data.post import Post
from mmner.errors import at

RELATION_SUFFIX = ".relation.jsonl"
ATTENTION_SUFFIX = ".attention.jsonl"


def relation_path(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / "predictions" / f"{split}{RELATION_SUFFIX}"


def attention_path(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / "predictions" / f"{split}{ATTENTION_SUFFIX}"


def _plain(value: Any) -> Any:
    """Tensors and numpy values as JSON numbers / lists."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def write_post_outputs(run_dir: str | Path, split: str, posts: Sequence[Post],
                       extras: Sequence[dict[str, Any]]) -> list[Path]:
    """Write the relation and attention files of a split from `predict_tags` extras; returns the files written."""
    rows = list(zip(posts, extras))
    relation = [{"id": post.id, "relation_score": float(_plain(e["relation_score"]))}
                for post, e in rows if "relation_score" in e]
    attention = []
    for post, e in rows:
        if "attention" in e:
            record = {"id": post.id, "attention": [float(x) for x in _plain(e["attention"])]}
            record.update({key: _plain(e[key]) for key in ("grid", "regions") if e.get(key) is not None})
            attention.append(record)
    written: list[Path] = []
    for path, records in ((relation_path(run_dir, split), relation), (attention_path(run_dir, split), attention)):
        if records:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
            written.append(path)
    return written


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise at(path, n, f"invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise at(path, n, 'expected an object with a string "id"')
        out.append((n, record))
    return out


def read_relation(path: str | Path) -> dict[str, float]:
    """Post id -> relation score from a `.relation.jsonl` file."""
    path = Path(path)
    scores: dict[str, float] = {}
    for n, record in _records(path):
        r = record.get("relation_score")
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= r <= 1.0:
            raise at(path, n, f"relation_score must be a number in [0, 1], got {r!r}")
        scores[record["id"]] = float(r)
    return scores


def read_attention(path: str | Path) -> dict[str, dict[str, Any]]:
    """Post id -> {"attention": [R], "grid": [rows, cols] | None, "regions": [R] | None}."""
    path = Path(path)
    maps: dict[str, dict[str, Any]] = {}
    for n, record in _records(path):
        weights = record.get("attention")
        if (not isinstance(weights, list) or not weights
                or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights)):
            raise at(path, n, "attention must be a non-empty list of non-negative numbers")
        grid = record.get("grid")
        if grid is not None and (not isinstance(grid, list) or len(grid) != 2 or grid[0] * grid[1] != len(weights)):
            raise at(path, n, f"grid {grid!r} does not match {len(weights)} attention weights")
        regions = record.get("regions")
        if regions is not None and (not isinstance(regions, list) or len(regions) != len(weights)):
            raise at(path, n, f"regions must name each of the {len(weights)} regions")
        maps[record["id"]] = {"attention": [float(w) for w in weights], "grid": grid, "regions": regions}
    return maps
