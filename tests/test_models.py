"""One harness for every registry entry: train -> save -> load -> predict on a tiny corpus.

Multimodal models run with each visual source of `TINY_SOURCES` (captions from a tiny JSON file,
two images uncaptioned and masked; grid features from a tiny feature cache); text-only ones with none.
"""

from __future__ import annotations

import json

import pytest

from conftest import TINY_SOURCES, UNCAPTIONED, tiny_config
from mmner.analysis.artifacts import (attention_path, read_attention, read_relation, read_tags, relation_path,
                                      tags_path)
from mmner.api import entity_records
from mmner.config import load_config
from mmner.data.readers import read_conll
from mmner.models import registry
from mmner.inference import evaluate, load_run, predict_tags, visual_inputs
from mmner.train.run import train

RUN_FILES = ["config.yaml", "labels.json", "model.safetensors", "metrics.json", "train_log.csv",
             "predictions/valid.conll", "predictions/test.conll", "predictions/valid.tags", "predictions/test.tags"]
SOURCES = {name: TINY_SOURCES.get(name, ["none"]) for name in registry.names()}
# Baselines that are a registry model with other settings (the papers' variants): id -> (name, model keys, source)
VARIANTS = {
    "bilstm-crf-image-caption": ("bilstm-crf", {"image": True}, "caption"),  # RpBERT: "w/ image at t = 0"
    "bilstm-crf-image-grid": ("bilstm-crf", {"image": True}, "grid"),
    "visualbert-crf-text": ("visualbert-crf", {"image": False}, "none"),  # Chen et al. Exp 1.2
    "rpbert-bilstm-text": ("rpbert", {"image": False, "propagate": False, "head": "bilstm-crf", "lstm_hidden": 16},
                           "none"),  # RpBERT: "biLSTM-CRF + BERT"
    "fusion-cm-no-chars": ("fusion-cm", {"chars": False}, "caption"),
    "bert-crf-casing": ("bert-crf", {"casing": 4}, "none"),  # word shapes beside the uncased encoder's states
    "bert-crf-caption-casing": ("bert-crf-caption", {"casing": 4}, "caption"),
}
CASES = [pytest.param(name, source, {}, id=name if source == SOURCES[name][0] else f"{name}-{source}")
         for name, sources in SOURCES.items() for source in sources]
CASES += [pytest.param(name, source, keys, id=case) for case, (name, keys, source) in VARIANTS.items()]


def model_params(tiny_model_params, name: str, keys: dict) -> dict:
    params = {**tiny_model_params[name], **keys}
    if keys.get("head") == "bilstm-crf":  # the head's word vectors: the tiny table
        params["vectors"] = tiny_model_params["bilstm-crf"]["vectors"]
    return params


def test_every_model_has_tiny_params(tiny_model_params):
    assert sorted(tiny_model_params) == registry.names()
    assert {n for n in registry.names() if registry.get(n).uses_visual} == set(TINY_SOURCES)


@pytest.mark.parametrize("name, source, keys", CASES)
def test_train_save_load_predict(name, source, keys, tiny_model_params, tiny_visual, tiny_corpus, tmp_path):
    config = load_config(None, base=tiny_config(model_params(tiny_model_params, name, keys), tiny_corpus,
                                                tiny_visual[source]))
    run_dir = tmp_path / "run"
    metrics = train(config, run_dir, quiet=True)

    for rel in RUN_FILES:
        assert (run_dir / rel).is_file(), rel
    test = metrics["test"]
    assert test["gold_entities"] == sum(
        tag.startswith("B-") for post in read_conll(tiny_corpus["test"]) for tag in post.tags
    )
    for key in ("dataset", "variant", "encoder", "visual_source", "seed", "epochs", "train_seconds", "git_commit", "masked_images", "cpu"):
        assert key in test, key
    assert test["seed"] == 7 and test["visual_source"] == source and test["epochs"] == 2
    assert test["masked_images"] == (len(UNCAPTIONED) if source == "caption" else 0)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    # The reloaded model reproduces the predictions written at the end of training.
    config, model = load_run(run_dir)
    posts = read_conll(tiny_corpus["test"])
    visual = visual_inputs(config, str(tiny_corpus["test"])) if model.uses_visual else None
    tags = predict_tags(model, posts, progress=False, visual=visual)
    written = read_conll(run_dir / "predictions" / "test.conll")
    assert [p.tags for p in written] == tags
    assert read_tags(tags_path(run_dir, "test"), posts) == tags  # the tags-only copy says the same
    assert all(len(t) == len(p.tokens) for t, p in zip(tags, posts))

    # What the model computes besides tags is written next to the predictions, one line per post with an image.
    with_image = sum(1 for p in posts if p.image_id not in UNCAPTIONED) if source == "caption" else len(posts)
    relation, attention = relation_path(run_dir), attention_path(run_dir)
    assert relation.is_file() == model.relation_score
    assert attention.is_file() == model.region_attention
    if model.relation_score:
        assert len(read_relation(relation)) == with_image and test["relation"]["posts"] == with_image
    if model.region_attention:
        maps = read_attention(attention)
        assert len(maps) == with_image and test["attention"]["posts"] == with_image
        for pid, m in maps.items():
            post = next(p for p in posts if p.id == pid)
            predicted = [(e["start"], e["end"]) for e in entity_records(post.tokens, written[posts.index(post)].tags)]
            assert [(e["start"], e["end"]) for e in m["entities"]] == predicted
    # `mmner evaluate --output` writes the same files next to its predictions
    result = evaluate(run_dir, str(tiny_corpus["test"]), output=tmp_path / "eval.conll")
    assert (tmp_path / "eval.relation.jsonl").is_file() == model.relation_score == ("relation" in result)
    assert (tmp_path / "eval.attention.jsonl").is_file() == model.region_attention == ("attention" in result)
    if model.region_attention:
        assert (tmp_path / "eval.attention.jsonl").read_text() == attention.read_text()


@pytest.mark.parametrize("name, source, keys", CASES)
def test_model_learns_tiny_corpus(name, source, keys, tiny_model_params, tiny_visual, tiny_corpus, tmp_path):
    """A few epochs on the templated corpus must reach a clearly non-trivial valid F1."""
    config = load_config(None, base=tiny_config(model_params(tiny_model_params, name, keys), tiny_corpus,
                                                tiny_visual[source], max_epochs=12, patience=12))
    metrics = train(config, tmp_path / "run", quiet=True)
    assert metrics["valid"]["f1"] > 50.0, metrics["valid"]
