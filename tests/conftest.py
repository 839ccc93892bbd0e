"""Shared fixtures: a tiny random BERT with a tiny tokenizer, tiny vectors and a tiny corpus.

Nothing here needs downloaded weights; everything is built in a temporary folder per session.
"""

from __future__ import annotations

import json
import random
import string
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

TINY_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(string.ascii_lowercase + string.digits + string.punctuation)
    + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    + ["the", "in", "at", "with", "and", "today", "visit", "meet", "game"]
)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models are dominated by thread hand-off on a shared 2-core machine: one thread is faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT and a WordPiece tokenizer over TINY_VOCAB, saved as an encoder dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vectors(tmp_path_factory) -> Path:
    """A word2vec-style text file of 8-dimensional vectors for a few corpus words."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("vectors") / "tiny.txt"
    words = ["the", "in", "paris", "london", "obama", "google", "today", "visit", "meet"]
    path.write_text("".join(w + " " + " ".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(8)) + "\n" for w in words))
    return path


PEOPLE = ["Obama", "Merkel", "Messi", "Adele"]
PLACES = ["Paris", "London", "Texas", "Rome"]
ORGS = ["Google", "NASA", "Yankees", "UN"]
OTHERS = ["Olympics", "iPhone"]


def make_posts(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Posts from a few templates, so a tiny model can learn something in a few steps."""
    rng = random.Random(seed)
    posts = []
    for _ in range(n):
        person, place, org, other = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(ORGS), rng.choice(OTHERS)
        template = rng.choice(
            [
                [("RT", "O"), ("@", "O"), (person, "B-PER"), (":", "O"), ("visit", "O"), (place, "B-LOC"), ("today", "O")],
                [("meet", "O"), (person, "B-PER"), ("Jr", "I-PER"), ("at", "O"), (org, "B-ORG"), ("!", "O")],
                [("the", "O"), (other, "B-OTHER"), ("game", "O"), ("in", "O"), ("New", "B-LOC"), (place, "I-LOC")],
            ]
        )
        posts.append(template)
    return posts


def write_corpus(path: Path, posts: list[list[tuple[str, str]]]) -> Path:
    lines = []
    for i, post in enumerate(posts):
        lines.append(f"IMGID:{i}")
        lines.extend(f"{tok}\t{tag}" for tok, tag in post)
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_corpus(root / "train.txt", make_posts(24, 1)),
        "valid": write_corpus(root / "valid.txt", make_posts(8, 2)),
        "test": write_corpus(root / "test.txt", make_posts(8, 3)),
    }


@pytest.fixture(scope="session")
def tiny_model_params(tiny_encoder, tiny_vectors) -> dict[str, dict]:
    """The `model` config section of every registry entry, at test size. A new model must add one;
    a multimodal one is trained with the `tiny_visual` source of `TINY_SOURCES` (default: caption)."""
    bert = {"encoder": str(tiny_encoder), "max_length": 24}
    return {
        "bert-crf": {"name": "bert-crf", **bert},
        "bert-crf-caption": {"name": "bert-crf-caption", **bert, "caption_tokens": 8},
        "bilstm-crf": {
            "name": "bilstm-crf", "vectors": str(tiny_vectors), "hidden": 32, "char_filters": 8, "layers": 2,
            "dropout": 0.1,
        },
        "caption-distill": {"name": "caption-distill", **bert, "caption_tokens": 8},
        "ctx-crf": {"name": "ctx-crf", **bert, "caption_tokens": 8, "neighbors": 2, "context_tokens": 6,
                    "context_labels": True, "agreement": 0.5},
        "fusion-cam": {"name": "fusion-cam", **bert, "attention_dim": 16},
        "fusion-cm": {"name": "fusion-cm", **bert},
        "fusion-tam": {"name": "fusion-tam", **bert, "layers": 1, "heads": 2},
        "fusion-vam": {"name": "fusion-vam", **bert, "attention_dim": 16},
        "umt": {"name": "umt", **bert, "heads": 2},
        "rpbert": {"name": "rpbert", **bert, "max_regions": 64, "dropout": 0.1},
        "rgcn": {"name": "rgcn", **bert, "neighbors": 3, "index_cache": False},  # no shared cache in $HOME
        "visualbert-crf": {"name": "visualbert-crf", **bert, "max_regions": 64},
    }


