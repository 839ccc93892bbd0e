"""Scheme conversions, stray-I repair and transition rules."""

from __future__ import annotations

import random

import pytest

from mmner.errors import MmnerError
from mmner.tagging import schemes

TYPES = ("PER", "LOC", "ORG", "OTHER")


def random_iob2(rng: random.Random, n: int) -> list[str]:
    """A valid IOB2 sequence: every I- continues a B-/I- of the same type."""
    tags: list[str] = []
    for _ in range(n):
        prev = tags[-1] if tags else "O"
        r = rng.random()
        if prev != "O" and r < 0.4:
            tags.append("I-" + prev[2:])
        elif r < 0.7:
            tags.append("B-" + rng.choice(TYPES))
        else:
            tags.append("O")
    return tags


def random_any(rng: random.Random, n: int) -> list[str]:
    """Arbitrary well-formed tags, including stray I-, E-, S- and type switches."""
    return ["O" if rng.random() < 0.3 else f"{rng.choice('BIES')}-{rng.choice(TYPES)}" for _ in range(n)]


def is_valid(tags: list[str], scheme: str) -> bool:
    seq = ["O", *tags, "O"]
    return all(schemes.transition_allowed(a, b, scheme) for a, b in zip(seq, seq[1:]))


def test_round_trip_iob2_bioes_iob2() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        tags = random_iob2(rng, rng.randint(0, 15))
        bioes = schemes.convert(tags, "bioes")
        assert is_valid(bioes, "bioes"), (tags, bioes)
        assert schemes.convert(bioes, "bio") == tags
        assert schemes.to_iob2(tags) == tags
        assert schemes.entities(bioes) == schemes.entities(tags) == schemes.entities(tags, "strict")


def test_conversion_keeps_conlleval_entities_of_any_input() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        tags = random_any(rng, rng.randint(0, 12))
        iob2 = schemes.to_iob2(tags)
        assert is_valid(iob2, "bio")
        assert schemes.entities(iob2, "strict") == schemes.entities(tags, "conlleval")
        assert schemes.entities(schemes.convert(tags, "bioes")) == schemes.entities(tags)
        assert schemes.convert(tags, "bio") == iob2


def test_bioes_examples() -> None:
    assert schemes.convert(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC"], "bioes") == [
        "B-PER", "E-PER", "O", "S-LOC", "B-LOC", "I-LOC", "E-LOC",
    ]
    assert schemes.convert(["S-PER", "B-ORG", "E-ORG"], "bio") == ["B-PER", "B-ORG", "I-ORG"]


def test_stray_i_repair() -> None:
    assert schemes.to_iob2(["I-PER", "I-PER"]) == ["B-PER", "I-PER"]  # at start
    assert schemes.to_iob2(["O", "I-LOC", "O"]) == ["O", "B-LOC", "O"]  # after O
    assert schemes.to_iob2(["B-PER", "I-LOC", "I-LOC"]) == ["B-PER", "B-LOC", "I-LOC"]  # type switch
    # IOB1: B- only separates two adjacent entities of one type.
    assert schemes.to_iob2(["I-ORG", "I-ORG", "B-ORG", "O"]) == ["B-ORG", "I-ORG", "B-ORG", "O"]


def test_entities_modes() -> None:
    tags = ["I-PER", "O", "B-LOC", "I-LOC", "B-ORG", "I-PER"]
    assert schemes.entities(tags) == [("PER", 0, 1), ("LOC", 2, 4), ("ORG", 4, 5), ("PER", 5, 6)]
    assert schemes.entities(tags, "strict") == [("LOC", 2, 4), ("ORG", 4, 5)]
    assert schemes.entities([]) == []
    with pytest.raises(MmnerError, match="conlleval, strict"):
        schemes.entities(tags, "lenient")
    with pytest.raises(MmnerError, match="IOB2"):
        schemes.entities(["S-PER"], "strict")


def test_transitions_iob2() -> None:
    ok = schemes.transition_allowed
    assert ok("O", "B-PER", "bio") and ok("O", "O", "bio") and ok("B-PER", "O", "bio")
    assert ok("B-PER", "I-PER", "bio") and ok("I-PER", "I-PER", "bio")
    assert ok("I-PER", "B-PER", "bio") and ok("B-LOC", "B-PER", "bio")
    assert not ok("O", "I-PER", "bio")  # also: cannot start with I-
    assert not ok("B-LOC", "I-PER", "bio") and not ok("I-LOC", "I-PER", "bio")
    assert ok("I-PER", "O", "bio")  # may end in I-
    assert not ok("O", "S-PER", "bio") and not ok("E-PER", "O", "bio")


def test_transitions_bioes() -> None:
    ok = schemes.transition_allowed
    for prev in ("O", "E-PER", "S-LOC"):
        for nxt in ("O", "B-ORG", "S-ORG"):
            assert ok(prev, nxt, "bioes"), (prev, nxt)
        for nxt in ("I-PER", "E-PER", "I-ORG", "E-LOC"):
            assert not ok(prev, nxt, "bioes"), (prev, nxt)
    for prev in ("B-PER", "I-PER"):
        assert ok(prev, "I-PER", "bioes") and ok(prev, "E-PER", "bioes")
        for nxt in ("O", "B-PER", "S-PER", "I-LOC", "E-LOC", "B-LOC"):
            assert not ok(prev, nxt, "bioes"), (prev, nxt)
    # sequence end: cannot end inside an entity
    assert not ok("B-PER", "O", "bioes") and not ok("I-PER", "O", "bioes")


def test_unknown_scheme() -> None:
    with pytest.raises(MmnerError, match="bio, bioes"):
        schemes.convert(["O"], "iobes2")
    with pytest.raises(MmnerError, match="bio, bioes"):
        schemes.transition_allowed("O", "O", "bilou")


@pytest.mark.parametrize("bad", ["B", "B-", "X-PER", "b-PER", "PER", "", "O-PER", "BPER", "I PER"])
def test_check_tags_errors(bad: str) -> None:
    with pytest.raises(MmnerError) as err:
        schemes.check_tags(["O", bad], "post 7")
    assert str(err.value) == f"post 7: malformed tag {bad!r} (expected O or B-/I-/E-/S- plus a type)"


def test_check_tags_accepts() -> None:
    schemes.check_tags(["O", "B-PER", "I-PER", "E-MISC", "S-OTHER", "B-X-Y"], "here")
