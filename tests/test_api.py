"""The Python API: `mmner.Tagger`, and character offsets that map entities back to the caller's text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from mmner.api import entity_records, token_offsets
from mmner.data.readers import tokenize, tokenize_post
from mmner.errors import MmnerError
from serving_helpers import tiny_run_dir

TRICKY = [
    "RT @Messi: visit #Paris today 🙌🏾 https://t.co/AbC?x=1.",
    "meet   Obama    Jr at   NASA !!",
    "👨‍👩‍👧 family day in New  Rome ❤️ #love @UN_News",
    "  leading and trailing spaces\tand\ttabs\n and newlines  ",
    "zero\u200bwidth\u200bspaces and soft\u00adhyphen, www.nasa.gov/apollo) done",
    "Café Müller 3.5 1,000 2nd &gt;&gt; It's @a.b #x_y",
]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_encoder, tiny_corpus):
    from mmner import Tagger

    return Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")


@pytest.mark.parametrize("text", TRICKY)
def test_offsets_of_tokenizer_tokens_are_exact(text):
    tokens = tokenize(text)
    spans = token_offsets(text, tokens)
    assert [text[a:b] for a, b in spans] == tokens


@pytest.mark.parametrize("text", TRICKY)
def test_every_entity_round_trips_to_the_text(text):
    """Whatever the tags, each entity's characters are `text[char_start:char_end]` (all spans tried)."""
    tokens = tokenize(text)
    for start in range(len(tokens)):
        for end in range(start + 1, min(len(tokens), start + 4) + 1):
            tags = ["O"] * len(tokens)
            tags[start : end] = ["B-LOC"] + ["I-LOC"] * (end - start - 1)
            (ent,) = entity_records(tokens, tags, text)
            assert (ent["start"], ent["end"], ent["type"]) == (start, end, "LOC")
            assert text[ent["char_start"] : ent["char_end"]] == ent["text"]
            assert ent["text"].startswith(tokens[start]) and ent["text"].endswith(tokens[end - 1])


def test_entity_keeps_the_original_spacing():
    text = "off to New   York  #NYC"
    tokens = tokenize(text)
    tags = ["O", "O", "B-LOC", "I-LOC", "O", "B-LOC"]
    ents = entity_records(tokens, tags, text)
    assert [(e["text"], e["char_start"], e["char_end"]) for e in ents] == [("New   York", 7, 17), ("NYC", 20, 23)]
    # without the text, entities are the tokens joined by spaces, token offsets only
    assert entity_records(tokens, tags) == [
        {"text": "New York", "type": "LOC", "start": 2, "end": 4},
        {"text": "NYC", "type": "LOC", "start": 5, "end": 6},
    ]


def test_offsets_of_altered_tokens():
    """Tokens from another tokeniser (case, accents, unescaped entities, a token that is not there)."""
    text = "Hello  WORLD &amp; Café-Co\u200b at   https://t.co/x"
    tokens = ["hello", "world", "&", "cafe", "-", "co", "<url>"]
    spans = token_offsets(text, tokens)
    got = [text[s[0] : s[1]] if s else None for s in spans]
    assert got == ["Hello", "WORLD", "&", "Café", "-", "Co", None]
    tags = ["B-ORG", "I-ORG", "O", "B-ORG", "I-ORG", "I-ORG", "B-OTHER"]
    ents = entity_records(tokens, tags, text)
    assert [e["text"] for e in ents] == ["Hello  WORLD", "Café-Co", "at   https://t.co/x"]
    for e in ents:  # the missing token's entity covers the text between its neighbours
        assert text[e["char_start"] : e["char_end"]] == e["text"]


def test_tagger_on_raw_posts(tagger):
    results = tagger.batch(TRICKY + ["RT @Messi : visit Paris today"])
    assert len(results) == len(TRICKY) + 1
    n_entities = 0
    for text, result in zip(TRICKY + ["RT @Messi : visit Paris today"], results):
        assert result["text"] == text and result["tokens"] == tokenize_post(text)
        assert len(result["tags"]) == len(result["tokens"])
        for ent in result["entities"]:
            n_entities += 1
            assert text[ent["char_start"] : ent["char_end"]] == ent["text"]
            assert " ".join(result["tokens"][ent["start"] : ent["end"]]).replace(" ", "") == ent["text"].replace(" ", "")
    assert n_entities > 0  # the tiny model learnt the templates' names
    single = tagger(TRICKY[0])
    assert single == {k: v for k, v in results[0].items() if k != "id"}
    assert "relation_score" not in single  # bert-crf has none


