"""Slices of a test set that explain a score: entity slices (Chen et al. 2021, Table 6) and post length.

Everything here works on per-post entity sets, so that a slice's numbers are sums of per-post counts
(correct, predicted, gold); the paired bootstrap resamples exactly those counts.

Entity slices, for a test entity e of type k, against the training posts the run learned from
(surface form: the entity's tokens, lower-cased, joined by one space):
- seen: e appears in training with type k;          unseen: it does not (new, or only other types);
- ambiguous: e appears in training with several types; non-ambiguous: only with type k.
(Entities absent from training are in neither of the last two; a seen entity is ambiguous or not.)
Chen et al. report F1 per slice; a predicted entity goes to a slice by the same rule using its
predicted type, so precision is defined too, and recall (gold entities only) is given alongside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mmner.data.post import Post
from mmner.tagging import schemes

Entity = tuple[str, int, int]  # (type, start, end exclusive)

ENTITY_SLICES = ("seen", "unseen", "ambiguous", "non-ambiguous")
SLICE_DEFINITION = (
    "Chen et al. (2021), Table 6: for a test entity of type k, matched on its lower-cased surface form against the "
    "training posts the run learned from: seen = it appears in training with type k, unseen = it does not; "
    "ambiguous = it appears in training with several types, non-ambiguous = only with type k (entities absent "
    "from training are in neither of these two). Scores are F1 as in the paper: a predicted entity belongs to a "
    "slice by the same rule with its predicted type; recall counts gold entities only."
)
# Post length buckets in tokens, inclusive; Chen et al. find images help most up to 7 words.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 7), (8, 12), (13, 17), (18, 24), (25, None))


@dataclass
class PostEntities:
    """One post's gold and predicted entities, read the way the scorer reads them."""

    id: str
    tokens: list[str]
    gold: set[Entity]
    pred: set[Entity]

    @property
    def correct(self) -> set[Entity]:
        return self.gold & self.pred

    @property
    def errors(self) -> int:
        """Missed gold entities plus spurious predictions (a wrong type counts once each way)."""
        return len(self.gold ^ self.pred)


def post_entities(posts: Sequence[Post], pred: Sequence[Sequence[str]], mode: str = "conlleval") -> list[PostEntities]:
    return [
        PostEntities(p.id, list(p.tokens), set(schemes.entities(p.tags or [], mode)), set(schemes.entities(t, mode)))
        for p, t in zip(posts, pred)
    ]


def surface(tokens: Sequence[str], entity: Entity) -> str:
    return " ".join(tokens[entity[1]:entity[2]]).lower()


def train_lexicon(posts: Iterable[Post], mode: str = "conlleval") -> dict[str, set[str]]:
    """Surface form -> the entity types it has in the training posts."""
    lexicon: dict[str, set[str]] = defaultdict(set)
    for post in posts:
        for entity in schemes.entities(post.tags or [], mode):
            lexicon[surface(post.tokens, entity)].add(entity[0])
    return dict(lexicon)


def entity_slices(form: str, typ: str, lexicon: dict[str, set[str]]) -> list[str]:
    """The slices (of ENTITY_SLICES) an entity of this surface form and type belongs to."""
    types = lexicon.get(form, set())
    out = ["seen" if typ in types else "unseen"]
    if len(types) > 1:
        out.append("ambiguous")
    elif types == {typ}:
        out.append("non-ambiguous")
    return out


def counts(items: Sequence[PostEntities], keep: Callable[[PostEntities, Entity], bool] | None = None) -> np.ndarray:
    """Per-post [correct, predicted, gold] counts, `[N, 3]`, of the entities `keep(post, entity)` accepts."""
    out = np.zeros((len(items), 3), dtype=np.int64)
    for i, p in enumerate(items):
        gold = p.gold if keep is None else {e for e in p.gold if keep(p, e)}
        pred = p.pred if keep is None else {e for e in p.pred if keep(p, e)}
        out[i] = (len(gold & pred), len(pred), len(gold))
    return out


def prf(c: np.ndarray | Sequence[int]) -> dict[str, float | int]:
    """Micro P/R/F1 (percent, 2 decimals) from summed [correct, predicted, gold] counts."""
    c = np.asarray(c)
    if c.ndim == 2:
        c = c.sum(axis=0)
    correct, pred, gold = (int(x) for x in c)
    p = correct / pred if pred else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * correct / (pred + gold) if pred + gold else 0.0
    return {"precision": round(100 * p, 2), "recall": round(100 * r, 2), "f1": round(100 * f, 2),
            "correct": correct, "pred": pred, "gold": gold}


def type_counts(items: Sequence[PostEntities], types: Sequence[str]) -> dict[str, np.ndarray]:
    return {t: counts(items, lambda _p, e, t=t: e[0] == t) for t in types}


def slice_counts(items: Sequence[PostEntities], lexicon: dict[str, set[str]]) -> dict[str, np.ndarray]:
    """Per-post counts for each entity slice."""
    cache: dict[tuple[str, str], list[str]] = {}

    def member(name: str) -> Callable[[PostEntities, Entity], bool]:
        def keep(p: PostEntities, e: Entity) -> bool:
            key = (surface(p.tokens, e), e[0])
            if key not in cache:
                cache[key] = entity_slices(key[0], key[1], lexicon)
            return name in cache[key]
        return keep

    return {name: counts(items, member(name)) for name in ENTITY_SLICES}


def slice_scores(items: Sequence[PostEntities], lexicon: dict[str, set[str]]) -> dict[str, dict[str, float | int]]:
    """P/R/F1 and entity counts on each entity slice."""
    return {name: prf(c) for name, c in slice_counts(items, lexicon).items()}


def bucket_name(bucket: tuple[int, int | None]) -> str:
    lo, hi = bucket
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def length_bucket(n_tokens: int) -> str:
    for lo, hi in LENGTH_BUCKETS:
        if n_tokens >= lo and (hi is None or n_tokens <= hi):
            return bucket_name((lo, hi))
    return bucket_name(LENGTH_BUCKETS[0])


def length_scores(items: Sequence[PostEntities]) -> dict[str, dict[str, float | int]]:
    """P/R/F1 by post length in tokens, with the number of posts in each bucket."""
    c = counts(items)
    names = [length_bucket(len(p.tokens)) for p in items]
    out: dict[str, dict[str, float | int]] = {}
    for bucket in LENGTH_BUCKETS:
        name = bucket_name(bucket)
        rows = [i for i, n in enumerate(names) if n == name]
        out[name] = {**prf(c[rows] if rows else np.zeros((0, 3), dtype=np.int64)), "posts": len(rows)}
    return out


def subset_scores(items: Sequence[PostEntities], groups: dict[str, Sequence[int]]) -> dict[str, dict[str, float | int]]:
    """P/R/F1 on groups of posts given by index (e.g. posts judged image-helpful or not)."""
    c = counts(items)
    return {name: {**prf(c[list(rows)] if len(rows) else np.zeros((0, 3), dtype=np.int64)), "posts": len(rows)}
            for name, rows in groups.items()}
