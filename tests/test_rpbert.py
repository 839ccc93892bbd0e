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


def test_trc_visual_settings(tiny_model_params, tiny_visual, tiny_corpus, trc_files, tmp_path):
    """The TRC tweets are seen without images unless their captions / images are named; naming one
    without asking for it, or asking without naming it, is a one-line error."""
    from mmner.train.run import train

    cls = registry.get("rpbert")
    captions = VisualInputs("caption", "mask", captions=CaptionSource({}, "t", "t"))
    model = {**tiny_model_params["rpbert"], "trc": {"enabled": True, "visual": "captions"}}
    config = load_config(None, base=tiny_config(model, tiny_corpus, tiny_visual["caption"]))
    with pytest.raises(MmnerError, match=r"model\.trc\.captions: .*model\.trc\.visual: masked"):
        train(config, tmp_path / "run", quiet=True)
    params = cls.Params(**{**model, "trc": {"enabled": True, "visual": "captions",
                                            "captions": str(tmp_path / "nowhere.json")}})
    with pytest.raises(MmnerError, match=r"model\.trc\.captions: .*nowhere.json is not a captions file"):
        cls.resolve_params(params, captions)
    params = cls.Params(**{**model, "trc": {"enabled": True, "captions": trc_files["captions"]}})
    with pytest.raises(MmnerError, match=r"model\.trc\.captions: set model\.trc\.visual: captions"):
        cls.resolve_params(params, captions)
    # the default: masked; every TRC tweet comes without visual input, and the task still trains
    trc = {"enabled": True, "data": trc_files["data"], "train_rows": 16, "batch_size": 8}
    config = load_config(None, base=tiny_config({**tiny_model_params["rpbert"], "trc": trc}, tiny_corpus,
                                                tiny_visual["caption"]))
    rpbert = build(tiny_model_params, trc=trc)
    (task,) = rpbert.auxiliary_tasks(config)
    items = [task.dataset[i] for i in range(len(task.dataset))]
    assert len(items) == 16 and all(item["caption_ids"] is None and item["regions"] is None for item in items)
    batch = task.collate(items[:8])
    loss = task.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and rpbert.relation.weight.grad is not None


def test_trc_learns_above_chance(tiny_model_params, tiny_visual, tiny_corpus, trc_files):
    """The relation classifier, trained on its own through the TRC task, separates a tiny synthetic
    relation corpus (image adds <=> related caption) on held-out tweets."""
    from torch.utils.data import DataLoader

    model_section = {**tiny_model_params["rpbert"],
                     "trc": {"enabled": True, "data": trc_files["data"], "visual": "captions",
                             "captions": trc_files["captions"], "train_rows": 32, "batch_size": 8}}
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
    trc = {"enabled": True, "data": trc_files["data"], "visual": "captions", "captions": trc_files["captions"],
           "train_rows": 10, "batch_size": 4}
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
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions" / "relation_task.jsonl").read_text().splitlines()]
    assert scored["rows"] == len(lines) == len(held_out) == 38 and scored["labels"] == "trc"
    assert [x["label"] for x in lines] == held_out
    assert [x["id"] for x in lines] == [f"trc-{1010 + i}" for i in range(38)]  # post order, not length order
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


# --------------------------------------------------------------------------------------------------
# Weak relation labels, the relation score, "w/o Rp", sub-token pooling


@pytest.mark.parametrize("tokens, tags, caption, label", [
    (["Starbucks", "opens", "today"], ["B-ORG", "O", "O"], "a starbucks sign on a brick wall", 1),  # entity word
    (["#NBAFinals", "tonight"], ["B-OTHER", "O"], "a poster reading nbafinals", 1),  # '#' dropped
    (["Kevin", "Love", "dunks"], ["B-PER", "I-PER", "O"], "a basketball player in a white jersey", 1),  # PER cue
    (["Kevin", "Love", "dunks"], ["B-PER", "I-PER", "O"], "a bowl of soup on a table", 0),  # names nothing
    (["Cleveland", "wins"], ["B-ORG", "O"], "a man standing on the ground", 0),  # a PER cue, no ORG one
    (["Cleveland", "wins"], ["B-ORG", "O"], "the team logo on a jersey", 1),  # ORG cue
    (["good", "morning", "all"], ["O", "O", "O"], "a man holding a starbucks cup", 0),  # no entity
    (["Starbucks", "opens"], ["B-ORG", "O"], None, 0),  # no caption (blank / missing image)
    (["The", "Rock", "!"], ["B-PER", "I-PER", "O"], "the sea at dawn", 0),  # "the" is a stop word; no PER cue
    (["The", "Rock", "!"], ["B-PER", "I-PER", "O"], "the sea and a rock", 1),  # "rock" is named
    (["visit", "Rome"], ["O", "I-LOC"], "an old city street", 1),  # a stray I- opens an entity (conlleval)
])
def test_weak_relation_rule(tokens, tags, caption, label):
    from mmner.models.relation_labels import weak_relation

    assert weak_relation(tokens, tags, caption) == label


