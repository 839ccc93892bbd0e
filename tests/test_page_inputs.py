"""What the web page learns from `GET /v1/model` about the inputs a model reads (`inputs`): a text-only
model takes no image or caption, a grid model no caption, a caption model both (the image is captioned
when no caption is typed) unless `visual.caption_fallback` is `none`. No browser: see test_web_page.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmner.vision.config import VisualConfig


def fake_tagger(name: str, uses_visual: bool, **visual) -> SimpleNamespace:
    return SimpleNamespace(name=name, model=SimpleNamespace(uses_visual=uses_visual),
                           config=SimpleNamespace(visual=VisualConfig(**visual)))


@pytest.mark.parametrize("tagger, image, caption, words", [
    (fake_tagger("bert-crf", False), False, False, "reads the text only"),
    (fake_tagger("umt", True, source="none"), False, False, "reads the text only"),  # `image: false`-like run
    (fake_tagger("visualbert-crf", True, source="grid"), True, False, "a caption is not used"),
    (fake_tagger("bert-crf-caption", True, source="caption"), True, True, "else one made from the image"),
    (fake_tagger("bert-crf-caption", True, source="caption", caption_fallback="none"), False, True,
     "an image alone is not used"),
    (fake_tagger("rpbert", True, source="pseudo-caption", pseudo_k=3), True, True, "top-3 ImageNet classes"),
])
def test_model_inputs(tagger, image, caption, words):
    from mmner.serve.app import model_inputs

    inputs = model_inputs(tagger)
    assert (inputs["image"], inputs["caption"]) == (image, caption)
    assert words in inputs["note"] and inputs["note"].startswith(tagger.name)


def test_model_endpoint_says_what_the_model_reads(tmp_path_factory, tiny_encoder, tiny_corpus):
    from fastapi.testclient import TestClient

    from mmner import Tagger
    from mmner.serve import create_app
    from serving_helpers import tiny_run_dir

    tagger = Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")
    with TestClient(create_app(tagger)) as client:
        info = client.get("/v1/model").json()
        page = client.get("/").text
    assert info["inputs"]["image"] is False and info["inputs"]["caption"] is False
    assert "reads the text only" in info["inputs"]["note"] and info["limits"]["max_chars"] == 2000
    # the page reads them: the fields it hides, the note, the counter against the limit
    for needle in ('id="caption-field"', 'id="image-field"', 'id="inputs-note"', 'id="text-count"',
                   "m.inputs", "limits.max_chars"):
        assert needle in page
