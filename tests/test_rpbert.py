"""RpBERT: relation propagation (r = 0 drops the image, r = 1 keeps it), the gates, the Gumbel
temperature schedule, Algorithm 1's TRC / MNER alternation in the training loop, and TRC learning.

The shared harness (test_models.py) trains, saves, loads and predicts with `rpbert`; here, tiny
untrained models (one torch thread, conftest) and two tiny training runs.
"""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch

from conftest import tiny_config
from mmner.config import load_config
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.tagging.vocab import LabelVocab
from mmner.vision.captions import CaptionSource
from mmner.vision.inputs import VisualInput, VisualInputs

POSTS = [
    Post("a", ["meet", "Obama", "at", "NASA", "!"], ["O", "B-PER", "O", "B-ORG", "O"]),
    Post("b", ["the", "Olympics", "game", "in", "New", "Rome"], ["O", "B-OTHER", "O", "O", "B-LOC", "I-LOC"]),
]
LABELS = LabelVocab.from_posts(POSTS, "bio")
WITH_IMAGE = [VisualInput(caption="a man with a phone"), VisualInput(caption="the stadium at night")]
NO_IMAGE = [VisualInput(problem="no image")] * 2


def build(tiny_model_params, **extra):
    cls = registry.get("rpbert")
    torch.manual_seed(0)
    params = cls.Params(**{**tiny_model_params["rpbert"], **extra})
    return cls.create(params, LABELS, POSTS)


def batch_of(model, visual):
    return model.collate([model.featurize(p, v) for p, v in zip(POSTS, visual)])


def force_gate(model, value: float):
    model.relation_gate = lambda logits: torch.full((logits.shape[0],), value)


@pytest.mark.parametrize("head", ["crf", "bilstm-crf"])
def test_gate_zero_is_masked_regions_and_one_is_ungated(head, tiny_model_params, tiny_vectors):
    """`output` propagation: r = 0 gives exactly the model with the posts' regions masked, r = 1 the
    ungated multimodal encoding (visualbert-crf's word states)."""
    from mmner.models.visualbert_crf import VisualBertCRF

    extra = {"vectors": str(tiny_vectors), "lstm_hidden": 16, "char_filters": 8} if head == "bilstm-crf" else {}
    model = build(tiny_model_params, propagation="output", head=head, **extra).eval()
    batch, masked = batch_of(model, WITH_IMAGE), batch_of(model, NO_IMAGE)
    with torch.no_grad():
        force_gate(model, 0.0)
        gated_off = model(batch)["emissions"]
        reference = model(masked)["emissions"]
        assert torch.allclose(gated_off, reference, atol=1e-5), (gated_off - reference).abs().max()
        states, _, _ = model.encode(batch)
        assert torch.allclose(states, VisualBertCRF.word_states(model, masked), atol=1e-5)
        force_gate(model, 1.0)
        states, _, _ = model.encode(batch)
        assert torch.allclose(states, VisualBertCRF.word_states(model, batch), atol=1e-5)
        # not vacuous: the captions do change the words' states
        assert not torch.allclose(states, VisualBertCRF.word_states(model, masked), atol=1e-4)


def test_input_propagation_scales_the_visual_features(tiny_model_params):
    """`input` propagation (the paper's R ⊙ V): r = 0 leaves no trace of the image content (two
    captions of the same length give the same output), r = 1 is the ungated input."""
    from mmner.models.visualbert_crf import VisualBertCRF

    model = build(tiny_model_params, propagation="input").eval()
    batch = batch_of(model, WITH_IMAGE)
    other = batch_of(model, [VisualInput(caption="a cat with a phone"), VisualInput(caption="the stadium at light")])
    with torch.no_grad():
        force_gate(model, 0.0)
        assert torch.allclose(model(batch)["emissions"][:, :5], model(other)["emissions"][:, :5], atol=1e-5)
        force_gate(model, 1.0)
        states, _, _ = model.encode(batch)
        assert torch.allclose(states, VisualBertCRF.word_states(model, batch), atol=1e-5)
        force_gate(model, 0.5)
        half, _, _ = model.encode(batch)
        assert not torch.allclose(half, states, atol=1e-4)


