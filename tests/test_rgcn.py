"""R-GCN (Zhao et al. 2022): nearest-neighbour search, graph construction against a hand-computed
adjacency, the graph settings (thresholds, edge weights, depth) and their errors, self and test-set
exclusion, the gate, the saved index, and every shipped R-GCN config built at test size, trained one step
and tagging.

The shared harness (test_models.py) trains `rgcn` end to end; these tests use untrained tiny models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import BertModel

from mmner.config import load_config
from mmner.data.post import Post
from mmner.data.readers import read_conll
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.models.rgcn import INDEX_DIR, fingerprint, nearest, normalize, star_adjacency
from mmner.tagging.vocab import LabelVocab
from mmner.inference import load_run, predict_tags
from mmner.train.run import train
from mmner.vision.captions import CaptionSource
from mmner.vision.inputs import VisualInput, VisualInputs

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("rgcn-*.yaml"))
ABLATIONS = {"rgcn": {}, "rgcn-inter-only": {"intra": False}, "rgcn-intra-only": {"inter": False}}


def build(tiny_model_params: dict, posts: list[Post], **extra):
    cls = registry.get("rgcn")
    torch.manual_seed(0)
    return cls.create(cls.Params(**{**tiny_model_params["rgcn"], **extra}), LabelVocab.from_posts(posts), posts)


def captions(tiny_captions: Path) -> VisualInputs:
    return VisualInputs("caption", "mask", captions=CaptionSource.from_file(tiny_captions))


def batch_of(model, posts: list[Post], visual: VisualInputs) -> dict:
    return model.collate([model.featurize(p, v) for p, v in zip(posts, visual.get_many(posts))])


# -- search and graphs on a hand-made collection --------------------------------------------------

KEYS = normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]]))


def test_nearest_is_exact_top_k_and_skips_the_excluded_and_invalid_rows():
    queries = normalize(torch.tensor([[1.0, 0.0], [0.1, 1.0]]))
    valid = torch.tensor([True, True, True, True, False])  # row 4 has no image
    rows, sims = nearest(queries, KEYS, valid, torch.tensor([0, -1]), k=3)
    assert rows.tolist() == [[1, 2, 3], [2, 1, 0]]  # query 0 never gets row 0 (itself) nor row 4
    assert torch.allclose(sims, (queries @ KEYS.T).gather(1, rows))
    assert torch.allclose(sims[0], torch.tensor([0.6, 0.0, -1.0]))
    # chunked scan of the index (as for a large collection) gives the same answer
    rows2, sims2 = nearest(queries, KEYS, valid, torch.tensor([0, -1]), k=3, chunk=2)
    assert rows2.tolist() == rows.tolist() and torch.allclose(sims2, sims)
    # fewer candidates than k: the missing slots are -inf
    rows, sims = nearest(queries[:1], KEYS[:2], valid[:2], torch.tensor([0]), k=3)
    assert rows.shape == (1, 2) and sims[0, 0] == pytest.approx(0.6) and sims[0, 1] == float("-inf")


def test_adjacency_matches_a_hand_computed_one():
    # query [1, 0], itself row 0, k = 2, threshold 0.1: row 1 (sim 0.6) is an edge, row 2 (sim 0) is not
    rows, sims = nearest(normalize(torch.tensor([[1.0, 0.0]])), KEYS[:4], torch.ones(4, dtype=torch.bool),
                         torch.tensor([0]), k=2)
    assert rows.tolist() == [[1, 2]]
    edges = sims >= 0.1
    adj = star_adjacency(sims, edges, torch.tensor([True]))[0]
    # A = [[1, .6, 0], [.6, 1, 0], [0, 0, 0]] (no self loop on the node left out), degrees 1.6, 1.6, 0
    expected = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.0]]) / 1.6
    assert torch.allclose(adj, expected, atol=1e-6)
    # two neighbours with weights .5 and .25: degrees 1.75, 1.5, 1.25 -> D^-1/2 A D^-1/2
    adj = star_adjacency(torch.tensor([[0.5, 0.25]]), torch.tensor([[True, True]]), torch.tensor([True]))[0]
    a = torch.tensor([[1.0, 0.5, 0.25], [0.5, 1.0, 0.0], [0.25, 0.0, 1.0]])
    d = torch.tensor([1.75, 1.5, 1.25]).rsqrt()
    assert torch.allclose(adj, d[:, None] * a * d[None, :], atol=1e-6)
    # no centre (a post without image in the intra-modal graph): an empty graph
    assert star_adjacency(torch.tensor([[0.9]]), torch.tensor([[True]]), torch.tensor([False])).abs().sum() == 0


def test_model_graphs_on_a_hand_made_index(tiny_model_params, tiny_corpus):
    """The model's two graphs from a set index: inter by text-to-image, intra by image-to-image."""
    posts = read_conll(tiny_corpus["train"])[:3]
    model = build(tiny_model_params, posts, neighbors=2, threshold=0.1).eval()
    h = model.hidden
    images = torch.zeros(4, h)
    images[:, :2] = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    model.index.set(images, torch.zeros(4, h), torch.tensor([True, True, True, False]), ["a", "b", "c", "d"])
    emb = {"text": images[[2]].clone(), "image": images[[0]].clone(), "image_valid": torch.tensor([True])}
    graphs = model.relations(emb, torch.tensor([0]))  # the post is row 0 of the index
    rows, sims, edges, centre = graphs["inter"]  # text [0, 1]: rows 2 (1.0), 1 (0.8); row 0 is itself
    assert rows.tolist() == [[2, 1]] and edges.tolist() == [[True, True]]
    assert torch.allclose(sims, torch.tensor([[1.0, 0.8]]))
    rows, sims, edges, centre = graphs["intra"]  # image [1, 0]: rows 1 (0.6), 2 (0.0 < 0.1); row 3 has no image
    assert rows.tolist() == [[1, 2]] and edges.tolist() == [[True, False]]
    adj = star_adjacency(sims, edges, centre)[0]
    assert torch.allclose(adj, torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.0]]) / 1.6, atol=1e-6)
    # without an own image there is no intra-modal graph; the text still retrieves images
    graphs = model.relations({**emb, "image": torch.zeros(1, h), "image_valid": torch.tensor([False])},
                             torch.tensor([-1]))
    assert not graphs["intra"][2].any() and graphs["inter"][2].all()


