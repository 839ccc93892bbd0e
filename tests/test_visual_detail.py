"""`visual_detail` names the captions a split's posts actually used: a RiTUAL folder's own captions.json
(which wins over the run's caption file) rather than the run's file, and both when a split used both."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import SHARED_DATA, run_cli, tiny_config


def _folder(root, captioned: dict[str, str]):
    """A RiTUAL-style sample folder: texts.json (ids 0..2 with image ids 0..2) and captions.json."""
    root.mkdir()
    posts = [
        {"id": "0", "image_id": "0.jpg", "tokens": ["meet", "Obama", "in", "Paris"], "label": ["O", "B-PER", "O", "B-LOC"]},
        {"id": "1", "image_id": "1.jpg", "tokens": ["visit", "London", "today"], "label": ["O", "B-LOC", "O"]},
        {"id": "2", "image_id": "2.jpg", "tokens": ["the", "Olympics", "game"], "label": ["O", "B-OTHER", "O"]},
    ]
    (root / "texts.json").write_text("".join(json.dumps(p) + "\n" for p in posts))
    (root / "captions.json").write_text(
        "".join(json.dumps({"id": i, "image_id": f"{i}.jpg", "caption": c}) + "\n" for i, c in captioned.items()))
    return root


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory, tiny_model_params, tiny_visual, tiny_corpus):
    from mmner.config import load_config
    from mmner.train.run import train

    run = tmp_path_factory.mktemp("visual-detail") / "run"
    config = load_config(None, base=tiny_config(tiny_model_params["bert-crf-caption"], tiny_corpus,
                                                tiny_visual["caption"], max_epochs=1))
    train(config, run, quiet=True)
    return run


def _evaluate(monkeypatch, capsys, run, data) -> dict:
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run), "--data", str(data), "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def test_a_sample_folder_names_its_own_captions(monkeypatch, capsys, tmp_path, caption_run, tiny_captions):
    folder = _folder(tmp_path / "samples", {"0": "a man in a suit", "1": "a city street", "2": "people in a stadium"})
    result = _evaluate(monkeypatch, capsys, caption_run, folder)
    sha1 = hashlib.sha1((folder / "captions.json").read_bytes()).hexdigest()[:12]
    captions = (folder / "captions.json").resolve()
    assert result["visual_detail"] == f"the posts' own captions (caption file {captions}, sha1 {sha1})"
    assert str(tiny_captions.name) not in result["visual_detail"].replace(str(captions), "")
    assert result["masked_images"] == 0 and result["visual_source"] == "caption"


def test_a_split_that_used_both_names_both(monkeypatch, capsys, tmp_path, caption_run, tiny_captions):
    # post 2 brings no caption: its image id 2 is looked up in the run's caption file (tiny_captions has it)
    folder = _folder(tmp_path / "samples", {"0": "a man in a suit", "1": "a city street"})
    detail = _evaluate(monkeypatch, capsys, caption_run, folder / "texts.json")["visual_detail"]
    assert detail.startswith(f"the posts' own captions (caption file {(folder / 'captions.json').resolve()}, sha1 ")
    assert detail.endswith(f"for 2 posts; caption file {tiny_captions.resolve()} (sha1 "
                           f"{hashlib.sha1(tiny_captions.read_bytes()).hexdigest()[:12]}) for 1")


def test_a_split_without_own_captions_names_the_run_file(monkeypatch, capsys, caption_run, tiny_corpus, tiny_captions):
    detail = _evaluate(monkeypatch, capsys, caption_run, tiny_corpus["test"])["visual_detail"]
    assert detail.startswith(f"caption file {tiny_captions.resolve()} (sha1 ")


SAMPLES = SHARED_DATA / "images" / "twitter2015_samples" / "test"


@pytest.mark.skipif(not (SAMPLES / "captions.json").is_file(), reason="no RiTUAL samples beside the repository")
def test_the_ritual_samples_with_a_blip2_run(monkeypatch, capsys, tmp_path, tiny_model_params, tiny_corpus):
    """The case of the issue: a run reading BLIP-2 captions evaluated on a RiTUAL sample folder."""
    import yaml

    config = tmp_path / "config.yaml"
    visual = {"source": "caption", "caption": "blip2", "missing": "mask"}  # the tiny corpus' ids are not in it
    config.write_text(yaml.safe_dump(tiny_config(tiny_model_params["bert-crf-caption"], tiny_corpus, visual,
                                                 max_epochs=1)))
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(config), "--output", str(run), "--quiet")[0] == 0
    result = _evaluate(monkeypatch, capsys, run, "twitter2015_samples:test")
    assert result["visual_detail"].startswith("the posts' own captions (caption file ")
    assert str((SAMPLES / "captions.json").resolve()) in result["visual_detail"]
    assert "BLIP-2" not in result["visual_detail"]