@pytest.mark.parametrize("propagation", ["input", "output"])
def test_hard_gate_is_binary_with_straight_through_gradient(propagation, tiny_model_params):
    model = build(tiny_model_params, gate="hard", propagation=propagation).train()
    model.dropout.p = 0.0
    batch = batch_of(model, WITH_IMAGE)
    out = model(batch)
    r = out["relation_gate"]
    assert set(r.tolist()) <= {0.0, 1.0}
    pi = torch.softmax(out["relation_logits"], -1)[:, 1]
    assert torch.equal(r.detach(), (pi > 0.5).float())
    out["loss"].backward()
    grad = model.relation.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the tagging loss reaches the relation classifier


def test_soft_gate_is_the_relation_probability(tiny_model_params):
    model = build(tiny_model_params, gate="soft").eval()
    with torch.no_grad():
        out = model(batch_of(model, WITH_IMAGE))
    assert torch.allclose(out["relation_gate"], torch.softmax(out["relation_logits"], -1)[:, 1])


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_gumbel_temperature_schedule(schedule, tiny_model_params):
    model = build(tiny_model_params, gate="gumbel", tau_start=1.0, tau_end=0.1, tau_schedule=schedule)
    expected = {"exponential": lambda p: 0.1**p, "linear": lambda p: 1.0 - 0.9 * p}[schedule]
    for p in (0.0, 0.25, 0.5, 1.0):
        model.set_training_progress(p)
        assert math.isclose(model.tau, expected(p), rel_tol=1e-6)
    model.set_training_progress(2.0)
    assert math.isclose(model.tau, 0.1, rel_tol=1e-6)
    # training samples (noise), inference is deterministic at the final temperature
    batch = batch_of(model, WITH_IMAGE)
    model.eval()
    with torch.no_grad():
        logits, _ = model.relation_pass(batch)
        r = model.relation_gate(logits)
        assert torch.allclose(r, torch.softmax(logits / 0.1, -1)[:, 1])
        assert torch.equal(model.relation_gate(logits), r)
    model.train()
    samples = torch.stack([model.relation_gate(logits) for _ in range(20)])
    assert ((samples >= 0) & (samples <= 1)).all() and samples.std(0).max() > 0


def test_predict_gives_relation_score(tiny_model_params):
    from mmner.inference import predict_tags

    model = build(tiny_model_params)
    captions = VisualInputs("caption", "mask", captions=CaptionSource({"1": "a man with a phone"}, "t", "t"))
    posts = [Post("a", ["meet", "Obama"], image_id="1"), Post("b", ["visit", "Rome"], image_id="2")]
    extras: list[dict] = []
    tags = predict_tags(model, posts, progress=False, extras=extras, visual=captions)
    assert [len(t) for t in tags] == [2, 2]
    assert 0.0 <= extras[0]["relation_score"] <= 1.0
    assert extras[1]["relation_score"] is None  # no image: no relation to score


# --------------------------------------------------------------------------------------------------
# TRC


RELATED, UNRELATED = "people in the game", "a city street today"


def write_trc(path, n: int, seed: int) -> tuple[dict[str, str], list[int]]:
    """A TRC csv of `n` tweets and their captions: the image adds to the text exactly when its
    caption is the `RELATED` one."""
    rng = random.Random(seed)
    captions, labels = {}, []
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(["tweet_id", "user_id", "tweet", "text_is_represented", "image_adds"])
        for i in range(n):
            adds = i % 2
            tweet_id = str(1000 + i)
            text = " ".join(rng.choice(["meet", "visit", "the", "today", "game", "Rome", "Obama"]) for _ in range(4))
            writer.writerow([tweet_id, "7", text, "0", str(adds)])
            captions[tweet_id] = RELATED if adds else UNRELATED
            labels.append(adds)
    return captions, labels


