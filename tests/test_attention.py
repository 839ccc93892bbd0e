"""Region attention: what `Tagger.predict` reports of where a model looks.

Every model that attends over visual regions returns, per post with an image, the attention of each
word over the regions (`blocks.attention_rows`); the tags are the same as without recording, a post
without image has none, caption regions are named by their sub-tokens, a square grid is a grid, and
the single-stream numbers are the encoder's own attention probabilities at the right rows and columns.
"""

from __future__ import annotations

import pytest
import torch

from mmner.data.post import Post
from mmner.models import registry
from mmner.models.blocks import eager_attention, word_region_attention
from mmner.tagging.vocab import LabelVocab
from mmner.vision.inputs import VisualInput

POSTS = [
    Post("a", ["meet", "Obama", "at", "NASA", "!"], ["O", "B-PER", "O", "B-ORG", "O"]),
    Post("b", ["the", "Olympics", "game", "in", "New", "Rome"], ["O", "B-OTHER", "O", "O", "B-LOC", "I-LOC"]),
]
LABELS = LabelVocab.from_posts(POSTS + [Post("c", ["x"], ["B-MISC"])], "bio")
CAPTION = "a man"  # short enough for every model's caption budget at test size
ATTENDING = ["bert-crf-caption", "fusion-cam", "fusion-tam", "fusion-vam", "rpbert", "umt", "visualbert-crf"]
# models whose attention is a softmax over the regions alone: each word's row sums to 1
CROSS_ONLY = {"fusion-cam", "fusion-tam", "fusion-vam", "umt"}


def build(name: str, tiny_model_params: dict, **extra):
    cls = registry.get(name)
    torch.manual_seed(0)
    return cls.create(cls.Params(**{**tiny_model_params[name], **extra}), LABELS, POSTS).eval()


def caption_batch(model, posts=POSTS, caption=CAPTION):
    visual = [VisualInput(caption=caption), VisualInput(problem="no image")]
    return model.collate([model.featurize(p, v) for p, v in zip(posts, visual)])


@pytest.mark.parametrize("name", ATTENDING)
def test_attention_rows_per_post(name, tiny_model_params):
    model = build(name, tiny_model_params, caption_tokens=64)
    assert model.region_attention
    batch = caption_batch(model)
    with torch.no_grad():
        plain = model.decode(batch)
        out = model.predict(batch)
    assert out["tags"] == plain  # recording changes no tag
    first, second = out["attention"]
    assert second is None  # no image, no attention
    names = model.tokenizer.convert_ids_to_tokens(model.tokenizer(CAPTION, add_special_tokens=False)["input_ids"])
    assert first["labels"] == names and "grid" not in first
    words = torch.tensor(first["words"])
    assert words.shape == (len(POSTS[0].tokens), len(names))
    assert (words >= 0).all() and words.sum() > 0
    assert torch.allclose(words.sum(0), torch.tensor(first["weights"]), atol=1e-5)
    rows = words.sum(1)
    if name in CROSS_ONLY:
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-4)
    else:  # single stream: the regions take a share of each word's attention, the text the rest
        assert (rows < 1).all()


@pytest.mark.parametrize("name", ATTENDING)
def test_attention_left_out_on_request_changes_no_tag(name, tiny_model_params):
    """`predict(batch, attention=False)` (`Tagger(attention=False)`, `--no-attention`): the same tags,
    the relation score where the model has one, no attention; nothing is recorded."""
    model = build(name, tiny_model_params, caption_tokens=64)
    batch = caption_batch(model)
    with torch.no_grad():
        full, lean = model.predict(batch), model.predict(batch, attention=False)
    assert "attention" in full and "attention" not in lean
    assert lean == {k: v for k, v in full.items() if k != "attention"}


@pytest.mark.parametrize("name", ["bert-crf", "bilstm-crf", "fusion-cm"])
def test_models_without_region_attention_give_tags_only(name, tiny_model_params):
    model = build(name, tiny_model_params)
    feats = [model.featurize(p, VisualInput(caption=CAPTION) if model.uses_visual else None) for p in POSTS]
    batch = model.collate(feats)
    with torch.no_grad():
        assert model.predict(batch) == {"tags": model.decode(batch)}


def test_umt_text_only_branch_has_no_region_attention(tiny_model_params):
    assert not build("umt", tiny_model_params, image=False).region_attention


@pytest.mark.parametrize("name", ["visualbert-crf", "fusion-tam"])
def test_square_grid_regions_are_a_grid(name, tiny_model_params):
    model = build(name, tiny_model_params, visual_dim=6)
    torch.manual_seed(1)
    visual = [VisualInput(regions=torch.randn(4, 6)), VisualInput(regions=torch.randn(3, 6))]
    batch = model.collate([model.featurize(p, v) for p, v in zip(POSTS, visual)])
    with torch.no_grad():
        first, second = model.predict(batch)["attention"]
    assert first["grid"] == [2, 2] and len(first["weights"]) == 4 and "labels" not in first
    assert "grid" not in second and len(second["weights"]) == 3  # 3 regions: a sequence, not a grid


def test_caption_attention_is_the_encoders_own(tiny_model_params):
    """bert-crf-caption over several windows: each word's weights are the encoder's attention
    (mean over layers and heads) from the word's first sub-token to the caption tokens of its window."""
    model = build("bert-crf-caption", tiny_model_params, caption_tokens=64)
    long = Post("long", [f"w{i}" for i in range(30)])  # several windows, each with the caption
    item = model.featurize(long, VisualInput(caption=CAPTION))
    assert len(item["windows"]) > 1
    batch = model.collate([item])
    with torch.no_grad():
        words = torch.tensor(model.predict(batch)["attention"][0]["words"])  # [30, R]
        with eager_attention(model.encoder):
            att = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], output_attentions=True).attentions
    mean = torch.stack(att).mean(dim=(0, 2))  # [N, T, T]
    n_caption = len(item["caption"])
    for row, (window, start) in enumerate(zip(item["windows"], item["segment_b"])):
        for word, pos in window.owned:
            expected = mean[row, pos, start : start + n_caption]
            assert torch.allclose(words[word], expected, atol=1e-5), word


def test_word_region_attention_indexes_windows():
    attention = torch.arange(2 * 4 * 4, dtype=torch.float).reshape(2, 4, 4)  # 2 windows of 4 positions
    gather = torch.tensor([[1, 2, 5]])  # words at window 0 pos 1, window 0 pos 2, window 1 pos 1
    columns = torch.tensor([[3, 0], [2, 3]])  # the regions' columns in each window
    out = word_region_attention(attention, gather, columns)
    assert out.tolist() == [[[attention[0, 1, 3], attention[0, 1, 0]],
                             [attention[0, 2, 3], attention[0, 2, 0]],
                             [attention[1, 1, 2], attention[1, 1, 3]]]]


def test_eager_attention_is_restored(tiny_model_params):
    model = build("visualbert-crf", tiny_model_params)
    before = model.encoder.config._attn_implementation
    batch = caption_batch(model)
    with torch.no_grad():
        model.predict(batch)
    assert model.encoder.config._attn_implementation == before
