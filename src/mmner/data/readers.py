"""Readers (and the one writer) for every input format mmner meets.

Every reader returns `Post` records (or plain caption / TRC records) and reports every malformed input
as an `MmnerError` reading `file:line: what is wrong`, so the CLI can print it as one line and exit 2
instead of showing a traceback somewhere deep in training.

Formats:
- UMT CoNLL (Twitter-2015/2017): `IMGID:<id>` line, `token<TAB>tag` lines, blank line between posts.
- JSON lines posts (DESIGN §1): `{"id", "text" | "tokens", "image", "caption", "tags"}`, one per line.
- RiTUAL sample folders: `texts.json` + `captions.json` (JSON lines) next to the images.
- Captions: BLIP-2 (`<imgid>.jpg :<caption>`), JSON, mPLUG-Owl (`imgid:<id>###...` multi-paragraph).
- TRC (Bloomberg text-image relation corpus) csv.

Text files are split on `\\n` only (a trailing `\\r` is dropped) and never with `str.splitlines()`:
the real data has tokens such as U+00A0, U+200B, U+200D and U+00AD that must survive unchanged, and
`splitlines()` would also break lines at U+2028, U+0085 and friends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from mmner.data.post import Post, post_id
from mmner.errors import MmnerError, at
from mmner.tagging.schemes import check_tags

log = logging.getLogger("mmner")

__all__ = [
    "TrcRecord",
    "iter_jsonl",
    "read_blip2_captions",
    "read_captions",
    "read_conll",
    "read_json_captions",
    "read_jsonl",
    "read_owl_captions",
    "read_posts",
    "read_ritual",
    "read_trc",
    "tokenize",
    "write_conll",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# --------------------------------------------------------------------------------------------------
# small helpers


def _existing_file(path: str | Path) -> Path:
    """The path as a `Path`, or an error naming it: a missing file must not become a traceback."""
    p = Path(path)
    if not p.exists():
        raise MmnerError(f"{p}: no such file")
    if p.is_dir():
        raise MmnerError(f"{p}: is a folder, expected a file")
    return p


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split on `\\n` only, without `\\r`; a leading BOM is dropped."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise at(path, line, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _strip_image_suffix(image_id: str) -> str:
    """`123.jpg` -> `123`: datasets key images without the extension, caption files with it."""
    low = image_id.lower()
    for suffix in _IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return image_id[: -len(suffix)]
    return image_id


def _is_blank(line: str) -> bool:
    # Only ASCII space / tab make a line blank: a line holding just U+00A0 is a (strange) token.
    return line.strip(" \t") == ""


# --------------------------------------------------------------------------------------------------
# tokenizer

# Zero-width and control characters that act as (or are) spacing: dropped like whitespace.
# ZWJ (U+200D) and variation selectors are kept: the datasets keep them as tokens of emoji sequences.
_DROP = r"\u200b\u2060\ufeff\x00-\x08\x0e-\x1f\x7f"
# Combining marks that must stay inside a word (Python's \w misses most of them): Latin diacritics,
# Cyrillic, Hebrew, Arabic, all Indic scripts, Thai, and the generic combining blocks.
_MARKS = (
    r"\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
    r"\u0900-\u0dff\u0e31-\u0e3a\u0e47-\u0e4e\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
)
_TOKEN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)\S+?)(?=[.,!?;:'"\u2019\u201d)\]\u2026]*(?:\s|$))  # URL, minus trailing punctuation
  | (?P<num>\d+(?:[.,]\d+)*)                                                    # 40, 3.5, 1,000 (2nd -> 2 nd, as in the data)
  | (?P<word>[^\W\d](?:\w|[MARKS])*)                                           # words, handles, NHL17Benn, Milli_Bear96
  | (?P<drop>[\sDROP]+)                                                         # whitespace and zero-width spacing
  | (?P<other>.)                                                                # any other char: @ # punctuation, emoji
    """.replace("MARKS", _MARKS).replace("DROP", _DROP),
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[str]:
    """Split a tweet into tokens the way the Twitter-2015/2017 releases are tokenised.

    Why this style: a model trained on those files has only seen it, so new posts must look the same.
    - URLs stay one token (trailing `.`, `)` etc. split off).
    - `@` and `#` are tokens of their own (`@jehnnybgoode` -> `@`, `jehnnybgoode`), as in Twitter-2017.
    - Every punctuation or symbol character is its own token (`..` -> `.`, `.`; `There's` -> `There`,
      `'`, `s`; `&gt;` -> `&`, `gt`, `;`), and so is every emoji code point, skin-tone modifiers and
      variation selectors included (the data has `🙌`, `🏾` and `⚾`, `\\ufe0f` as separate tokens).
    - Numbers are one token (`3.5`, `1,000`); a number glued to letters splits (`2nd` -> `2`, `nd`).
    - Whitespace, zero-width spaces and control characters are dropped.
    """
    return [m.group() for m in _TOKEN.finditer(text) if m.lastgroup != "drop"]


