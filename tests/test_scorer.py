"""The scorer agrees with seqeval, counts entities the documented way, and locates bad input."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.v1 import precision_recall_fscore_support
from seqeval.scheme import IOB2

from mmner.errors import MmnerError
from mmner.tagging.scorer import format_score, read_conll_tags, score, score_files

TYPES = ("PER", "LOC", "ORG", "OTHER")
DATA = Path(__file__).parents[1] / "../shared/data"
KEYS = {"precision", "recall", "f1", "gold_entities", "pred_entities", "correct_entities", "mode", "per_type"}


def random_tags(rng: random.Random, n: int) -> list[str]:
    """B/I/O over four types, with stray I- and type switches mid-span."""
    return ["O" if rng.random() < 0.45 else f"{rng.choice('BI')}-{rng.choice(TYPES)}" for _ in range(n)]


def perturb(rng: random.Random, tags: list[str]) -> list[str]:
    """A prediction close to gold, so that some entities match and some do not."""
    return [t if rng.random() < 0.8 else rng.choice(["O", *random_tags(rng, 1)]) for t in tags]


def seqeval_kwargs(mode: str) -> dict:
    return {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_agrees_with_seqeval_on_random_sequences(mode: str) -> None:
    rng = random.Random(42)
    kw = seqeval_kwargs(mode)
    for _ in range(300):  # 300 corpora x 10 sentences = 3000 sequences per mode
        gold = [random_tags(rng, rng.randint(0, 12)) for _ in range(10)]
        pred = [perturb(rng, g) if rng.random() < 0.8 else random_tags(rng, len(g)) for g in gold]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = score(gold, pred, mode)
        assert res["precision"] == round(precision_score(gold, pred, zero_division=0, **kw) * 100, 2)
        assert res["recall"] == round(recall_score(gold, pred, zero_division=0, **kw) * 100, 2)
        assert res["f1"] == round(f1_score(gold, pred, zero_division=0, **kw) * 100, 2)
        assert set(res) == KEYS and res["mode"] == mode
        assert sum(r["support"] for r in res["per_type"].values()) == res["gold_entities"]
        if res["pred_entities"]:
            assert res["precision"] == round(100 * res["correct_entities"] / res["pred_entities"], 2)
        if res["gold_entities"]:
            assert res["recall"] == round(100 * res["correct_entities"] / res["gold_entities"], 2)


def test_per_type_matches_seqeval_report() -> None:
    rng = random.Random(7)
    gold = [random_tags(rng, 15) for _ in range(200)]
    pred = [perturb(rng, g) for g in gold]
    res = score(gold, pred, "strict")
    p, r, f, s = precision_recall_fscore_support(gold, pred, average=None, scheme=IOB2, zero_division=0)
    assert list(res["per_type"]) == sorted(TYPES)
    for i, t in enumerate(sorted(TYPES)):
        row = res["per_type"][t]
        expected = tuple(round(x * 100, 2) for x in (p[i], r[i], f[i]))
        assert (row["precision"], row["recall"], row["f1"]) == expected
        assert row["support"] == s[i]


def test_stray_i_is_an_entity_in_conlleval_only() -> None:
    gold = [["O", "I-PER", "I-PER", "O"]]
    loose, strict = score(gold, gold, "conlleval"), score(gold, gold, "strict")
    assert loose["gold_entities"] == 1 and loose["f1"] == 100.0
    assert strict["gold_entities"] == 0 and strict["f1"] == 0.0 and strict["per_type"] == {}
    # a gold B-PER I-PER matched by a prediction that misses the B-
    res = score([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], "conlleval")
    assert res["correct_entities"] == 1
    res = score([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], "strict")
    assert (res["gold_entities"], res["pred_entities"], res["correct_entities"]) == (1, 0, 0)


def test_type_change_mid_span() -> None:
    res = score([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])
    assert (res["gold_entities"], res["pred_entities"], res["correct_entities"]) == (1, 2, 0)
    assert set(res["per_type"]) == {"PER", "LOC"}
    assert res["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert score([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]], "strict")["pred_entities"] == 1


def test_entity_at_sentence_end() -> None:
    gold = [["O", "B-LOC", "I-LOC"], ["B-ORG"]]
    res = score(gold, [["O", "B-LOC", "I-LOC"], ["O"]])
    assert (res["gold_entities"], res["pred_entities"], res["correct_entities"]) == (2, 1, 1)
    assert (res["precision"], res["recall"], res["f1"]) == (100.0, 50.0, 66.67)


def test_empty_prediction_scores_zero_quietly() -> None:
    gold = [["B-PER", "O"], ["O", "B-LOC"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("conlleval", "strict"):
            res = score(gold, [["O", "O"], ["O", "O"]], mode)
            assert (res["precision"], res["recall"], res["f1"], res["pred_entities"]) == (0.0, 0.0, 0.0, 0)
            assert score([["O"]], [["O"]], mode)["per_type"] == {}
            assert score([], [], mode)["f1"] == 0.0
    json.dumps(res)  # plain Python numbers, ready for --json


def test_score_input_errors() -> None:
    with pytest.raises(MmnerError, match="conlleval, strict"):
        score([["O"]], [["O"]], "exact")
    with pytest.raises(MmnerError, match="sentence 2: gold has 2 tags but prediction has 1"):
        score([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(MmnerError, match="2 sentences"):
        score([["O"], ["O"]], [["O"]])
    with pytest.raises(MmnerError, match="predicted sentence 1: malformed tag 'B_PER'"):
        score([["O"]], [["B_PER"]])


def test_format_score() -> None:
    text = format_score(score([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]], "strict"))
    assert "strict" in text and "gold entities: 2" in text and "correct: 1" in text
    assert "PER" in text and "LOC" in text and "overall" in text and "66.67" in text


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOLD = "IMGID:1\nRT O\nObama\tB-PER\nin O\nParis B-LOC\n\n\nIMGID:2\nhi O\nApple B-ORG\n"


def test_read_conll_tags(tmp_path: Path) -> None:
    sents = read_conll_tags(write(tmp_path, "g.txt", GOLD))
    assert sents == [
        (["RT", "Obama", "in", "Paris"], ["O", "B-PER", "O", "B-LOC"], [2, 3, 4, 5]),
        (["hi", "Apple"], ["O", "B-ORG"], [9, 10]),
    ]
    # extra columns: the tag is the last field
    assert read_conll_tags(write(tmp_path, "p.txt", "Obama B-PER B-LOC\n"))[0][1] == ["B-LOC"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MmnerError, match=r"one\.txt:3: expected 'token TAG'"):
        read_conll_tags(write(tmp_path, "one.txt", "IMGID:1\nRT O\nObama\n"))
    with pytest.raises(MmnerError, match=r"bad\.txt:2: malformed tag 'PERSON'"):
        read_conll_tags(write(tmp_path, "bad.txt", "RT O\nObama PERSON\n"))
    with pytest.raises(MmnerError, match=r"missing\.txt"):
        read_conll_tags(tmp_path / "missing.txt")
    gold = write(tmp_path, "gold.txt", GOLD)
    with pytest.raises(MmnerError, match=r"missing\.txt"):
        score_files(gold, tmp_path / "missing.txt")


def test_mismatched_files(tmp_path: Path) -> None:
    gold = write(tmp_path, "gold.txt", GOLD)
    pred = write(tmp_path, "pred.txt", GOLD.replace("Paris", "London"))
    with pytest.raises(MmnerError, match=r"pred\.txt:5: token 'London' but gold has 'Paris'"):
        score_files(gold, pred)
    pred = write(tmp_path, "pred.txt", GOLD.replace("in O\n", ""))
    with pytest.raises(MmnerError, match=r"pred\.txt:4: token 'Paris' but gold has 'in'"):
        score_files(gold, pred)
    pred = write(tmp_path, "pred.txt", GOLD.replace("Paris B-LOC\n", ""))
    with pytest.raises(MmnerError, match=r"pred\.txt:4: sentence ends after 3 tokens"):
        score_files(gold, pred)
    pred = write(tmp_path, "pred.txt", GOLD.split("\n\n")[0] + "\n")
    with pytest.raises(MmnerError, match=r"pred\.txt: 1 sentences but gold .* has 2"):
        score_files(gold, pred)
    pred = write(tmp_path, "pred.txt", GOLD + "\nmore O\n")
    with pytest.raises(MmnerError, match=r"pred\.txt:12: 3 sentences"):
        score_files(gold, pred)


def test_score_files(tmp_path: Path) -> None:
    gold = write(tmp_path, "gold.txt", GOLD)
    pred = write(tmp_path, "pred.txt", GOLD.replace("Paris B-LOC", "Paris O"))
    res = score_files(gold, pred)
    assert (res["gold_entities"], res["pred_entities"], res["correct_entities"]) == (3, 2, 2)
    assert res["precision"] == 100.0 and res["recall"] == 66.67
    with pytest.raises(MmnerError, match="conlleval, strict"):
        score_files(gold, pred, "iob1")


@pytest.mark.parametrize(
    ("dataset", "mode", "count"),
    [("twitter2015", "conlleval", 5207), ("twitter2015", "strict", 5072), ("twitter2017", "conlleval", 1351)],
)
def test_real_test_split_against_itself(dataset: str, mode: str, count: int) -> None:
    path = DATA / dataset / "test.txt"
    if not path.exists():
        pytest.skip(f"{path} not present")
    res = score_files(path, path, mode)
    assert res["gold_entities"] == res["pred_entities"] == res["correct_entities"] == count
    assert res["f1"] == 100.0 and res["mode"] == mode
