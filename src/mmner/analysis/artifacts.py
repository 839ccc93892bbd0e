"""Per-post outputs beyond tags that a run directory may hold, and that `mmner report` reads.

Both are JSON lines next to the run's predictions, one object per post of the split, keyed by the post id
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
    entities (optional): the post's PREDICTED entities, each with its own attention map:
        "entities": [{"start": 3, "end": 5, "type": "PER", "text": "Kevin Love", "attention": [0.02, ...]}]
        start, end: word offsets into the post's tokens, end exclusive (0 <= start < end <= tokens);
        type: the entity type; text (optional): its words joined by spaces (the report takes them from
        the post when absent); attention: one non-negative weight per region, the same R regions as
        the post's `attention`: the attention from the entity's words to region j, summed over those
        words and averaged over layers and heads (the entity's S_TV is their sum). Absent = [].

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
from mmner.errors import MmnerError, at

TAGS_SUFFIX = ".tags"
RELATION_SUFFIX = ".relation.jsonl"
ATTENTION_SUFFIX = ".attention.jsonl"


def relation_path(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / "predictions" / f"{split}{RELATION_SUFFIX}"


def attention_path(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / "predictions" / f"{split}{ATTENTION_SUFFIX}"


def tags_path(run_dir: str | Path, split: str = "test") -> Path:
    """`predictions/<split>.tags`: a run's predicted tags without the posts' words, one line per post,
    `<post id>\t<tag> <tag> ...` in the split's order (the CoNLL predictions repeat the dataset's words;
    this file is what a tracked copy of the run keeps, see benchmarks/track_runs.py)."""
    return Path(run_dir) / "predictions" / f"{split}{TAGS_SUFFIX}"


def write_tags(path: str | Path, posts: Sequence[Post]) -> None:
    """The tags of `posts` (each with its predicted `tags`) in the `.tags` format."""
    Path(path).write_text("".join(f"{p.id}\t{' '.join(p.tags or [])}\n" for p in posts), encoding="utf-8")


def read_tags(path: str | Path, gold: Sequence[Post]) -> list[list[str]]:
    """The predicted tags of a `.tags` file, checked against the split's posts `gold` (same ids in the
    same order, one tag per word)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line]
    if len(lines) != len(gold):
        raise MmnerError(f"{path}: {len(lines)} posts but the split has {len(gold)}")
    out = []
    for n, (line, post) in enumerate(zip(lines, gold), 1):
        pid, _, tags = line.partition("\t")
        row = tags.split()
        if pid != post.id or len(row) != len(post.tokens):
            raise MmnerError(f"{path}:{n}: post {pid} with {len(row)} tags, but the split's post {n} is {post.id} "
                             f"with {len(post.tokens)} words")
        out.append(row)
    return out


