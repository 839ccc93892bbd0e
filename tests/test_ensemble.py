"""Entity-level voting over runs (mmner.analysis.ensemble) on hand-made predictions."""

from __future__ import annotations

import pytest

from mmner.analysis.ensemble import best_min_votes, vote
from mmner.errors import MmnerError

# one post of 6 words, three runs
A = ["B-PER", "I-PER", "O", "B-LOC", "O", "O"]
B = ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O"]
C = ["B-PER", "O", "O", "B-LOC", "O", "B-MISC"]


def test_an_entity_needs_min_votes_and_overlaps_go_to_the_most_voted():
    # 3 votes: no span is proposed by all three runs ("PER 0-2" by A and B, "PER 0-1" by C)
    assert vote([[A], [B], [C]], 3) == [["O"] * 6]
    # 2 votes: PER 0-2 (A, B) and LOC 3-4 (A, C); ORG 3-5 (B only) and MISC (C only) are out
    assert vote([[A], [B], [C]], 2) == [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]]
    # 1 vote: every span is a candidate; the most voted first, then the longer: PER 0-2 (2 votes) beats
    # PER 0-1 (1), LOC 3-4 (2) beats ORG 3-5 (1, overlapping); MISC 5-6 (1) overlaps nothing
    assert vote([[A], [B], [C]], 1) == [["B-PER", "I-PER", "O", "B-LOC", "O", "B-MISC"]]


def test_one_run_votes_for_itself_and_bad_input_is_refused():
    assert vote([[A, B]], 1) == [A, B]
    with pytest.raises(MmnerError, match="min_votes 3: choose from 1 to 2"):
        vote([[A], [B]], 3)
    with pytest.raises(MmnerError, match="different numbers of posts"):
        vote([[A], [A, B]], 1)
    with pytest.raises(MmnerError, match="post 0: the runs tag different numbers of words"):
        vote([[A], [A[:5]]], 1)
    with pytest.raises(MmnerError, match="at least one run"):
        vote([], 1)


def test_min_votes_is_chosen_on_the_gold_given():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]]
    k, f1 = best_min_votes(gold, [[A], [B], [C]])
    assert k == 2 and f1[2] == 100.0 and f1[1] < 100.0 and f1[3] == 0.0
