"""Multimodal models (Chen et al.): what the visual input does and does not change.

The shared harness (test_models.py) trains every model; here, on untrained tiny models: padding
regions change nothing, gradient reaches the visual projection, captions never cost text, the visual
config is checked, and `mmner predict` tags new posts with their captions or image files.
"""

from __future__ import annotations

import json

import pytest
import torch
from region_checks import assert_masked_regions_inert, grid_batch, source_batch

from conftest import SHARED_DATA, tiny_config
from mmner.config import load_config
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.tagging.vocab import LabelVocab
from mmner.vision.captions import CaptionSource
from mmner.vision.inputs import VisualInput, VisualInputs

D = 6  # width of the test's grid regions
REGION_MODELS = ["fusion-cam", "fusion-cm", "fusion-tam", "fusion-vam", "visualbert-crf"]
POSTS = [
    Post("a", ["meet", "Obama", "at", "NASA", "!"], ["O", "B-PER", "O", "B-ORG", "O"]),
    Post("b", ["the", "Olympics", "game", "in", "New", "Rome"], ["O", "B-OTHER", "O", "O", "B-LOC", "I-LOC"]),
]
LABELS = LabelVocab.from_posts(POSTS + [Post("c", ["x"], ["B-MISC"])], "bio")


def build(name: str, tiny_model_params: dict, **extra):
    cls = registry.get(name)
    torch.manual_seed(0)
    return cls.create(cls.Params(**{**tiny_model_params[name], **extra}), LABELS, POSTS)






@pytest.mark.parametrize("name", REGION_MODELS)
def test_masked_regions_have_no_effect(name, tiny_model_params):
    model = build(name, tiny_model_params, visual_dim=D).eval()
    torch.manual_seed(1)
    batch = grid_batch(model, [torch.randn(3, D), None], POSTS)  # the second post has no image
    assert_masked_regions_inert(model, batch)


@pytest.mark.parametrize("name", REGION_MODELS)
@pytest.mark.parametrize("source", ["grid", "caption"])
def test_gradient_reaches_the_visual_projection(name, source, tiny_model_params):
    model = build(name, tiny_model_params, **({"visual_dim": D} if source == "grid" else {})).train()
    batch = source_batch(model, source, POSTS, D)
    model(batch)["loss"].backward()
    grad = model.visual.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_caption_reaches_bert_crf_caption(tiny_model_params):
    # word embeddings trained here, so that their gradient shows which caption tokens were read
    model = build("bert-crf-caption", tiny_model_params, freeze_embeddings=False).train()
    visual = [VisualInput(caption="zz qq"), VisualInput(problem="no image")]
    batch = model.collate([model.featurize(p, v) for p, v in zip(POSTS, visual)])
    model(batch)["loss"].backward()
    grad = model.encoder.get_input_embeddings().weight.grad
    ids = model.tokenizer("zz qq", add_special_tokens=False)["input_ids"]
    assert grad[ids].abs().sum() > 0
    assert batch["token_type_ids"][0].tolist().count(1) == len(ids) + 1  # caption + final [SEP]
    assert batch["token_type_ids"][1].sum() == 0  # no image: the text alone, as bert-crf sees it


@pytest.mark.parametrize("encoder", ["bert", "mpnet"])
def test_caption_windows_cover_every_word(encoder, tiny_model_params, tmp_path):
    extra = {"encoder": str(tiny_mpnet(tmp_path))} if encoder == "mpnet" else {}
    model = build("bert-crf-caption", tiny_model_params, caption_tokens=64, **extra)
    long = Post("long", [f"w{i}" for i in range(30)])  # 2 pieces per word: several windows
    caption = "the stadium at night " * 10
    item = model.featurize(long, VisualInput(caption=caption))
    s = model.special
    budget = model.caption_budget()
    assert budget == (model.max_length - len(s.prefix) - len(s.middle) - len(s.suffix)) // 2
    cut = model.tokenizer(caption, add_special_tokens=False)["input_ids"][:budget]
    owned = sorted(word for w in item["windows"] for word, _ in w.owned)
    assert owned == list(range(30)) and len(item["windows"]) > 1
    for window, start in zip(item["windows"], item["segment_b"]):
        assert len(window.input_ids) <= model.max_length
        assert window.input_ids[start - len(s.middle):] == s.middle + cut + s.suffix  # the caption, cut
        for word, pos in window.owned:
            assert window.input_ids[pos] == model.tokenizer(long.tokens[word], add_special_tokens=False)["input_ids"][0]
    batch = model.collate([item])
    assert ("token_type_ids" in batch) == (encoder == "bert")
    assert len(model.decode(batch)[0]) == 30