# -- the index over the training posts ------------------------------------------------------------


def test_a_training_post_never_retrieves_itself(tiny_model_params, tiny_corpus, tiny_captions):
    train_posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, train_posts, neighbors=5, threshold=-1.0).eval()
    model.build_index(train_posts, visual)
    assert len(model.index) == len(train_posts)
    assert model.index.rows == {fingerprint(p): i for i, p in enumerate(train_posts)}
    assert (~model.index.valid).sum() == 2  # the two uncaptioned images are never retrieved
    batch = batch_of(model, train_posts, visual)
    assert batch["index_row"].tolist() == list(range(len(train_posts)))
    with torch.no_grad():
        out = model(batch)
    own = torch.arange(len(train_posts))[:, None]
    for name in ("inter", "intra"):
        rows, edges = out[f"{name}_rows"], out[f"{name}_edges"]
        assert not ((rows == own) & edges).any(), name
        assert edges.any()
        assert not edges[~model.index.valid[rows]].any()  # no edge to a post without image
    # not vacuous: a post's query is its own index entry (similarity 1), the best match but for the exclusion
    emb = model.embed(batch)
    has = model.index.valid
    assert torch.allclose((normalize(emb["image"]) * model.index.image_keys).sum(-1)[has], torch.ones(int(has.sum())))
    assert torch.allclose(emb["text"], model.index.texts)


