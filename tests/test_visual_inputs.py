"""Visual inputs: shapes and masks per source, collate, caption regions, the missing-image policy."""

from __future__ import annotations

import json

import pytest
import torch

from mmner.config import Config, load_config
from mmner.data import datadir
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.vision.captions import CaptionSource, PseudoCaptionSource
from mmner.vision.inputs import VisualInputs, caption_regions, collate_regions

R, D = 4, 6


class FakeCache:
    """`FeatureCache`'s reading interface over a dict."""

    folder = "fake-cache"

    def __init__(self, entries: dict[str, torch.Tensor]) -> None:
        self.entries = entries

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.entries

    def get(self, image_id: str) -> torch.Tensor | None:
        return self.entries.get(image_id)


class StubEncoder:
    dim = D
    identity = "stub-cnn|grid=2x2x6"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, images) -> torch.Tensor:
        self.calls.append(len(images))
        return torch.ones(len(images), R, D)  # [B, R, D]


def post(pid: str, image_id: str | None = None, image_path: str | None = None, caption: str | None = None) -> Post:
    return Post(id=pid, tokens=["a", "b"], tags=["O", "O"], image_id=image_id, image_path=image_path, caption=caption)


@pytest.fixture()
def image_file(tmp_path):
    from PIL import Image

    path = tmp_path / "img.png"
    Image.new("RGB", (10, 6), (0, 128, 255)).save(path)
    return str(path)


def test_grid_from_cache_and_from_the_encoder(image_file):
    cached = torch.arange(R * D, dtype=torch.float16).reshape(R, D)
    encoder = StubEncoder()
    inputs = VisualInputs("grid", "error", cache=FakeCache({"c1": cached}), encoder=encoder)
    a, b = inputs.get_many([post("p1", "c1"), post("p2", "u2", image_file)])
    assert a.regions.shape == (R, D) and a.regions.dtype == torch.float32 and a.origin == "cache"
    assert b.regions.shape == (R, D) and b.origin == "image" and encoder.calls == [1]
    assert not a.masked and a.caption is None and inputs.dim == D
    assert inputs.detail == "grid: stub-cnn|grid=2x2x6"
    regions, mask = collate_regions([a.regions, b.regions])
    assert regions.shape == (2, R, D) and mask.all()


def test_grid_with_the_real_feature_cache(tmp_path):
    from mmner.vision.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache", "stub-cnn|grid=2x2x6")
    cache.put("16_05_01_360", torch.randn(R, D))
    inputs = VisualInputs("grid", "mask", cache=FeatureCache(tmp_path / "cache", "stub-cnn|grid=2x2x6"))
    report = inputs.scan([post("p1", "16_05_01_360"), post("p2", "nope")])
    assert report.n_masked == 1 and report.origins["cache"] == 1
    assert "no cached features for image nope" in report.masked["p2"]
    assert inputs.get(post("p1", "16_05_01_360")).regions.shape == (R, D)


def test_caption_source_gives_text():
    captions = CaptionSource({"i1": "a dog on a beach"}, "BLIP-2 caption (test)", "caps.txt")
    inputs = VisualInputs("caption", "error", captions=captions)
    a, b = inputs.get_many([post("p1", "i1"), post("p2", "i2", caption="own caption")])
    assert (a.caption, a.origin, a.regions) == ("a dog on a beach", "file", None)
    assert (b.caption, b.origin) == ("own caption", "post")
    assert inputs.detail == "BLIP-2 caption (test)"


def test_pseudo_caption_with_a_stub(image_file):
    inputs = VisualInputs("pseudo-caption", "mask", captions=PseudoCaptionSource(3, captioner=lambda im: "jay, macaw"))
    assert inputs.get(post("p1", image_path=image_file)).caption == "jay, macaw"
    missing = inputs.get(post("p2", image_path=image_file + ".gone"))
    assert missing.masked and missing.caption is None and inputs.masked == {"p2": missing.problem}


def test_none_gives_nothing():
    inputs = VisualInputs("none")
    vi = inputs.get(post("p1"))
    assert vi.regions is None and vi.caption is None and not vi.masked
    assert inputs.scan([post("p1")]).n_masked == 0 and inputs.detail == "text only"


def test_collate_variable_length_regions():
    regions, mask = collate_regions([torch.ones(3, D), None, torch.ones(1, D), torch.zeros(0, D)])
    assert regions.shape == (4, 3, D) and mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 3, [False] * 3, [True, False, False], [False] * 3]
    assert regions[1].abs().sum() == 0 and regions[2, 1:].abs().sum() == 0
    # an all-masked batch keeps one slot per post (needs the dim)
    regions, mask = collate_regions([None, None], dim=D)
    assert regions.shape == (2, 1, D) and not mask.any()
    with pytest.raises(MmnerError, match="pass dim="):
        collate_regions([None])


