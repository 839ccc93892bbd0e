"""Entity-level scoring: a thin wrapper over seqeval plus a strict CoNLL reader for `mmner score`.

Metrics come from seqeval itself (not re-derived) so numbers match published conlleval/seqeval
results; we add entity counts, per-type rows and located errors for bad input.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from seqeval.metrics.sequence_labeling import precision_recall_fscore_support as prfs_conlleval
from seqeval.metrics.v1 import precision_recall_fscore_support as prfs_strict
from seqeval.scheme import IOB2

from mmner.errors import MmnerError, at
from mmner.tagging import schemes

MODES = schemes.ENTITY_MODES

Sentence = tuple[list[str], list[str], list[int]]


def _pct(x: float) -> float:
    return round(float(x) * 100, 2)


def _prfs(gold: list[list[str]], pred: list[list[str]], mode: str, average: str | None) -> Any:
    # zero_division=0: an empty prediction scores 0 without seqeval printing warnings.
    if mode == "strict":
        return prfs_strict(gold, pred, average=average, zero_division=0, scheme=IOB2)
    return prfs_conlleval(gold, pred, average=average, zero_division=0)


def _entity_set(seqs: list[list[str]], mode: str) -> set[tuple[int, str, int, int]]:
    return {(i, t, s, e) for i, seq in enumerate(seqs) for t, s, e in schemes.entities(seq, mode)}


def score(gold: list[list[str]], pred: list[list[str]], mode: str = "conlleval") -> dict:
    """The `score --json` object of DESIGN §1: micro P/R/F1 (percent), entity counts, per-type rows."""
    if mode not in MODES:
        raise MmnerError(f"unknown scoring mode {mode!r} (choose one of: {', '.join(MODES)})")
    if len(gold) != len(pred):
        raise MmnerError(f"gold has {len(gold)} sentences but prediction has {len(pred)}")
    gold = [list(s) for s in gold]
    pred = [list(s) for s in pred]
    for i, (g, p) in enumerate(zip(gold, pred), 1):
        if len(g) != len(p):
            raise MmnerError(f"sentence {i}: gold has {len(g)} tags but prediction has {len(p)}")
        schemes.check_tags(g, f"gold sentence {i}")
        schemes.check_tags(p, f"predicted sentence {i}")

    gold_set, pred_set = _entity_set(gold, mode), _entity_set(pred, mode)
    correct = gold_set & pred_set
    # seqeval rejects an empty corpus; with no entities on either side its answer would be 0 anyway.
    precision, recall, f1 = _prfs(gold, pred, mode, "micro")[:3] if gold_set or pred_set else (0.0, 0.0, 0.0)

    types = sorted({e[1] for e in gold_set | pred_set})  # seqeval's per-type order
    per_type: dict[str, dict[str, float | int]] = {}
    if types:
        support = Counter(e[1] for e in gold_set)
        ps, rs, fs, _ = _prfs(gold, pred, mode, None)
        for t, p_, r_, f_ in zip(types, ps, rs, fs):
            per_type[t] = {"precision": _pct(p_), "recall": _pct(r_), "f1": _pct(f_), "support": support[t]}
    return {
        "precision": _pct(precision),
        "recall": _pct(recall),
        "f1": _pct(f1),
        "gold_entities": len(gold_set),
        "pred_entities": len(pred_set),
        "correct_entities": len(correct),
        "mode": mode,
        "per_type": per_type,
    }


def read_conll_tags(path: str | Path) -> list[Sentence]:
    """Sentences of a `token TAG` file as (tokens, tags, 1-based line numbers).

    The tag is the last field, so files with extra columns (token gold pred) score their last one.
    `IMGID:` lines and `-DOCSTART-` lines are skipped; blank lines end a sentence.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MmnerError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MmnerError(f"{path}: cannot read ({exc})") from None
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields:
            if tokens:
                sentences.append((tokens, tags, lines))
                tokens, tags, lines = [], [], []
            continue
        if fields[0].startswith("IMGID:") or fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise at(path, n, f"expected 'token TAG', got {raw.strip()!r}")
        tag = fields[-1]
        schemes.check_tags([tag], f"{path}:{n}")
        tokens.append(fields[0])
        tags.append(tag)
        lines.append(n)
    if tokens:
        sentences.append((tokens, tags, lines))
    return sentences


def _align(gold: list[Sentence], pred: list[Sentence], gold_path: Path, pred_path: Path) -> None:
    """Fail at the first place where pred stops following gold, so the user can find it."""
    for (gt, _, gl), (pt, _, pl) in zip(gold, pred):
        for i, (g, p) in enumerate(zip(gt, pt)):
            if g != p:
                raise at(pred_path, pl[i], f"token {p!r} but gold has {g!r} ({gold_path}:{gl[i]})")
        if len(pt) < len(gt):
            raise at(pred_path, pl[-1], f"sentence ends after {len(pt)} tokens but gold sentence has "
                     f"{len(gt)} (next gold token {gt[len(pt)]!r} at {gold_path}:{gl[len(pt)]})")
        if len(pt) > len(gt):
            raise at(pred_path, pl[len(gt)], f"token {pt[len(gt)]!r} but gold sentence ended "
                     f"after {len(gt)} tokens ({gold_path}:{gl[-1]})")
    if len(pred) != len(gold):
        first_extra = pred[len(gold)][2][0] if len(pred) > len(gold) else None
        raise at(pred_path, first_extra, f"{len(pred)} sentences but gold ({gold_path}) has {len(gold)}")


def score_files(gold_path: str | Path, pred_path: str | Path, mode: str = "conlleval") -> dict:
    """Score two CoNLL files token-aligned with each other (same sentences, same tokens)."""
    if mode not in MODES:
        raise MmnerError(f"unknown scoring mode {mode!r} (choose one of: {', '.join(MODES)})")
    gold_path, pred_path = Path(gold_path), Path(pred_path)
    gold = read_conll_tags(gold_path)
    pred = read_conll_tags(pred_path)
    if not gold:
        raise at(gold_path, None, "no tagged tokens found")
    _align(gold, pred, gold_path, pred_path)
    return score([s[1] for s in gold], [s[1] for s in pred], mode)


def format_score(result: dict) -> str:
    """A plain-text table for terminals; gold entity count always shown (DESIGN §6)."""
    lines = [
        f"mode: {result['mode']}   gold entities: {result['gold_entities']}   "
        f"predicted: {result['pred_entities']}   correct: {result['correct_entities']}",
        "",
        f"{'type':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for typ, row in result["per_type"].items():
        lines.append(
            f"{typ:<12}{row['precision']:>10.2f}{row['recall']:>10.2f}{row['f1']:>10.2f}{row['support']:>10d}"
        )
    lines.append(
        f"{'overall':<12}{result['precision']:>10.2f}{result['recall']:>10.2f}{result['f1']:>10.2f}"
        f"{result['gold_entities']:>10d}"
    )
    return "\n".join(lines)
