"""The multimodal path end to end, with trained multimodal runs (caption and grid sources).

For `bert-crf-caption`, `umt`, `rpbert` (captions) and `visualbert-crf` (grid features of image files),
each trained for two epochs on the tiny corpus: a caption or image given to the API changes what the model
computes for the post, and the record says which visual input was used; `relation_score` and `attention`
in the record are the real model's (recomputed here from the model itself); and the same posts give the
same records in Python, on the command line (`mmner predict`) and over HTTP (`/v1/tag/batch`).
"""

from __future__ import annotations

import base64
import json

import pytest
import torch

from conftest import run_cli, tiny_config
from mmner.config import load_config
from mmner.data.post import Post

RUNS = [("bert-crf-caption", "caption"), ("umt", "caption"), ("rpbert", "caption"), ("visualbert-crf", "grid")]
TEXT = "meet Kevin Love at the game in Rome today"


@pytest.fixture(scope="module", params=RUNS, ids=[name for name, _ in RUNS])
def run(request, tmp_path_factory, tiny_model_params, tiny_visual, tiny_corpus):
    from mmner import Tagger
    from mmner.train.run import train

    name, source = request.param
    run_dir = tmp_path_factory.mktemp(f"mm-{name}") / "run"
    config = load_config(None, base=tiny_config(tiny_model_params[name], tiny_corpus, tiny_visual[source], max_epochs=2))
    train(config, run_dir, quiet=True)
    return name, source, run_dir, Tagger.load(run_dir, device="cpu")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A noise image; `other.png` beside it is a plain green one."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("img")
    torch.manual_seed(1)
    Image.fromarray((torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy()).save(folder / "street.png")
    Image.new("RGB", (64, 48), (20, 200, 40)).save(folder / "other.png")
    return folder / "street.png"


def visual_post(source: str, image_file) -> dict:
    return {"caption": "a man with a phone"} if source == "caption" else {"image": str(image_file)}


def emissions(tagger, post: Post) -> torch.Tensor:
    """The model's emissions for one post, computed directly (no batching with others)."""
    from mmner.inference import visual_inputs

    model = tagger.model
    visual = visual_inputs(tagger.config) if model.uses_visual else None
    used = visual.get(post) if visual is not None else None
    with torch.no_grad():
        return model(model.collate([model.featurize(post, used)]))["emissions"][0]


def test_the_image_changes_what_the_model_computes(run, image_file):
    name, source, _, tagger = run
    with_image, without = tagger.batch([{"id": "a", "text": TEXT, **visual_post(source, image_file)},
                                        {"id": "b", "text": TEXT}])
    assert with_image["visual"]["input"] == source and without["visual"]["input"] == "none"
    assert "no image" in without["visual"]["why"]
    if source == "caption":
        assert with_image["visual"]["caption"] == "a man with a phone"
    else:
        assert with_image["visual"]["regions"] > 0
    tokens = with_image["tokens"]
    seen = emissions(tagger, Post("a", tokens, caption="a man with a phone") if source == "caption"
                     else Post("a", tokens, image_path=str(image_file)))
    blind = emissions(tagger, Post("b", tokens))
    assert seen.shape == blind.shape and not torch.allclose(seen, blind, atol=1e-4), name
    other = emissions(tagger, Post("c", tokens, caption="the stadium at night") if source == "caption"
                      else Post("c", tokens, image_path=str(image_file.with_name("other.png"))))
    assert not torch.allclose(seen, other, atol=1e-4), f"{name}: two different images, the same computation"


def test_relation_score_and_attention_are_the_models(run, image_file):
    """The record's relation score and region attention are those the model computes for the post."""
    from mmner.inference import visual_inputs

    name, source, _, tagger = run
    record = tagger(TEXT, **visual_post(source, image_file), attention=True)
    model = tagger.model
    post = Post("x", record["tokens"], caption="a man with a phone") if source == "caption" \
        else Post("x", record["tokens"], image_path=str(image_file))
    visual = visual_inputs(tagger.config)
    with torch.no_grad():
        direct = model.predict(model.collate([model.featurize(post, visual.get(post))]))
    if model.relation_score:
        assert record["relation_score"] == pytest.approx(direct["relation_score"][0], abs=1e-6)
        assert 0.0 <= record["relation_score"] <= 1.0
        blind = tagger(TEXT)
        assert blind["relation_score"] is None  # no image: no relation to score
    else:
        assert "relation_score" not in record
    lean = tagger(TEXT, **visual_post(source, image_file))  # the default: no region attention
    assert "attention" not in lean and all("attention" not in e for e in lean["entities"])
    assert lean["tags"] == record["tags"] and lean.get("relation_score") == record.get("relation_score")
    if model.region_attention:
        weights = record["attention"]["weights"]
        assert weights == pytest.approx(direct["attention"][0]["weights"], abs=1e-6)
        assert len(weights) > 0 and sum(weights) > 0
        for ent in record["entities"]:
            assert len(ent["attention"]) == len(weights)
    else:
        assert "attention" not in record


def test_python_cli_and_http_give_the_same_records(run, image_file, tmp_path, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmner.serve import Limits, create_app

    name, source, run_dir, tagger = run
    posts = [{"id": "p1", "text": TEXT, "caption": "a man with a phone"},
             {"id": "p2", "text": "visit the stadium in Rome"},
             {"id": "p3", "text": "Kevin Love meets fans", "caption": "people in the game"}]
    if source == "grid":  # an image file on this machine, read by path in all three
        posts = [{k: v for k, v in p.items() if k != "caption"} for p in posts]
        posts[0]["image"] = posts[2]["image"] = str(image_file)
    python = tagger.batch(posts, attention=True)
    # over HTTP an image travels as base64 (the service reads no paths of its host)
    encoded = [{**p, "image": base64.b64encode(image_file.read_bytes()).decode()} if "image" in p else p for p in posts]
    with TestClient(create_app(tagger, Limits())) as client:
        http = client.post("/v1/tag/batch?attention=true", json={"posts": encoded}).json()["results"]
        plain = client.post("/v1/tag/batch", json={"posts": encoded}).json()["results"]
    src, out = tmp_path / "posts.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in posts))
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(src), "-o", str(out), "--attention",
                           "--quiet")
    assert code == 0, err
    cli = [json.loads(line) for line in out.read_text().splitlines()]

    def same(record: dict) -> dict:
        keys = ("id", "tokens", "tags", "entities", "visual", "relation_score", "attention", "caption")
        return {k: record.get(k) for k in keys}

    for i, (a, b, c) in enumerate(zip(python, http, cli)):
        for key in ("id", "tokens", "tags", "entities", "visual", "relation_score", "attention", "caption"):
            assert a.get(key) == b.get(key) == c.get(key), f"{name}: post {i}, {key}: {a.get(key)} | {b.get(key)} | {c.get(key)}"
    assert [r["visual"]["input"] for r in python] == [source, "none", source]
    # by default (no --attention, no ?attention=true): the same records without region attention
    lean_out = tmp_path / "lean.jsonl"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(src), "-o", str(lean_out), "--quiet")
    assert code == 0, err
    lean = [json.loads(line) for line in lean_out.read_text().splitlines()]
    assert any("attention" in r for r in cli) and not any("attention" in r for r in lean)
    for full, short, over_http in zip(cli, lean, plain):
        assert over_http == {k: v for k, v in short.items() if k != "image"}, name  # HTTP images have no path
        assert short["tags"] == full["tags"] and short.get("relation_score") == full.get("relation_score")
        assert [{k: v for k, v in e.items() if k != "attention"} for e in full["entities"]] == short["entities"]


