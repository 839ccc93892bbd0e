"""The one record every reader produces and every model consumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Post:
    """A social-media post: its tokens, optional gold tags and optional image / caption.

    `tags` is None for unlabelled posts (new posts to tag). `image_id` is the dataset's image key
    (used to look up captions and cached features); `image_path` is a file on disk when one exists.
    """

    id: str
    tokens: list[str]
    tags: list[str] | None = None
    image_id: str | None = None
    image_path: str | None = None
    caption: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.tokens):
            raise ValueError(f"post {self.id}: {len(self.tokens)} tokens but {len(self.tags)} tags")


# --------------------------------------------------------------------------------------------------
# post ids: one rule for Python (`mmner.api`), `mmner predict` and HTTP (docs/formats.md, "Post ids")

_GENERATED = re.compile(r"#[0-9]+")


def generated_id(number: int) -> str:
    """The id of the `number`-th post (1-based) of a call or file that gave none: `#<number>`."""
    return f"#{number}"


def post_id(given: Any, number: int) -> str:
    """The id of the `number`-th post (1-based: its position in a Python list or HTTP batch, its line
    in a JSON-lines file) of one call or file: its own id as a string, else `#<number>`.

    Ids of the form `#<digits>` belong to generated ids, so a post may give one only when it is its own
    number (an output fed back in keeps its ids); any other is refused, so a generated id never
    equals a given id of the same call. Raises `ValueError` with the one-line reason.
    """
    if given is None:
        return generated_id(number)
    pid = str(given)
    if _GENERATED.fullmatch(pid) and pid != generated_id(number):
        raise ValueError(f"id {pid!r}: the form #<number> is reserved for posts given without an id "
                         f"(this post's would be {generated_id(number)!r}); give it another id")
    return pid
