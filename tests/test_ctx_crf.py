"""ctx-crf (mmner's own system): retrieval of training posts as context, their entity marks, the agreement
loss between the views with and without the caption, and the index that travels with the run."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from mmner.config import load_config
from mmner.data.post import Post
from mmner.data.readers import read_conll
from mmner.errors import MmnerError
from mmner.inference import load_run
from mmner.models import registry
from mmner.models.context_crf import marked, post_key
from mmner.tagging.vocab import LabelVocab
from mmner.train.run import train
from mmner.vision.inputs import VisualInput

TRAIN = [
    Post("t1", ["Messi", "scores", "for", "Barcelona"], ["B-PER", "O", "O", "B-ORG"]),
    Post("t2", ["Messi", "scores", "again", "tonight"], ["B-PER", "O", "O", "O"]),
    Post("t3", ["rain", "in", "New", "York", "today"], ["O", "O", "B-LOC", "I-LOC", "O"]),
    Post("t4", ["Messi", "scores", "for", "Barcelona"], ["B-PER", "O", "O", "B-ORG"]),  # a retweet of t1
    Post("t5", ["snow", "in", "London", "today"], ["O", "O", "B-LOC", "O"]),
]


def build(tiny_model_params, **keys):
    cls = registry.get("ctx-crf")
    params = cls.Params(**{**tiny_model_params["ctx-crf"], **keys})
    torch.manual_seed(0)
    model = cls.create(params, LabelVocab.from_posts(TRAIN), TRAIN)
    model.build_index(TRAIN)
    return model.eval()


def test_marks_gold_entities_with_their_type_in_words():
    assert marked(["Lionel", "Messi", "joins", "PSG", "in", "Paris"], ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC"]) \
        == "Lionel Messi ( person ) joins PSG ( organization ) in Paris ( location )"
    assert marked(["the", "Oscars", "Oscars"], ["O", "B-MISC", "B-MISC"]) == "the Oscars ( other ) Oscars ( other )"
    assert marked(["no", "tags"], None) == "no tags"


def test_never_retrieves_the_post_itself_nor_a_post_with_the_same_words(tiny_model_params):
    model = build(tiny_model_params, neighbors=4)
    rows = model.neighbours(TRAIN[0])
    assert len(rows) == 3 and 0 not in rows and 3 not in rows  # t1 and its retweet t4 are left out
    assert sorted(rows) == [1, 2, 4]
    new = Post("n", ["Messi", "scores", "for", "Barcelona"])  # a new post with t1's words retrieves neither
    assert sorted(model.neighbours(new)) == [1, 2, 4]
    assert model.neighbours(Post("n2", ["Messi", "scores"]))[0] in (0, 1, 3)  # nearest by the frozen encoder


def test_contexts_follow_the_caption_in_segment_b_and_the_text_keeps_its_tags(tiny_model_params):
    model = build(tiny_model_params, neighbors=2, context_tokens=4, caption_tokens=4)
    post = Post("q", ["Messi", "in", "London"], ["B-PER", "O", "B-LOC"])
    item = model.featurize(post, VisualInput(caption="a football player"))
    (window,) = item["windows"]
    tok = model.tokenizer
    ids = window.input_ids
    start = item["segment_b"][0]
    caption = tok("a football player", add_special_tokens=False)["input_ids"][:4]
    assert ids[start : start + len(caption)] == caption == item["caption"]
    first = tok(model.contexts[item["neighbours"][0]], add_special_tokens=False)["input_ids"][:4]
    after = start + len(caption) + len(model.special.middle)
    assert ids[after : after + len(first)] == first
    assert [pos for _, pos in window.owned] == sorted(pos for _, pos in window.owned) and max(
        pos for _, pos in window.owned) < start  # tagged tokens are the text's only
    batch = model.collate([item])
    assert int(batch["token_type_ids"][0, start]) == 1 and int(batch["token_type_ids"][0, 1]) == 0
    # no caption: the contexts alone follow the text; no neighbours and no caption: bert-crf's input
    bare = model.featurize(post, VisualInput(problem="no image"))
    assert bare["caption"] == [] and bare["neighbours"] == item["neighbours"]
    plain = build(tiny_model_params, neighbors=0).featurize(post, VisualInput(problem="no image"))
    assert plain["segment_b"] is None


def test_agreement_adds_the_kl_between_the_views(tiny_model_params):
    """loss = (loss with caption + loss without) / 2 + agreement x symmetric KL of the per-word label
    distributions of the two views (dropout off, so the views differ by the caption alone)."""
    model = build(tiny_model_params, agreement=0.7).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    post = Post("q", ["Messi", "in", "London"], ["B-PER", "O", "B-LOC"])
    batch = model.collate([model.featurize(post, VisualInput(caption="a football player in a stadium"))])
    with torch.no_grad():
        full = model.forward({k: v for k, v in batch.items() if k != "text_only"})
        alone = model.forward({**batch["text_only"], "tags": batch["tags"]})
        both = model.forward(batch)["loss"]
    p = torch.log_softmax(full["emissions"][0], -1)
    q = torch.log_softmax(alone["emissions"][0], -1)
    kl = float(((p.exp() * (p - q)).sum() + (q.exp() * (q - p)).sum()) / 3 / 2)  # mean over the 3 words
    assert kl > 0
    assert float(both) == pytest.approx(float(full["loss"] + alone["loss"]) / 2 + 0.7 * kl, rel=1e-5)


def test_the_run_carries_its_index_and_reloads_it(tiny_model_params, tiny_visual, tiny_corpus, tmp_path):
    config = load_config(None, base=tiny_config(tiny_model_params["ctx-crf"], tiny_corpus, tiny_visual["caption"]))
    run_dir = tmp_path / "run"
    train(config, run_dir, quiet=True)
    _, model = load_run(run_dir)
    train_posts = read_conll(tiny_corpus["train"])
    assert model.index_keys == [post_key(p.tokens) for p in train_posts]  # the training posts, only these
    assert model.index_meta["posts"] == len(train_posts) and model.index_meta["context_labels"] is True
    assert model.contexts[0] == marked(train_posts[0].tokens, train_posts[0].tags)
    (run_dir / "ctx_index" / "index.json").write_text("{}")
    with pytest.raises(MmnerError, match="no readable ctx-crf index"):
        load_run(run_dir)
