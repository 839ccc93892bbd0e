"""Batch effects: for every registry model, a post's tags do not depend on the posts it is batched with.

A post tagged alone must get the tags it gets inside a padded, length-sorted batch of longer and shorter
posts, with and without images, in `predict_tags` (the path of the API, `predict`, `evaluate` and the
service), in `Tagger.stream` across more posts than one batch, and in the service's micro-batcher (many
concurrent single-post requests to a live server answered from shared model calls). Untrained tiny models: batch invariance is a
property of the code, not of training (one torch thread, conftest).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import TINY_SOURCES, tiny_config
from mmner.config import load_config
from mmner.data.readers import read_conll
from mmner.inference import predict_tags, visual_inputs
from mmner.models import registry
from mmner.tagging.vocab import LabelVocab


def mixed_posts(corpus: dict) -> list:
    """Posts of many lengths (prefixes, and two posts joined, some longer than one window), with and
    without images (no image id, or an image whose caption is blank: masked)."""
    base = read_conll(corpus["train"]) + read_conll(corpus["test"])
    posts = [replace(p, id=f"p{i}", tokens=p.tokens[: 1 + i % len(p.tokens)], tags=None)
             for i, p in enumerate(base[:18])]
    posts += [replace(a, id=f"{a.id}+{b.id}", tokens=a.tokens + b.tokens, tags=None)
              for a, b in zip(base[:6], base[6:12])]
    posts += [replace(p, id=f"noimg{i}", image_id=None, tags=None) for i, p in enumerate(base[12:16])]
    return posts


def bodies(posts: list, visual, source: str) -> list[dict]:
    """The posts as API / HTTP inputs: tokens, and the caption each post is seen with (none when masked)."""
    out = []
    for p in posts:
        body = {"id": p.id, "tokens": p.tokens}
        used = visual.get(p)
        if source != "none" and not used.masked:
            body["caption"] = used.caption
        out.append(body)
    return out


def build(name: str, tiny_model_params, tiny_visual, tiny_corpus):
    source = TINY_SOURCES.get(name, ["none"])[0]
    config = load_config(None, base=tiny_config(tiny_model_params[name], tiny_corpus, tiny_visual[source]))
    cls = registry.get(name)
    train_posts = read_conll(tiny_corpus["train"])
    train_visual = visual_inputs(config, str(tiny_corpus["train"]))
    params = cls.resolve_params(config.model_params(), train_visual)
    torch.manual_seed(0)
    model = cls.create(params, LabelVocab.from_posts(train_posts, "bio"), train_posts)
    build_index = getattr(model, "build_index", None)
    if build_index is not None:
        build_index(train_posts, train_visual)
    model.eval()
    return config, model, source


@pytest.fixture(scope="module", params=sorted(registry.names()))
def tagged(request, tiny_model_params, tiny_visual, tiny_corpus):
    name = request.param
    config, model, source = build(name, tiny_model_params, tiny_visual, tiny_corpus)
    posts = mixed_posts(tiny_corpus)
    visual = visual_inputs(config, str(tiny_corpus["test"]))  # captions by image id; no image id: none
    alone = [predict_tags(model, [p], batch_size=1, progress=False, visual=visual)[0] for p in posts]
    return name, config, model, source, posts, visual, alone


def test_post_alone_equals_post_in_sorted_padded_batches(tagged):
    name, _, model, source, posts, visual, alone = tagged
    assert len({len(p.tokens) for p in posts}) > 6 and any(p.image_id is None for p in posts)
    if source != "none":  # some posts are seen with an image, some without
        used = [visual.get(p) for p in posts]
        assert any(u.masked for u in used) and any(not u.masked for u in used), name
    for batch_size in (4, 7, len(posts)):
        assert predict_tags(model, posts, batch_size=batch_size, progress=False, visual=visual) == alone, \
            f"{name}: batch size {batch_size}"
    assert [len(t) for t in alone] == [len(p.tokens) for p in posts]


def test_stream_across_batches_equals_alone(tagged):
    """`Tagger.stream` with more posts than one batch (posts given with their captions, or none) gives
    each post its tags alone."""
    from mmner.api import Tagger

    name, config, model, source, posts, visual, alone = tagged
    records = list(Tagger(model, config, batch_size=5).stream(bodies(posts, visual, source)))
    assert [r["id"] for r in records] == [p.id for p in posts]
    assert [r["tags"] for r in records] == alone, name


def test_service_micro_batcher_equals_alone(tagged):
    """Concurrent single-post requests to `mmner serve`'s app share model calls (the micro-batcher) and
    each gets the tags its post gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    pytest.importorskip("fastapi")
    import httpx

    from mmner.api import Tagger
    from mmner.serve import Limits, create_app
    from serving_helpers import live_server

    name, config, model, source, posts, visual, alone = tagged
    requests = bodies(posts, visual, source)
    app = create_app(Tagger(model, config, batch_size=32), Limits(max_batch=8, max_wait_ms=40))
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: client.post("/v1/tag", json=body), requests))
        batching = client.get("/healthz").json()["batching"]
    assert [a.status_code for a in answers] == [200] * len(requests)
    assert [a.json()["tags"] for a in answers] == alone, name
    assert batching["largest"] > 1, f"{name}: no two requests shared a model call"
