"""Visual inputs: what each post brings to a multimodal model, for the configured `visual.source`.

Every multimodal model takes regions `[B, R, D]` plus a mask `[B, R]` (DESIGN §3). Where they come
from is the config's business, not the model's:

- `grid`: `regions` [R, D], the CNN feature map read from the feature cache (`visual.cache`) by
  `post.image_id`, else computed from `post.image_path` with the grid encoder; batch them with
  `collate_regions`.
- `caption`: `caption`, the post's own caption, else the `visual.caption` file's (BLIP-2, mPLUG-Owl,
  JSON). The model encodes it with its own text encoder and turns the caption token states into
  regions with `caption_regions` (one region per caption token).
- `pseudo-caption`: `caption`, the post's own caption, else the top-k ImageNet classes of its image;
  then as `caption`.
- `none`: nothing.

Missing images (`visual.missing`). A post whose image, caption or cached features are missing
(including the blank-image and empty captions, see `captions.py`) is never given a stand-in:
- `error`: `MmnerError` naming the post, what is missing and how to fix it;
- `mask`: a masked `VisualInput` (`problem` set, no regions, no caption); the post id and the problem
  are kept in `VisualInputs.masked`, and `scan` counts them per split for metrics.json
  (`masked_images`).

Mask convention. `mask` is bool, True = a real region (like `attention_mask`). A masked post keeps
**one** region slot, all zeros, with mask False, so every row of `[B, R, D]` has at least one slot and
shapes never collapse to R = 0; its mask row is all False. Models must therefore treat an all-False
row as "no image": attention over it is undefined (softmax over nothing), so zero the attended
output for such rows (`mask.any(-1)`), e.g. by gating the visual contribution to 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.vision.captions import CaptionSource, FallbackCaptions, PseudoCaptionSource, image_file_problem

if TYPE_CHECKING:
    from mmner.vision.config import VisualConfig

__all__ = [
    "VisualInput",
    "VisualInputs",
    "VisualReport",
    "caption_regions",
    "collate_regions",
]


@dataclass(frozen=True)
class VisualInput:
    """One post's visual input. Exactly one of `regions` (grid) / `caption` (caption sources) is set,
    or neither: source `none`, or a masked post (`problem` says what is missing)."""

    regions: torch.Tensor | None = None  # [R, D]
    caption: str | None = None
    problem: str | None = None
    origin: str | None = None  # cache | image | post | file

    @property
    def masked(self) -> bool:
        return self.problem is not None


_ORIGINS = {"post": "the post's own caption", "file": "the run's caption file",
            "image": "computed from the post's image", "cache": "the feature cache"}


def describe(visual: VisualInput | None) -> dict[str, Any]:
    """What visual input a post was tagged with, for its output record: `input` caption / grid / none,
    the caption or the number of regions, where it came from, and for none, why."""
    if visual is None:
        return {"input": "none", "why": "the model reads text only"}
    if visual.masked:
        return {"input": "none", "why": visual.problem}
    if visual.caption is not None:
        return {"input": "caption", "caption": visual.caption, "from": _ORIGINS.get(visual.origin or "", visual.origin)}
    if visual.regions is not None:
        return {"input": "grid", "regions": int(visual.regions.shape[0]),
                "from": _ORIGINS.get(visual.origin or "", visual.origin)}
    return {"input": "none", "why": "the run reads no visual input"}


@dataclass
class VisualReport:
    """What `scan` found in a list of posts: how many have no usable image, and why."""

    posts: int
    masked: dict[str, str] = field(default_factory=dict)  # post id -> what is missing
    origins: Counter = field(default_factory=Counter)  # where the usable inputs come from

    @property
    def n_masked(self) -> int:
        return len(self.masked)

    def summary(self) -> str:
        used = ", ".join(f"{n} from {o}" for o, n in sorted(self.origins.items()))
        return f"{self.posts} posts, {self.n_masked} masked (no image)" + (f"; {used}" if used else "")


class VisualInputs:
    """The visual input of each post for one configured source, with the missing-image policy.

    Build it with `from_config(config.visual, dataset=...)`, or directly with the parts (tests, tools):
    `captions` (a `CaptionSource` / `PseudoCaptionSource`), `cache` (anything with
    `.get(image_id) -> Tensor [R, D] | None` and `image_id in cache`) and `encoder` (anything with
    `.encode(images) -> [B, R, D]`, `.dim` and `.identity`, e.g. a `vision.grid.GridEncoder`).
    """

    def __init__(
        self,
        source: str,
        missing: str = "error",
        *,
        captions: CaptionSource | PseudoCaptionSource | FallbackCaptions | None = None,
        cache: Any = None,
        encoder: Any = None,
        load_image: Callable[[str], Any] | None = None,
        detail: str | None = None,
    ) -> None:
        if source not in ("grid", "caption", "pseudo-caption", "none"):
            raise MmnerError(f"visual.source: unknown source {source!r} (choose grid, caption, pseudo-caption, none)")
        if missing not in ("error", "mask"):
            raise MmnerError(f"visual.missing: unknown policy {missing!r} (choose error or mask)")
        if source in ("caption", "pseudo-caption") and captions is None:
            raise MmnerError(f"visual.source={source} needs a caption source")
        if source == "grid" and cache is None and encoder is None:
            raise MmnerError("visual.source=grid needs a feature cache (visual.cache) or a grid encoder")
        self.source = source
        self.missing = missing
        self.captions = captions
        self.cache = cache
        self.encoder = encoder
        self._load_image = load_image
        self.dim: int | None = getattr(encoder, "dim", None)  # D, once known (for an all-masked batch)
        self.masked: dict[str, str] = {}  # post id -> what is missing, for every post masked so far
        if detail is None:
            if source == "grid":
                detail = f"grid: {getattr(encoder, 'identity', None) or type(encoder or cache).__name__}"
            else:
                detail = "text only" if source == "none" else captions.detail  # type: ignore[union-attr]
        self.detail = detail  # one line that results record next to visual_source

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, visual: "VisualConfig", dataset: str | Path | None = None,
                    data_dir: str | Path | None = None) -> "VisualInputs":
        """The inputs a run's `visual` section asks for. `dataset` (a data name such as
        `twitter2017:test`, or a file) picks the BLIP-2 file for `visual.caption: blip2`."""
        if visual.source == "none":
            return cls("none", visual.missing)
        if visual.source == "caption":
            captions = CaptionSource.from_setting(visual.caption, dataset, data_dir)
            return cls("caption", visual.missing, captions=captions)
        if visual.source == "pseudo-caption":
            return cls("pseudo-caption", visual.missing,
                       captions=PseudoCaptionSource(visual.pseudo_k, visual.grid_encoder,
                                                    weights=visual.grid_weights))
        return _grid_from_config(cls, visual)

    # -- per post -------------------------------------------------------------------------------
    def get(self, post: Post) -> VisualInput:
        """The post's visual input; a missing one raises (`error`) or comes back masked (`mask`)."""
        return self.get_many([post])[0]

    def get_many(self, posts: Sequence[Post]) -> list[VisualInput]:
        """`get` for several posts; for `grid`, images missing from the cache are encoded in one batch."""
        if self.source == "none":
            return [VisualInput() for _ in posts]
        if self.source != "grid":
            out = []
            for post in posts:
                c = self.captions.resolve(post)  # type: ignore[union-attr]
                out.append(VisualInput(caption=c.text, origin=c.origin) if c.text is not None
                           else self._masked(post, c.problem))
            return out
        results: list[VisualInput | None] = [None] * len(posts)
        todo: list[tuple[int, Any]] = []  # (index, loaded image) to encode
        for i, post in enumerate(posts):
            feats = self._cached(post)
            if feats is not None:
                results[i] = VisualInput(regions=feats, origin="cache")
                continue
            problem = self._image_problem(post)
            if problem is None:
                try:
                    todo.append((i, self._read_image(post.image_path)))  # type: ignore[arg-type]
                    continue
                except MmnerError as exc:
                    problem = str(exc)  # "<path>: unreadable image (<why>)"
            results[i] = self._masked(post, self._grid_problem(post, problem))
        if todo:
            regions = self.encoder.encode([image for _, image in todo])  # [B, R, D]
            self.dim = int(regions.shape[-1])
            for (i, _), feats in zip(todo, regions):
                results[i] = VisualInput(regions=feats, origin="image")
        return results  # type: ignore[return-value]

    def scan(self, posts: Sequence[Post]) -> VisualReport:
        """Check every post before any training: which have no usable image, applying the policy
        (`error` raises at the first one). Cheap: captions are looked up, image files only have their
        header read, nothing is encoded (pseudo-captions are computed later, by `get`)."""
        report = VisualReport(len(posts))
        if self.source == "none":
            return report
        for post in posts:
            origin, problem = self._check(post)
            if problem is None:
                report.origins[origin] += 1
                continue
            self._masked(post, problem)
            report.masked[post.id] = problem
        return report

    @property
    def n_masked(self) -> int:
        return len(self.masked)

    # -- internals ------------------------------------------------------------------------------
    def _check(self, post: Post) -> tuple[str, str | None]:
        if self.source == "caption":
            c = self.captions.resolve(post)  # type: ignore[union-attr]
            return c.origin, c.problem
        if self.source == "pseudo-caption":
            if post.caption is not None:
                c = self.captions.resolve(post)  # type: ignore[union-attr]
                return c.origin, c.problem
            return "image", image_file_problem(post.image_path)
        if self.cache is not None and post.image_id is not None and post.image_id in self.cache:
            return "cache", None  # `in` checks the entry's file without reading it
        problem = self._image_problem(post)
        return "image", None if problem is None else self._grid_problem(post, problem)

    def _cached(self, post: Post) -> torch.Tensor | None:
        if self.cache is None or post.image_id is None:
            return None
        feats = self.cache.get(post.image_id)
        if feats is None:
            return None
        self.dim = int(feats.shape[-1])
        return feats.float()  # caches store float16 by default; models compute in float32

    def _image_problem(self, post: Post) -> str | None:
        if self.encoder is None:
            return "no grid encoder to compute features from the image file"
        return image_file_problem(post.image_path)

    def _grid_problem(self, post: Post, problem: str) -> str:
        if self.cache is None:
            return problem
        where = getattr(self.cache, "folder", None) or "the feature cache"
        return f"no cached features for image {post.image_id} in {where}, and {problem}"

    def _read_image(self, path: str) -> Any:
        if self._load_image is None:
            from mmner.vision.images import load_image

            self._load_image = load_image
        return self._load_image(path)

    def _masked(self, post: Post, problem: str | None) -> VisualInput:
        problem = problem or "no image"
        if self.missing == "error":
            raise MmnerError(f"post {post.id}{_image_of(post)}: no visual input for visual.source={self.source}: "
                             f"{problem}; {_FIXES[self.source]}")
        self.masked[post.id] = problem
        return VisualInput(problem=problem)