@pytest.fixture()
def trc_files(tmp_path):
    captions, labels = write_trc(tmp_path / "trc.csv", 48, 0)
    (tmp_path / "trc_captions.json").write_text(json.dumps(captions))
    return {"data": str(tmp_path / "trc.csv"), "captions": str(tmp_path / "trc_captions.json"), "labels": labels}


def test_trc_needs_images_or_captions(tiny_model_params, tiny_visual, tiny_corpus, tmp_path):
    from mmner.train.run import train

    model = {**tiny_model_params["rpbert"], "trc": {"enabled": True}}
    config = load_config(None, base=tiny_config(model, tiny_corpus, tiny_visual["caption"]))
    with pytest.raises(MmnerError, match=r"model\.trc\.captions.*model\.trc\.enabled: false"):
        train(config, tmp_path / "run", quiet=True)
    cls = registry.get("rpbert")
    captions = VisualInputs("caption", "mask", captions=CaptionSource({}, "t", "t"))
    params = cls.Params(**{**model, "trc": {"enabled": True, "captions": str(tmp_path / "nowhere.json")}})
    with pytest.raises(MmnerError, match=r"model\.trc\.captions: .*nowhere.json is not a captions file"):
        cls.resolve_params(params, captions)


def test_trc_learns_above_chance(tiny_model_params, tiny_visual, tiny_corpus, trc_files):
    """The relation classifier, trained on its own through the TRC task, separates a tiny synthetic
    relation corpus (image adds <=> related caption) on held-out tweets."""
    from torch.utils.data import DataLoader

    model_section = {**tiny_model_params["rpbert"],
                     "trc": {"enabled": True, "data": trc_files["data"], "captions": trc_files["captions"],
                             "train_rows": 32, "batch_size": 8}}
    config = load_config(None, base=tiny_config(model_section, tiny_corpus, tiny_visual["caption"]))
    model = build(tiny_model_params, dropout=0.0, trc=model_section["trc"])
    (task,) = model.auxiliary_tasks(config)
    assert task.name == "trc" and len(task.dataset) == 32
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(6):
        for batch in DataLoader(task.dataset, batch_size=8, shuffle=True, collate_fn=task.collate):
            optimizer.zero_grad()
            task.loss(batch).backward()
            optimizer.step()
    held_out = [Post(f"t{i}", ["meet", "the", "game"], image_id=str(i)) for i in range(16)]
    visual = [VisualInput(caption=RELATED if i % 2 else UNRELATED) for i in range(16)]
    model.eval()
    with torch.no_grad():
        batch = model.collate([model.featurize(p, v) for p, v in zip(held_out, visual)])
        logits, _ = model.relation_pass(batch)
    accuracy = (logits.argmax(-1) == torch.tensor([i % 2 for i in range(16)])).float().mean()
    assert accuracy >= 0.8, accuracy