def test_test_posts_query_only_the_training_index(tiny_model_params, tiny_corpus, tiny_captions):
    train_posts = read_conll(tiny_corpus["train"])
    test_posts = read_conll(tiny_corpus["test"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, train_posts).eval()
    model.build_index(train_posts, visual)
    before = model.index.images.clone()
    batch = batch_of(model, test_posts, visual)
    # image ids repeat across the tiny splits (IMGID 0..7), but a test post is no training post: it has
    # no row of its own, so it searches the whole training index and nothing else
    assert {p.image_id for p in test_posts} <= {p.image_id for p in train_posts}
    assert batch["index_row"].tolist() == [-1] * len(test_posts)
    with torch.no_grad():
        out = model(batch)
        predict_tags(model, test_posts, progress=False, visual=visual)
    assert (out["inter_rows"] < len(train_posts)).all() and out["inter_edges"].any()
    assert len(model.index) == len(train_posts) and torch.equal(model.index.images, before)


def test_a_trained_run_indexes_its_training_posts_only(tiny_model_params, tiny_visual, tiny_corpus, tmp_path):
    config = load_config(None, base=tiny_config(tiny_model_params["rgcn"], tiny_corpus, tiny_visual["caption"],
                                                max_epochs=1))
    run_dir = tmp_path / "run"
    train(config, run_dir, quiet=True)
    meta = json.loads((run_dir / INDEX_DIR / "index.json").read_text())
    train_posts = read_conll(tiny_corpus["train"])
    assert meta["fingerprints"] == [fingerprint(p) for p in train_posts]
    assert meta["posts"] == len(train_posts) and meta["with_image"] == len(train_posts) - 2
    assert meta["source"] == "caption" and meta["build_seconds"] >= 0
    others = {fingerprint(p) for split in ("valid", "test") for p in read_conll(tiny_corpus[split])}
    assert not others & set(meta["fingerprints"])
    # the saved index is what `load` brings back (nothing from the weights file)
    _, model = load_run(run_dir, torch.device("cpu"))
    assert model.index.rows == {f: i for i, f in enumerate(meta["fingerprints"])}
    assert not any(k.startswith("index") for k in model.state_dict())


# -- the frozen encoder is stored by reference ----------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_model_params, tiny_visual, tiny_corpus, tmp_path_factory) -> Path:
    config = load_config(None, base=tiny_config(tiny_model_params["rgcn"], tiny_corpus, tiny_visual["caption"],
                                                max_epochs=1))
    run_dir = tmp_path_factory.mktemp("rgcn") / "run"
    train(config, run_dir, quiet=True)
    return run_dir


def copy_run(run_dir: Path, target: Path, encoder: str | None = None) -> Path:
    shutil.copytree(run_dir, target)
    if encoder is not None:
        config = yaml.safe_load((target / "config.yaml").read_text())
        config["model"]["encoder"] = encoder
        (target / "config.yaml").write_text(yaml.safe_dump(config))
    return target


def test_weights_and_checkpoints_leave_the_frozen_encoder_out_and_load_restores_it(trained_run, tiny_encoder):
    weights = load_file(str(trained_run / "model.safetensors"))
    assert weights and not [k for k in weights if k.startswith("frozen.")]
    for ckpt in ("best.ckpt", "last.ckpt"):
        state = torch.load(trained_run / "checkpoints" / ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert state and not [k for k in state if ".frozen." in k]
    _, model = load_run(trained_run, torch.device("cpu"))
    pretrained = BertModel.from_pretrained(str(tiny_encoder), add_pooling_layer=False).state_dict()
    frozen = model.frozen.state_dict()
    assert frozen.keys() == pretrained.keys()
    assert all(torch.equal(frozen[k], pretrained[k]) for k in pretrained)
    assert model.index.meta["encoder_digest"] == model.encoder_digest()
    # the fine-tuned encoder is the file's, not the pretrained one
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, weights["encoder.embeddings.word_embeddings.weight"])


def test_a_run_whose_encoder_is_not_here_names_model_encoder(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run", encoder=str(tmp_path / "gone"))
    with pytest.raises(MmnerError, match="model.encoder = .*gone.* cannot be loaded here"):
        load_run(run, torch.device("cpu"))


def test_an_encoder_with_other_weights_than_the_index_was_built_with_is_an_error(trained_run, tiny_encoder,
                                                                                 tmp_path):
    other = tmp_path / "other-encoder"
    shutil.copytree(tiny_encoder, other)
    encoder = BertModel.from_pretrained(str(other), add_pooling_layer=False)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight.add_(0.01)
    encoder.save_pretrained(other)
    run = copy_run(trained_run, tmp_path / "run", encoder=str(other))
    with pytest.raises(MmnerError, match="other weights than the encoder its rgcn index was built with"):
        load_run(run, torch.device("cpu"))


def test_runs_that_stored_the_frozen_encoder_still_load_without_it(trained_run, tmp_path):
    _, model = load_run(trained_run, torch.device("cpu"))
    full = {k: v.contiguous() for k, v in model.state_dict(keep_vars=False).items()}
    full.update({f"frozen.{k}": v.clone() + 1.0 for k, v in model.frozen.state_dict().items()})
    run = copy_run(trained_run, tmp_path / "run", encoder=str(tmp_path / "gone"))  # never looked up
    save_file(full, str(run / "model.safetensors"))
    _, legacy = load_run(run, torch.device("cpu"))
    assert torch.equal(legacy.frozen.embeddings.word_embeddings.weight,
                       model.frozen.embeddings.word_embeddings.weight + 1.0)


# -- the gate, parameters, configuration ----------------------------------------------------------


def test_gate_is_in_unit_interval(tiny_model_params, tiny_corpus, tiny_captions):
    posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, posts).eval()
    model.build_index(posts, visual)
    with torch.no_grad():
        model.gate.weight.mul_(100.0)  # push the gate towards saturation: it must stay within [0, 1]
        out = model(batch_of(model, posts[:6], visual))
    gate = out["gate"]
    assert gate.shape == (6, out["emissions"].shape[1], model.hidden)
    assert gate.min() >= 0.0 and gate.max() <= 1.0 and gate.std() > 0
    no_gate = build(tiny_model_params, posts, gate=False)
    assert not hasattr(no_gate, "gate") and "gate" not in no_gate.eval()(batch_of(no_gate, posts[:2], visual))


def test_training_reads_the_indexed_embeddings_instead_of_recomputing_them(tiny_model_params, tiny_corpus,
                                                                           tiny_captions):
    posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, posts)
    model.build_index(posts, visual)
    batch = batch_of(model, posts[3:9], visual)
    model.train()
    calls = []
    hook = model.frozen.register_forward_hook(lambda *args: calls.append(1))
    read = model.embed(batch)
    assert not calls  # no frozen-encoder pass for training posts
    fresh = model.embed(batch, fresh=True)
    assert calls
    for key in ("text", "image", "image_valid"):
        assert torch.allclose(read[key].float(), fresh[key].float(), atol=1e-5), key
    model.eval()  # valid, test and new posts are always embedded by the encoder
    calls.clear()
    model.embed(batch)
    assert calls
    hook.remove()


