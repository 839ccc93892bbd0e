"""UMT (Yu et al. 2020): span labels, conversion matrix, visual gate, loss, masked regions, and every
shipped UMT config (full model and ablations) built at test size, trained one step and tagging.

The shared harness (test_models.py) trains `umt` end to end; these tests use untrained tiny models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from region_checks import assert_masked_regions_inert, grid_batch, source_batch

from mmner.config import load_config
from mmner.data.post import Post
from mmner.data.readers import read_conll
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.models.umt import conversion_matrix, span_tags
from mmner.tagging.vocab import LabelVocab
from mmner.inference import predict_tags
from mmner.vision.captions import CaptionSource
from mmner.vision.inputs import VisualInput, VisualInputs

D = 6  # width of the test's grid regions
POSTS = [
    Post("a", ["meet", "Obama", "at", "NASA", "!"], ["O", "B-PER", "O", "B-ORG", "O"]),
    Post("b", ["the", "Olympics", "game", "in", "New", "Rome"], ["O", "I-OTHER", "O", "O", "B-LOC", "I-LOC"]),
]
LABELS = LabelVocab.from_posts(POSTS + [Post("c", ["x"], ["B-MISC"])], "bio")
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("umt-*.yaml"))
ABLATIONS = {"umt": {}, "umt-no-aux": {"aux": False}, "umt-no-gate": {"visual_gate": False},
             "umt-no-image": {"image": False}}


def build(tiny_model_params: dict, labels: LabelVocab = LABELS, **extra):
    cls = registry.get("umt")
    torch.manual_seed(0)
    return cls.create(cls.Params(**{**tiny_model_params["umt"], **extra}), labels, POSTS)




# -- auxiliary span labels and the conversion matrix ---------------------------------------------


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], ["B", "I", "O", "B"]),
        (["O", "I-PER", "I-PER", "O"], ["O", "B", "I", "O"]),  # a stray I- starts a span
        (["I-ORG"], ["B"]),  # ... also at the start of the post
        (["B-PER", "I-LOC", "I-LOC"], ["B", "B", "I"]),  # a change of type inside I- starts a new span
        (["I-LOC", "B-LOC", "I-ORG", "O"], ["B", "B", "B", "O"]),
        (["O", "O"], ["O", "O"]),
    ],
)
def test_span_tags_from_typed_tags(tags, spans):
    assert span_tags(tags) == spans


def test_span_tags_in_bioes():
    assert span_tags(["B-PER", "I-PER", "I-PER", "O", "I-LOC"], "bioes") == ["B", "I", "E", "O", "S"]


def test_span_gold_in_the_batch(tiny_model_params):
    model = build(tiny_model_params)
    batch = grid_batch(model, [None, None], POSTS)
    tags = [model.spans.tags[i].split("-")[0] for i in batch["span_tags"][1].tolist()]
    assert tags == ["O", "B", "O", "O", "B", "I"]  # post b's stray I-OTHER opens a span
    assert batch["span_tags"][0, :5].tolist() == [model.spans.index[t] for t in ["O", "B-SPAN", "O", "B-SPAN", "O"]]


def test_conversion_matrix_as_initialised():
    spans = LabelVocab(["SPAN"], "bio")  # O, B-SPAN, I-SPAN
    matrix = conversion_matrix(spans, LABELS)  # labels: O + B-/I- of LOC, MISC, ORG, OTHER, PER
    assert matrix.shape == (3, len(LABELS))
    n = len(LABELS.types)
    for z, prefix in ((1, "B-"), (2, "I-")):
        for k, y in enumerate(LABELS.tags):
            assert matrix[z, k] == pytest.approx(1 / n if y.startswith(prefix) else 0.0)
    assert matrix[0].tolist() == [1.0] + [0.0] * (len(LABELS) - 1)  # O -> O only
    assert torch.allclose(matrix.sum(1), torch.ones(3))


# -- forward: eq. 7, loss, gate, masked regions --------------------------------------------------


def test_span_emissions_reach_the_main_tagger_through_the_conversion_matrix(tiny_model_params):
    model = build(tiny_model_params, visual_dim=D).eval()
    batch = grid_batch(model, [torch.randn(3, D), None], POSTS)
    with torch.no_grad():
        out = model(batch)
        initial = model.conversion.detach().clone()
        model.conversion.zero_()
        without = model(batch)["emissions"]
    assert torch.allclose(initial, conversion_matrix(model.spans, LABELS))
    assert torch.allclose(out["emissions"], without + out["span_emissions"] @ initial, atol=1e-5)


@pytest.mark.parametrize("aux_weight", [0.5, 0.0, 2.0])
def test_loss_is_main_plus_lambda_aux(aux_weight, tiny_model_params):
    model = build(tiny_model_params, visual_dim=D, aux_weight=aux_weight).eval()
    batch = grid_batch(model, [torch.randn(3, D), torch.randn(2, D)], POSTS)
    with torch.no_grad():
        out = model(batch)
        main = model.crf.loss(out["emissions"], batch["tags"], batch["word_mask"])
        aux = model.span_crf.loss(out["span_emissions"], batch["span_tags"], batch["word_mask"])
    assert torch.allclose(out["span_loss"], aux)
    assert torch.allclose(out["loss"], main + aux_weight * aux, atol=1e-5)


def test_without_aux_the_loss_is_the_main_crf(tiny_model_params):
    model = build(tiny_model_params, visual_dim=D, aux=False).eval()
    assert not hasattr(model, "span_crf") and not hasattr(model, "conversion")
    batch = grid_batch(model, [torch.randn(3, D), None], POSTS)
    with torch.no_grad():
        out = model(batch)
    assert "span_emissions" not in out and "span_tags" not in batch
    assert torch.allclose(out["loss"], model.crf.loss(out["emissions"], batch["tags"], batch["word_mask"]))


def test_visual_gate_is_in_unit_interval(tiny_model_params):
    model = build(tiny_model_params, visual_dim=D).eval()
    torch.manual_seed(1)
    batch = grid_batch(model, [torch.randn(3, D) * 100, torch.randn(4, D)], POSTS)
    with torch.no_grad():
        gate = model(batch)["gate"]
    assert gate.shape == (2, 6, model.hidden)
    assert gate.min() >= 0.0 and gate.max() <= 1.0
    assert gate.std() > 0  # a gate per word and dimension, not a constant
    no_gate = build(tiny_model_params, visual_dim=D, visual_gate=False).eval()
    assert "gate" not in no_gate(grid_batch(no_gate, [torch.randn(3, D), None], POSTS))




@pytest.mark.parametrize("switches", [{}, {"visual_gate": False}, {"image_aware_words": False}, {"aux": False},
                                      {"cross_layers": 2, "text_layers": 2}])
def test_masked_regions_have_no_effect(switches, tiny_model_params):
    model = build(tiny_model_params, visual_dim=D, **switches).eval()
    torch.manual_seed(1)
    batch = grid_batch(model, [torch.randn(3, D), None], POSTS)  # the second post has no image
    assert_masked_regions_inert(model, batch)


def test_output_does_not_depend_on_the_batch(tiny_model_params):
    """Regions follow their post into each of its windows: a long post tagged alone or in a batch."""
    model = build(tiny_model_params, visual_dim=D).eval()
    long = Post("long", [f"w{i}" for i in range(30)])
    visual = [VisualInput(regions=torch.randn(3, D)), VisualInput(regions=torch.randn(5, D))]
    items = [model.featurize(p, v) for p, v in zip((POSTS[0], long), visual)]
    assert len(items[1]["windows"]) > 1
    with torch.no_grad():
        alone = model(model.collate(items[1:]))["emissions"][0]
        together = model(model.collate(items))["emissions"][1]
    assert torch.allclose(alone, together, atol=1e-5)
    assert [len(t) for t in model.decode(model.collate(items))] == [5, 30]


@pytest.mark.parametrize("source", ["grid", "caption"])
def test_gradient_reaches_visual_projection_gate_and_conversion(source, tiny_model_params):
    model = build(tiny_model_params, **({"visual_dim": D} if source == "grid" else {})).train()
    batch = source_batch(model, source, POSTS, D)
    model(batch)["loss"].backward()
    for param in (model.visual.proj.weight, model.gate_a.weight, model.gate_q.weight, model.conversion,
                  model.span_classifier.weight, model.coupled[0].attention.in_proj_weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_switched_off_parts_have_no_parameters(tiny_model_params):
    """An ablation leaves out what it switches off (no unused weights: distributed training needs none)."""
    parts = {"aux": ["span_layers", "span_classifier", "span_crf", "conversion"], "conversion": ["conversion"],
             "visual_gate": ["gate_a", "gate_q"], "image_aware_words": ["image_to_text", "coupled"],
             "image": ["visual", "image_to_text", "coupled", "text_to_image", "gate_a", "gate_q"]}
    full = build(tiny_model_params)
    for switch, names in parts.items():
        model = build(tiny_model_params, **{switch: False})
        assert all(hasattr(full, n) and not hasattr(model, n) for n in names), switch
        visual = VisualInput() if switch == "image" else VisualInput(caption="a man")  # source none: no input
        batch = model.collate([model.featurize(p, visual) for p in POSTS])
        model(batch)["loss"].backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]  # frozen ones aside
        assert not unused, (switch, unused)


def test_image_switch_and_visual_source_must_agree(tiny_model_params):
    cls = registry.get("umt")
    captions = VisualInputs("caption", "mask", captions=CaptionSource({}, "t", "t"))
    text_only = cls.Params(**tiny_model_params["umt"], image=False)
    assert cls.resolve_params(text_only, VisualInputs("none")) == text_only
    with pytest.raises(MmnerError, match="set visual.source: none"):
        cls.resolve_params(text_only, captions)
    with pytest.raises(MmnerError, match="needs visual input"):
        cls.resolve_params(cls.Params(**tiny_model_params["umt"]), VisualInputs("none"))
    model = build(tiny_model_params, image=False)
    assert not hasattr(model, "visual") and model.classifier.in_features == model.hidden
    with pytest.raises(MmnerError, match="model.heads"):
        build(tiny_model_params, heads=3)


# -- the shipped configs -------------------------------------------------------------------------


def test_every_ablation_has_configs():
    names = {p.stem for p in CONFIGS}
    assert names == {f"{v}-{enc}-{ds}" for v in ABLATIONS for enc in ("minilm", "mpnet")
                     for ds in ("twitter2015", "twitter2017")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_trains_one_step_and_predicts(path, tiny_model_params, tiny_corpus, tiny_captions):
    config = load_config(path)
    variant = path.stem.rsplit("-", 2)[0]
    params = config.model_params()
    for key, value in {"image": True, "aux": True, "visual_gate": True, **ABLATIONS[variant]}.items():
        assert getattr(params, key) == value, key
    assert params.aux_weight == 0.5 and params.text_layers == 1 and params.cross_layers == 1
    assert config.visual.source == ("none" if variant == "umt-no-image" else "caption")
    params = params.model_copy(update={"encoder": tiny_model_params["umt"]["encoder"], "max_length": 24})
    if config.visual.source == "caption":
        assert (config.visual.caption, config.visual.missing) == ("blip2", "mask")
        visual = VisualInputs("caption", "mask", captions=CaptionSource.from_file(tiny_captions))
    else:
        visual = VisualInputs("none")
    cls = registry.get("umt")
    params = cls.resolve_params(params, visual)
    train = read_conll(tiny_corpus["train"])[:8]
    labels = LabelVocab.from_posts(train)
    torch.manual_seed(0)
    model = cls.create(params, labels, train).train()

    batch = model.collate([model.featurize(p, v) for p, v in zip(train, visual.get_many(train))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.classifier.weight.detach().clone()
    loss = model(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.classifier.weight)

    test = read_conll(tiny_corpus["test"])
    tags = predict_tags(model, test, progress=False, visual=visual)
    assert [len(t) for t in tags] == [len(p.tokens) for p in test]
    if params.aux:
        spans = model.decode_spans(batch)
        assert [len(s) for s in spans] == [len(p.tokens) for p in train]
        assert {t for s in spans for t in s} <= {"B", "I", "O"}