def _plain(value: Any) -> Any:
    """Tensors and numpy values as JSON numbers / lists."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def write_post_outputs(run_dir: str | Path, split: str, posts: Sequence[Post],
                       extras: Sequence[dict[str, Any]], tags: Sequence[Sequence[str]]) -> list[Path]:
    """Write `predictions/<split>.relation.jsonl` and `.attention.jsonl` of a run directory from
    `predict_tags` extras and the predicted tags; returns the files written (none for a model that
    computes neither)."""
    return write_post_files(Path(run_dir) / "predictions" / split, posts, extras, tags)


def write_post_files(stem: str | Path, posts: Sequence[Post], extras: Sequence[dict[str, Any]],
                     tags: Sequence[Sequence[str]]) -> list[Path]:
    """`<stem>.relation.jsonl` and `<stem>.attention.jsonl` (the formats above). An extras row's
    `attention` is `models.blocks.attention_rows`' entry (None: post without image): its `words`
    matrix gives each predicted entity's map, the sum of its words' rows."""
    stem = Path(stem)
    relation, attention = [], []
    for post, e, post_tags in zip(posts, extras, tags):
        if e.get("relation_score") is not None:
            relation.append({"id": post.id, "relation_score": float(_plain(e["relation_score"]))})
        att = e.get("attention")
        if att:
            attention.append({"id": post.id, **attention_record(post.tokens, post_tags, att)})
    written: list[Path] = []
    for path, records in ((stem.with_name(stem.name + RELATION_SUFFIX), relation),
                          (stem.with_name(stem.name + ATTENTION_SUFFIX), attention)):
        if records:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
            written.append(path)
    return written


def span_attention(words: Sequence[Sequence[float]], start: int, end: int, regions: int) -> list[float]:
    """The attention of the words `start:end` over each of `regions` regions: the sum of their rows."""
    return [round(sum(row[j] for row in words[start:end]), 6) for j in range(regions)]


def attention_record(tokens: Sequence[str], tags: Sequence[str], att: dict[str, Any]) -> dict[str, Any]:
    """A post's attention entry (`weights`, `words`, `grid` / `labels`) in the file format: `attention`,
    `grid` / `regions`, and `entities` (each predicted entity with the sum of its words' rows)."""
    from mmner.tagging.schemes import entities

    words = att["words"]
    record: dict[str, Any] = {"attention": [float(x) for x in _plain(att["weights"])]}
    if att.get("grid") is not None:
        record["grid"] = list(att["grid"])
    if att.get("labels") is not None:
        record["regions"] = list(att["labels"])
    record["entities"] = [
        {"start": start, "end": end, "type": kind, "text": " ".join(tokens[start:end]),
         "attention": span_attention(words, start, end, len(record["attention"]))}
        for kind, start, end in entities(tags)
    ]
    return record


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


def _weights(value: Any, size: int | None = None) -> bool:
    """Whether `value` is a list of non-negative finite numbers (of length `size` when given, else non-empty)."""
    return (isinstance(value, list) and (len(value) == size if size is not None else bool(value))
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                    for w in value))


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entities(path: Path, n: int, raw: Any, size: int) -> list[dict[str, Any]]:
    """The `entities` of one attention record, checked; [] when absent."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise at(path, n, f"entities must be a list of objects, got {type(raw).__name__}")
    out = []
    for k, ent in enumerate(raw):
        if not isinstance(ent, dict):
            raise at(path, n, f"entities[{k}] must be an object, got {type(ent).__name__}")
        start, end = ent.get("start"), ent.get("end")
        if not (_index(start) and _index(end) and 0 <= start < end):
            raise at(path, n, f"entities[{k}]: start and end must be integers with 0 <= start < end, "
                              f"got {start!r}, {end!r}")
        if not isinstance(ent.get("type"), str) or not ent["type"]:
            raise at(path, n, f"entities[{k}]: type must be a non-empty string, got {ent.get('type')!r}")
        text = ent.get("text")
        if text is not None and not isinstance(text, str):
            raise at(path, n, f"entities[{k}]: text must be a string, got {text!r}")
        if not _weights(ent.get("attention"), size):
            raise at(path, n, f"entities[{k}]: attention must be a list of {size} non-negative numbers "
                              "(one per region of the post's attention)")
        out.append({"start": start, "end": end, "type": ent["type"], "text": text,
                    "attention": [float(w) for w in ent["attention"]]})
    return out


def read_attention(path: str | Path) -> dict[str, dict[str, Any]]:
    """Post id -> {"attention": [R], "grid": [rows, cols] | None, "regions": [R] | None,
    "entities": [{"start", "end", "type", "text" (None when absent), "attention": [R]}]}."""
    path = Path(path)
    maps: dict[str, dict[str, Any]] = {}
    for n, record in _records(path):
        weights = record.get("attention")
        if not _weights(weights):
            raise at(path, n, "attention must be a non-empty list of non-negative numbers")
        grid = record.get("grid")
        if grid is not None and (not isinstance(grid, list) or len(grid) != 2
                                 or not all(_index(g) and g > 0 for g in grid) or grid[0] * grid[1] != len(weights)):
            raise at(path, n, f"grid {grid!r} does not match {len(weights)} attention weights")
        regions = record.get("regions")
        if regions is not None and (not isinstance(regions, list) or len(regions) != len(weights)):
            raise at(path, n, f"regions must name each of the {len(weights)} regions")
        maps[record["id"]] = {"attention": [float(w) for w in weights], "grid": grid, "regions": regions,
                              "entities": _entities(path, n, record.get("entities"), len(weights))}
    return maps