def test_weak_label_task_uses_training_posts_and_their_captions(tiny_model_params, tiny_visual, tiny_corpus):
    """`labels: weak`: Task#1's posts are the MNER training posts with the run's visual inputs, each
    labelled by the rule from its own gold tags and caption."""
    from mmner.data import datadir
    from mmner.inference import visual_inputs
    from mmner.models.relation_labels import weak_relation

    trc = {"enabled": True, "labels": "weak", "batch_size": 4}
    config = load_config(None, base=tiny_config({**tiny_model_params["rpbert"], "trc": trc}, tiny_corpus,
                                                tiny_visual["caption"]))
    posts = datadir.load_dataset(str(tiny_corpus["train"]))
    visual = visual_inputs(config, str(tiny_corpus["train"]))
    model = build(tiny_model_params, trc=trc)
    (task,) = model.auxiliary_tasks(config, posts=posts, visual=visual)
    assert len(task.dataset) == len(posts)
    captions = CaptionSource.from_setting(config.visual.caption, config.data.train, config.data.dir)
    expected = [weak_relation(p.tokens, p.tags, captions.resolve(p).text) for p in posts]
    assert 0 < sum(expected) < len(expected)  # both labels occur in the tiny corpus
    batch = task.collate([task.dataset[i] for i in range(len(posts))])
    assert batch["relation"].tolist() == expected
    with pytest.raises(MmnerError, match="weak labels the MNER posts"):
        model.auxiliary_tasks(config)


def test_weak_labels_move_r_where_they_say(tiny_model_params):
    """Trained on weak labels alone, r rises above 0.5 for held-out posts whose caption names their
    entity's kind and falls below it for posts whose caption names nothing of the kind."""
    from mmner.models.relation_labels import weak_relation

    model = build(tiny_model_params, dropout=0.0)
    names = ["Obama", "Merkel", "Adele", "Messi", "Drake", "Beyonce", "Kanye", "Rihanna"]
    people, nothing = ["a man in a suit", "two people smiling", "a woman singing"], ["a bowl of soup", "a red car"]
    rng = random.Random(1)

    def example(i):
        post = Post(f"w{i}", [rng.choice(names), "speaks", "today"], ["B-PER", "O", "O"])
        caption = rng.choice(people if i % 2 else nothing)
        return post, VisualInput(caption=caption), weak_relation(post.tokens, post.tags, caption)

    train = [example(i) for i in range(48)]
    assert [y for _, _, y in train] == [i % 2 for i in range(48)]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(8):
        rng.shuffle(train)
        for k in range(0, len(train), 8):
            chunk = train[k:k + 8]
            batch = model.collate([model.featurize(p, v) for p, v, _ in chunk])
            batch["relation"] = torch.tensor([y for _, _, y in chunk])
            optimizer.zero_grad()
            model.relation_loss(batch).backward()
            optimizer.step()
    held_out = [example(100 + i) for i in range(16)]
    model.eval()
    with torch.no_grad():
        batch = model.collate([model.featurize(p, v) for p, v, _ in held_out])
        r = model.score_relation(model.relation_pass(batch)[0])
    labels = torch.tensor([y for _, _, y in held_out], dtype=torch.bool)
    assert r[labels].min() > 0.5 > r[~labels].max(), r