# Visual sources each registry entry is trained with in the shared harness (text-only models: none).
TINY_SOURCES = {
    "bert-crf-caption": ["caption"],
    "caption-distill": ["caption"],
    "ctx-crf": ["caption"],
    "bilstm-crf": ["none"],  # text only by default; the image at t = 0 is a variant (test_models.VARIANTS)
    "fusion-cam": ["caption"],
    "fusion-cm": ["caption"],
    "fusion-tam": ["caption"],
    "fusion-vam": ["caption"],
    "umt": ["caption"],
    "rpbert": ["caption"],
    "rgcn": ["caption", "grid"],
    "visualbert-crf": ["caption", "grid"],
}
# Image ids of the tiny corpus without a usable caption (blank-image caption, no entry): masked.
UNCAPTIONED = {"3", "5"}
CAPTIONS = ["a man with a phone", "the stadium at night", "people in the game", "a city street today"]


@pytest.fixture(scope="session")
def tiny_captions(tmp_path_factory) -> Path:
    """A JSON captions file for the tiny corpus' image ids 0..23; ids 3 and 5 have no usable caption."""
    from mmner.data.datadir import BLANK_IMAGE_CAPTION

    captions = {str(i): CAPTIONS[i % len(CAPTIONS)] for i in range(24) if str(i) not in UNCAPTIONED}
    captions["3"] = BLANK_IMAGE_CAPTION
    path = tmp_path_factory.mktemp("captions") / "captions.json"
    path.write_text(json.dumps(captions))
    return path


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory) -> dict[str, str]:
    """A tiny random ResNet (7x7 grid of width 16) and a feature cache of random features for image
    ids 0..23 under its identity: the `visual` keys of a grid run."""
    import torch

    from mmner.vision.cache import FeatureCache
    from mmner.vision.grid import ResNet, get_encoder

    root = tmp_path_factory.mktemp("grid")
    torch.manual_seed(0)
    weights = root / "tiny_resnet.pth"
    torch.save(ResNet("basic", layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem=4, num_classes=10).state_dict(), weights)
    encoder = get_encoder("resnet", weights)
    cache = FeatureCache(root / "cache", encoder.identity)
    for i in range(24):
        cache.put(str(i), torch.rand(encoder.regions, encoder.dim))
    return {"grid_encoder": "resnet", "grid_weights": str(weights), "cache": str(root / "cache")}


@pytest.fixture(scope="session")
def tiny_visual(tiny_captions, tiny_grid) -> dict[str, dict]:
    """`visual` config sections by source, at test size."""
    return {
        "none": {"source": "none"},
        "caption": {"source": "caption", "caption": str(tiny_captions), "missing": "mask"},
        "grid": {"source": "grid", "missing": "mask", **tiny_grid},
    }


def tiny_config(model: dict, corpus: dict[str, Path], visual: dict | None = None, **trainer) -> dict:
    """A training config for the tiny corpus; a model that learns from a teacher gets `tiny_teacher`'s targets."""
    from mmner.models import registry

    teacher = registry.get(model["name"]).teacher_required
    return {
        "seed": 7,
        "model": model,
        "data": {k: str(v) for k, v in corpus.items()},
        "visual": visual or {"source": "none"},
        "optim": {"lr": 2e-2, "encoder_lr": 1e-3, "warmup": 0.0},
        "trainer": {"max_epochs": 2, "batch_size": 8, "eval_batch_size": 8, "accelerator": "cpu", "threads": 1, **trainer},
        **({"distill": {"targets": [tiny_teacher(corpus["train"])]}} if teacher else {}),
    }


def tiny_teacher(train: Path) -> str:
    """A marginals file for the posts of `train` (written next to it once): their gold tags, smoothed
    (0.9 on the gold label), as a teacher that is mostly right and not sure of itself."""
    import torch

    from mmner.data import datadir
    from mmner.tagging.vocab import LabelVocab
    from mmner.train.distill import write_marginals

    path = Path(train).with_suffix(".teacher.marginals.jsonl.gz")
    if not path.is_file():
        posts = datadir.load_dataset(str(train))
        labels = LabelVocab.from_posts(posts, "bio")
        rows = [(p.id, 0.1 / len(labels) + 0.9 * torch.nn.functional.one_hot(torch.tensor(labels.encode(p)), len(labels)))
                for p in posts]
        write_marginals(path, str(train), labels.tags, rows)
    return str(path)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`mmner ARGS...` in-process: (exit code, stdout, stderr)."""
    from mmner.cli import main

    monkeypatch.setattr(sys, "argv", ["mmner", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err