# An emoji as one grapheme cluster (Unicode extended grapheme clusters, `regex`'s \X): one that starts
# with a pictograph or a regional indicator, or a keycap. The cluster keeps skin-tone modifiers,
# variation selectors, ZWJ sequences (👩‍🚀, 👨‍👩‍👧), flag pairs (🇺🇸) and tag sequences together.
_EMOJI_CLUSTER = regex.compile(r"(?=[\p{Extended_Pictographic}\p{Regional_Indicator}]|[0-9#*]\ufe0f?\u20e3)\X")


def tokenize_post(text: str) -> list[str]:
    """Tokens of a new post's raw text (`mmner predict`, `Tagger`, HTTP): `tokenize`, except that an
    emoji of several code points (a ZWJ sequence such as 👩‍🚀, a flag such as 🇺🇸, a keycap such as 1️⃣,
    a skin tone such as 🙌🏾, a presentation selector such as ❤️) is one token, as a reader sees it.

    Dataset files keep the releases' own split (`read_conll` reads tokens as given; `tokenize` splits
    every code point, as the Twitter-2015/2017 files do). Tokens stay substrings of `text`, in order;
    an emoji that does not start on a token boundary (inside a URL, a keycap glued to a number) is
    left as `tokenize` splits it.
    """
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text) if m.lastgroup != "drop"]
    clusters = {m.start(): m.end() for m in _EMOJI_CLUSTER.finditer(text) if m.end() - m.start() > 1}
    out: list[str] = []
    i = 0
    while i < len(spans):
        start, end = spans[i]
        stop = clusters.get(start)
        j = i
        if stop is not None:  # the run of tokens that covers the cluster exactly, without gaps
            while j + 1 < len(spans) and spans[j][1] < stop and spans[j + 1][0] == spans[j][1]:
                j += 1
        if stop is not None and spans[j][1] == stop:
            out.append(text[start:stop])
            i = j + 1
        else:
            out.append(text[start:end])
            i += 1
    return out


# --------------------------------------------------------------------------------------------------
# CoNLL (UMT release)

_IMGID = re.compile(r"IMGID:(\S*)")
_TOKEN_TAG = re.compile(r"(.*?)[ \t]+(\S+)[ \t]*")


def read_conll(path: str | Path) -> list[Post]:
    """Read a UMT-format CoNLL file: `IMGID:<id>`, then `token<TAB>tag` lines, blank line between posts.

    Post ids are `<file stem>-<n>` (n = 0-based index in the file): IMGIDs would be unique in the real
    files, but a post without an IMGID line has none, and the stem keeps ids of different splits apart.
    `image_id` is the IMGID value without `.jpg`. The token is everything before the last tab/space
    run, kept byte for byte (tokens like U+00A0 or U+200B are real and must round-trip).
    `meta` records `line` (where the post starts) for error messages further down the pipeline.
    """
    p = _existing_file(path)
    lines = _read_lines(p)
    posts: list[Post] = []
    tokens: list[str] = []
    tags: list[str] = []
    image_id: str | None = None
    start: int | None = None  # line of the post's first line (IMGID or first token)

    def close() -> None:
        nonlocal tokens, tags, image_id, start
        if start is None:
            return
        if not tokens:
            what = f"IMGID:{image_id}" if image_id is not None else "post"
            raise at(p, start, f"{what} is followed by no tokens (empty post)")
        posts.append(Post(id=f"{p.stem}-{len(posts)}", tokens=tokens, tags=tags, image_id=image_id,
                          meta={"line": start}))
        tokens, tags, image_id, start = [], [], None, None

    for lineno, line in enumerate(lines, 1):
        if _is_blank(line):
            close()
            continue
        m = _IMGID.fullmatch(line.strip(" \t"))
        if m:
            # A new IMGID line also ends the previous post: a missing blank line is harmless.
            close()
            if not m.group(1):
                raise at(p, lineno, "IMGID line without an image id")
            image_id, start = _strip_image_suffix(m.group(1)), lineno
            continue
        m = _TOKEN_TAG.fullmatch(line)
        if m is None:
            raise at(p, lineno, f"expected 'token<TAB>tag', got {line!r} (no tag)")
        token, tag = m.group(1), m.group(2)
        if token == "":
            raise at(p, lineno, f"empty token before tag {tag!r}")
        check_tags([tag], f"{p}:{lineno}")
        if start is None:
            start = lineno
        tokens.append(token)
        tags.append(tag)
    close()
    return posts


