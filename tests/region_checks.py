"""Checks every region-reading model must pass, shared by the multimodal model tests."""

from __future__ import annotations

import torch

from mmner.data.post import Post
from mmner.vision.inputs import VisualInput


def grid_batch(model, regions: list[torch.Tensor | None], posts: list[Post]) -> dict:
    """A batch of `posts` with the given grid regions ([R, D]; None: the post has no image)."""
    visual = [VisualInput(regions=r) if r is not None else VisualInput(problem="no image") for r in regions]
    return model.collate([model.featurize(p, v) for p, v in zip(posts, visual)])


def source_batch(model, source: str, posts: list[Post], dim: int) -> dict:
    """A two-post batch for `source`: `grid` gives both posts regions of width `dim`; `caption` gives the
    first a caption and the second no image."""
    if source == "grid":
        return grid_batch(model, [torch.randn(3, dim), torch.randn(2, dim)], posts)
    visual = [VisualInput(caption="a man with a phone"), VisualInput(problem="no image")]
    return model.collate([model.featurize(p, v) for p, v in zip(posts, visual)])


def pad_regions(batch: dict, extra: int) -> dict:
    """The same batch with `extra` masked (padding) regions of random content after the real ones."""
    b, _, d = batch["regions"].shape
    return {**batch,
            "regions": torch.cat([batch["regions"], torch.randn(b, extra, d) * 10], 1),
            "region_mask": torch.cat([batch["region_mask"], torch.zeros(b, extra, dtype=torch.bool)], 1)}


def assert_masked_regions_inert(model, batch: dict) -> None:
    """Masked regions change nothing; the real regions of post 0 do change its scores (so the check is
    not vacuous), and post 1, which has no image, is untouched by them."""
    with torch.no_grad():
        before = model(batch)["emissions"]
        after = model(pad_regions(batch, 4))["emissions"]
        changed = model({**batch, "regions": batch["regions"] + torch.randn_like(batch["regions"])})["emissions"]
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    assert not torch.allclose(changed[0], before[0], atol=1e-4)
    assert torch.allclose(changed[1], before[1], atol=1e-5)
