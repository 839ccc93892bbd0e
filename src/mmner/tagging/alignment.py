"""Word <-> sub-token alignment with sliding windows (DESIGN §6).

Every word is represented by its first sub-token. A post longer than the encoder's limit is split
into windows: each window *owns* a contiguous run of words and adds context words on both sides
while room is left, so every word gets exactly one representation and gold is never truncated.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from mmner.errors import MmnerError


@dataclass
class Window:
    input_ids: list[int]
    # (word index in the post, position of its first sub-token in input_ids), for owned words only.
    owned: list[tuple[int, int]]


_PREFIXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def word_prefix(tokenizer) -> str:
    """What goes before every word so that it is tokenised as a word inside running text, read off
    by encoding a probe ("a a" against "a" and " a"), so any tokenizer family is handled:

    - "" where a word alone already tokenises as in text: WordPiece (BERT, MiniLM, MPNet: it marks
      continuations, "##"), SentencePiece whose Metaspace gives every input its "▁" (XLM-R, ALBERT);
    - " " where the word-initial marker comes from the space before the word: byte-level BPE
      (RoBERTa, GPT-2: "Ġ"), SentencePiece that never prepends "▁" itself.

    The first word gets it too (RoBERTa's `add_prefix_space=True`), so a word is tokenised the same
    wherever a window starts."""
    try:
        return _PREFIXES[tokenizer]
    except (KeyError, TypeError):
        pass
    together, alone, spaced = tokenizer(["a a", "a", " a"], add_special_tokens=False)["input_ids"]
    prefix = " " if together != alone + alone and together == alone + spaced else ""
    try:
        _PREFIXES[tokenizer] = prefix
    except TypeError:  # not weakly referenceable: probe again next time
        pass
    return prefix


_CACHE_WORDS = 200_000  # words whose pieces are kept per tokenizer (a word is tokenised alone, so always alike)
_PIECES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _piece_cache(tokenizer) -> dict[str, list[int]]:
    try:
        return _PIECES.setdefault(tokenizer, {})
    except TypeError:  # not weakly referenceable: no cache
        return {}


def word_pieces(tokenizer, words: list[str], max_pieces: int) -> list[list[int]]:
    """Sub-token ids per word, each word tokenised as inside running text (`word_prefix`), so its
    first sub-token carries the word-initial marker of byte-level BPE and SentencePiece. A word the
    tokenizer drops (e.g. a lone variation selector) becomes the unknown token, so it still has a
    representation to be tagged from; a word with more pieces than fit in one window keeps its
    first `max_pieces` (only the first one is tagged)."""
    prefix = word_prefix(tokenizer)
    cache = _piece_cache(tokenizer)
    new = list(dict.fromkeys(word for word in words if word not in cache))
    if new:
        if len(cache) + len(new) > _CACHE_WORDS:
            cache.clear()
        cache.update(zip(new, tokenizer([prefix + word for word in new], add_special_tokens=False)["input_ids"]))
    encoded = [cache[word] for word in words]
    unk = tokenizer.unk_token_id
    if unk is None:
        empty = next((i for i, ids in enumerate(encoded) if not ids), None)
        if empty is not None:
            raise MmnerError(f"word {empty} ({words[empty]!r}) has no sub-tokens and the tokenizer no unknown token")
    return [(ids or [unk])[:max_pieces] for ids in encoded]


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens a tokenizer puts around one sequence (`prefix content suffix`) and
    around a pair (`prefix a middle b suffix`), read off by encoding a probe, so any tokenizer
    (BERT, MPNet, RoBERTa, ...) is framed the way it was pretrained."""

    prefix: list[int]
    suffix: list[int]
    middle: list[int]

    @classmethod
    def of(cls, tokenizer) -> "SpecialTokens":
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        single = tokenizer("a")["input_ids"]
        pair = tokenizer("a", "a")["input_ids"]
        n = len(probe)
        at = next(i for i in range(len(single)) if single[i : i + n] == probe)
        prefix, suffix = single[:at], single[at + n :]
        second = next(i for i in range(len(prefix) + n, len(pair)) if pair[i : i + n] == probe)
        return cls(prefix, suffix, pair[len(prefix) + n : second])

    def single(self, ids: list[int]) -> list[int]:
        return self.prefix + ids + self.suffix


def make_windows(special: SpecialTokens, pieces: list[list[int]], max_length: int) -> list[Window]:
    """Pack words into windows of at most `max_length` tokens, special tokens included."""
    before, after = len(special.prefix), len(special.suffix)
    budget = max_length - before - after
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for words")
    sizes = [len(p) for p in pieces]
    if sum(sizes) <= budget:
        chunks = [(0, len(pieces))]
    else:
        # Owned chunks use half the budget, so that each has context on both sides.
        chunks, start, used = [], 0, 0
        limit = max(budget // 2, max(sizes))
        for i, size in enumerate(sizes):
            if used + size > limit and i > start:
                chunks.append((start, i))
                start, used = i, 0
            used += size
        chunks.append((start, len(pieces)))
    windows = []
    for lo, hi in chunks:
        left, right = lo, hi
        used = sum(sizes[lo:hi])
        grew = True
        while grew:  # add context alternately on the left and the right
            grew = False
            if left > 0 and used + sizes[left - 1] <= budget:
                left -= 1
                used += sizes[left]
                grew = True
            if right < len(pieces) and used + sizes[right] <= budget:
                used += sizes[right]
                right += 1
                grew = True
        content: list[int] = []
        owned = []
        for w in range(left, right):
            if lo <= w < hi:
                owned.append((w, before + len(content)))
            content.extend(pieces[w])
        windows.append(Window(special.single(content), owned))
    return windows
