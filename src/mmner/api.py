"""Tag new posts from Python: `Tagger.load(RUN_DIR)(text, image=...)`.

    from mmner import Tagger
    tagger = Tagger.load("runs/t17")
    tagger("RT @nasa: Launch from #CapeCanaveral today 🚀", image="post.jpg")
    # {"text": ..., "tokens": [...], "tags": [...], "entities": [{"text": "CapeCanaveral", "type": "LOC",
    #   "start": 7, "end": 8, "char_start": 23, "char_end": 36}], "relation_score": 0.81 (models with one)}
    tagger.batch([{"id": "1", "text": "...", "image": "a.jpg"}, "just a text", ...])

Raw text is tokenised as the training data was (`mmner.data.readers.tokenize_post`: the Twitter
releases' style, with an emoji of several code points kept as one token), and entities carry
both token offsets (`start`, `end`, end exclusive: the DESIGN §1 output) and character offsets into
the caller's own string (`char_start`, `char_end`), so `text[char_start:char_end]` is the entity
whatever the post holds: emoji, URLs, @mentions, #hashtags, repeated spaces, zero-width spaces, or
tokens that a caller's own tokeniser altered (`token_offsets`).

This `Tagger` wraps a trained model; it is not `mmner.models.base.Tagger`, the models' base class.
"""

from __future__ import annotations

import difflib
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from mmner.data.post import Post, generated_id, post_id
from mmner.data.readers import tokenize_post
from mmner.errors import MmnerError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmner.config import Config
    from mmner.models.base import Tagger as Model

__all__ = ["StagedImages", "Tagger", "entity_records", "make_post", "post_record", "read_image_bytes", "token_offsets",
           "without_attention"]

# What a post's image may be: a file path, a PIL image, the bytes of an image file, or nothing.
ImageLike = Union[str, Path, "Image.Image", bytes, None]
PostLike = Union[str, Post, Mapping[str, Any]]

_POST_KEYS = {"id", "text", "tokens", "image", "image_id", "caption"}

# Posts are tagged in groups of SORT_GROUP model batches: within a group they are sorted by length into
# batches (little padding, the encoder's cost being in its padded sub-tokens), and come back in order.
SORT_GROUP = 16


# --------------------------------------------------------------------------------------------------
# character offsets


def _dropped(ch: str) -> bool:
    """Characters the tokenizer drops between tokens: whitespace, zero-width and control characters."""
    return ch.isspace() or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\u200d\u00ad")


def _exact_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None] | None:
    """Offsets when every token occurs in order with only dropped characters between: the common case."""
    out: list[tuple[int, int] | None] = []
    cursor = 0
    for token in tokens:
        start = text.find(token, cursor) if token else -1
        if start < 0 or not all(_dropped(c) for c in text[cursor:start]):
            return None
        cursor = start + len(token)
        out.append((start, cursor))
    return out