def test_tagger_inputs(tagger, tmp_path):
    from PIL import Image

    image = next((SHARED_DATA / "images" / "twitter2017_samples").rglob("*.jpg"), None)
    if image is None:
        image = tmp_path / "red.png"
        Image.new("RGB", (32, 24), (200, 10, 10)).save(image)
    by_path = tagger("meet Obama at NASA !", image=image, caption="a man at a desk", id="p1")
    assert by_path["id"] == "p1" and by_path["image"] == str(image) and by_path["caption"] == "a man at a desk"
    by_pil = tagger("meet Obama at NASA !", image=Image.open(image))
    by_bytes = tagger("meet Obama at NASA !", image=image.read_bytes())
    assert "image" not in by_pil and "image" not in by_bytes  # temporary files are not reported
    assert by_pil["tags"] == by_bytes["tags"] == by_path["tags"]
    tokens = tagger(tokens=["visit", "Paris"], id="t")
    assert tokens["tokens"] == ["visit", "Paris"] and "text" not in tokens
    mixed = tagger.batch([{"id": 7, "text": "visit Rome", "user": "kept"}, "visit London", tokens])
    assert [r["id"] for r in mixed] == ["7", "#2", "t"] and mixed[0]["user"] == "kept"

    with pytest.raises(MmnerError, match="empty post"):
        tagger("   \u200b ")
    with pytest.raises(MmnerError, match="needs \"text\" or \"tokens\""):
        tagger.batch([{"id": "x"}])
    with pytest.raises(MmnerError, match="\"text\" must be a string"):
        tagger.batch([{"text": 5}])
    with pytest.raises(MmnerError, match="\"image\" must be a path"):
        tagger("visit Rome", image=3.5)


def test_models_with_a_relation_score(tagger):
    """A model's `predict(batch)` extras reach the records: the relation score as it is, the region
    attention as `weights` + region `labels`, and each entity's own map (the sum over its words)."""
    import torch

    from mmner import Tagger

    model = tagger.model
    assert not tagger.has_relation_score and not tagger.has_region_attention

    def predict(batch, attention=True):
        tags = model.decode(batch)
        tags = [[model.labels.index["B-LOC"]] + row[1:] for row in tags]  # every post opens with an entity
        n = len(tags)
        out = {"tags": tags, "relation_score": torch.full((n,), 0.25)}
        if attention:
            words = [[[0.1, 0.2]] + [[0.0, 0.5]] * (len(row) - 1) for row in tags]
            out["attention"] = [{"weights": [round(sum(r[j] for r in w), 6) for j in range(2)], "words": w,
                                 "labels": ["a", "man"]} for w in words]
        return out

    model.predict, model.relation_score, model.region_attention = predict, True, True
    try:
        assert tagger.has_relation_score and tagger.has_region_attention
        result = tagger("visit Paris today", attention=True)
        assert result["relation_score"] == 0.25
        assert result["attention"] == {"weights": [0.1, 1.2], "labels": ["a", "man"]}
        assert result["entities"][0]["type"] == "LOC" and result["entities"][0]["attention"] == [0.1, 0.2]
        assert [r["relation_score"] for r in tagger.batch(["a", "b", "c"])] == [0.25] * 3
        plain = tagger("visit Paris today")  # attention only when asked (here, or Tagger(attention=True))
        assert "attention" not in plain and "attention" not in plain["entities"][0]
        assert "attention" in Tagger(model, tagger.config, attention=True)("visit Paris today")
    finally:
        del model.predict, model.relation_score, model.region_attention


