"""The on-disk feature cache and `mmner features extract`: exact reuse, resume, skipped files, CLI."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from mmner.errors import MmnerError
from mmner.vision.cache import FeatureCache, extract_features, image_id_for, iter_image_files
from mmner.vision.grid import GridEncoder, ResNet, build_encoder
from mmner.vision.images import load_image


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ResNet("basic", layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem=4, num_classes=10)
    path = tmp_path_factory.mktemp("tiny-resnet") / "tiny_resnet.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def encoder(tiny_weights) -> GridEncoder:
    return build_encoder("resnet", weights=tiny_weights)


def make_images(root: Path, corrupt: bool = False) -> Path:
    """Five small images (one in a sub-folder, mixed formats), optionally plus two broken files."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    names = ["16_05_01_360.jpg", "a.png", "b.JPEG", "c.webp", "sub/d.bmp"]
    for i, name in enumerate(names):
        arr = rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / name)
    (root / "notes.txt").write_text("not an image, and not looked at")
    if corrupt:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        (root / "empty.png").write_bytes(b"")
    return root


IDS = ["16_05_01_360", "a", "b", "c", "sub/d"]


def test_ids_are_relative_paths_without_suffix(tmp_path):
    root = make_images(tmp_path / "imgs")
    files = iter_image_files(root)
    assert [image_id_for(p, root) for p in files] == IDS


def test_cache_matches_fresh_extraction_exactly(tmp_path, encoder):
    root = make_images(tmp_path / "imgs")
    summary = extract_features(root, encoder, tmp_path / "cache", batch_size=2, progress=False)
    assert (summary.encoded, summary.cached, summary.skipped) == (5, 0, [])
    cache = FeatureCache(tmp_path / "cache", encoder.identity)
    assert len(cache) == 5 and sorted(cache.ids()) == IDS and "a" in cache and "zzz" not in cache
    files = iter_image_files(root)
    for start in range(0, 5, 2):  # the same batches as the extraction
        batch = files[start:start + 2]
        fresh = encoder.encode([load_image(p) for p in batch]).to(torch.float16)
        for p, f in zip(batch, fresh):
            cached = cache.get(image_id_for(p, root))
            assert cached.dtype == torch.float16 and cached.shape == (49, 16)
            assert torch.equal(cached, f)
    assert cache.get("missing") is None
    # float32 storage is exact too, in its own folder
    extract_features(root, encoder, tmp_path / "cache", batch_size=2, dtype="float32", progress=False)
    c32 = FeatureCache(tmp_path / "cache", encoder.identity, dtype="float32")
    fresh = encoder.encode([load_image(p) for p in files[:2]])
    assert torch.equal(c32.get("16_05_01_360"), fresh[0]) and c32.folder != cache.folder


def test_extraction_resumes(tmp_path, encoder):
    root = make_images(tmp_path / "imgs")
    out = tmp_path / "cache"
    first = extract_features(root, encoder, out, batch_size=2, limit=3, progress=False)
    assert (first.encoded, first.cached) == (3, 0)
    seen: list[str] = []
    second = extract_features(root, encoder, out, batch_size=2, progress=False, on_batch=seen.extend)
    assert (second.encoded, second.cached) == (2, 3) and seen == ["c", "sub/d"]

    # an interruption mid-run (Ctrl-C after the first batch) keeps what was stored, nothing half-written
    out2 = tmp_path / "cache2"

    def interrupt(ids):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(root, encoder, out2, batch_size=2, progress=False, on_batch=interrupt)
    cache = FeatureCache(out2, encoder.identity)
    assert sorted(cache.ids()) == ["16_05_01_360", "a"]
    assert not [p for p in cache.folder.rglob("*") if ".tmp" in p.name]
    third = extract_features(root, encoder, out2, batch_size=2, progress=False)
    assert (third.encoded, third.cached) == (3, 2) and len(cache) == 5


