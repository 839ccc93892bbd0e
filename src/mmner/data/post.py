"""The one record every reader produces and every model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


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
