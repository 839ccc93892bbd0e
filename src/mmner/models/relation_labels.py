"""Weak text-image relation labels for RpBERT's Task#1, from a post's gold entities and a caption of its image.

RpBERT learns whether "the image adds to the tweet meaning" from the TRC corpus, whose images are not at
hand here. On the MNER training posts themselves, a caption of the image (BLIP-2 or mPLUG-Owl) stands in
for the image, and `weak_relation` labels a post 1 ("the image adds") when its caption names something
that the post's gold entities refer to:

1. a word of an entity appears among the caption's words (case-folded, a leading `#` / `@` dropped,
   at least 3 letters, not a stop word): the image shows or reads it (a sign, a jersey, a poster), e.g.
   "[ORG Starbucks] opens" with "a starbucks sign on a brick wall";
2. or the caption has a cue word of an entity's type (`CUES`): a person for PER, a place for LOC, an
   organisation's marks for ORG, a named artefact for OTHER / MISC, e.g. "[PER Kevin Love] dunks" with
   "a basketball player in a white jersey".

Every other post is 0: one without entities (nothing in it for the image to help tag), one whose caption
names none of them, and one whose image has no caption (blank or missing image). The rule reads the gold
tags, so it labels training posts (and, to measure the relation classifier, held-out posts), never new ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmner.tagging import schemes

_PEOPLE = ("man men woman women person people boy boys girl girls child children kid kids guy guys lady ladies "
           "player players crowd couple family team fans fan singer actor actress band audience baby face faces "
           "he she his her him they group friends student students soldier soldiers police officer")
_PLACES = ("city street streets road building buildings skyline mountain mountains beach river lake sea ocean "
           "park bridge town village map field stadium island harbor sunset landscape downtown square tower "
           "church castle airport station highway coast desert forest country flag")
_MARKS = ("logo logos sign signs banner jersey jerseys uniform store shop restaurant company brand poster "
          "billboard building headquarters team stadium flag badge emblem storefront truck bus")
_ARTEFACTS = ("poster book cover album movie film screen screenshot game video show tv television sign text "
              "words title magazine newspaper ticket phone card shirt t-shirt cartoon comic painting")
CUES: dict[str, frozenset[str]] = {
    "PER": frozenset(_PEOPLE.split()),
    "LOC": frozenset(_PLACES.split()),
    "ORG": frozenset(_MARKS.split()),
    "OTHER": frozenset(_ARTEFACTS.split()),
    "MISC": frozenset(_ARTEFACTS.split()),
}
STOP_WORDS = frozenset(
    "the and for are but not you all any can her was one our out day get has him his how man new now old see "
    "two way who boy did its let put say she too use with from this that have they will your what when make "
    "like time just know take into year good some them than then look only come over also back after first "
    "well even want because these give most http https www com rt amp via".split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


def caption_words(caption: str) -> set[str]:
    """The caption's words, case-folded (letters, digits, inner ' and -)."""
    return set(_WORD.findall(caption.lower()))


def entity_words(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(type, words) of each gold entity (any scheme), read as conlleval reads the tags."""
    iob2 = schemes.to_iob2(list(tags))
    return [(kind, list(tokens[start:end])) for kind, start, end in schemes.entities(iob2, "conlleval")]


def _content(word: str) -> str | None:
    word = word.lower().lstrip("#@")
    return word if len(re.sub(r"[^a-z]", "", word)) >= 3 and word not in STOP_WORDS else None


def weak_relation(tokens: Sequence[str], tags: Sequence[str], caption: str | None) -> int:
    """1 when the caption names something the post's gold entities refer to (rule 1 or 2 above), else 0."""
    if not caption:
        return 0
    entities = entity_words(tokens, tags)
    if not entities:
        return 0
    words = caption_words(caption)
    for kind, span in entities:
        if any((w := _content(t)) is not None and w in words for t in span):
            return 1
        if words & CUES.get(kind, frozenset()):
            return 1
    return 0