def tiny_mpnet(path):
    """A random 2-layer MPNet (relative positions, positions counted from padding_idx + 1, no
    segment ids, `<s> a </s></s> b </s>` pairs) with the tiny vocabulary."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    from conftest import TINY_VOCAB

    specials = {"bos_token": "[CLS]", "cls_token": "[CLS]", "eos_token": "[SEP]", "sep_token": "[SEP]",
                "unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]"}
    tokenizer = MPNetTokenizer(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, **specials)
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=0)
    MPNetModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("encoder", ["bert", "mpnet"])
def test_visualbert_without_image_encodes_text_as_bert_crf(encoder, tiny_model_params, tmp_path):
    """Text positions are the encoder's own (BERT from 0, MPNet from padding_idx + 1): a post without
    image gets the same word states as in BERT-CRF, and a post's output does not depend on its batch."""
    from mmner.models.bert_crf import BertCRF

    extra = {"encoder": str(tiny_mpnet(tmp_path))} if encoder == "mpnet" else {}
    model = build("visualbert-crf", tiny_model_params, visual_dim=D, **extra).eval()
    long = Post("long", [f"w{i}" for i in range(30)])  # several windows, each with the post's regions
    items = [model.featurize(p, VisualInput(problem="no image")) for p in (POSTS[0], long)]
    assert len(items[1]["windows"]) > 1
    batch = model.collate(items)
    with torch.no_grad():
        assert torch.allclose(model.word_states(batch), BertCRF.word_states(model, batch), atol=1e-5)
        visual = [VisualInput(regions=torch.randn(3, D)), VisualInput(regions=torch.randn(5, D))]
        items = [model.featurize(p, v) for p, v in zip((POSTS[0], long), visual)]
        alone = model(model.collate(items[:1]))["emissions"][0, :5]
        together = model(model.collate(items))["emissions"]
    assert torch.allclose(alone, together[0, :5], atol=1e-5)
    assert len(model.decode(model.collate(items))[1]) == 30


class StubGrid:
    dim = D
    identity = "stub"

    def encode(self, images):
        return torch.ones(len(images), 4, D)


def test_visual_config_is_checked(tiny_model_params):
    grid = VisualInputs("grid", "mask", encoder=StubGrid())
    captions = VisualInputs("caption", "mask", captions=CaptionSource({}, "t", "t"))
    for name in REGION_MODELS:
        cls = registry.get(name)
        params = cls.Params(**tiny_model_params[name])
        assert cls.resolve_params(params, grid).visual_dim == D
        assert cls.resolve_params(params, captions).visual_dim is None
        with pytest.raises(MmnerError, match="model.visual_dim"):
            cls.resolve_params(params.model_copy(update={"visual_dim": D + 1}), grid)
        with pytest.raises(MmnerError, match="model.visual_dim"):
            cls.resolve_params(params.model_copy(update={"visual_dim": D}), captions)
        with pytest.raises(MmnerError, match="needs visual input"):
            cls.resolve_params(params, VisualInputs("none"))
    cls = registry.get("bert-crf-caption")
    with pytest.raises(MmnerError, match="reads captions"):
        cls.resolve_params(cls.Params(**tiny_model_params["bert-crf-caption"]), grid)


def test_multimodal_model_refuses_text_only_tagging(tiny_model_params):
    from mmner.inference import predict_tags

    with pytest.raises(MmnerError, match="visual_inputs"):
        predict_tags(build("fusion-cm", tiny_model_params), POSTS, progress=False)


SAMPLES = SHARED_DATA / "images" / "twitter2017_samples" / "test"


@pytest.mark.skipif(not (SAMPLES / "captions.json").is_file(), reason="no RiTUAL samples")
def test_predict_samples_with_their_captions(monkeypatch, capsys, tmp_path, tiny_model_params, tiny_visual, tiny_corpus):
    from mmner.train.run import train
    from test_cli import run_cli

    config = load_config(None, base=tiny_config(tiny_model_params["fusion-vam"], tiny_corpus, tiny_visual["caption"],
                                                max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    out = tmp_path / "preds.jsonl"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(tmp_path / "run"), "--input", str(SAMPLES / "texts.json"),
                           "--output", str(out), "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]
    assert all(len(r["tags"]) == len(r["tokens"]) for r in records)


def test_predict_new_posts_from_image_files(tmp_path, tiny_model_params, tiny_visual, tiny_corpus):
    """Under `grid`, a new post's image file is encoded (it is not in the cache); a post without
    image is masked (visual.missing: mask)."""
    from PIL import Image

    from mmner.inference import load_run, predict_tags, visual_inputs

    from mmner.train.run import train

    config = load_config(None, base=tiny_config(tiny_model_params["visualbert-crf"], tiny_corpus,
                                                tiny_visual["grid"], max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    config, model = load_run(tmp_path / "run")
    assert config.model_params().visual_dim == 16  # the tiny ResNet's width, filled in by train
    image = tmp_path / "new.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    posts = [Post("p1", ["meet", "Obama"], image_path=str(image), image_id="new"), Post("p2", ["visit", "Rome"])]
    visual = visual_inputs(config)
    tags = predict_tags(model, posts, progress=False, visual=visual)
    assert [len(t) for t in tags] == [2, 2]
    assert set(visual.masked) == {"p2"}
