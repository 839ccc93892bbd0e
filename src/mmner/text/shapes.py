"""Word shapes: the casing an uncased encoder cannot see.

Both pretrained encoders at hand lowercase their input (MiniLM-L6, MPNet-base), so `Obama` and `obama`,
`US` and `us`, reach them as the same sub-tokens. A word's shape class restores that one cue, as the
casing feature of earlier neural NER taggers did (`model.casing` of bert-crf and bert-crf-caption embeds it
beside each word's state). The class is read from the word's letters only, so `@NASA` and `#NASA` are
`upper` like `NASA`.
"""

from __future__ import annotations

# 0 pads; the order is fixed (a trained model's shape embedding is indexed by it)
SHAPES = ("pad", "lower", "title", "upper", "single-upper", "mixed", "digits", "url", "other")
SHAPE_IDS = {name: i for i, name in enumerate(SHAPES)}


def word_shape(word: str) -> int:
    """The shape class of a word (an index into SHAPES, never 0):

    - `url`: starts with http:// or https:// or www.
    - `lower` (`the`, `@john_doe`), `title` (`Obama`, `Jr.`), `upper` (`NASA`, `U.S.`), `single-upper` (`I`, `A`),
      `mixed` (`iPhone`, `McDonald`, `eBay`): by the word's letters, digits and symbols aside;
    - `digits`: no letter but at least one digit (`2017`, `3-1`);
    - `other`: neither letters nor digits (punctuation, emoji).
    """
    low = word.lower()
    if low.startswith(("http://", "https://", "www.")):
        return SHAPE_IDS["url"]
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return SHAPE_IDS["digits" if any(c.isdigit() for c in word) else "other"]
    if not any(c.isupper() for c in letters):  # letters of a caseless script read as lower
        return SHAPE_IDS["lower"]
    if all(c.isupper() for c in letters):
        return SHAPE_IDS["upper" if len(letters) > 1 else "single-upper"]
    if letters[0].isupper() and all(not c.isupper() for c in letters[1:]):
        return SHAPE_IDS["title"]
    return SHAPE_IDS["mixed"]