def _fold(s: str) -> str:
    """Compatibility-decomposed, without combining marks, case-folded: `Café` and `cafe` compare equal."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).casefold()


def _aligned_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """Offsets of tokens that do not occur verbatim, by aligning characters.

    Both sides are compared without spacing, accents or case (`_fold`), and aligned with a
    longest-matching-blocks diff, so a lower-cased, normalised, unescaped or partly rewritten token
    still finds its characters; a token none of whose characters align gets None.
    """
    folded: list[str] = []  # text, folded and without dropped characters
    origin: list[int] = []  # index in `text` of each folded character
    for i, ch in enumerate(text):
        if not _dropped(ch):
            for f in _fold(ch):
                folded.append(f)
                origin.append(i)
    joined: list[str] = []
    owner: list[int] = []  # token index of each joined character
    for t, token in enumerate(tokens):
        for f in _fold("".join(c for c in token if not _dropped(c))):
            joined.append(f)
            owner.append(t)
    first: list[int | None] = [None] * len(tokens)
    last: list[int | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(None, folded, joined, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            t, i = owner[b + k], origin[a + k]
            if first[t] is None:
                first[t] = i
            last[t] = i
    return [(f, l + 1) if f is not None and l is not None else None for f, l in zip(first, last)]


def token_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """The character span `(start, end)` of each token in `text`, or None where a token is not there.

    Tokens from `tokenize_post(text)` are always found verbatim; tokens from elsewhere (a caller's own
    tokeniser, or `tokens` that came with a `text`) are aligned character by character.
    """
    return _exact_offsets(text, tokens) or _aligned_offsets(text, tokens)


def _entity_chars(text: str, spans: Sequence[tuple[int, int] | None], start: int, end: int) -> tuple[int, int] | None:
    """Character span of tokens `start:end`; for tokens never found, the text between their neighbours."""
    found = [s for s in spans[start:end] if s is not None]
    if found:
        return found[0][0], found[-1][1]
    lo = next((s[1] for s in reversed(spans[:start]) if s is not None), 0)
    hi = next((s[0] for s in spans[end:] if s is not None), len(text))
    while lo < hi and _dropped(text[lo]):
        lo += 1
    while hi > lo and _dropped(text[hi - 1]):
        hi -= 1
    return (lo, hi) if lo < hi else None


def entity_records(tokens: Sequence[str], tags: Sequence[str], text: str | None = None) -> list[dict[str, Any]]:
    """Entities of IOB2 tags: `type`, token offsets `start`/`end` and, given the post's `text`, the
    entity's own characters `text` = `text[char_start:char_end]` (else the tokens joined by spaces)."""
    from mmner.tagging.schemes import entities

    spans = token_offsets(text, tokens) if text is not None else None
    out = []
    for typ, start, end in entities(list(tags)):
        record: dict[str, Any] = {"text": " ".join(tokens[start:end]), "type": typ, "start": start, "end": end}
        if text is not None and spans is not None:
            chars = _entity_chars(text, spans, start, end)
            if chars is not None:
                record["text"] = text[chars[0] : chars[1]]
            record["char_start"], record["char_end"] = chars if chars is not None else (None, None)
        out.append(record)
    return out


# --------------------------------------------------------------------------------------------------
# posts in, records out


def _to_python(value: Any) -> Any:
    """A model's per-post extra (tensor, array, number) as JSON-ready Python."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu()
        return round(float(value), 6) if value.dim() == 0 else value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _public_attention(att: Mapping[str, Any], entities: list[dict[str, Any]]) -> dict[str, Any]:
    """A model's region attention as output: `weights` (one per visual region: the attention of all
    the post's words to it), `grid` [rows, cols] for image regions or `labels` naming caption regions;
    each entity record gets its own `attention` (the sum over its words)."""
    from mmner.analysis.artifacts import span_attention

    for e in entities:
        e["attention"] = span_attention(att["words"], e["start"], e["end"], len(att["weights"]))
    return {key: att[key] for key in ("weights", "grid", "labels") if att.get(key) is not None}


def post_record(post: Post, tags: list[str], extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The output record of a tagged post (DESIGN §1), with the input's own extra keys kept."""
    text = post.meta.get("text")
    record: dict[str, Any] = {"id": post.id}
    if isinstance(text, str):
        record["text"] = text
    record.update(tokens=post.tokens, tags=tags,
                  entities=entity_records(post.tokens, tags, text if isinstance(text, str) else None))
    if post.image_path and not post.meta.get("image_is_temporary"):
        record["image"] = post.image_path
    if post.caption is not None:
        record["caption"] = post.caption
    for key, value in (extras or {}).items():
        if key == "attention":
            if value:
                record["attention"] = _public_attention(value, record["entities"])
            continue
        record[key] = _to_python(value)
    for key, value in post.meta.items():
        if key not in ("text", "line", "image_is_temporary") and key not in record:
            record[key] = value
    return record


