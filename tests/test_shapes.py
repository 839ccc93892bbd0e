"""Word shapes (`model.casing`): the casing an uncased encoder loses, given back to the tagger.

The shape classes of typical tweet words; with the tiny uncased tokenizer `Obama` and `obama` are the same
sub-tokens, so a model without casing gives both posts the same emissions and one with casing does not;
the models that do not read shapes refuse the key.
"""

from __future__ import annotations

import pytest
import torch

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.tagging.vocab import LabelVocab
from mmner.text.shapes import SHAPES, word_shape
from mmner.vision.inputs import VisualInput

CASES = {
    "the": "lower", "@john_doe": "lower", "Obama": "title", "Jr.": "title", "NASA": "upper", "#NBA": "upper",
    "U.S.": "upper", "I": "single-upper", "iPhone": "mixed", "McDonald": "mixed", "@JayKenMinaj": "mixed",
    "2017": "digits", "3-1": "digits", "!": "other", "\U0001F602": "other", "http://t.co/Z3neVBQ7vF": "url",
    "https://example.org": "url", "2nd": "lower", "東京": "lower",
}
POSTS = [Post("a", ["meet", "Obama", "at", "NASA", "!"], ["O", "B-PER", "O", "B-ORG", "O"])]
LOWER = [Post("b", ["meet", "obama", "at", "nasa", "!"], ["O", "B-PER", "O", "B-ORG", "O"])]
LABELS = LabelVocab.from_posts(POSTS, "bio")


@pytest.mark.parametrize("word, shape", CASES.items())
def test_word_shape(word, shape):
    assert SHAPES[word_shape(word)] == shape


def test_every_shape_is_reachable_and_none_pads():
    assert {SHAPES[word_shape(w)] for w in CASES} == set(SHAPES) - {"pad"}


def emissions(model, posts, caption=None):
    visual = [VisualInput(caption=caption) for _ in posts] if caption else [None] * len(posts)
    batch = model.collate([model.featurize(p, v) for p, v in zip(posts, visual)])
    with torch.no_grad():
        return model(batch)["emissions"]


@pytest.mark.parametrize("name", ["bert-crf", "bert-crf-caption", "caption-distill"])
def test_casing_separates_what_the_uncased_encoder_merges(name, tiny_model_params):
    cls = registry.get(name)
    caption = "a man" if cls.uses_visual else None
    for casing in (0, 4):
        torch.manual_seed(0)
        model = cls.create(cls.Params(**{**tiny_model_params[name], "casing": casing}), LABELS, POSTS).eval()
        cased, lower = emissions(model, POSTS, caption), emissions(model, LOWER, caption)
        assert cased.shape == (1, 5, len(LABELS))
        same = torch.isclose(cased, lower).all(-1)[0].tolist()
        # without casing the two posts are one input; with it only the words whose shape differs change
        assert same == ([True] * 5 if casing == 0 else [True, False, True, False, True])


def test_casing_pads_words_beyond_a_post(tiny_model_params):
    cls = registry.get("bert-crf")
    model = cls.create(cls.Params(**{**tiny_model_params["bert-crf"], "casing": 4}), LABELS, POSTS)
    short = Post("c", ["Rome"], ["O"])
    batch = model.collate([model.featurize(p) for p in POSTS + [short]])
    assert batch["shapes"].tolist() == [[1, 2, 1, 3, 8], [2, 0, 0, 0, 0]]


@pytest.mark.parametrize("name", ["umt", "fusion-cm", "ctx-crf"])
def test_models_without_shapes_refuse_casing(name, tiny_model_params):
    cls = registry.get(name)
    with pytest.raises(MmnerError, match="model.casing"):
        cls.create(cls.Params(**{**tiny_model_params[name], "casing": 4}), LABELS, POSTS)
