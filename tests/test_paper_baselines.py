"""The papers' baselines that are a registry model with other settings, beyond the train -> save -> load ->
predict harness (tests/test_models.py VARIANTS): what each computes.

- bilstm-crf `image: true` (RpBERT Table 4, "biLSTM-CRF w/ image at t = 0"): the image vector is step 0;
  a post without image is the text-only biLSTM exactly; batches mix both without changing either.
- visualbert-crf `image: false` (Chen et al. Exp 1.2): the encoder over the text alone, as bert-crf.
- rpbert `image: false` with the biLSTM-CRF head (RpBERT Table 4, "biLSTM-CRF + BERT").
- fusion-cm's character vector (Chen et al. 2.1).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.tagging.vocab import LabelVocab
from mmner.vision.inputs import VisualInput

POSTS = [
    Post("0", ["RT", "@", "Obama", ":", "visit", "Paris", "today"], ["O", "O", "B-PER", "O", "O", "B-LOC", "O"]),
    Post("1", ["meet", "Messi", "at", "Google", "!"], ["O", "B-PER", "O", "B-ORG", "O"]),
    Post("2", ["the", "Olympics", "in", "London"], ["O", "B-OTHER", "O", "B-LOC"]),
]



def source_of(source: str) -> SimpleNamespace:  # what `resolve_params` reads of the run's visual inputs
    return SimpleNamespace(source=source, dim=None)


def build(name: str, params: dict, posts=POSTS):
    cls = registry.get(name)
    torch.manual_seed(0)
    model = cls.create(cls.Params(**params), LabelVocab.from_posts(posts), posts)
    return model.eval()


def emissions(model, posts, visuals) -> list[torch.Tensor]:
    batch = model.collate([model.featurize(p, v) for p, v in zip(posts, visuals)])
    with torch.no_grad():
        out = model({**batch, "tags": None})
    return [out["emissions"][i, : len(p.tokens)] for i, p in enumerate(posts)]


@pytest.fixture()
def bilstm(tiny_model_params):
    return {**tiny_model_params["bilstm-crf"], "image": True}


def test_bilstm_image_at_t0_masked_post_is_the_text_only_model(bilstm):
    model = build("bilstm-crf", bilstm)
    post = POSTS[0]
    (with_image,) = emissions(model, [post], [VisualInput(caption="a man in paris")])
    (masked,) = emissions(model, [post], [VisualInput(problem="no image")])
    # the text-only computation of the same weights: no step 0 at all
    batch = model.collate([model.featurize(post, VisualInput(problem="no image"))])
    with torch.no_grad():
        hidden = model.contextualize(model.inputs(batch), batch["word_mask"])
        text_only = model.classifier(hidden)[0]
    assert torch.allclose(masked, text_only, atol=1e-6)
    assert not torch.allclose(with_image, masked, atol=1e-4)  # the image (here its caption) is step 0
    (other,) = emissions(model, [post], [VisualInput(caption="a stadium at night")])
    assert not torch.allclose(with_image, other, atol=1e-4)


def test_bilstm_image_at_t0_batches_change_nothing(bilstm):
    model = build("bilstm-crf", bilstm)
    visuals = [VisualInput(caption="a man in paris"), VisualInput(problem="no image"), VisualInput(caption="london")]
    together = emissions(model, POSTS, visuals)
    for post, visual, row in zip(POSTS, visuals, together):
        (alone,) = emissions(model, [post], [visual])
        assert torch.allclose(alone, row, atol=1e-5)


def test_bilstm_image_at_t0_reads_grid_regions(bilstm):
    model = build("bilstm-crf", {**bilstm, "visual_dim": 5})
    torch.manual_seed(1)
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    (ea,), (eb,) = emissions(model, [POSTS[1]], [VisualInput(regions=a)]), emissions(model, [POSTS[1]], [VisualInput(regions=b)])
    assert not torch.allclose(ea, eb, atol=1e-4)
    (mean,) = emissions(model, [POSTS[1]], [VisualInput(regions=a.mean(0, keepdim=True).expand(7, 5))])
    assert torch.allclose(ea, mean, atol=1e-5)  # the global image vector: the mean region
    with pytest.raises(MmnerError, match=r"post 1: visual regions of shape \(4, 3\)"):
        model.featurize(POSTS[1], VisualInput(regions=torch.zeros(4, 3)))


def test_bilstm_visual_source_needs_image_true(tiny_model_params):
    cls = registry.get("bilstm-crf")
    params = cls.Params(**tiny_model_params["bilstm-crf"])
    with pytest.raises(MmnerError, match="bilstm-crf is a text-only model .* model.image: true"):
        cls.resolve_params(params, source_of("caption"))
    with pytest.raises(MmnerError, match="visual.source: bilstm-crf is a multimodal model and needs visual input"):
        cls.resolve_params(params.model_copy(update={"image": True}), source_of("none"))
    assert cls.resolve_params(params, source_of("none")) is params


def test_visualbert_text_only_is_the_encoder_over_the_text(tiny_model_params):
    keys = {**tiny_model_params["visualbert-crf"], "image": False}
    model = build("visualbert-crf", keys)
    assert not model.region_attention
    assert not any(n.startswith(("visual", "visual_type", "visual_position")) for n, _ in model.named_parameters())
    bert = build("bert-crf", {k: v for k, v in keys.items() if k not in ("image", "max_regions")} | {"name": "bert-crf"})
    bert.load_state_dict(model.state_dict())  # the same parameters, one for one
    batch = model.collate([model.featurize(p, VisualInput()) for p in POSTS])
    with torch.no_grad():
        assert torch.equal(model.word_states(batch), bert.word_states(bert.collate([bert.featurize(p) for p in POSTS])))
    cls = registry.get("visualbert-crf")
    with pytest.raises(MmnerError, match="model.image: false is the text-only model and would ignore 'caption'"):
        cls.resolve_params(cls.Params(**keys), source_of("caption"))


def test_rpbert_text_only_is_bilstm_crf_plus_bert(tiny_model_params, tiny_vectors):
    keys = {**tiny_model_params["rpbert"], "image": False, "propagate": False, "head": "bilstm-crf",
            "lstm_hidden": 8, "vectors": str(tiny_vectors)}
    model = build("rpbert", keys)
    assert not model.relation_score and not model.region_attention and not hasattr(model, "relation")
    batch = model.collate([model.featurize(p, VisualInput()) for p in POSTS])
    with torch.no_grad():
        out = model.predict(batch)
        states = model.text_states(batch)
    assert set(out) == {"tags"} and [len(t) for t in out["tags"]] == [len(p.tokens) for p in POSTS]
    # [e_k; e_k^BERT]: the biLSTM's input is the word / char vectors and each word's mean sub-token state
    pieces = batch["word_pieces"][0, :3].tolist()
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    first = int(batch["gather"][0, 2]) % batch["input_ids"].shape[1]
    assert torch.allclose(states[0, 2], hidden[0, first : first + pieces[2]].mean(0), atol=1e-5)
    cls = registry.get("rpbert")
    with pytest.raises(MmnerError, match="model.propagate: rpbert with model.image: false has no image to gate"):
        cls.resolve_params(cls.Params(**{**keys, "propagate": True}), source_of("none"))
    with pytest.raises(MmnerError, match="model.trc.enabled: rpbert with model.image: false"):
        cls.resolve_params(cls.Params(**{**keys, "trc": {"enabled": True}}), source_of("none"))


def test_fusion_cm_concatenates_a_character_vector(tiny_model_params):
    model = build("fusion-cm", tiny_model_params["fusion-cm"])
    assert model.classifier.in_features == 3 * model.hidden
    visual = [VisualInput(caption="a man in paris")]
    batch = model.collate([model.featurize(POSTS[0], visual[0])])
    with torch.no_grad():
        base = model({**batch, "tags": None})["emissions"]
        changed = batch["char_ids"].clone()
        changed[0, 2] = torch.flip(changed[0, 2], [0])  # the same word id, other characters
        other = model({**batch, "char_ids": changed, "tags": None})["emissions"]
    assert not torch.allclose(base[0, 2], other[0, 2], atol=1e-5)
    plain = build("fusion-cm", {**tiny_model_params["fusion-cm"], "chars": False})
    assert plain.classifier.in_features == 2 * plain.hidden and not hasattr(plain, "char_cnn")
