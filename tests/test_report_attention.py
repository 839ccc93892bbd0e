"""Per-entity attention maps: the `entities` key of `.attention.jsonl` and the report's attention section.

The run directories here are written by hand (config, metrics, predictions, a JSON lines test set with
images): no model is trained or loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mmner.analysis import plots
from mmner.analysis.artifacts import attention_path, read_attention
from mmner.data.post import Post
from mmner.data.readers import write_conll
from mmner.errors import MmnerError

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)

TOKENS = ["Kevin", "Love", "scores", "in", "Cleveland", "today"]
GOLD = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
PRED = [["B-PER", "I-PER", "O", "O", "B-LOC", "O"], ["B-PER", "I-PER", "O", "O", "O", "O"],
        ["O", "O", "O", "O", "B-ORG", "O"]]


def _entity(start: int, end: int, type_: str, attention: list[float], text: str | None = None) -> dict:
    out = {"start": start, "end": end, "type": type_, "attention": attention}
    if text is not None:
        out["text"] = text
    return out


RECORDS = [
    {"id": "test-0", "attention": [0.1, 0.2, 0.3, 0.4], "grid": [2, 2],
     "entities": [_entity(0, 2, "PER", [0.4, 0.1, 0.0, 0.1], "Kevin Love"),
                  _entity(4, 5, "LOC", [0.0, 0.0, 0.2, 0.6])]},
    {"id": "test-1", "attention": [0.5, 0.0, 0.0, 0.1], "grid": [2, 2],
     "entities": [_entity(0, 2, "PER", [0.3, 0.3, 0.0, 0.0], "Kevin Love")]},
    {"id": "test-2", "attention": [0.2, 0.7, 0.1], "regions": ["a", "$5", "man"],
     "entities": [_entity(4, 5, "ORG", [0.1, 0.1, 0.1], "$Cleveland and $")]},
]


def _write_records(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run of three test posts: test-0 with a PNG image, test-1 with an unreadable one, test-2 none."""
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 30), (0, 120, 255)).save(data / "img0.png")
    (data / "img1.png").write_text("not a picture")
    lines = [{"id": f"test-{i}", "tokens": TOKENS, "tags": GOLD, **({"image": f"img{i}.png"} if i < 2 else {})}
             for i in range(3)]
    test = data / "test.jsonl"
    test.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: 7\ndata:\n  train: {test}\n  valid: {test}\n  test: {test}\n")
    (run / "metrics.json").write_text(json.dumps({"test": {"model": "rpbert", "dataset": "tiny", "mode": "conlleval",
                                                           "seed": 7, "visual_source": "grid"}}))
    posts = [Post(f"test-{i}", TOKENS, GOLD) for i in range(3)]
    write_conll(run / "predictions" / "test.conll", posts, PRED)
    _write_records(attention_path(run), RECORDS)
    return run


def test_read_attention_entities(tmp_path):
    path = _write_records(tmp_path / "a.attention.jsonl", RECORDS + [{"id": "test-3", "attention": [1.0]}])
    maps = read_attention(path)
    assert maps["test-0"]["entities"] == [
        {"start": 0, "end": 2, "type": "PER", "text": "Kevin Love", "attention": [0.4, 0.1, 0.0, 0.1]},
        {"start": 4, "end": 5, "type": "LOC", "text": None, "attention": [0.0, 0.0, 0.2, 0.6]},
    ]
    assert maps["test-3"]["entities"] == []


BAD_ENTITIES = [
    ({"start": 0}, "entities must be a list of objects"),
    ([[0, 1]], r"entities\[0\] must be an object"),
    ([{"end": 1, "type": "PER", "attention": [0.1]}], r"entities\[0\]: start and end must be integers"),
    ([{"start": 1, "end": 1, "type": "PER", "attention": [0.1]}], "0 <= start < end"),
    ([{"start": -1, "end": 1, "type": "PER", "attention": [0.1]}], "0 <= start < end"),
    ([{"start": 0.0, "end": 1, "type": "PER", "attention": [0.1]}], "start and end must be integers"),
    ([{"start": False, "end": 1, "type": "PER", "attention": [0.1]}], "start and end must be integers"),
    ([{"start": 0, "end": 1, "attention": [0.1]}], r"entities\[0\]: type must be a non-empty string"),
    ([{"start": 0, "end": 1, "type": 3, "attention": [0.1]}], "type must be a non-empty string"),
    ([{"start": 0, "end": 1, "type": "PER", "text": 5, "attention": [0.1]}], "text must be a string"),
    ([{"start": 0, "end": 1, "type": "PER"}], r"entities\[0\]: attention must be a list of 1 non-negative numbers"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": [0.1, 0.2]}], "attention must be a list of 1"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": [-0.1]}], "attention must be a list of 1"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": ["0.1"]}], "attention must be a list of 1"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": [float("nan")]}], "attention must be a list of 1"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": [float("inf")]}], "attention must be a list of 1"),
    ([{"start": 0, "end": 1, "type": "PER", "attention": [0.1]}, {"start": 2, "end": 1, "type": "PER",
                                                                  "attention": [0.1]}], r"entities\[1\]"),
]