def test_training_alternates_trc_and_mner_epochs(tiny_model_params, tiny_visual, tiny_corpus, trc_files,
                                                 tmp_path, monkeypatch):
    """Algorithm 1: every epoch optimises the TRC loss on all TRC batches, then the MNER loss on all
    MNER batches; the Gumbel temperature follows its schedule over the steps of both."""
    from mmner.models.rpbert import RpBert
    from mmner.train.run import train

    steps: list[tuple[str, float]] = []
    relation_loss, forward = RpBert.relation_loss, RpBert.forward

    def record_trc(self, batch):
        steps.append(("trc", self.tau))
        return relation_loss(self, batch)

    def record_mner(self, batch):
        if self.training and batch.get("tags") is not None:
            steps.append(("mner", self.tau))
        return forward(self, batch)

    monkeypatch.setattr(RpBert, "relation_loss", record_trc)
    monkeypatch.setattr(RpBert, "forward", record_mner)
    trc = {"enabled": True, "data": trc_files["data"], "captions": trc_files["captions"], "train_rows": 10,
           "batch_size": 4}
    model = {**tiny_model_params["rpbert"], "gate": "gumbel", "tau_schedule": "linear", "trc": trc}
    config = load_config(None, base=tiny_config(model, tiny_corpus, tiny_visual["caption"], max_epochs=2, patience=5,
                                                log_every_n_steps=1))
    metrics = train(config, tmp_path / "run", quiet=True)

    epoch = ["trc"] * 3 + ["mner"] * 3  # 10 TRC tweets in batches of 4, 24 posts in batches of 8
    assert [task for task, _ in steps] == epoch * 2
    total = len(steps)
    assert [tau for _, tau in steps] == pytest.approx([1.0 - 0.9 * i / total for i in range(total)])
    assert metrics["test"]["epochs"] == 2
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0]
    assert "train_loss_trc" in log and "train_loss" in log

    # Task#1 is scored on the TRC rows after train_rows (the paper's test split), one line per tweet
    scored = metrics["test"]["trc"]
    held_out = trc_files["labels"][10:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions" / "trc_test.relation.jsonl").read_text().splitlines()]
    assert scored["rows"] == len(lines) == len(held_out) == 38
    assert [x["image_adds"] for x in lines] == held_out
    c = scored["confusion"]
    assert c["tp"] + c["fn"] == sum(held_out) and c["tn"] + c["fp"] == len(held_out) - sum(held_out)
    assert c["tp"] + c["fp"] == sum(x["relation_score"] > 0.5 for x in lines)
    assert scored["accuracy"] == pytest.approx(100 * (c["tp"] + c["tn"]) / 38, abs=0.01)


def test_bilstm_head_train_save_load_predict(tiny_model_params, tiny_visual, tiny_corpus, tiny_vectors, tmp_path):
    """The biLSTM-CRF head (word vectors + char CNN + RpBERT states) with the `output` propagation and
    the hard gate: the reloaded run reproduces its predictions and reports relation scores."""
    from mmner.data.readers import read_conll
    from mmner.inference import load_run, predict_tags, visual_inputs
    from mmner.train.run import train

    model = {**tiny_model_params["rpbert"], "head": "bilstm-crf", "vectors": str(tiny_vectors), "lstm_hidden": 16,
             "char_filters": 8, "gate": "hard", "propagation": "output"}
    config = load_config(None, base=tiny_config(model, tiny_corpus, tiny_visual["caption"], max_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "vocab.json").is_file()
    config, loaded = load_run(tmp_path / "run")
    posts = read_conll(tiny_corpus["test"])
    extras: list[dict] = []
    tags = predict_tags(loaded, posts, progress=False, extras=extras, visual=visual_inputs(config, str(tiny_corpus["test"])))
    assert tags == [p.tags for p in read_conll(tmp_path / "run" / "predictions" / "test.conll")]
    assert all(x["relation_score"] is None or 0.0 <= x["relation_score"] <= 1.0 for x in extras)


def test_task_batches_come_task_by_task_and_even_across_replicas():
    """The training loader's batch order (Algorithm 1): each task's batches in turn, one task per batch;
    under a distributed sampler every replica gets the same number of batches of each task."""
    from torch.utils.data import DistributedSampler, SequentialSampler

    from mmner.train.module import TaskBatchSampler, TaskDataset

    data = TaskDataset([list(range(10)), list(range(23))])
    plain = TaskBatchSampler(SequentialSampler(data), 8, sizes=[10, 23], batch_sizes=[4, 8])
    batches = list(plain)
    assert len(batches) == len(plain) == 3 + 3
    assert [data.locate(b[0])[0] for b in batches] == [0, 0, 0, 1, 1, 1]
    assert all(len({data.locate(i)[0] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(33))
    shapes = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3)
        batches = list(TaskBatchSampler(sampler, 8, sizes=[10, 23], batch_sizes=[4, 8]))
        shapes.append([(data.locate(b[0])[0], len(b)) for b in batches])
    assert shapes[0] == shapes[1] == [(0, 4), (0, 1), (1, 8), (1, 4)]