_FIXES = {
    "grid": "precompute features with `mmner features extract --images DIR --encoder NAME --output CACHE` "
            "and set visual.cache, give the post a readable image, or set visual.missing=mask to mask posts "
            "without an image",
    "caption": "give the post a \"caption\", point visual.caption at a file that covers it, "
               "or set visual.missing=mask to mask posts without an image",
    "pseudo-caption": "give the post a readable image file or a \"caption\", "
                      "or set visual.missing=mask to mask posts without an image",
}


def _image_of(post: Post) -> str:
    return f" (image {post.image_id})" if post.image_id is not None else ""


def _grid_from_config(cls: type[VisualInputs], visual: "VisualConfig") -> VisualInputs:
    from mmner.vision.grid import get_encoder

    # Built now, even when every image is cached: its identity (weights hash, preprocessing) is what
    # results record and what keys the cache, so features of another CNN are never used.
    enc = get_encoder(visual.grid_encoder, visual.grid_weights)
    if visual.cache is None:
        return cls("grid", visual.missing, encoder=enc, detail=f"grid: {enc.identity}")
    from mmner.vision.cache import FeatureCache

    # `features extract --dtype` picks the storage dtype, which is part of the cache folder's key
    caches = [FeatureCache(visual.cache, enc.identity, dtype) for dtype in ("float16", "float32")]
    cache = next((c for c in caches if c.folder.is_dir()), caches[0])
    return cls("grid", visual.missing, cache=cache, encoder=enc, detail=f"grid: {enc.identity} (cache {cache.folder})")