def test_put_is_atomic(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache", "test-encoder|x")
    cache.put("one", torch.ones(4, 3))

    def fail(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        cache.put("two", torch.ones(4, 3))
    monkeypatch.undo()
    assert "two" not in cache and cache.get("two") is None and len(cache) == 1
    assert torch.equal(cache.get("one"), torch.ones(4, 3, dtype=torch.float16))


def test_cache_api_errors(tmp_path):
    cache = FeatureCache(tmp_path / "cache", "enc|1")
    cache.put("x/y", torch.zeros(2, 5))
    with pytest.raises(MmnerError, match="do not match"):
        cache.put("z", torch.zeros(3, 5))
    with pytest.raises(MmnerError, match="invalid image id"):
        cache.put("../escape", torch.zeros(2, 5))
    with pytest.raises(MmnerError, match="not finite"):
        cache.put("inf", torch.full((2, 5), 1e6))  # overflows float16
    entry = cache.features_dir / "x" / "y.npy"
    entry.write_bytes(b"garbage")
    with pytest.raises(MmnerError, match=r"y\.npy: corrupt cache entry"):
        cache.get("x/y")
    # a second cache object sees the same entries; another identity uses another folder
    other = FeatureCache(tmp_path / "cache", "enc|2")
    assert len(other) == 0 and other.folder != cache.folder


def test_corrupt_files_are_skipped_and_listed(tmp_path, encoder, caplog, monkeypatch):
    # the CLI stops `mmner` records from propagating to the root logger: listen where they are made
    monkeypatch.setattr(logging.getLogger("mmner.vision"), "handlers", [caplog.handler])
    root = make_images(tmp_path / "imgs", corrupt=True)
    (root / "a.jpg").write_bytes((root / "16_05_01_360.jpg").read_bytes())  # same id as a.png
    out = tmp_path / "cache"
    summary = extract_features(root, encoder, out, batch_size=4, progress=False)
    assert summary.encoded == 5
    skipped = dict(summary.skipped)
    assert set(skipped) == {"broken.jpg", "empty.png", "a.png"}
    assert "duplicate image id 'a' (also a.jpg)" in skipped["a.png"]
    assert skipped["empty.png"] == "unreadable image (empty file)"
    lines = (out / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["a.png", "broken.jpg", "empty.png"]
    assert any("skipped" in r.getMessage() and "broken.jpg" in r.getMessage() for r in caplog.records)
    cache = FeatureCache(out, encoder.identity)
    assert sorted(cache.ids()) == ["16_05_01_360", "a", "b", "c", "sub/d"]
    assert "broken" not in cache and "empty" not in cache
    again = extract_features(root, encoder, out, batch_size=4, progress=False)
    assert (again.encoded, again.cached, len(again.skipped)) == (0, 5, 3)  # broken files retried, still skipped


def test_cli_features_extract(monkeypatch, capsys, tmp_path, tiny_weights):
    root = make_images(tmp_path / "imgs", corrupt=True)
    out = tmp_path / "cache"
    args = ["features", "extract", "--images", str(root), "--encoder", "resnet", "--weights", str(tiny_weights),
            "--output", str(out), "--batch-size", "3"]
    code, stdout, stderr = run_cli(monkeypatch, capsys, *args)
    assert code == 0, stderr
    assert "encoded 5 images, 0 from cache, 2 skipped; " in stdout and "images/s; cache size " in stdout
    assert f"skipped files and reasons: {out / 'skipped.txt'}" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, *args, "--quiet")
    assert code == 0 and "encoded 0 images, 5 from cache, 2 skipped; n/a images/s" in stdout

    code, _, stderr = run_cli(monkeypatch, capsys, "features", "extract", "--images", str(tmp_path / "nope"),
                              "--output", str(out))
    assert code == 2 and stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder of images"
    code, _, stderr = run_cli(monkeypatch, capsys, "features", "extract", "--images", str(root), "--encoder",
                              "resnet50", "--output", str(out))
    assert code == 2 and "needs --weights" in stderr and len(stderr.strip().splitlines()) == 1