def test_relation_fc_relu_and_gumbel_score_is_the_gate(tiny_model_params):
    model = build(tiny_model_params, gate="gumbel", tau_end=0.2, relation_relu=True).eval()
    model.set_training_progress(1.0)
    batch = batch_of(model, WITH_IMAGE)
    with torch.no_grad():
        model.relation.bias.copy_(torch.tensor([-5.0, 2.0]))
        logits, _ = model.relation_pass(batch)
        assert (logits >= 0).all() and (logits[:, 0] == 0).all()  # ReLU after the linear layer
        out = model(batch)
        predicted = model.predict(batch)["relation_score"]
    assert predicted == pytest.approx(out["relation_gate"].tolist(), abs=1e-6)  # what the gate used
    pi = torch.softmax(logits, -1)[:, 1]
    assert not torch.allclose(out["relation_gate"], pi, atol=1e-3)  # tau 0.2 sharpens pi_1: not vacuous
    no_relu = build(tiny_model_params).eval()  # the default: no ReLU (see RpBertParams.relation_relu)
    with torch.no_grad():
        no_relu.relation.bias.copy_(torch.tensor([-5.0, 2.0]))
        assert (no_relu.relation_pass(batch_of(no_relu, WITH_IMAGE))[0][:, 0] < 0).all()


def test_without_rp_the_gate_is_open_and_r_is_not_reported(tiny_model_params):
    """`propagate: false` ("w/o Rp"): the visual tokens enter ungated (the word states are those of
    the ungated single-stream pass, whatever the relation classifier says) and, with no Task#1 to train
    the classifier, no relation score is reported; with Task#1 it is."""
    from mmner.models.visualbert_crf import VisualBertCRF

    model = build(tiny_model_params, propagate=False).eval()
    batch = batch_of(model, WITH_IMAGE)
    with torch.no_grad():
        states, _, r = model.encode(batch)
        assert torch.equal(r, torch.ones(2))
        assert torch.allclose(states, VisualBertCRF.word_states(model, batch), atol=1e-5)
        before = model(batch)["emissions"]
        model.relation.weight.mul_(-3.0)
        assert torch.allclose(model(batch)["emissions"], before, atol=1e-6)
        assert model.predict(batch)["relation_score"] == [None, None]
        gated = build(tiny_model_params).eval()
        gated.load_state_dict(model.state_dict())
        gated.relation.bias.copy_(torch.tensor([8.0, -8.0]))  # r near 0: the image is gated out
        assert not torch.allclose(gated(batch)["emissions"], before, atol=1e-4)  # the gate does act when on
    with_trc = build(tiny_model_params, propagate=False, trc={"enabled": True}).eval()
    with torch.no_grad():
        assert all(s is not None for s in with_trc.predict(batch_of(with_trc, WITH_IMAGE))["relation_score"])


def test_pool_words_means_sub_tokens():
    from mmner.models.blocks import pool_words

    flat = torch.arange(24, dtype=torch.float).reshape(8, 3)
    gather = torch.tensor([[1, 2, 5], [6, 0, 0]])
    pieces = torch.tensor([[1, 3, 2], [2, 0, 0]])
    out = pool_words(flat, gather, pieces)
    assert torch.equal(pool_words(flat, gather), flat[gather])
    assert torch.allclose(out[0, 1], flat[2:5].mean(0)) and torch.allclose(out[0, 2], flat[5:7].mean(0))
    assert torch.allclose(out[1, 0], flat[6:8].mean(0)) and torch.equal(out[1, 1], torch.zeros(3))


def test_bilstm_head_averages_sub_tokens(tiny_model_params, tiny_vectors):
    """Head bilstm-crf pools each word's sub-tokens by their mean (Sun et al.); head crf keeps the
    first sub-token; either can be set."""
    cls = registry.get("rpbert")
    extra = {"vectors": str(tiny_vectors), "lstm_hidden": 16, "char_filters": 8}
    assert cls.Params(**{**tiny_model_params["rpbert"], "head": "bilstm-crf", **extra}).word_pooling == "mean"
    assert cls.Params(**tiny_model_params["rpbert"]).word_pooling == "first"
    model = build(tiny_model_params, head="bilstm-crf", **extra).eval()
    first = build(tiny_model_params, head="bilstm-crf", word_pooling="first", **extra).eval()
    first.load_state_dict(model.state_dict())
    batch = batch_of(model, WITH_IMAGE)
    assert "word_pieces" in batch and int(batch["word_pieces"].max()) > 1  # some word has several sub-tokens
    with torch.no_grad():
        mean_states, _, _ = model.encode(batch)
        first_states, _, _ = first.encode(batch_of(first, WITH_IMAGE))
    single = batch["word_pieces"] == 1
    assert torch.allclose(mean_states[single], first_states[single], atol=1e-5)
    multi = batch["word_pieces"] > 1
    assert not torch.allclose(mean_states[multi], first_states[multi], atol=1e-4)