def without_attention(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its region attention (and each entity's) left out."""
    out = {k: v for k, v in record.items() if k != "attention"}
    out["entities"] = [{k: v for k, v in e.items() if k != "attention"} for e in record.get("entities", [])]
    return out


@dataclass
class StagedImages:
    """Images given as PIL images or bytes, written to a temporary folder so every visual pipeline
    (which reads `post.image_path`, like the training data's) sees them; removed after tagging."""

    folder: tempfile.TemporaryDirectory | None = None
    count: int = 0

    def path(self, image: Any, stem: str) -> str:
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="mmner-images-")
        self.count += 1
        target = Path(self.folder.name) / f"{self.count}-{stem}"
        if isinstance(image, (bytes, bytearray)):
            target = target.with_suffix(_suffix_of(bytes(image)))
            target.write_bytes(bytes(image))
        else:
            target = target.with_suffix(".png")
            if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):  # e.g. CMYK: not in PNG
                image = image.convert("RGB")
            image.save(target, format="PNG")
        return str(target)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


def _suffix_of(data: bytes) -> str:
    """The file suffix of image bytes by their content (`.img` when Pillow does not know them)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
    except Exception:  # noqa: BLE001 - not an image: the visual pipeline reports it by its policy
        return ".img"
    return {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "webp": ".webp", "bmp": ".bmp"}.get(fmt, f".{fmt or 'img'}")


def _safe_stem(pid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in pid)[:40] or "post"


def _post_id(given: Any, index: int) -> str:
    try:
        return post_id(given, index + 1)
    except ValueError as exc:
        raise MmnerError(str(exc)) from None


def make_post(item: PostLike, index: int = 0, staged: StagedImages | None = None) -> Post:
    """A `Post` from what a caller passes: a text, a mapping `{id, text | tokens, image, caption}` or a
    `Post`. `image` is a path (relative to the working folder), a PIL image or image file bytes.
    `index` is the post's 0-based position in the call: a post without an id gets `#<index + 1>`
    (`mmner.data.post.post_id`, the rule of `predict` and HTTP too)."""
    if isinstance(item, Post):
        _post_id(item.id, index)
        return item
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, Mapping):
        raise MmnerError(f"post {generated_id(index + 1)}: expected a text, a mapping or a Post, "
                         f"got {type(item).__name__}")
    pid = _post_id(item.get("id"), index)
    text, tokens = item.get("text"), item.get("tokens")
    if text is not None and not isinstance(text, str):
        raise MmnerError(f"post {pid}: \"text\" must be a string, got {type(text).__name__}")
    if tokens is not None:
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
            raise MmnerError(f"post {pid}: \"tokens\" must be a list of strings")
        if any(t == "" or t.isspace() for t in tokens):
            raise MmnerError(f"post {pid}: \"tokens\" holds an empty or whitespace-only token")
        tokens = list(tokens)
    elif text is not None:
        tokens = tokenize_post(text)
    else:
        raise MmnerError(f"post {pid}: needs \"text\" or \"tokens\"")
    if not tokens:
        raise MmnerError(f"post {pid}: empty post (no tokens)")
    caption = item.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise MmnerError(f"post {pid}: \"caption\" must be a string")
    meta: dict[str, Any] = {k: v for k, v in item.items() if k not in _POST_KEYS}
    if text is not None:
        meta["text"] = text
    image, image_path, image_id = item.get("image"), None, item.get("image_id")
    if isinstance(image, (str, Path)):
        if not str(image):
            raise MmnerError(f"post {pid}: \"image\" is an empty path")
        image_path = str(Path(image).expanduser())
        image_id = image_id if image_id is not None else Path(image_path).stem
    elif image is not None:
        if not isinstance(image, (bytes, bytearray)) and not hasattr(image, "save"):
            raise MmnerError(f"post {pid}: \"image\" must be a path, a PIL image or image file bytes, "
                             f"got {type(image).__name__}")
        if staged is None:
            raise MmnerError(f"post {pid}: an in-memory image needs a staging folder")
        image_path = staged.path(image, _safe_stem(pid))
        meta["image_is_temporary"] = True
    return Post(id=pid, tokens=tokens, image_id=str(image_id) if image_id is not None else None,
                image_path=image_path, caption=caption, meta=meta)


class Tagger:
    """A trained run, loaded once, that tags posts: `tagger(text, image=..., caption=...)`."""

    def __init__(self, model: "Model", config: "Config", run_dir: str | Path | None = None,
                 batch_size: int = 32, sort_group: int = SORT_GROUP, attention: bool = False) -> None:
        if batch_size < 1 or sort_group < 1:
            raise MmnerError(f"batch_size and sort_group must be at least 1 (got {batch_size}, {sort_group})")
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.batch_size = batch_size
        self.sort_group = sort_group
        # Whether records carry region attention (models that compute it) when a call does not say; off by
        # default, so the encoder runs its fastest attention kernel (docs/results/speed.md: the difference).
        self.attention = attention
        self._visual: Any = None  # the run's visual inputs for new posts, built on first use

    @classmethod
    def load(cls, run_dir: str | Path, device: "str | torch.device | None" = None, batch_size: int = 32,
             sort_group: int = SORT_GROUP, attention: bool = False, int8: bool = False) -> "Tagger":
        """The model of a run directory written by `mmner train`, on `device` (default: GPU if any).
        `int8`: the transformer encoder's linear layers in dynamic int8, on the CPU: faster, with slightly
        different tags (docs/results/speed.md)."""
        import torch

        from mmner.inference import load_run

        config, model = load_run(run_dir, torch.device(device) if device is not None else None, int8=int8)
        return cls(model, config, run_dir, batch_size, sort_group, attention)

    # -- what the model is ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def types(self) -> list[str]:
        return list(self.model.labels.types)

    @property
    def visual_source(self) -> str:
        return self.config.visual.source

    @property
    def int8(self) -> bool:
        """Whether the encoder runs in dynamic int8 (`Tagger.load(..., int8=True)`)."""
        return bool(getattr(self.model, "int8_layers", 0))

    @property
    def has_relation_score(self) -> bool:
        return bool(self.model.relation_score)

    @property
    def has_region_attention(self) -> bool:
        """Whether the model computes region attention (records carry it when asked: `attention`)."""
        return bool(self.model.region_attention)

    def info(self) -> dict[str, Any]:
        """Model name, encoder, visual input, labels and the run's training metrics (metrics.json)."""
        import json

        params = self.config.model_params()
        metrics = None
        if self.run_dir is not None and (self.run_dir / "metrics.json").is_file():
            metrics = json.loads((self.run_dir / "metrics.json").read_text())
        return {
            "model": params.name,
            "encoder": getattr(params, "encoder", None) or getattr(params, "vectors", None),
            "visual_source": self.config.visual.source,
            "uses_visual": bool(getattr(self.model, "uses_visual", False)),
            "int8": self.int8,
            "labels": self.model.labels.to_json(),
            "metrics": metrics,
        }

    # -- tagging ----------------------------------------------------------------------------------
    def __call__(self, text: str | None = None, image: ImageLike = None, caption: str | None = None, *,
                 tokens: Sequence[str] | None = None, id: str | None = None,
                 attention: bool | None = None) -> dict[str, Any]:
        """Tag one post: its text (or tokens), optional image (path, PIL image or file bytes) and caption.
        `attention`: region attention in the record (default: the tagger's `attention`)."""
        item: dict[str, Any] = {"text": text, "tokens": tokens, "image": image, "caption": caption, "id": id}
        record = self.batch([{k: v for k, v in item.items() if v is not None}], attention=attention)[0]
        if id is None:
            record.pop("id", None)
        return record

    def group_size(self, batch_size: int | None = None) -> int:
        """Posts per length-sorted group: `sort_group` model batches of `batch_size` (default: the tagger's)."""
        return (batch_size or self.batch_size) * self.sort_group

    def batch(self, posts: Iterable[PostLike], batch_size: int | None = None,
              attention: bool | None = None) -> list[dict[str, Any]]:
        """Tag many posts (texts, mappings `{id, text | tokens, image, caption}`, or `Post`s), in order.
        A post without an id gets `#<n>`, n its 1-based position (given ids of that form are refused
        unless they are the post's own number), so no record's id repeats another's."""
        return list(self.stream(posts, batch_size, attention))

    def stream(self, posts: Iterable[PostLike], batch_size: int | None = None,
               attention: bool | None = None) -> Iterator[dict[str, Any]]:
        """Tag posts as they come, a group of `group_size()` posts at a time (sorted by length into
        model batches of `batch_size`, records in input order; nothing is held beyond one group)."""
        size = batch_size or self.batch_size
        group = self.group_size(size)
        chunk: list[PostLike] = []
        index = 0
        for item in posts:
            chunk.append(item)
            if len(chunk) == group:
                yield from self._tag_items(chunk, index, size, attention)
                index += len(chunk)
                chunk = []
        if chunk:
            yield from self._tag_items(chunk, index, size, attention)

    def _tag_items(self, items: list[PostLike], first: int, batch_size: int | None = None,
                   attention: bool | None = None) -> list[dict[str, Any]]:
        staged = StagedImages()
        try:
            posts = [make_post(item, first + i, staged) for i, item in enumerate(items)]
            return self.tag_posts(posts, batch_size, attention)
        finally:
            staged.close()

    def tag_posts(self, posts: list[Post], batch_size: int | None = None,
                  attention: bool | None = None) -> list[dict[str, Any]]:
        """Output records of `Post`s, in order: sorted by length into model batches of `batch_size`
        (default: the tagger's), with region attention if `attention` (default: the tagger's); a bad
        post raises."""
        from mmner.inference import predict_tags

        if not posts:
            return []
        extras: list[dict[str, Any]] = []
        if self.model.uses_visual and self._visual is None:
            from mmner.inference import visual_inputs

            self._visual = visual_inputs(self.config)
        tags = predict_tags(self.model, posts, batch_size or self.batch_size, progress=False, extras=extras,
                            visual=self._visual, attention=self.attention if attention is None else attention)
        if self._visual is not None:
            self._visual.masked.clear()  # it names every masked post: unbounded in a server or a long predict
        return [post_record(post, t, x) for post, t, x in zip(posts, tags, extras)]

    def try_tag_posts(self, posts: list[Post], batch_size: int | None = None,
                      attention: bool | None = None) -> list[dict[str, Any] | Exception]:
        """`tag_posts`, except that a post that fails comes back as its exception and the others are
        tagged: the posts are tried whole first; when that fails, each run of `batch_size` posts, and
        post by post only within a run that fails."""
        size = batch_size or self.batch_size
        try:
            return list(self.tag_posts(posts, size, attention))
        except Exception as whole:  # noqa: BLE001 - isolated below
            if len(posts) == 1:
                return [whole]
        out: list[dict[str, Any] | Exception] = []
        for start in range(0, len(posts), size):
            part = posts[start : start + size]
            if len(posts) > size:
                try:
                    out.extend(self.tag_posts(part, size, attention))
                    continue
                except Exception:  # noqa: BLE001 - isolated below, post by post
                    pass
            for post in part:
                try:
                    out.extend(self.tag_posts([post], size, attention))
                except Exception as exc:  # noqa: BLE001 - reported per post by the caller
                    out.append(exc)
        return out


def read_image_bytes(data: bytes, where: str = "image") -> "Image.Image":
    """Decode image file bytes with the same rules as image files (`vision.images.load_image`)."""
    from mmner.vision.images import load_image

    with tempfile.NamedTemporaryFile(prefix="mmner-check-", suffix=".img") as fh:
        fh.write(data)
        fh.flush()
        try:
            return load_image(fh.name)
        except MmnerError as exc:
            raise MmnerError(str(exc).replace(fh.name, where)) from None

