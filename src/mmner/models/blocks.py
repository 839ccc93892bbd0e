"""Pieces shared by several models (DESIGN §4): one copy each."""

from __future__ import annotations

from typing import Any

import torch


def pad_tags(items: list[dict[str, Any]], width: int) -> torch.Tensor | None:
    """Gold ids [B, W] when every item has gold, else None."""
    if any(item.get("tags") is None for item in items):
        return None
    tags = torch.zeros((len(items), width), dtype=torch.long)
    for b, item in enumerate(items):
        tags[b, : len(item["tags"])] = torch.tensor(item["tags"])
    return tags