def write_conll(path: str | Path, posts: Sequence[Post], tags: Sequence[Sequence[str]] | None = None) -> None:
    """Write posts in the UMT CoNLL format that `read_conll` reads back unchanged.

    `tags` (one list per post) overrides `post.tags`: this is how predictions are written next to
    gold. Tokens that cannot round-trip (empty, or holding a tab or newline) are refused rather than
    written into a file that would silently shift every later token.
    """
    if tags is not None and len(tags) != len(posts):
        raise MmnerError(f"{path}: {len(posts)} posts but {len(tags)} tag lists")
    out: list[str] = []
    for i, post in enumerate(posts):
        post_tags = list(tags[i]) if tags is not None else post.tags
        if post_tags is None:
            raise MmnerError(f"{path}: post {post.id} has no tags to write")
        if len(post_tags) != len(post.tokens):
            raise MmnerError(f"{path}: post {post.id} has {len(post.tokens)} tokens but {len(post_tags)} tags")
        if not post.tokens:
            raise MmnerError(f"{path}: post {post.id} has no tokens")
        if post.image_id is not None:
            out.append(f"IMGID:{post.image_id}")
        for token, tag in zip(post.tokens, post_tags):
            if token == "" or any(c in token for c in "\t\n\r") or _is_blank(token):
                raise MmnerError(f"{path}: post {post.id}: token {token!r} cannot be written to CoNLL")
            check_tags([tag], f"{path}: post {post.id}")
            out.append(f"{token}\t{tag}")
        out.append("")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + ("\n" if out else ""))


# --------------------------------------------------------------------------------------------------
# JSON lines posts (DESIGN §1)

_POST_KEYS = {"id", "text", "tokens", "image", "image_id", "caption", "tags"}