def test_a_model_that_learned_the_caption_changes_its_tags_with_it(tmp_path, tiny_model_params):
    """On a corpus where only the caption tells the entity's type (the same names are people in one post
    and places in another), a trained caption model tags by the caption: swapping the caption of a
    held-out post swaps its entity type."""
    import random

    from conftest import write_corpus
    from mmner import Tagger
    from mmner.train.run import train

    names = ["Jordan", "Paris", "Austin", "Florence", "Chelsea", "Victoria", "Sydney", "Dallas"]
    person, place = "a man smiling at the camera", "a city street with tall buildings"

    def corpus(path, n, seed):
        rng = random.Random(seed)  # image id i: a person when i is even, a place when odd (captions below)
        return write_corpus(path, [[("meet", "O"), (rng.choice(names), "B-PER" if i % 2 == 0 else "B-LOC"),
                                    ("today", "O")] for i in range(n)])

    data = {"train": corpus(tmp_path / "train.txt", 64, 1), "valid": corpus(tmp_path / "valid.txt", 16, 2),
            "test": corpus(tmp_path / "test.txt", 16, 3)}
    (tmp_path / "captions.json").write_text(json.dumps({str(i): person if i % 2 == 0 else place for i in range(64)}))
    visual = {"source": "caption", "caption": str(tmp_path / "captions.json"), "missing": "error"}
    config = load_config(None, base=tiny_config(tiny_model_params["bert-crf-caption"], data, visual, max_epochs=16,
                                                patience=16))
    metrics = train(config, tmp_path / "run", quiet=True)
    assert metrics["test"]["f1"] >= 90.0, metrics["test"]["f1"]
    tagger = Tagger.load(tmp_path / "run", device="cpu")
    posts = [{"tokens": ["meet", name, "today"], "caption": caption} for name in names for caption in (person, place)]
    types = [r["entities"][0]["type"] if r["entities"] else None for r in tagger.batch(posts)]
    # the same words, the caption decides: a person's caption gives PER, a place's LOC, for (nearly) every name
    right = sum(t == want for t, want in zip(types, ["PER", "LOC"] * len(names)))
    flipped = sum(types[2 * k] == "PER" and types[2 * k + 1] == "LOC" for k in range(len(names)))
    assert right >= 15 and flipped >= 7, types