def test_posts_are_tagged_in_length_sorted_groups_and_come_back_in_order(tagger):
    """Groups of `sort_group` model batches: the model sees each group's posts sorted by length (little
    padding), the records come back in input order with the tags each post gets alone."""
    from mmner import Tagger

    words = [f"w{i}" for i in range(12)]
    lengths = [7, 2, 9, 1, 5, 3, 8, 4, 6]
    posts = [{"id": str(i), "tokens": words[:n]} for i, n in enumerate(lengths)]
    grouped = Tagger(tagger.model, tagger.config, batch_size=2, sort_group=4)
    assert grouped.group_size() == 8 and grouped.group_size(3) == 12
    seen: list[list[int]] = []
    real = tagger.model.predict

    def spy(batch, attention=True):
        seen.append(batch["word_mask"].sum(1).tolist())
        return real(batch, attention=attention)

    tagger.model.predict = spy
    try:
        records = grouped.batch(posts)
    finally:
        del tagger.model.predict
    assert [r["id"] for r in records] == [p["id"] for p in posts]
    assert [len(r["tags"]) for r in records] == lengths
    assert seen == [[1, 2], [3, 4], [5, 7], [8, 9], [6]]  # the first 8 sorted into 4 batches, then the 9th
    assert [r["tags"] for r in records] == [tagger.batch([p])[0]["tags"] for p in posts]


def test_a_failing_post_is_isolated_within_its_model_batch(tagger):
    """try_tag_posts: the group whole first, then each run of batch_size posts, one by one only within
    the run that fails."""
    from mmner import Tagger
    from mmner.api import make_post
    from mmner.errors import MmnerError

    grouped = Tagger(tagger.model, tagger.config, batch_size=2, sort_group=4)
    calls: list[int] = []

    def tag_posts(posts, batch_size=None, attention=None):
        calls.append(len(posts))
        if any(p.id == "bad" for p in posts):
            raise MmnerError("post bad: unreadable image")
        return [{"id": p.id} for p in posts]

    grouped.tag_posts = tag_posts
    posts = [make_post({"id": "bad" if i == 5 else str(i), "text": "x"}) for i in range(8)]
    out = grouped.try_tag_posts(posts)
    assert calls == [8, 2, 2, 2, 1, 1, 2]
    assert [str(r) if isinstance(r, Exception) else r["id"] for r in out] == \
        ["0", "1", "2", "3", "4", "post bad: unreadable image", "6", "7"]


def test_info(tagger):
    info = tagger.info()
    assert info["model"] == "bert-crf" and info["visual_source"] == "none"
    assert info["labels"]["types"] == ["LOC", "ORG", "OTHER", "PER"]
    assert "test" in info["metrics"] and "f1" in info["metrics"]["test"]


def test_import_mmner_stays_light():
    code = (
        "import sys, mmner; assert 'torch' not in sys.modules and 'mmner.api' not in sys.modules;"
        "from mmner import Tagger; assert Tagger.__module__ == 'mmner.api' and 'Tagger' in dir(mmner);"
        "assert 'mmner.models.base' not in sys.modules"  # not the models' base class of the same name
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src})


def result_caption_words(caption: str) -> list[str]:
    """The class names of a pseudo-caption (comma-separated ImageNet names)."""
    return [w for w in caption.replace(",", " ").split() if w]


def _registry_names() -> list[str]:
    from mmner.models import registry

    return registry.names()