def _json_lines(p: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line, streaming; bad JSON -> file:line error."""
    lineno = 0
    with p.open("r", encoding="utf-8-sig") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise at(p, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        except UnicodeDecodeError as e:
            raise at(p, lineno + 1, f"not valid UTF-8 ({e.reason})") from None


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _post_from_json(obj: Any, p: Path, lineno: int) -> Post:
    if not isinstance(obj, dict):
        raise at(p, lineno, f"expected a JSON object (one post per line), got {type(obj).__name__}")
    try:
        pid = post_id(obj.get("id"), lineno)  # absent or null: `#<line number>`
    except ValueError as exc:
        raise at(p, lineno, str(exc)) from None
    meta: dict[str, Any] = {k: v for k, v in obj.items() if k not in _POST_KEYS}
    meta["line"] = lineno
    if "tokens" in obj:
        tokens = obj["tokens"]
        if not _str_list(tokens):
            raise at(p, lineno, f"post {pid}: \"tokens\" must be a list of strings")
        if any(t == "" or t.isspace() for t in tokens):
            raise at(p, lineno, f"post {pid}: \"tokens\" holds an empty or whitespace-only token")
        if isinstance(obj.get("text"), str):
            meta["text"] = obj["text"]
    elif "text" in obj:
        if not isinstance(obj["text"], str):
            raise at(p, lineno, f"post {pid}: \"text\" must be a string")
        meta["text"] = obj["text"]
        tokens = tokenize_post(obj["text"])
    else:
        raise at(p, lineno, f"post {pid}: needs \"text\" or \"tokens\"")
    if not tokens:
        raise at(p, lineno, f"post {pid}: empty post (no tokens)")

    tags = obj.get("tags")
    if tags is not None:
        if not _str_list(tags):
            raise at(p, lineno, f"post {pid}: \"tags\" must be a list of strings")
        if len(tags) != len(tokens):
            raise at(p, lineno, f"post {pid}: {len(tokens)} tokens but {len(tags)} tags")
        check_tags(tags, f"{p}:{lineno}")

    image_path: str | None = None
    image = obj.get("image")
    if image is not None:
        if not isinstance(image, str) or not image:
            raise at(p, lineno, f"post {pid}: \"image\" must be a file path")
        # Relative to the jsonl file, so a folder of posts + images can be moved or zipped as a unit.
        ip = Path(image).expanduser()
        image_path = str(ip if ip.is_absolute() else p.parent / ip)
    image_id = obj.get("image_id")
    if image_id is not None:
        image_id = _strip_image_suffix(str(image_id))
    elif image_path is not None:
        image_id = Path(image_path).stem  # lets a dataset image's caption / cached features be found
    caption = obj.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise at(p, lineno, f"post {pid}: \"caption\" must be a string")
    return Post(id=pid, tokens=list(tokens), tags=list(tags) if tags is not None else None,
                image_id=image_id, image_path=image_path, caption=caption, meta=meta)


def iter_jsonl(path: str | Path) -> Iterator[Post]:
    """Posts of a JSON lines file one at a time, so `predict` can stream files of any size.

    The file's existence is checked now, not at the first `next()`, so a wrong path fails before any
    model is loaded. Blank lines are skipped; a post without `id` gets `#<line number>` (`post_id`);
    `text` is tokenised with `tokenize_post`; an `image` path is resolved relative to the file's folder (not
    checked: the image pipeline applies its missing-image policy). Other keys are kept in `meta`.
    """
    p = _existing_file(path)

    def gen() -> Iterator[Post]:
        for lineno, obj in _json_lines(p):
            yield _post_from_json(obj, p, lineno)

    return gen()


def read_jsonl(path: str | Path) -> list[Post]:
    """All posts of a JSON lines file (see `iter_jsonl`)."""
    return list(iter_jsonl(path))


# --------------------------------------------------------------------------------------------------
# RiTUAL sample folders



def read_ritual(path: str | Path) -> list[Post]:
    """Read a RiTUAL-UH sample split: a folder (or its `texts.json`) with `captions.json` and images.

    `texts.json` holds JSON lines `{id, image_id, tokens, label}` (+ `text` for Twitter-2017);
    `captions.json` JSON lines `{id, image_id, caption}`, optional. `image_path` is `folder/image_id`,
    not checked here: whether a missing image is an error or a masked region is the image pipeline's
    policy. Labels are kept as given: each sample set uses its dataset's names for the fourth type
    (`OTHER` in Twitter-2015, `MISC` in Twitter-2017), so they score against models trained on that
    dataset. Tokens are taken as given (the `text` field is only kept in `meta`).
    """
    p = Path(path)
    if not p.exists():
        raise MmnerError(f"{p}: no such file or folder")
    folder = p if p.is_dir() else p.parent
    texts = folder / "texts.json" if p.is_dir() else p
    texts = _existing_file(texts)

    captions: dict[str, str] = {}
    cap_file = folder / "captions.json"
    if cap_file.exists():
        for lineno, obj in _json_lines(cap_file):
            if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str) or (
                obj.get("id") is None and obj.get("image_id") is None
            ):
                raise at(cap_file, lineno, 'expected {"id", "image_id", "caption"}')
            key = str(obj["id"]) if obj.get("id") is not None else _strip_image_suffix(str(obj["image_id"]))
            captions[key] = obj["caption"]

    posts: list[Post] = []
    for lineno, obj in _json_lines(texts):
        if not isinstance(obj, dict):
            raise at(texts, lineno, "expected a JSON object")
        if obj.get("id") is None:
            raise at(texts, lineno, 'missing "id"')
        pid = str(obj["id"])
        tokens = obj.get("tokens")
        if tokens is None and isinstance(obj.get("text"), str):
            tokens = tokenize(obj["text"])
        if not _str_list(tokens) or not tokens:
            raise at(texts, lineno, f'post {pid}: "tokens" must be a non-empty list of strings')
        labels = obj.get("label")
        tags: list[str] | None = None
        if labels is not None:
            if not _str_list(labels):
                raise at(texts, lineno, f'post {pid}: "label" must be a list of strings')
            if len(labels) != len(tokens):
                raise at(texts, lineno, f"post {pid}: {len(tokens)} tokens but {len(labels)} labels")
            tags = list(labels)
            check_tags(tags, f"{texts}:{lineno}")
        raw_image = obj.get("image_id")
        image_id = _strip_image_suffix(str(raw_image)) if raw_image is not None else None
        image_path = str(folder / str(raw_image)) if raw_image is not None else None
        if image_path is not None and not Path(str(raw_image)).suffix:
            image_path += ".jpg"
        meta: dict[str, Any] = {"line": lineno}
        if isinstance(obj.get("text"), str):
            meta["text"] = obj["text"]
        posts.append(Post(id=pid, tokens=list(tokens), tags=tags, image_id=image_id, image_path=image_path,
                          caption=captions.get(pid, captions.get(image_id or "")), meta=meta))
    return posts


# --------------------------------------------------------------------------------------------------
# dispatch


def read_posts(path: str | Path) -> list[Post]:
    """Read posts from whatever `path` is: a folder or `texts.json` -> RiTUAL, `.jsonl`/`.json` ->
    JSON lines posts, `.csv` -> the TRC tweets (untagged), anything else -> UMT CoNLL. One entry point
    so every command accepts all formats.
    """
    p = Path(path)
    if not p.exists():
        raise MmnerError(f"{p}: no such file or folder")
    if p.is_dir() or p.name == "texts.json":
        return read_ritual(p)
    if p.suffix.lower() in (".jsonl", ".json"):
        return read_jsonl(p)
    if p.suffix.lower() == ".csv":
        return read_trc_posts(p)
    return read_conll(p)


# --------------------------------------------------------------------------------------------------
# captions

_BLIP2 = re.compile(r"(\S+?)\s*:(.*)")


def read_blip2_captions(path: str | Path) -> dict[str, str]:
    """BLIP-2 captions, lines `<imgid>.jpg :<caption>` -> {imgid (no `.jpg`): caption}.

    Keys drop the extension because datasets key images by IMGID. Two lines of the real Twitter-2015
    file have an empty caption (`71406.jpg :`); they are kept as "" so the file's coverage is exact, and
    an empty caption means "no caption" to the caption pipeline. A blank Twitter-2017 image reads
    `datadir.BLANK_IMAGE_CAPTION`; deciding to treat it as "no image" is left to the caller.
    """
    p = _existing_file(path)
    out: dict[str, str] = {}
    for lineno, line in enumerate(_read_lines(p), 1):
        if not line.strip():
            continue
        m = _BLIP2.fullmatch(line.strip())
        if m is None:
            raise at(p, lineno, f"expected '<imgid>.jpg :<caption>', got {line[:80]!r}")
        out[_strip_image_suffix(m.group(1))] = m.group(2).strip()
    return out


def read_json_captions(path: str | Path) -> dict[str, str]:
    """Captions from JSON: lines `{"image_id"|"id", "caption"}`, or one object mapping id -> caption.

    Keys drop `.jpg` so they match dataset IMGIDs. Accepting both shapes lets users bring captions from
    any captioner's script without converting them first.
    """
    p = _existing_file(path)
    lines = _read_lines(p)
    text = "\n".join(lines)
    try:
        whole = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "caption" not in whole:
        out: dict[str, str] = {}
        for key, caption in whole.items():
            if not isinstance(caption, str):
                raise at(p, 1, f"caption of {key!r} is not a string")
            out[_strip_image_suffix(str(key))] = caption.strip()
        return out
    records: Iterable[tuple[int, Any]]
    if isinstance(whole, list):
        records = ((1, r) for r in whole)
    else:
        records = _json_lines(p)
    out = {}
    for lineno, obj in records:
        key = None
        if isinstance(obj, dict):
            key = obj.get("image_id", obj.get("id"))
        if key is None or not isinstance(obj.get("caption"), str):
            raise at(p, lineno, 'expected {"image_id" (or "id"), "caption"}')
        out[_strip_image_suffix(str(key))] = obj["caption"].strip()
    return out


_OWL = re.compile(r"imgid:(\S+?)###(.*)")


def read_owl_captions(path: str | Path) -> dict[str, str]:
    """mPLUG-Owl descriptions: an entry starts with `imgid:<id>###` and runs to the next such line.

    Entries span several paragraphs, so the text is joined back with its newlines and stripped.
    Text before the first entry or an entry with no description is an error (a sign of a wrong file).
    """
    p = _existing_file(path)
    out: dict[str, str] = {}
    key: str | None = None
    start = 0
    body: list[str] = []

    def close() -> None:
        if key is None:
            return
        desc = "\n".join(body).strip()
        if not desc:
            raise at(p, start, f"imgid:{key} has an empty description")
        out[key] = desc

    for lineno, line in enumerate(_read_lines(p), 1):
        if line.startswith("imgid:"):
            m = _OWL.fullmatch(line)
            if m is None:
                raise at(p, lineno, "expected 'imgid:<id>###<description>'")
            close()
            key, start, body = _strip_image_suffix(m.group(1)), lineno, [m.group(2)]
        elif key is None:
            if line.strip():
                raise at(p, lineno, "text before the first 'imgid:<id>###' entry")
        else:
            body.append(line)
    close()
    return out


def read_captions(path: str | Path) -> dict[str, str]:
    """Any caption file: `.json`/`.jsonl` -> JSON, a file starting with `imgid:` -> mPLUG-Owl, else BLIP-2."""
    p = _existing_file(path)
    if p.suffix.lower() in (".json", ".jsonl"):
        return read_json_captions(p)
    with p.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"imgid:"):
        return read_owl_captions(p)
    return read_blip2_captions(p)


# --------------------------------------------------------------------------------------------------
# TRC


@dataclass(frozen=True)
class TrcRecord:
    """One tweet of the text-image relation corpus: is the text represented in the image, and does the
    image add meaning to the text (RpBERT's relation label)."""

    tweet_id: str
    text: str
    text_is_represented: int
    image_adds: int


_TRC_COLUMNS = ("tweet_id", "tweet", "text_is_represented", "image_adds")


def read_trc(path: str | Path) -> list[TrcRecord]:
    """Read the Bloomberg TRC csv (`tweet_id, user_id, tweet, text_is_represented, image_adds, ...`).

    The file escapes quotes with a backslash instead of doubling them, hence `doublequote=False,
    escapechar='\\\\'`; the default dialect would merge rows. Columns are found by header name, and a
    header without them is refused (a wrong file otherwise yields nonsense labels).
    """
    p = _existing_file(path)
    text = "\n".join(_read_lines(p)) + "\n"
    reader = csv.reader(io.StringIO(text, newline=""), doublequote=False, escapechar="\\", strict=True)
    out: list[TrcRecord] = []
    try:
        header = next(reader, None)
        if not header:
            raise at(p, 1, "empty file (expected a csv header)")
        missing = [c for c in _TRC_COLUMNS if c not in header]
        if missing:
            raise at(p, 1, f"header lacks column(s) {', '.join(missing)} (got {', '.join(header)})")
        idx = {c: header.index(c) for c in _TRC_COLUMNS}
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise at(p, lineno, f"{len(row)} fields, header has {len(header)}")
            labels = {}
            for col in ("text_is_represented", "image_adds"):
                value = row[idx[col]].strip()
                if value not in ("0", "1"):
                    raise at(p, lineno, f"{col} must be 0 or 1, got {value!r}")
                labels[col] = int(value)
            tweet_id = row[idx["tweet_id"]].strip()
            if not tweet_id:
                raise at(p, lineno, "empty tweet_id")
            if not row[idx["tweet"]].strip():
                raise at(p, lineno, f"tweet {tweet_id} has no text")
            out.append(TrcRecord(tweet_id, row[idx["tweet"]], labels["text_is_represented"], labels["image_adds"]))
    except csv.Error as e:
        raise at(p, reader.line_num, f"malformed csv: {e}") from None
    return out


_LINK = re.compile(r"https?://\S+")


def read_trc_posts(path: str | Path) -> list[Post]:
    """The TRC tweets as posts without entity tags (`trc:all`): in-domain text for `data.extra_train`
    with a teacher's tags. Tokenised as the Twitter-2015/2017 files are (`tokenize`), without the links
    that their release removed; the images are not at hand (`image_id` None). A tweet that is nothing
    but links has no words to tag and is left out, and the count is logged."""
    posts, bare = [], 0
    for record in read_trc(path):
        tokens = [t for t in tokenize(record.text) if not _LINK.fullmatch(t)]
        if tokens:
            posts.append(Post(id=record.tweet_id, tokens=tokens))
        else:
            bare += 1
    if bare:
        log.info("%s: %d of %d tweets are only links and are left out", path, bare, len(posts) + bare)
    return posts
