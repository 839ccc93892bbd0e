"""The report page as a reader sees it: the runs described once, p-values at the resampling floor shown
as a bound, attention maps titled with the post's text and caption in words, a colour legend, low-resource
curves that never join runs of different schedules, and a page that stays short enough to scan.

The run directories are written by hand (config, metrics, predictions, attention maps): nothing is trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mmner.analysis import plots
from mmner.analysis.artifacts import attention_path
from mmner.data.post import Post
from mmner.data.readers import write_conll

TOKENS = ["Kevin", "Love", "scores", "in", "Cleveland", "today"]
GOLD = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
NONE = ["O"] * 6
N_POSTS = 40
CAPTION_PIECES = ["a", "bas", "##ket", "##ball", "player"]


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": f"test-{i}", "tokens": TOKENS, "tags": GOLD}) + "\n" for i in range(N_POSTS)))
    return path


def make_run(root: Path, name: str, data: Path, pred: list[str], *, model: str = "bert-crf", visual: str = "none",
             fraction: float = 1.0, train_posts: int = 40, max_epochs: int = 6, attention: list[dict] | None = None) -> Path:
    run = root / name
    (run / "predictions").mkdir(parents=True)
    config = {"seed": 7, "model": {"name": model}, "data": {"train": str(data), "valid": str(data), "test": str(data),
                                                            "train_fraction": fraction},
              "trainer": {"max_epochs": max_epochs, "batch_size": 16}, "optim": {"lr": 1e-3, "encoder_lr": 1e-4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps({"test": {
        "model": model, "encoder": "minilm-l6", "dataset": "tiny:test", "variant": "hand-made", "mode": "conlleval",
        "seed": 7, "visual_source": visual, "train_fraction": fraction, "train_posts": train_posts}}))
    posts = [Post(f"test-{i}", TOKENS, GOLD) for i in range(N_POSTS)]
    write_conll(run / "predictions" / "test.conll", posts, [pred] * N_POSTS)
    if attention is not None:
        attention_path(run).write_text("".join(json.dumps(r) + "\n" for r in attention))
    return run


def caption_maps(n: int) -> list[dict]:
    return [{"id": f"test-{i}", "attention": [0.3, 0.1, 0.02, 0.08, 0.2], "regions": CAPTION_PIECES,
             "entities": [{"start": 0, "end": 2, "type": "PER", "text": "Kevin Love", "attention": [0.1, 0.2, 0.1, 0.1, 0.0]},
                          {"start": 4, "end": 5, "type": "LOC", "attention": [0.0, 0.0, 0.0, 0.0, 0.4]}]}
            for i in range(n)]


def test_p_values_at_the_resampling_floor_are_bounds():
    from mmner.analysis.report import p_text

    assert p_text(0.001, 1000) == "p &lt; 0.001"  # 1/1001 rounded: no resample was as extreme
    assert p_text(0.005, 200) == "p &lt; 0.005"  # the floor 1/201, rounded up
    assert p_text(0.0001, 10000) == "p &lt; 0.001"
    assert p_text(0.0004, 10000) == "p &lt; 0.001"
    assert p_text(0.002, 1000) == "p = 0.002"
    assert p_text(0.0499, 1000) == "p = 0.050"
    assert p_text(1.0, 1000) == "p = 1.000"


def test_two_run_page_describes_runs_once_and_bounds_p(tmp_path, data_file):
    from mmner.analysis.report import write_report

    base = make_run(tmp_path, "text-only", data_file, NONE)
    other = make_run(tmp_path, "caption", data_file, GOLD, model="bert-crf-caption", visual="caption",
                     attention=caption_maps(N_POSTS))
    page_path, json_path = write_report([base, other], tmp_path / "report.html", resamples=1000)
    page, data = page_path.read_text(), json.loads(json_path.read_text())

    assert data["scores"]["differences"][0]["overall"]["p_value"] == 0.001  # at the floor 1/1001
    assert page.count('<div class="runs">') == 1  # the legend, once at the top
    legend = page[page.index('<div class="runs">'):page.index("</div>", page.index('<div class="runs">'))]
    assert "<b>R1</b>" in legend and "<b>R2</b>" in legend and "bert-crf-caption" in legend
    assert "max epochs 6" in legend  # each run's schedule
    assert page.count("encoder minilm-l6") == 0 and page.count("<b>R2</b>") == 1  # no per-section run captions
    assert not re.search(r"p ?= ?0\.001", page) and "p &lt; 0.001" in page
    assert "no p-value below 1/1001" in page

    # every section is a collapsible block whose title line carries its gist; the long ones start closed
    for key in ("scores", "entities", "length", "curves", "relation"):
        assert f'<section id="{key}"><details open><summary><h2>' in page
    for key in ("attention", "errors"):
        assert f'<section id="{key}"><details><summary><h2>' in page
    gist = re.search(r'<section id="scores">.*?<span class="gist">(.*?)</span>', page).group(1)
    assert gist == "F1 R1 0.00, R2 100.00; Δ to R1: R2 +100.00 (p &lt; 0.001)"
    errors = page[page.index('<section id="errors">'):]
    assert errors.count('<tr id="post-') == 30 and "20 more posts</summary>" in errors  # 30 of the 40 posts


def test_attention_panels_titled_with_text_and_caption_words(monkeypatch, tmp_path, data_file):
    from mmner.analysis.report import caption_words, write_report

    drawn: list[list[dict]] = []
    heat_maps = plots.heat_maps
    monkeypatch.setattr(plots, "heat_maps", lambda maps, *a, **k: drawn.append(list(maps)) or heat_maps(maps, *a, **k))
    run = make_run(tmp_path, "caption", data_file, GOLD[:4] + ["B-ORG", "O"], model="bert-crf-caption",
                   visual="caption", attention=caption_maps(3))
    page_path, json_path = write_report([run], tmp_path / "report.html", resamples=50)
    page, data = page_path.read_text(), json.loads(json_path.read_text())

    assert caption_words(CAPTION_PIECES, [1, 2, 3, 4, 5]) == (["a", "basketball", "player"], [1.0, 9.0, 5.0])
    assert caption_words(["▁a", "▁bas", "ket", "▁man"], [1, 1, 1, 1]) == (["a", "basket", "man"], [1.0, 2.0, 1.0])
    v = data["attention"]["runs"]["R1"]
    assert v["shown_posts"][0]["caption"] == "a basketball player" and v["shown_posts"][0]["text"] == " ".join(TOKENS)
    assert len(drawn) == 3  # one figure per post: its map, then its entities'
    assert [m["title"] for m in drawn[0]] == ["whole post", "Kevin Love (PER)", "Cleveland (LOC)"]
    for m in drawn[0]:
        assert m["regions"] == ["a", "basketball", "player"]
    assert drawn[0][0]["attention"] == pytest.approx([0.3, 0.2, 0.2])
    assert drawn[0][2]["attention"] == pytest.approx([0.0, 0.0, 0.4])

    section = page[page.index('<section id="attention">'):page.index('<section id="errors">')]
    head = re.search(r'<div class="maps-head">(.*?)</div></div>', section).group(1)
    assert 'Kevin Love<sub>PER</sub></span> scores in <span class="ent bad">Cleveland<sub>ORG</sub>' in head
    assert "caption read: “a basketball player”" in head and "##" not in section
    assert 'class="legend"' in section and "linear-gradient(90deg, " + plots.ramp_css()[0] in section
    intro = section[:section.index("</p>")]
    assert "a caption input as a bar chart, one bar per caption word" in intro and "heat map" not in intro
    assert 'alt="attention of R1: test-0"' in section


def test_curves_never_join_different_schedules(monkeypatch, tmp_path, data_file):
    from mmner.analysis.report import analyse, write_report
    from mmner.analysis.runs import load

    half = make_run(tmp_path, "half", data_file, GOLD, fraction=0.5, train_posts=20)
    full = make_run(tmp_path, "full", data_file, GOLD, train_posts=40)
    short = make_run(tmp_path, "short", data_file, NONE, fraction=0.25, train_posts=10, max_epochs=2)

    # a size of another schedule is not a point of the curve: two runs of one config, two schedules -> no curve
    c = analyse([load(full, "R1"), load(short, "R2")], resamples=20)["curves"]
    assert not c["plotted"] and len(c["curves"]) == 2 and len(c["warnings"]) == 1
    assert "R1: max epochs 6; R2: max epochs 2" in c["warnings"][0]

    curves: list[dict] = []
    learning_curves = plots.learning_curves
    monkeypatch.setattr(plots, "learning_curves", lambda x: curves.append(x) or learning_curves(x))
    page_path, json_path = write_report([half, full, short], tmp_path / "report.html", resamples=20)
    data, page = json.loads(json_path.read_text()), page_path.read_text()
    assert data["curves"]["plotted"] and [x["runs"] for x in data["curves"]["curves"]] == [["R1", "R2"], ["R3"]]
    (drawn,) = curves
    assert sorted(len(points) for points in drawn.values()) == [1, 2]
    assert any(name.endswith("max epochs 2") for name in drawn)
    warning = re.search(r'<p class="warn">(.*?)</p>', page).group(1)
    assert "different schedules" in warning and "not joined" in warning
    assert 'class="warn">1 warning(s)</span>' in page  # in the section's title line too


def test_two_run_report_is_short_enough_to_scan(tmp_path, data_file):
    """Opened in a browser, a two-run report with attention maps for every post is a few screens tall
    (the long sections open on a click), not thousands of pixels."""
    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not chromium.is_file() or not driver_path.is_file():
        pytest.skip("needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    from mmner.analysis.report import write_report

    a = make_run(tmp_path, "a", data_file, NONE, model="bert-crf-caption", visual="caption", attention=caption_maps(N_POSTS))
    b = make_run(tmp_path, "b", data_file, GOLD, model="bert-crf-caption", visual="caption", attention=caption_maps(N_POSTS))
    page_path, _ = write_report([a, b], tmp_path / "report.html", resamples=100)
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    try:
        driver.get(page_path.as_uri())
        closed = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.execute_script("document.querySelectorAll('section > details').forEach(d => d.open = true);")
        opened = driver.execute_script("return document.documentElement.scrollHeight;")
    finally:
        driver.quit()
    assert closed < 3200, closed
    assert opened > closed + 1000  # the attention maps and errors are there, a click away