@pytest.mark.parametrize("entities, message", BAD_ENTITIES)
def test_read_attention_rejects_bad_entities(tmp_path, entities, message):
    records = [{"id": "test-0", "attention": [1.0]}, {"id": "test-1", "attention": [1.0], "entities": entities}]
    path = _write_records(tmp_path / "test.attention.jsonl", records)
    with pytest.raises(MmnerError, match=rf"test\.attention\.jsonl:2: .*{message}") as info:
        read_attention(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_report_draws_entity_maps_over_the_image(monkeypatch, tmp_path, run_dir):
    from mmner.analysis.report import write_report

    drawn: list[list[dict]] = []
    heat_maps = plots.heat_maps

    def spy(maps, *args, **kwargs):
        drawn.append(list(maps))
        return heat_maps(maps, *args, **kwargs)

    monkeypatch.setattr(plots, "heat_maps", spy)
    page_path, json_path = write_report([run_dir], tmp_path / "out" / "report.html", resamples=50)
    page, data = page_path.read_text(), json.loads(json_path.read_text())

    v = data["attention"]["runs"]["R1"]
    assert v["entity_maps"] == 4 and v["test_posts"] == 3
    assert v["entity_s_tv_mean"] == round((0.6 + 0.8 + 0.6 + 0.3) / 4, 4)
    assert v["s_tv_mean"] == round((1.0 + 0.6 + 1.0) / 3, 4)
    assert sorted(v["shown"]) == ["test-0", "test-1", "test-2"]
    assert len(v["panels"]) == 7 and v["entities_left_out"] == 0
    assert set(v["images"]) == {"test-0", "test-1"}  # files that exist; test-1's is not a picture

    titles = [p["title"] for p in v["panels"]]
    assert "test-0 · Kevin Love (PER)" in titles and "test-0 · Cleveland (LOC)" in titles  # text from the post
    for title in ("test-0 · Kevin Love (PER)", "test-0 · Cleveland (LOC)", "test-2 · $Cleveland and $ (ORG)"):
        assert title in page
    for p in v["panels"]:  # every number of the page is in the JSON
        assert f"{p['s_tv']:.4f}" in page
    assert f"mean S_TV per entity {v['entity_s_tv_mean']}" in page
    assert "img1.png: unreadable image" in page and "drawn without it" in page
    assert 'alt="attention of R1: test-0"' in page
    assert not EXTERNAL.search(page) and "http://" not in page and "https://" not in page

    # one figure per post: its map, then its entities'; test-0 is drawn over its 40x30 image, test-1 and
    # test-2 are not
    assert len(drawn) == 3
    by_post = {pid: maps for pid, maps in zip(v["shown"], drawn)}
    assert [m["title"] for m in by_post["test-0"]] == ["whole post", "Kevin Love (PER)", "Cleveland (LOC)"]
    for m in by_post["test-0"]:
        assert m["image"] is not None and m["image"].size == (40, 30)
    assert all(m["image"] is None for m in by_post["test-1"] + by_post["test-2"])
    assert by_post["test-0"][2]["attention"] == [0.0, 0.0, 0.2, 0.6]
    assert by_post["test-2"][0]["regions"] == ["a", "$5", "man"]
    assert "caption read: “a $5 man”" in page  # the caption the model read titles its post's maps


def test_overlay_on_an_image():
    """The overlay path on its own: a 2x2 grid over a small picture gives a PNG data URI."""
    image = Image.new("RGB", (24, 16), (200, 30, 30))
    weights = [0.1, 0.2, 0.3, 0.4]
    uri = plots.heat_maps([{"attention": weights, "grid": [2, 2], "title": "p · $x$ (PER)", "image": image},
                           {"attention": weights, "grid": [2, 2], "title": "plain"}])
    assert uri.startswith("data:image/png;base64,")


def test_panels_are_bounded_per_run(tmp_path, run_dir):
    from mmner.analysis.report import MAX_PANELS, analyse
    from mmner.analysis.runs import load

    many = [_entity(0, 1, "PER", [0.1, 0.1, 0.1, 0.1]) for _ in range(5)]
    records = [{"id": f"test-{i}", "attention": [0.25] * 4, "grid": [2, 2], "entities": many} for i in range(3)]
    _write_records(attention_path(run_dir), records)
    v = analyse([load(run_dir, "R1")], resamples=20)["attention"]["runs"]["R1"]
    assert len(v["panels"]) == 12 and len(v["shown"]) == 2  # 2 posts x 6 maps; the third post's 6 do not fit
    assert v["entity_maps"] == 15

    _write_records(attention_path(run_dir), [{**records[0], "entities": many * 4}])
    v = analyse([load(run_dir, "R1")], resamples=20)["attention"]["runs"]["R1"]
    assert len(v["panels"]) == MAX_PANELS and v["entities_left_out"] == 21 - MAX_PANELS


def test_entity_beyond_the_post_is_an_error(tmp_path, run_dir):
    from mmner.analysis.runs import load

    _write_records(attention_path(run_dir), [{"id": "test-1", "attention": [1.0],
                                              "entities": [_entity(5, 9, "PER", [1.0])]}])
    with pytest.raises(MmnerError, match=r"test\.attention\.jsonl: post test-1: entity \[5, 9\) lies beyond"):
        load(run_dir, "R1")
