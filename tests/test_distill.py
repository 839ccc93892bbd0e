"""`distill`: training on a teacher's CRF marginals (mmner.train.distill): the file format, its alignment to
the training posts, the loss, and a run that learns from it."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from conftest import make_posts, tiny_config, write_corpus
from mmner.data import datadir
from mmner.errors import MmnerError
from mmner.tagging.vocab import LabelVocab
from mmner.train.distill import Teacher, distill_loss, read_marginals, write_marginals

LABELS = LabelVocab(["LOC", "ORG", "OTHER", "PER"])


def uniform(post, labels=LABELS) -> torch.Tensor:
    return torch.full((len(post.tokens), len(labels)), 1.0 / len(labels))


def test_marginals_files_round_trip_and_align_to_training_posts(tmp_path, tiny_corpus):
    """Columns reordered to the model's labels; a file of an extra dataset matched to the prefixed ids that
    training gives those posts; posts outside training skipped; the record says what was matched."""
    train = datadir.load_dataset(str(tiny_corpus["train"]))
    extra_path = write_corpus(tmp_path / "extra.txt", make_posts(4, 9))
    extra = datadir.load_dataset(str(extra_path))
    posts = train[:10] + [p.__class__(**{**p.__dict__, "id": f"{extra_path}/{p.id}"}) for p in extra]
    reversed_labels = LABELS.tags[::-1]
    first = torch.zeros(len(train[0].tokens), len(LABELS))
    first[:, LABELS.index["B-PER"]] = 1.0  # the first post: every word B-PER
    rows = [(train[0].id, first[:, [LABELS.index[t] for t in reversed_labels]])]
    rows += [(p.id, uniform(p)) for p in train[1:]]  # train[10:] are not training posts here
    main = tmp_path / "train.marginals.jsonl.gz"
    write_marginals(main, str(tiny_corpus["train"]), reversed_labels, rows, members={"a": "abc"})
    side = tmp_path / "extra.marginals.jsonl.gz"
    write_marginals(side, str(extra_path), LABELS.tags, [(p.id, uniform(p)) for p in extra[:3]])

    header, items = read_marginals(main)
    assert header["data"] == str(tiny_corpus["train"]) and header["labels"] == reversed_labels
    assert len(list(items)) == len(train)
    teacher = Teacher.from_config([str(main), str(side)], 0.5, str(tiny_corpus["train"]), [str(extra_path)],
                                  posts, LABELS)
    assert teacher is not None
    assert torch.equal(teacher.rows[0], first)  # back in the model's column order
    assert all(r is not None for r in teacher.rows[:10 + 3]) and teacher.rows[-1] is None
    assert teacher.record["posts_with_targets"] == 13 and teacher.record["train_posts"] == 14
    assert [(f["posts"], f["data"]) for f in teacher.record["targets"]] == [(10, str(tiny_corpus["train"])),
                                                                             (3, str(extra_path))]
    assert teacher.record["targets"][0]["members"] == {"a": "abc"} and len(teacher.record["targets"][0]["sha1"]) == 12
    q, has = teacher.targets([0, 13, 1], width=20)
    assert q.shape == (3, 20, len(LABELS)) and has.tolist() == [True, False, True]
    assert torch.equal(q[0, : len(train[0].tokens)], first) and float(q[0, len(train[0].tokens):].sum()) == 0
    assert Teacher.from_config([], 0.5, "x", [], posts, LABELS) is None


def test_bad_marginals_are_one_line_naming_the_file(tmp_path, tiny_corpus):
    train = datadir.load_dataset(str(tiny_corpus["train"]))
    name = str(tiny_corpus["train"])

    def teacher(path, labels=LABELS, data=name):
        return Teacher.from_config([str(path)], 0.5, data, [], train, labels)

    with pytest.raises(MmnerError, match=r"^distill.targets\[0\]: .*nope.gz does not exist$"):
        teacher(tmp_path / "nope.gz")
    plain = tmp_path / "plain.gz"
    plain.write_text("not gzip")
    with pytest.raises(MmnerError, match="is not a gzip-compressed marginals file"):
        teacher(plain)
    other = tmp_path / "other.gz"
    write_marginals(other, "twitter2015:train", LABELS.tags, [(train[0].id, uniform(train[0]))])
    with pytest.raises(MmnerError, match=r"holds marginals of twitter2015:train, which is neither data.train"):
        teacher(other)
    with pytest.raises(MmnerError, match="has labels O, B-LOC"):
        teacher(other, LabelVocab(["LOC", "PER"]), "twitter2015:train")
    with pytest.raises(MmnerError, match="marginals are over IOB2 tags; data.scheme is bioes"):
        teacher(other, LabelVocab(["LOC", "ORG", "OTHER", "PER"], "bioes"), "twitter2015:train")
    short = tmp_path / "short.gz"
    write_marginals(short, name, LABELS.tags, [(train[1].id, uniform(train[1])[:-1])])
    with pytest.raises(MmnerError, match=rf"short.gz:2: post {train[1].id} has marginals for \d+ words, but \d+ words"):
        teacher(short)
    twice = tmp_path / "twice.gz"
    write_marginals(twice, name, LABELS.tags, [(train[1].id, uniform(train[1]))] * 2)
    with pytest.raises(MmnerError, match=rf"twice.gz:3: post {train[1].id} has a target already"):
        teacher(twice)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wt") as f:
        f.write(json.dumps({"format": "mmner-marginals/1", "data": name, "labels": LABELS.tags}) + "\n")
        f.write(json.dumps({"id": train[0].id, "marginals": [[0.5, 0.5]]}) + "\n")
    with pytest.raises(MmnerError, match=rf"bad.gz:2: post {train[0].id}: every word needs 9 probabilities"):
        teacher(bad)
    headless = tmp_path / "headless.gz"
    with gzip.open(headless, "wt") as f:
        f.write(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(MmnerError, match=r"headless.gz:1: not a marginals header"):
        teacher(headless)
    cut = tmp_path / "cut.gz"
    write_marginals(cut, name, LABELS.tags, [(p.id, uniform(p)) for p in train])
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 12])  # the gzip trailer and the last bytes of the stream gone
    with pytest.raises(MmnerError, match=r"^distill.targets\[0\]: .*cut.gz is cut or corrupt after line \d+"):
        teacher(cut)
    strangers = tmp_path / "strangers.gz"
    write_marginals(strangers, name, LABELS.tags, [("nobody", torch.ones(1, len(LABELS)) / len(LABELS))])
    with pytest.raises(MmnerError, match="none of its posts is a training post"):
        teacher(strangers)


def test_distill_loss_is_the_kl_divergence_over_words_of_posts_with_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    log_p = logits.log_softmax(-1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    has = torch.tensor([True, True, False])
    same = distill_loss(log_p, log_p.detach().exp(), mask, has)
    assert abs(float(same.detach())) < 1e-6
    q = torch.randn(3, 4, 5, generator=g).softmax(-1)
    loss = distill_loss(log_p, q, mask, has)
    expected = [float(sum((q[b, t] * (q[b, t].log() - log_p[b, t])).sum() for t in range(int(mask[b].sum()))))
                for b in (0, 1)]
    assert float(loss) == pytest.approx(sum(expected) / 2, rel=1e-5)
    loss.backward()
    assert float(logits.grad[2].abs().sum()) == 0.0 and float(logits.grad[0].abs().sum()) > 0  # no target: no gradient


def test_a_temperature_softens_the_targets_and_the_model_and_scales_the_kl(tmp_path, tiny_corpus):
    """distill.temperature T: each word's target q^(1/T) renormalised, the model's marginals of its CRF scores
    divided by T, the KL multiplied by T^2; the record names T; T = 1 leaves targets and loss as they were."""
    from mmner.tagging.crf import CRFHead

    train = datadir.load_dataset(str(tiny_corpus["train"]))[:3]
    g = torch.Generator().manual_seed(0)
    targets = [(p.id, (4.0 * torch.randn(len(p.tokens), len(LABELS), generator=g)).softmax(-1)) for p in train]
    path = tmp_path / "t.marginals.jsonl.gz"
    write_marginals(path, str(tiny_corpus["train"]), LABELS.tags, targets)
    cold = Teacher.from_config([str(path)], 0.5, str(tiny_corpus["train"]), [], train, LABELS)
    warm = Teacher.from_config([str(path)], 0.5, str(tiny_corpus["train"]), [], train, LABELS, temperature=2.0)
    assert cold is not None and warm is not None
    assert "temperature" not in cold.record and warm.record["temperature"] == 2.0
    q = cold.rows[0]
    assert torch.allclose(warm.rows[0], q.sqrt() / q.sqrt().sum(-1, keepdim=True), atol=1e-6)
    assert float(warm.rows[0].max(-1).values.mean()) < float(q.max(-1).values.mean())  # flatter

    head = CRFHead(LABELS)
    width = max(len(p.tokens) for p in train)
    emissions = torch.randn(3, width, len(LABELS), generator=g, requires_grad=True)
    mask = torch.tensor([[t < len(p.tokens) for t in range(width)] for p in train])
    index = [0, 1, 2]
    kl, posts = cold.loss(head, emissions, mask, index)
    q1, has = cold.targets(index, width)
    assert posts == 3 and torch.allclose(kl, distill_loss(head.log_marginals(emissions, mask), q1, mask, has))
    kl2, _ = warm.loss(head, emissions, mask, index)
    q2, _ = warm.targets(index, width)
    expected = 4.0 * distill_loss(head.log_marginals(emissions, mask, temperature=2.0), q2, mask, has)
    assert torch.allclose(kl2, expected) and not torch.allclose(kl2, kl)
    kl2.backward()
    assert float(emissions.grad.abs().sum()) > 0
    nobody = Teacher([None, q], 0.5, {})
    assert nobody.loss(head, emissions[:1], mask[:1], [0]) is None  # a batch without targets: no term


def test_a_run_learns_the_teachers_marginals(tmp_path, tiny_corpus, tiny_model_params):
    """A teacher run's marginals of the training posts with PER and LOC swapped (targets that gold tags do
    not give): a student trained on them alone (weight 1) ends much nearer to them than it starts and than
    a run on the gold tags does; metrics.json and the training log record the distillation."""
    import csv

    from mmner.config import Config
    from mmner.inference import load_run, predict_marginals
    from mmner.train.run import train

    raw = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=2)
    train(Config.model_validate(raw), tmp_path / "teacher", quiet=True)
    _, teacher = load_run(tmp_path / "teacher", torch.device("cpu"))
    posts = datadir.load_dataset(str(tiny_corpus["train"]))
    marginals = predict_marginals(teacher, posts, 8, progress=False)
    assert all(torch.allclose(m.sum(-1), torch.ones(len(p.tokens)), atol=1e-4) for m, p in zip(marginals, posts))
    tags = teacher.labels.tags
    swap = {"B-PER": "B-LOC", "I-PER": "I-LOC", "B-LOC": "B-PER", "I-LOC": "I-PER"}
    marginals = [m[:, [tags.index(swap.get(t, t)) for t in tags]] for m in marginals]
    target = tmp_path / "train.marginals.jsonl.gz"
    write_marginals(target, str(tiny_corpus["train"]), teacher.labels.tags, list(zip([p.id for p in posts], marginals)))

    def distance(model) -> float:
        mine = predict_marginals(model, posts, 8, progress=False)
        return sum(float((t * (t.clamp_min(1e-8).log() - m.clamp_min(1e-8).log())).sum())
                   for t, m in zip(marginals, mine)) / len(posts)

    raw = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=3)
    raw["seed"] = 11
    raw["distill"] = {"targets": [str(target)], "weight": 1.0}
    from mmner.models import registry

    config = Config.model_validate(raw)
    start = registry.get("bert-crf").create(config.model_params(), teacher.labels, posts)
    before = distance(start)
    metrics = train(config, tmp_path / "student", quiet=True)
    _, student = load_run(tmp_path / "student", torch.device("cpu"))
    assert distance(student) < 0.5 * before
    del raw["distill"]
    train(Config.model_validate(raw), tmp_path / "gold", quiet=True)
    _, gold = load_run(tmp_path / "gold", torch.device("cpu"))
    assert distance(student) < 0.7 * distance(gold)
    record = metrics["test"]["distill"]
    assert record["weight"] == 1.0 and record["posts_with_targets"] == len(posts) == record["train_posts"]
    with open(tmp_path / "student" / "train_log.csv") as f:
        assert any(row.get("train_distill") for row in csv.DictReader(f))


def test_caption_distill_refuses_to_train_without_a_teacher(tmp_path, tiny_corpus, tiny_model_params, tiny_visual):
    """mmner's own system learns from a teacher: without distill.targets, a one-line error before any work."""
    from mmner.config import Config
    from mmner.train.run import train

    raw = tiny_config(tiny_model_params["caption-distill"], tiny_corpus, tiny_visual["caption"])
    assert raw["distill"]["targets"]  # the harness gives it the tiny teacher
    raw.pop("distill")
    with pytest.raises(MmnerError, match=r"^distill.targets: caption-distill learns from a teacher's CRF marginals"):
        train(Config.model_validate(raw), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_mmner_teacher_writes_the_members_mean_marginals_and_their_vote(tmp_path, tiny_corpus, tiny_model_params,
                                                                       monkeypatch, capsys):
    """`mmner teacher RUN RUN --data --output --tags`: the marginals file is the mean of the members' own CRF
    marginals of the posts, names them and the data; the tags file is their entity-level vote with the k that
    is best on their validation split; what is not a finished run is a one-line error. `--add FILE`: a member
    known by its marginals file joins the mean (not the vote); a file of other posts is a one-line error."""
    import re

    from conftest import run_cli
    from mmner.analysis.artifacts import read_tags
    from mmner.analysis.ensemble import best_min_votes, vote
    from mmner.config import Config
    from mmner.inference import load_run, predict_marginals, predict_tags
    from mmner.train.run import train

    members = []
    for seed in (1, 2):
        raw = {**tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1), "seed": seed}
        train(Config.model_validate(raw), tmp_path / f"m{seed}", quiet=True)
        members.append(tmp_path / f"m{seed}")
    data = str(tiny_corpus["train"])
    target, tags = tmp_path / "t.marginals.jsonl.gz", tmp_path / "t.tags"
    code, out, err = run_cli(monkeypatch, capsys, "teacher", *map(str, members), "--data", data, "--output",
                             str(target), "--tags", str(tags), "--quiet")
    assert code == 0, err
    header, rows = read_marginals(target)
    written = {pid: torch.tensor(m) for _, pid, m in rows}
    assert header["data"] == data and list(header["members"]) == [str(m) for m in members]
    posts = datadir.load_dataset(data)
    valid = datadir.load_dataset(str(tiny_corpus["valid"]))
    own, on_posts, on_valid = [], [], []
    for m in members:
        _, model = load_run(m, torch.device("cpu"))
        rows = predict_marginals(model, posts, 8, progress=False)
        own.append([r[:, [model.labels.tags.index(t) for t in header["labels"]]] for r in rows])
        on_posts.append(predict_tags(model, posts, 8, progress=False))
        on_valid.append(predict_tags(model, valid, 8, progress=False))
    for i, p in enumerate(posts):
        assert torch.allclose(written[p.id], (own[0][i] + own[1][i]) / 2, atol=1e-3)
    k = int(re.search(r"at least k = (\d+) votes", out).group(1))
    assert k == best_min_votes([p.tags for p in valid], on_valid)[0]
    assert read_tags(tags, posts) == vote(on_posts, k)

    code, _, err = run_cli(monkeypatch, capsys, "teacher", str(members[0]), str(tmp_path), "--data", data,
                           "--output", str(tmp_path / "x.marginals.jsonl.gz"))
    assert code == 2 and err.strip() == f"error: {tmp_path}: no metrics.json; a teacher's members are finished runs"

    # --add: a member known only by its marginals file (its checkpoint gone) joins the mean
    second, both = tmp_path / "m2.marginals.jsonl.gz", tmp_path / "both.marginals.jsonl.gz"
    assert run_cli(monkeypatch, capsys, "teacher", str(members[1]), "--data", data, "--output", str(second),
                   "--quiet")[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "teacher", str(members[0]), "--data", data, "--add", str(second),
                             "--output", str(both), "--quiet")
    assert code == 0, err
    assert "the mean CRF marginals of 2 members" in out
    header, rows = read_marginals(both)
    assert list(header["members"]) == [str(m) for m in members] and header["added"] == [str(second)]
    added = {pid: torch.tensor(m) for _, pid, m in rows}
    for i, p in enumerate(posts):  # the file's marginals are rounded to 4 digits
        assert torch.allclose(added[p.id], (own[0][i] + own[1][i]) / 2, atol=1e-3)
    alone = tmp_path / "alone.marginals.jsonl.gz"  # files only, no run
    code, out, err = run_cli(monkeypatch, capsys, "teacher", "--data", data, "--add", str(second), "--add", str(both),
                             "--output", str(alone), "--quiet")
    assert code == 0, err
    assert "the mean CRF marginals of 2 members" in out and f"posts by number of members: 2: {len(posts)}" in out
    header, rows = read_marginals(alone)
    assert header["added"] == [str(second), str(both)] and header["members_per_post"] == {"2": len(posts)}
    assert all(torch.allclose(torch.tensor(m), (3 * own[1][i] + own[0][i]) / 4, atol=2e-3)
               for i, (_, _, m) in enumerate(rows))
    code, _, err = run_cli(monkeypatch, capsys, "teacher", "--data", data, "--output", str(alone))
    assert code == 2 and err.strip() == "error: a teacher needs members: RUN_DIR arguments, --add files, or both"
    code, _, err = run_cli(monkeypatch, capsys, "teacher", str(members[0]), "--data", data, "--add", str(second),
                           "--output", str(both), "--tags", str(tags))
    assert code == 2 and err.startswith("error: --add with --tags: the vote needs every member's tags")
    valid_file = tmp_path / "valid.marginals.jsonl.gz"
    assert run_cli(monkeypatch, capsys, "teacher", str(members[1]), "--data", str(tiny_corpus["valid"]), "--output",
                   str(valid_file), "--quiet")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "teacher", str(members[0]), "--data", data, "--add", str(valid_file),
                           "--output", str(both))
    assert code == 2 and err.strip() == (f"error: --add {valid_file}: it holds marginals of {tiny_corpus['valid']}, "
                                         f"not of {data}")