@pytest.mark.parametrize("name", _registry_names())
def test_every_registry_model_tags_new_posts(name, tmp_path, tiny_model_params, tiny_visual, tiny_corpus):
    """Each model, trained for one epoch with its visual source (the last of TINY_SOURCES: grid where
    a model takes it, so new image files go through the grid encoder), tags raw posts with a PIL
    image, an image file, image bytes, a caption, or nothing (masked under `visual.missing: mask`)."""
    from PIL import Image

    from conftest import TINY_SOURCES, tiny_config
    from mmner import Tagger
    from mmner.config import load_config
    from mmner.train.run import train

    source = (TINY_SOURCES.get(name) or ["none"])[-1]
    config = load_config(None, base=tiny_config(tiny_model_params[name], tiny_corpus, tiny_visual[source], max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    tagger = Tagger.load(tmp_path / "run", device="cpu")
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    image.save(tmp_path / "new.png")
    posts = [
        {"text": TRICKY[0], "image": image, "caption": "a man with a phone"},
        {"text": TRICKY[1], "image": str(tmp_path / "new.png")},
        {"text": TRICKY[2], "image": (tmp_path / "new.png").read_bytes(), "caption": "the stadium at night"},
        {"text": TRICKY[3]},
    ]
    results = tagger.batch(posts)
    for post, result in zip(posts, results):
        assert result["tokens"] == tokenize_post(post["text"]) and len(result["tags"]) == len(result["tokens"])
        for ent in result["entities"]:
            assert post["text"][ent["char_start"] : ent["char_end"]] == ent["text"]
    assert tagger.info()["visual_source"] == source
    # every record says what visual input the post was tagged with, and for none, why
    used = [r["visual"] for r in results]
    if source == "none":
        assert all(u == {"input": "none", "why": "the model reads text only"} for u in used)
    elif source == "grid":
        assert [u["input"] for u in used] == ["grid", "grid", "grid", "none"]
        assert used[0]["regions"] > 0 and used[1]["from"] == "computed from the post's image"
        assert "no image" in used[3]["why"]
    else:
        assert used[0] == {"input": "caption", "caption": "a man with a phone", "from": "the post's own caption"}
        assert used[3]["input"] == "none" and used[3]["why"]
        # an image without a caption: a pseudo-caption from the image (visual.caption_fallback), not nothing
        assert used[1]["input"] == "caption" and used[1]["from"] == "computed from the post's image"
        assert result_caption_words(used[1]["caption"])


def test_int8_tagger_quantises_the_encoder_and_tags_like_fp32(tagger, monkeypatch, capsys, tmp_path):
    """`Tagger.load(..., int8=True)` and `mmner predict --int8`: the transformer encoder's linear layers in
    dynamic int8, the CRF in fp32, emissions close to fp32's, the same tags on the tiny run's posts."""
    import json

    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from conftest import run_cli
    from mmner import Tagger
    from mmner.inference import quantize_int8

    fast = Tagger.load(tagger.run_dir, device="cpu", int8=True)
    assert fast.int8 and fast.info()["int8"] and not tagger.int8 and not tagger.info()["int8"]
    encoder_linears = [n for n, m in tagger.model.named_modules() if isinstance(m, torch.nn.Linear)
                       and n.startswith("encoder.")]
    assert encoder_linears and fast.model.int8_layers == len(encoder_linears)
    quantised = dict(fast.model.named_modules())
    assert all(isinstance(quantised[n], DynamicLinear) for n in encoder_linears)
    assert fast.model.crf.crf.transitions.dtype == torch.float32
    posts = [{"text": "Obama visits Paris with NASA today"}, {"text": "meet Messi at Barcelona"}]
    assert [r["tags"] for r in fast.batch(posts)] == [r["tags"] for r in tagger.batch(posts)]

    from mmner.api import make_post
    from mmner.data.batches import loader

    batch = next(iter(loader([make_post(p, i) for i, p in enumerate(posts)], tagger.model, 2, shuffle=False,
                             gold=False)))
    with torch.inference_mode():
        exact, approx = tagger.model(batch)["emissions"], fast.model(batch)["emissions"]
    assert torch.allclose(approx, exact, atol=0.05 * float(exact.abs().max())), float((approx - exact).abs().max())

    lines = tmp_path / "posts.jsonl"
    lines.write_text("".join(json.dumps(p) + "\n" for p in posts))
    code, out, err = run_cli(monkeypatch, capsys, "predict", str(tagger.run_dir), "-i", str(lines),
                             "-o", str(tmp_path / "out.jsonl"), "--int8", "--quiet")
    assert code == 0, err
    assert [json.loads(x)["tags"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == \
        [r["tags"] for r in fast.batch(posts)]

    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))
    plain.name = "bilstm-crf"
    with pytest.raises(MmnerError, match="bilstm-crf: no transformer encoder to quantise"):
        quantize_int8(plain)
