"""Tagging schemes (IOB2 = "bio", BIOES), conversions, transition rules and entity extraction.

Entity extraction defers to seqeval so that what we train on, decode to and score agree exactly
with the reference scorer (conlleval.pl semantics by default, IOB2-strict on request).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Tokens

from mmner.errors import MmnerError

SCHEMES = ("bio", "bioes")
ENTITY_MODES = ("conlleval", "strict")

_TAG = re.compile(r"O|[BIES]-\S+")


def check_tags(tags: Sequence[str], where: str) -> None:
    """Reject anything that is not `O` or `B-/I-/E-/S-TYPE`, before seqeval silently guesses."""
    for t in tags:
        if not isinstance(t, str) or not _TAG.fullmatch(t):
            raise MmnerError(f"{where}: malformed tag {t!r} (expected O or B-/I-/E-/S- plus a type)")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise MmnerError(f"unknown tagging scheme {scheme!r} (choose one of: {', '.join(SCHEMES)})")


def entities(tags: Sequence[str], mode: str = "conlleval") -> list[tuple[str, int, int]]:
    """Entities as (type, start, end exclusive), read the way the scorer reads them.

    `conlleval`: seqeval's default `get_entities` (a stray I- starts an entity, E-/S- understood).
    `strict`: seqeval IOB2 strict: an entity must open with B-; stray I- tokens are dropped.
    """
    tags = list(tags)
    check_tags(tags, "tags")
    if mode == "conlleval":
        return [(t, s, e + 1) for t, s, e in get_entities(tags)]
    if mode == "strict":
        bad = next((t for t in tags if t[0] in "ES"), None)
        if bad is not None:
            raise MmnerError(f"strict mode reads IOB2 tags only, got {bad!r} (convert BIOES to IOB2 first)")
        return [(e.tag, e.start, e.end) for e in Tokens(tags, IOB2).entities]
    raise MmnerError(f"unknown entity mode {mode!r} (choose one of: {', '.join(ENTITY_MODES)})")


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Any of IOB1/IOB2/BIOES -> IOB2, repairing stray I- as conlleval does (it opens an entity).

    Rendered from the conlleval entities, so scoring the output gives the same entities as the input.
    """
    out = ["O"] * len(tags)
    for typ, start, end in entities(tags, "conlleval"):
        out[start] = f"B-{typ}"
        for i in range(start + 1, end):
            out[i] = f"I-{typ}"
    return out


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """Any input scheme -> `bio` (IOB2) or `bioes`, always via the conlleval reading of the input."""
    _check_scheme(scheme)
    iob2 = to_iob2(tags)
    if scheme == "bio":
        return iob2
    out = list(iob2)
    for typ, start, end in entities(iob2, "conlleval"):
        if end - start == 1:
            out[start] = f"S-{typ}"
        else:
            out[end - 1] = f"E-{typ}"
    return out


def _split(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def transition_allowed(prev: str, nxt: str, scheme: str) -> bool:
    """Whether `prev -> nxt` is well formed; `prev="O"` stands for the start, `nxt="O"` for the end.

    Used to mask CRF transitions so a constrained decoder can only emit valid sequences.
    """
    _check_scheme(scheme)
    p, pt = _split(prev)
    n, nt = _split(nxt)
    if scheme == "bio":
        if p in "ES" or n in "ES":
            return False
        return n != "I" or (p in "BI" and pt == nt)
    if p in "BI":
        return n in "IE" and pt == nt
    return n in "OBS"