def test_a_pseudo_caption_run_trains_on_image_files_and_tags_new_images(tmp_path, tiny_model_params):
    """`visual.source: pseudo-caption` end to end with the packaged EfficientNet-Lite0: a run trained on
    posts that come with image files and no captions (a RiTUAL sample folder without captions.json) reads
    each image's top ImageNet classes, and tags a new post from its image file alone."""
    import shutil

    from conftest import SHARED_DATA
    from mmner import Tagger
    from mmner.train.run import train

    sample = SHARED_DATA / "images" / "twitter2017_samples" / "train"
    if not (sample / "texts.json").is_file():
        pytest.skip("needs the RiTUAL sample images in ../shared/data/images")
    folder = tmp_path / "posts"
    folder.mkdir()
    shutil.copy(sample / "texts.json", folder / "texts.json")  # no captions.json: the images only
    for image in sample.glob("*.jpg"):
        shutil.copy(image, folder / image.name)
    data = {"train": folder, "valid": folder, "test": folder}
    visual = {"source": "pseudo-caption", "pseudo_k": 3, "missing": "error"}
    config = load_config(None, base=tiny_config(tiny_model_params["bert-crf-caption"], data, visual, max_epochs=1))
    metrics = train(config, tmp_path / "run", quiet=True)["test"]
    assert metrics["visual_source"] == "pseudo-caption" and metrics["masked_images"] == 0
    assert "top-3 ImageNet classes of efficientnet-lite0" in metrics["visual_detail"]
    record = Tagger.load(tmp_path / "run", device="cpu")("meet Kevin at the game", image=str(next(folder.glob("*.jpg"))))
    used = record["visual"]
    assert used["input"] == "caption" and used["from"] == "computed from the post's image"
    assert len([w for w in used["caption"].split(",") if w.strip()]) == 3  # its top-3 class names