def test_caption_regions_one_region_per_caption_token():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, D, requires_grad=True)  # [B, T, H]
    token_mask = torch.tensor([
        [0, 1, 1, 1, 0, 0],  # [CLS] c c c [SEP] pad
        [0, 0, 0, 0, 0, 0],  # masked post: no caption tokens
        [0, 0, 0, 1, 1, 0],  # [CLS] text [SEP] c c [SEP]
    ], dtype=torch.bool)
    regions, mask = caption_regions(hidden, token_mask)
    assert regions.shape == (3, 3, D)
    assert mask.tolist() == [[True, True, True], [False] * 3, [True, True, False]]
    assert torch.equal(regions[0], hidden[0, 1:4]) and torch.equal(regions[2, :2], hidden[2, 3:5])
    assert regions[1].abs().sum() == 0 and regions[2, 2].abs().sum() == 0
    regions.sum().backward()
    assert hidden.grad[0, 1:4].eq(1).all() and hidden.grad[0, 0].eq(0).all()
    single, single_mask = caption_regions(hidden[0].detach(), token_mask[0])
    assert single.shape == (3, D) and single_mask.all()
    empty, empty_mask = caption_regions(hidden[1].detach(), token_mask[1])
    assert empty.shape == (1, D) and not empty_mask.any()


@pytest.mark.parametrize("source", ["caption", "grid", "pseudo-caption"])
def test_missing_error_names_the_post_and_the_fix(source, tmp_path):
    parts = {
        "caption": {"captions": CaptionSource({"i9": datadir.BLANK_IMAGE_CAPTION}, "t", "caps.txt")},
        "grid": {"cache": FakeCache({}), "encoder": StubEncoder()},
        "pseudo-caption": {"captions": PseudoCaptionSource(captioner=lambda im: "x")},
    }[source]
    inputs = VisualInputs(source, "error", **parts)
    gone = post("twitter2017-test-5", "i9", str(tmp_path / "i9.jpg"))
    for call in (inputs.get, lambda p: inputs.scan([p])):
        with pytest.raises(MmnerError) as err:
            call(gone)
        message = str(err.value)
        assert message.startswith("post twitter2017-test-5 (image i9): ") and "visual.missing=mask" in message
        assert "\n" not in message
    if source == "grid":
        assert "mmner features extract" in message and "no cached features for image i9" in message
    if source == "caption":
        assert "blank-image caption" in message


def test_mask_policy_masks_and_counts():
    captions = CaptionSource({"i1": "a cat", "i2": "", "i3": datadir.BLANK_IMAGE_CAPTION}, "t", "caps.txt")
    inputs = VisualInputs("caption", "mask", captions=captions)
    posts = [post("p1", "i1"), post("p2", "i2"), post("p3", "i3"), post("p4", "i4"), post("p5", None)]
    report = inputs.scan(posts)
    assert report.n_masked == 4 and sorted(report.masked) == ["p2", "p3", "p4", "p5"]
    assert report.origins == {"file": 1} and "5 posts, 4 masked" in report.summary()
    got = inputs.get_many(posts)
    assert [vi.masked for vi in got] == [False, True, True, True, True]
    assert all(vi.caption is None and vi.regions is None for vi in got[1:])
    assert inputs.n_masked == 4

    grid = VisualInputs("grid", "mask", cache=FakeCache({"i1": torch.ones(R, D)}), encoder=StubEncoder())
    vis = grid.get_many([post("p1", "i1"), post("p2", "i2")])
    assert vis[1].masked and vis[1].regions is None and grid.masked.keys() == {"p2"}
    regions, mask = collate_regions([v.regions for v in vis], dim=grid.dim)
    assert regions.shape == (2, R, D) and mask[0].all() and not mask[1].any()


def test_config_keys_and_from_config(tmp_path):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"0": "a cat", "1": ""}))
    config = load_config(None, ["visual.source=caption", f"visual.caption={caps}", "visual.missing=mask"],
                         base={"model": {"name": "bilstm-crf", "vectors": "x"}})
    inputs = VisualInputs.from_config(config.visual)
    assert inputs.source == "caption" and inputs.missing == "mask" and str(caps.resolve()) in inputs.detail
    for bad, key in ((["visual.captoin=blip2"], "visual.captoin"), (["visual.pseudo_k=0"], "visual.pseudo_k")):
        with pytest.raises(MmnerError, match=f"config key '{key}'"):
            load_config(None, bad, base={"model": {"name": "bilstm-crf", "vectors": "x"}})
    assert Config(model={"name": "bert-crf"}).visual.caption == "blip2"


def test_train_records_masked_images_per_split(tmp_path, tiny_corpus):
    from mmner.inference import check_visual

    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({str(i): "a stadium" for i in range(0, 8, 2)}))  # odd image ids: no caption
    config = load_config(None, ["visual.source=caption", f"visual.caption={caps}", "visual.missing=mask"],
                         base={"model": {"name": "bilstm-crf", "vectors": "x"}})
    posts = {s: datadir.load_dataset(str(p)) for s, p in tiny_corpus.items() if s != "train"}
    result = check_visual(config, {s: str(tiny_corpus[s]) for s in posts}, posts)
    assert result["valid"]["masked_images"] == 4 and result["test"]["masked_images"] == 4
    assert result["valid"]["visual_missing"] == "mask" and "caption file" in result["valid"]["visual_detail"]
    strict = load_config(None, ["visual.source=caption", f"visual.caption={caps}"],
                         base={"model": {"name": "bilstm-crf", "vectors": "x"}})
    with pytest.raises(MmnerError, match=r"post valid-1 \(image 1\): .*no caption for image 1"):
        check_visual(strict, {"valid": str(tiny_corpus["valid"])}, {"valid": posts["valid"]})