# --------------------------------------------------------------------------------------------------
# batching


def collate_regions(
    regions: Sequence[torch.Tensor | None], dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length regions -> (`regions` [B, R, D] zero-padded, `mask` [B, R] bool, True = real).

    `None` (or an empty [0, D] tensor) is a masked post: one all-masked slot. R = max(1, longest).
    `dim` is needed only when no post of the batch has regions.
    """
    present = [r for r in regions if r is not None]
    if present:
        dim = int(present[0].shape[-1])
        dtype, device = present[0].dtype, present[0].device
    elif dim is None:
        raise MmnerError("collate_regions: every post of the batch is masked; pass dim= to size the regions")
    else:
        dtype, device = torch.float32, torch.device("cpu")
    width = max([1] + [int(r.shape[0]) for r in present])
    out = torch.zeros(len(regions), width, dim, dtype=dtype, device=device)  # [B, R, D]
    mask = torch.zeros(len(regions), width, dtype=torch.bool, device=device)  # [B, R]
    for b, r in enumerate(regions):
        if r is None or r.shape[0] == 0:
            continue
        if r.dim() != 2 or r.shape[-1] != dim:
            raise MmnerError(f"collate_regions: post {b} has regions of shape {tuple(r.shape)}, expected [R, {dim}]")
        out[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = True
    return out, mask


def caption_regions(hidden: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption token states -> caption regions: one region per caption token, left-aligned.

    `hidden` [B, T, H] (or [T, H]) are the text encoder's states over a sequence holding the caption;
    `token_mask` [B, T] (or [T]) is True exactly at caption tokens (the model leaves out [CLS], [SEP],
    padding and, for `[CLS] text [SEP] caption [SEP]`, the text). Returns `regions` [B, R, H] and
    `mask` [B, R], R = max(1, most caption tokens): a post without caption tokens (masked: no image)
    gets one all-masked slot. Differentiable in `hidden`.
    """
    single = hidden.dim() == 2
    if single:
        hidden, token_mask = hidden.unsqueeze(0), token_mask.unsqueeze(0)
    token_mask = token_mask.bool()
    if hidden.shape[:2] != token_mask.shape:
        raise MmnerError(f"caption_regions: hidden {tuple(hidden.shape)} and token_mask "
                         f"{tuple(token_mask.shape)} differ in [B, T]")
    counts = token_mask.sum(1)  # [B]
    width = max(1, int(counts.max())) if counts.numel() else 1
    b_idx, _ = token_mask.nonzero(as_tuple=True)
    slot = (token_mask.long().cumsum(1) - 1)[token_mask]  # position of each caption token among its post's
    regions = hidden.new_zeros(hidden.shape[0], width, hidden.shape[-1])  # [B, R, H]
    regions = regions.index_put((b_idx, slot), hidden[token_mask])
    mask = torch.arange(width, device=hidden.device).unsqueeze(0) < counts.unsqueeze(1)  # [B, R]
    if single:
        return regions[0], mask[0]
    return regions, mask
