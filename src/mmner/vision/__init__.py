"""Visual inputs (DESIGN §3): image loading, the image grid encoder, pseudo-captions, the feature cache.

Every visual source ends as regions `[B, R, D]` plus a mask `[B, R]`; this package makes the `grid`
regions (a CNN's last feature map) and the `pseudo-caption` text. Submodules import torch / Pillow
lazily from here, so `import mmner.vision` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mmner.vision.cache import ExtractSummary, FeatureCache, extract_features, image_id_for
    from mmner.vision.grid import DEFAULT_ENCODER, GridEncoder, build_encoder, get_encoder
    from mmner.vision.images import load_image
    from mmner.vision.pseudo import pseudo_caption, pseudo_captions, top_classes

_EXPORTS = {
    "load_image": "images",
    "DEFAULT_ENCODER": "grid",
    "GridEncoder": "grid",
    "build_encoder": "grid",
    "get_encoder": "grid",
    "pseudo_caption": "pseudo",
    "pseudo_captions": "pseudo",
    "top_classes": "pseudo",
    "ExtractSummary": "cache",
    "FeatureCache": "cache",
    "extract_features": "cache",
    "image_id_for": "cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"mmner.vision.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mmner.vision' has no attribute {name!r}")