@pytest.mark.parametrize("switches", [{}, {"inter": False}, {"intra": False}, {"gate": False}])
def test_every_trainable_parameter_gets_a_gradient_and_the_frozen_encoder_none(switches, tiny_model_params,
                                                                                tiny_corpus, tiny_captions):
    posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, posts, **switches)
    model.build_index(posts, visual)
    model.train()
    assert not model.frozen.training  # no dropout in the embeddings the index is searched with
    model(batch_of(model, posts[:8], visual))["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
    assert all(not p.requires_grad for p in model.frozen.parameters())
    groups = model.parameter_groups()
    assert not {id(p) for p in model.frozen.parameters()} & {id(p) for g in groups.values() for p in g}
    for off, names in (("inter", ["inter_gcn"]), ("intra", ["intra_gcn"]), ("gate", ["gate"])):
        assert hasattr(model, names[0]) == switches.get(off, True)


# -- graph settings: threshold(s), edge weights, depth ---------------------------------------------


def indexed(tiny_model_params, tiny_corpus, tiny_captions, **extra):
    """An untrained tiny model over the tiny training index, with the embeddings of the training posts."""
    posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    model = build(tiny_model_params, posts, **extra).eval()
    model.build_index(posts, visual)
    batch = batch_of(model, posts, visual)
    with torch.no_grad():
        emb = model.embed(batch)
    return model, batch, emb


def with_params(model, **update):
    model.params = model.params.model_copy(update=update)
    return model


def test_a_higher_threshold_gives_fewer_edges(tiny_model_params, tiny_corpus, tiny_captions):
    model, batch, emb = indexed(tiny_model_params, tiny_corpus, tiny_captions, threshold=-1.0)
    graphs = model.relations(emb, batch["index_row"])
    for name, (_, sims, edges, centre) in graphs.items():
        assert torch.equal(edges, torch.isfinite(sims) & centre[:, None].bool()), name  # -1.0: every one of the k
    sims = torch.cat([graphs[g][1][graphs[g][2]] for g in graphs])
    cuts = [-1.0, *torch.quantile(sims, torch.tensor([0.25, 0.5, 0.75])).tolist(), 1.0]
    counts = []
    for cut in cuts:
        graphs = with_params(model, threshold=cut).relations(emb, batch["index_row"])
        for name, (_, sims, edges, _) in graphs.items():
            assert not edges[torch.isfinite(sims) & (sims < cut)].any(), name
        counts.append(sum(int(graphs[g][2].sum()) for g in graphs))
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[2] > counts[-1], counts
    # the graphs themselves: as many centre-neighbour entries in A as edges of positive similarity
    with torch.no_grad():
        out = with_params(model, threshold=cuts[2])(batch)
    for name in ("inter", "intra"):
        adj, edges = out[f"{name}_adjacency"], out[f"{name}_edges"]
        assert int((adj[:, 0, 1:] > 0).sum()) == int(edges.sum()) > 0


def test_each_graph_can_have_its_own_threshold(tiny_model_params, tiny_corpus, tiny_captions):
    model, batch, emb = indexed(tiny_model_params, tiny_corpus, tiny_captions)
    shared = model.relations(emb, batch["index_row"])
    inter_sims = shared["inter"][1][torch.isfinite(shared["inter"][1])]
    high = float(inter_sims.median())
    own = with_params(model, inter_threshold=high).relations(emb, batch["index_row"])
    assert model.params.threshold_of("inter") == high and model.params.threshold_of("intra") == 0.0
    assert torch.equal(own["inter"][2], torch.isfinite(own["inter"][1]) & (own["inter"][1] >= high))
    assert own["inter"][2].sum() < shared["inter"][2].sum()
    assert torch.equal(own["intra"][2], shared["intra"][2])  # the other graph keeps the shared threshold
    with_params(model, inter_threshold=None, intra_threshold=1.0, threshold=-1.0)
    own = model.relations(emb, batch["index_row"])
    assert torch.equal(own["intra"][2], shared["intra"][2] & (shared["intra"][1] >= 1.0))
    assert own["inter"][2].sum() == torch.isfinite(own["inter"][1]).sum()


def test_binary_edge_weights(tiny_model_params, tiny_corpus, tiny_captions):
    # two neighbours of similarity .5 and .25, both edges: A = [[1, 1, 1], [1, 1, 0], [1, 0, 1]]
    adj = star_adjacency(torch.tensor([[0.5, 0.25]]), torch.tensor([[True, True]]), torch.tensor([True]), binary=True)
    a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    d = torch.tensor([3.0, 2.0, 2.0]).rsqrt()
    assert torch.allclose(adj[0], d[:, None] * a * d[None, :], atol=1e-6)
    # in the model: a hand-made index (the tiny encoder's embeddings are all nearly parallel), read by
    # training posts in training mode; the cosine and binary graphs have the same edges, other weights
    posts = read_conll(tiny_corpus["train"])[:4]
    model = build(tiny_model_params, posts, neighbors=2).train()
    vectors = torch.zeros(4, model.hidden)
    vectors[:, :2] = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    model.index.set(vectors, vectors, torch.ones(4, dtype=torch.bool), [fingerprint(p) for p in posts])
    batch = batch_of(model, posts, captions(tiny_captions))
    assert batch["index_row"].tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        cosine = model(batch)
        binary = with_params(model, edge_weights="binary")(batch)
    for name in ("inter", "intra"):
        edges = binary[f"{name}_edges"]
        assert torch.equal(edges, cosine[f"{name}_edges"]) and edges.all()  # every sim here is >= 0.0
        assert torch.equal(binary[f"{name}_adjacency"][:, 0, 1:] > 0, edges)
        assert torch.allclose(binary[f"{name}_adjacency"][0], star_adjacency(
            torch.tensor([[0.8, 0.6]]), edges[:1], torch.tensor([True]), binary=True)[0])  # row 0: rows 3, 1
        assert torch.allclose(cosine[f"{name}_adjacency"][0], star_adjacency(
            torch.tensor([[0.8, 0.6]]), edges[:1], torch.tensor([True]))[0])
        assert not torch.allclose(binary[f"{name}_adjacency"], cosine[f"{name}_adjacency"])


@pytest.mark.parametrize("depth", [1, 3])
def test_gcn_layers_gives_that_many_graph_convolutions(depth, tiny_model_params, tiny_corpus, tiny_captions):
    model, batch, _ = indexed(tiny_model_params, tiny_corpus, tiny_captions, gcn_layers=depth)
    calls = {"inter": 0, "intra": 0}
    for name in calls:
        gcn = getattr(model, f"{name}_gcn")
        assert len(gcn.layers) == depth
        for layer in gcn.layers:
            layer.register_forward_hook(lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
    with torch.no_grad():
        model(batch)
    assert calls == {"inter": depth, "intra": depth}  # one pass through each layer per batch


@pytest.mark.parametrize(("override", "message"), [
    ("model.threshold=1.5", "config key 'model.threshold': Input should be less than or equal to 1"),
    ("model.intra_threshold=-2", "config key 'model.intra_threshold': Input should be greater than or equal to -1"),
    ("model.gcn_layers=0", "config key 'model.gcn_layers': Input should be greater than or equal to 1"),
    ("model.gcn_layers=two", "config key 'model.gcn_layers': Input should be a valid integer"),
    ("model.edge_weights=jaccard", "config key 'model.edge_weights': Input should be 'cosine' or 'binary'"),
    ("model.intra_threshold=0.3", "config key 'model.intra_threshold': set, but model.intra: false builds no "
                                  "intra-modal graph"),
])
def test_bad_graph_settings_are_one_line_errors(override, message):
    path = next(p for p in CONFIGS if p.stem == "rgcn-inter-only-minilm-twitter2017")
    with pytest.raises(MmnerError) as err:
        load_config(path, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_run_from_before_the_graph_keys_loads_with_the_settings_it_was_trained_with(trained_run, tiny_corpus,
                                                                                    tiny_captions, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("threshold", "inter_threshold", "intra_threshold", "edge_weights", "gcn_layers"):
        del config["model"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _, old = load_run(run, torch.device("cpu"))
    _, new = load_run(trained_run, torch.device("cpu"))
    assert old.params == new.params and old.params.threshold_of("inter") == 0.0
    assert (old.params.edge_weights, old.params.gcn_layers) == ("cosine", 2)
    test = read_conll(tiny_corpus["test"])
    visual = captions(tiny_captions)
    assert predict_tags(old, test, progress=False, visual=visual) == predict_tags(new, test, progress=False, visual=visual)


def test_both_graphs_off_is_an_error(tiny_model_params, tiny_corpus):
    with pytest.raises(MmnerError, match="model.inter, model.intra"):
        build(tiny_model_params, read_conll(tiny_corpus["train"])[:2], inter=False, intra=False)


def test_grid_regions_use_the_paired_texts_for_text_to_image(tiny_model_params, tiny_corpus):
    posts = read_conll(tiny_corpus["train"])[:6]
    model = build(tiny_model_params, posts, visual_dim=6).eval()
    regions = [VisualInput(regions=torch.randn(4, 6)) for _ in posts[:5]] + [VisualInput(problem="no image")]

    class Grid:
        source, detail = "grid", "test grid"

        def get_many(self, chunk):
            return [regions[posts.index(p)] for p in chunk]

    model.build_index(posts, Grid())  # type: ignore[arg-type]
    assert model.index.images.shape == (6, 6) and model.index.valid.tolist() == [True] * 5 + [False]
    batch = model.collate([model.featurize(p, v) for p, v in zip(posts, regions)])
    with torch.no_grad():
        out = model(batch)
    assert out["inter_edges"].any() and not out["intra_edges"][5].any()


def test_every_ablation_has_configs():
    assert {p.stem for p in CONFIGS} == {f"{v}-{enc}-{ds}" for v in ABLATIONS for enc in ("minilm", "mpnet")
                                         for ds in ("twitter2015", "twitter2017")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_trains_one_step_and_predicts(path, tiny_model_params, tiny_corpus, tiny_captions):
    config = load_config(path)
    variant = path.stem.rsplit("-", 2)[0]
    params = config.model_params()
    for key, value in {"inter": True, "intra": True, "gate": True, **ABLATIONS[variant]}.items():
        assert getattr(params, key) == value, key
    assert params.neighbors == 5
    # the graph settings every run so far was trained with, written out in every config
    text = path.read_text()
    for key in ("neighbors", "threshold", "edge_weights", "gcn_layers"):
        assert f"\n  {key}: " in text, key
    assert (params.threshold, params.edge_weights, params.gcn_layers) == (0.0, "cosine", 2)
    assert params.inter_threshold is None and params.intra_threshold is None
    assert (config.visual.source, config.visual.caption, config.visual.missing) == ("caption", "blip2", "mask")
    assert params.index_cache  # runs share index builds; not the tests (nothing written to $HOME)
    params = params.model_copy(update={"encoder": tiny_model_params["rgcn"]["encoder"], "max_length": 24,
                                       "index_cache": False})
    visual = captions(tiny_captions)
    cls = registry.get("rgcn")
    params = cls.resolve_params(params, visual)
    train_posts = read_conll(tiny_corpus["train"])[:8]
    torch.manual_seed(0)
    model = cls.create(params, LabelVocab.from_posts(train_posts), train_posts)
    model.build_index(train_posts, visual)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = model.classifier.weight.detach().clone()
    loss = model(batch_of(model, train_posts, visual))["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.classifier.weight)
    test = read_conll(tiny_corpus["test"])
    tags = predict_tags(model, test, progress=False, visual=visual)
    assert [len(t) for t in tags] == [len(p.tokens) for p in test]


def test_the_shared_index_cache_builds_once_per_dataset_and_visual_input(tiny_model_params, tiny_corpus,
                                                                          tiny_captions, tmp_path, monkeypatch):
    monkeypatch.setenv("MMNER_CACHE", str(tmp_path))
    posts = read_conll(tiny_corpus["train"])
    visual = captions(tiny_captions)
    first = build(tiny_model_params, posts, index_cache=True)
    first.build_index(posts, visual)
    assert first.index.meta["cache_hit"] is False
    assert len(list((tmp_path / "rgcn-index").iterdir())) == 1
    # another seed / ablation of the same data: loaded, not rebuilt, and identical
    second = build(tiny_model_params, posts, index_cache=True, intra=False, neighbors=2)
    second.build_index(posts, visual)
    assert second.index.meta["cache_hit"] is True
    assert second.index.meta["build_seconds"] == first.index.meta["build_seconds"]
    assert torch.equal(second.index.images, first.index.images) and second.index.rows == first.index.rows
    # other visual inputs (one caption changed) or other posts: another index
    changed = dict(json.loads(tiny_captions.read_text()), **{"0": "a dog on a beach"})
    (tmp_path / "captions.json").write_text(json.dumps(changed))
    third = build(tiny_model_params, posts, index_cache=True)
    third.build_index(posts, VisualInputs("caption", "mask", captions=CaptionSource.from_file(tmp_path / "captions.json")))
    third.build_index(posts[:10], visual)
    assert third.index.meta["cache_hit"] is False and len(third.index) == 10
    assert len(list((tmp_path / "rgcn-index").iterdir())) == 3


def test_an_interrupted_run_resumes_with_the_pretrained_frozen_encoder(trained_run, tiny_model_params, tiny_visual,
                                                                       tiny_corpus, tiny_encoder, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    (run / "model.safetensors").unlink()  # stopped before the end: checkpoints only
    config = load_config(None, base=tiny_config(tiny_model_params["rgcn"], tiny_corpus, tiny_visual["caption"],
                                                max_epochs=2))
    train(config, run, resume=True, quiet=True)
    _, model = load_run(run, torch.device("cpu"))
    pretrained = BertModel.from_pretrained(str(tiny_encoder), add_pooling_layer=False)
    assert torch.equal(model.frozen.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight)
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["epochs"] == 2 and test["resumed"] is True
