"""Caption sources: the text that stands in for a post's image (DESIGN §3, `caption`, `pseudo-caption`).

A caption source answers one question per post: which caption describes its image, or why there is
none. The answer is a `Caption` (text, where it came from, or the problem), never a substitute: the
missing-image policy (`visual.missing`) is applied by `mmner.vision.inputs`, which needs to know
exactly what is missing to name it in an error or count it as masked.

Resolution order (`CaptionSource.resolve`): the post's own caption when it carries one (JSON lines
`"caption"`, RiTUAL `captions.json`), else the configured file looked up by `post.image_id`. A post's
own caption is final: when it is empty or the blank-image caption, the post has no image, and the
file is not consulted (the post's data says more about its image than a file keyed by id).

"No image" captions: an empty caption (two lines of the Twitter-2015 BLIP-2 file read `71406.jpg :`)
and `datadir.BLANK_IMAGE_CAPTION`, which BLIP-2 wrote for each of the 358 Twitter-2017 images that
were blank. Both describe no real image, so they count as missing, like an absent entry.

Sources (`visual.caption`): `blip2` (the dataset's BLIP-2 file; both files when the dataset is not
known, their ids being disjoint), `owl` (the mPLUG-Owl descriptions, partial coverage), or a path to
a JSON / BLIP-2 / mPLUG-Owl captions file. `PseudoCaptionSource` computes captions from the image
file instead (top-k ImageNet classes, `mmner.vision.pseudo`, imported only when used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmner.data import datadir
from mmner.data.post import Post
from mmner.errors import MmnerError

__all__ = [
    "Caption",
    "CaptionSource",
    "PseudoCaptionSource",
    "dataset_of",
    "image_file_problem",
    "no_image_reason",
    "own_caption",
]

_DATASETS = ("twitter2015", "twitter2017")
_BLANK = " ".join(datadir.BLANK_IMAGE_CAPTION.lower().split())


def no_image_reason(caption: str | None) -> str | None:
    """Why a caption stands for "no image" (`None` when it is a usable caption)."""
    if caption is None:
        return "no caption"
    if not caption.strip():
        return "an empty caption"
    if " ".join(caption.lower().split()) == _BLANK:
        return f"the blank-image caption ({datadir.BLANK_IMAGE_CAPTION!r}: the image was blank when captioned)"
    return None


@dataclass(frozen=True)
class Caption:
    """A post's caption (`text`), or why it has none (`problem`; then `text` is None).

    `origin`: `post` (the post's own caption), `file` (looked up in a captions file) or `image`
    (pseudo-caption computed from the image file).
    """

    text: str | None
    origin: str
    problem: str | None = None

    @property
    def missing(self) -> bool:
        return self.text is None


def dataset_of(name_or_path: str | Path | None) -> str | None:
    """`twitter2015` / `twitter2017` for a data name (`twitter2017:test`, `twitter2015_samples:dev`) or
    a file inside such a folder; None when it is neither (a user's own posts)."""
    if name_or_path is None:
        return None
    text = str(name_or_path)
    if ":" in text and not Path(text).exists():
        name = text.split(":", 1)[0].removesuffix("_samples")
        return name if name in _DATASETS else None
    for part in reversed(Path(text).parts):
        name = part.removesuffix("_samples")
        if name in _DATASETS:
            return name
    return None


def _joined(parts: Iterable[str]) -> str:
    """Each distinct part once, in order, joined with ` + `."""
    return " + ".join(dict.fromkeys(parts))


class CaptionSource:
    """Captions from a file (or mapping) keyed by image id, behind the post's own caption.

    Build one with `from_setting` (`blip2`, `owl`, or a path) or `from_file`; `resolve(post)` gives
    the post's `Caption`. `detail` is the one-line identity that results record next to
    `visual_source` (which captioner, which file).
    """

    def __init__(self, captions: Mapping[str, str], detail: str, where: str) -> None:
        self.captions = captions
        self.detail = detail  # e.g. "BLIP-2 caption (captions/blip2_twitter2017.txt)"
        self.where = where  # the file(s), for messages

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, detail: str | None = None) -> "CaptionSource":
        """Any captions file that `readers.read_captions` reads (JSON, BLIP-2, mPLUG-Owl)."""
        from mmner.data.readers import read_captions

        p = Path(path).expanduser()
        if not p.is_file():
            raise MmnerError(f"visual.caption: {p} is not a captions file (use blip2, owl, or a JSON / BLIP-2 file)")
        sha1 = hashlib.sha1(p.read_bytes()).hexdigest()[:12]
        return cls(read_captions(p), detail or f"caption file {p.resolve()} (sha1 {sha1})", str(p))

    @classmethod
    def from_setting(cls, setting: str, dataset: str | Path | None = None,
                     data_dir: str | Path | None = None) -> "CaptionSource":
        """The source `visual.caption` names: `blip2`, `owl` or a file path.

        `dataset` (a data name or file, see `dataset_of`) picks the BLIP-2 file; when it names no
        Twitter dataset, both BLIP-2 files are merged (their image ids are disjoint but for one image
        that reads the same in both).
        """
        from mmner.data.readers import read_blip2_captions, read_owl_captions

        if setting == "owl":
            path = datadir.caption_file("twitter2015", "owl", data_dir)
            return cls(read_owl_captions(path), f"mPLUG-Owl description ({_rel(path)})", str(path))
        if setting == "blip2":
            name = dataset_of(dataset)
            names = [name] if name else list(_DATASETS)
            paths = [datadir.caption_file(n, "blip2", data_dir) for n in names]
            files = " + ".join(_rel(p) for p in paths)
            return cls.merged([(str(p), cls(read_blip2_captions(p), "", str(p))) for p in paths], "visual.caption=blip2",
                              detail=f"BLIP-2 caption ({files})", hint="; name the dataset's file instead")
        if Path(setting).expanduser().exists() or any(c in setting for c in "/\\."):
            return cls.from_file(setting)
        raise MmnerError(f"visual.caption: unknown caption source {setting!r} "
                         "(choose blip2, owl, or give the path of a JSON / BLIP-2 captions file)")

    @classmethod
    def merged(cls, sources: Sequence[tuple[str, "CaptionSource"]], setting: str, detail: str | None = None,
               hint: str = "") -> "CaptionSource":
        """One source of several `(name, source)` pairs whose image ids are meant not to clash: an image
        captioned differently by two of them is an error naming both (`setting`: what asked for the
        merge, `hint`: what to do, for the message). `detail`: default, the sources' details joined."""
        captions: dict[str, str] = {}
        first: dict[str, str] = {}
        for name, source in sources:
            for key, caption in source.captions.items():
                if captions.setdefault(key, caption) != caption:
                    raise MmnerError(f"{setting}: image {key} has different captions in {first[key]} and {name}{hint}")
                first.setdefault(key, name)
        return cls(captions, detail or _joined(s.detail for _, s in sources), _joined(s.where for _, s in sources))

    # -- lookup ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.captions)

    def lookup(self, image_id: str | None) -> Caption:
        """The caption of an image id in this source's file."""
        if image_id is None:
            return Caption(None, "file", f"no image id to look up in {self.where}")
        text = self.captions.get(image_id)
        if text is None:
            return Caption(None, "file", f"no caption for image {image_id} in {self.where}")
        reason = no_image_reason(text)
        if reason is not None:
            return Caption(None, "file", f"image {image_id} has {reason} in {self.where}")
        return Caption(text.strip(), "file")

    def resolve(self, post: Post) -> Caption:
        """The post's own caption if it carries one (final, even when blank), else `lookup`."""
        if post.caption is not None:
            return own_caption(post.caption)
        return self.lookup(post.image_id)


PseudoCaptioner = Callable[[Any], str]
"""RGB image (`PIL.Image`) -> pseudo-caption text."""


class PseudoCaptionSource:
    """Captions computed from the post's image file: its top-k ImageNet class names.

    The post's own caption still wins, as for `CaptionSource`. `captioner` (image -> text) defaults to
    `mmner.vision.pseudo.pseudo_caption` with the named CNN (`vision.grid` names, local `weights`),
    imported and loaded on first use so that a split whose posts all carry captions never loads it.
    An absent or unreadable image file is a missing image (a `Caption` with its problem), not an
    exception: the missing-image policy decides.
    """

    def __init__(self, k: int = 5, encoder: str = "efficientnet-lite0", weights: str | None = None,
                 captioner: PseudoCaptioner | None = None) -> None:
        self.k = k
        self.encoder = encoder
        self.weights = weights
        self._captioner = captioner
        with_weights = f", weights {Path(weights).name}" if weights else ""
        self.detail = f"pseudo-caption: top-{k} ImageNet classes of {encoder}{with_weights}"

    def _caption(self, image: Any) -> str:
        if self._captioner is None:
            from mmner.vision.grid import get_encoder
            from mmner.vision.pseudo import pseudo_caption

            encoder = get_encoder(self.encoder, self.weights)
            self._captioner = lambda image: pseudo_caption(image, self.k, encoder)
        return self._captioner(image)

    def resolve(self, post: Post) -> Caption:
        if post.caption is not None:
            return own_caption(post.caption)
        problem = image_file_problem(post.image_path)
        if problem is not None:
            return Caption(None, "image", problem)
        from mmner.vision.images import load_image

        try:
            image = load_image(post.image_path)  # type: ignore[arg-type]
        except MmnerError as exc:  # only the image's own fault is a missing image; a CNN problem is an error
            return Caption(None, "image", str(exc))
        text = self._caption(image)
        if not text or not text.strip():
            return Caption(None, "image", f"image file {post.image_path} gave an empty pseudo-caption")
        return Caption(text.strip(), "image")


class FallbackCaptions:
    """A caption source for new posts with a second source behind it: an image that `primary` has no
    caption for (its post gave none and the run's caption file does not know it) gets `fallback`'s,
    a pseudo-caption from the image, rather than being tagged from its text alone. A post's own caption
    (even a blank-image one) is final, as everywhere; when both have none, `primary`'s reason stands."""

    def __init__(self, primary: CaptionSource, fallback: PseudoCaptionSource) -> None:
        self.primary, self.fallback = primary, fallback
        self.detail = f"{primary.detail}; else {fallback.detail}"
        self.where = primary.where

    def resolve(self, post: Post) -> Caption:
        caption = self.primary.resolve(post)
        if caption.text is not None or post.caption is not None or not post.image_path:
            return caption
        try:
            computed = self.fallback.resolve(post)
        except MmnerError as exc:  # e.g. the CNN's weights are not installed: the post keeps its text
            return Caption(None, "image", f"{caption.problem}; no pseudo-caption ({exc})")
        return computed if computed.text is not None else Caption(None, "image", f"{caption.problem}; {computed.problem}")


def own_caption(caption: str) -> Caption:
    """A caption the post carries itself: final, even when it says "no image"."""
    reason = no_image_reason(caption)
    if reason is not None:
        return Caption(None, "post", f"the post's own caption is {reason}")
    return Caption(caption.strip(), "post")


def image_file_problem(path: str | None) -> str | None:
    """Why an image file cannot be used (absent, a folder, not an image), or None. Reads the header
    only (PIL opens lazily), so checking a whole split before training stays cheap."""
    if path is None:
        return "the post has no image file"
    p = Path(path)
    if not p.is_file():
        return f"image file {p} does not exist"
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.size  # noqa: B018 - the header is parsed on open; size proves it
    except Image.DecompressionBombError:
        return None  # huge but real: `images.load_image` decodes large JPEGs at reduced scale, or says why not
    except Exception as exc:  # PIL raises many types for a bad file; all mean "unreadable"
        return f"image file {p} is unreadable ({type(exc).__name__}: {exc})"
    return None


def _rel(path: Path) -> str:
    """`captions/blip2_twitter2017.txt`: the data-dir-relative name results print."""
    return f"{path.parent.name}/{path.name}"