def test_added_files_join_the_mean_of_the_posts_they_cover(tmp_path, tiny_corpus):
    """mmner teacher --add (mmner.train.teacher): a file's columns reordered to the members' labels; each post's
    mean over the members that cover it, a post that none covers an error; with a fold, a file without one
    (its members may have trained on the posts), of other data or other labels is a one-line error naming it."""
    from mmner.train.teacher import file_marginals, mean_over_members

    data = str(tiny_corpus["train"])
    posts = datadir.load_dataset(data)[:4]
    reversed_labels = LABELS.tags[::-1]
    rows = [(p.id, torch.eye(len(LABELS))[[i % len(LABELS)] * len(p.tokens)]) for i, p in enumerate(posts)]
    full = tmp_path / "full.gz"
    write_marginals(full, data, reversed_labels, rows)
    header, got = file_marginals(full, data, LABELS.tags, posts)
    assert header["data"] == data and list(got) == [p.id for p in posts]
    assert all(torch.equal(got[pid], r[:, [reversed_labels.index(t) for t in LABELS.tags]]) for pid, r in rows)
    assert file_marginals(full, data, None, posts)[1][posts[0].id].equal(rows[0][1])  # the file's own order
    uniform_rows = [(p.id, uniform(p)) for p in posts[:3]]
    part = tmp_path / "part.gz"
    write_marginals(part, data, LABELS.tags, uniform_rows, fold={"fold": 1, "folds": 4})
    _, some = file_marginals(part, data, LABELS.tags, posts, (0, 2))  # a fold file: allowed with a fold
    assert list(some) == [p.id for p in posts[:3]]
    mean, counts = mean_over_members(posts, [got, some])
    assert counts == {1: 1, 2: 3}
    assert torch.allclose(mean[0], (got[posts[0].id] + uniform(posts[0])) / 2, atol=1e-4) and torch.equal(mean[3], got[posts[3].id])
    with pytest.raises(MmnerError, match=rf"^no member covers post {posts[3].id} \(1 of the 4 posts\)"):
        mean_over_members(posts, [some])
    with pytest.raises(MmnerError, match=r"^--add .*full.gz: no fold in its header, so its members may have trained "
                                         r"on its posts; with --fold 0/2"):
        file_marginals(full, data, LABELS.tags, posts, (0, 2))
    with pytest.raises(MmnerError, match=r"^--add .*full.gz: labels .* differ from the members'"):
        file_marginals(full, data, LabelVocab(["LOC", "PER"]).tags, posts)
    with pytest.raises(MmnerError, match=r"^--add .*full.gz: it holds marginals of .*, not of twitter2015:train$"):
        file_marginals(full, "twitter2015:train", LABELS.tags, posts)
    with pytest.raises(MmnerError, match=r"^--add .*full.gz: none of its posts is one of the 2 posts to teach$"):
        file_marginals(full, data, LABELS.tags, datadir.load_dataset(data)[10:12])
