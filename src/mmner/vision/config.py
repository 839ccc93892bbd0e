"""The `visual` section of a config: which visual input a run reads. Here, beside the visual inputs
that read it, so that vision code needs nothing from the config module (which imports the models)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class VisualConfig(BaseModel):
    """Where each post's visual regions come from (DESIGN §3); `mmner.vision.inputs` reads it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    source: Literal["grid", "caption", "pseudo-caption", "none"] = "none"
    # A post without image / caption / cached features: `error` stops with its id, `mask` gives it an
    # all-masked visual input and counts it (metrics.json: masked_images). Never a silent substitute.
    missing: Literal["error", "mask"] = "error"
    caption: str = "blip2"  # source=caption: blip2 | owl | path to a JSON / BLIP-2 / mPLUG-Owl captions file
    grid_encoder: str = "efficientnet-lite0"  # source=grid / pseudo-caption: the CNN (`vision.grid` names)
    grid_weights: str | None = None  # its local weights file (required for resnet / timm:<arch>)
    cache: str | None = None  # source=grid: feature cache written by `mmner features extract`
    pseudo_k: int = Field(5, ge=1)  # source=pseudo-caption: top-k ImageNet class names per image
    # source=caption, new posts (tagging, not training): an image without a caption of its own or in the
    # caption file gets a pseudo-caption (top-pseudo_k ImageNet classes of grid_encoder), or `none`: it is
    # tagged from its text alone. The output record says which (`visual`).
    caption_fallback: Literal["pseudo-caption", "none"] = "pseudo-caption"
