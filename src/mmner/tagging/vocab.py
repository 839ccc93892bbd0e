"""Label vocabulary, built from the entity types found in the training data."""

from __future__ import annotations

import json
from pathlib import Path

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.tagging import schemes


class LabelVocab:
    """Tags of one scheme (`bio` = IOB2, or `bioes`) over a fixed set of entity types.

    Models are trained on tags in `scheme`; everything they output is converted back to IOB2.
    """

    def __init__(self, types: list[str], scheme: str = "bio") -> None:
        if scheme not in schemes.SCHEMES:
            raise MmnerError(f"data.scheme: unknown scheme {scheme!r} (choose one of: {', '.join(schemes.SCHEMES)})")
        self.types = sorted(set(types))
        self.scheme = scheme
        prefixes = "BI" if scheme == "bio" else "BIES"
        self.tags = ["O"] + [f"{p}-{t}" for t in self.types for p in prefixes]
        self.index = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def from_posts(cls, posts: list[Post], scheme: str = "bio") -> "LabelVocab":
        types: set[str] = set()
        for post in posts:
            if post.tags is None:
                continue
            schemes.check_tags(post.tags, f"post {post.id}")
            types.update(t[2:] for t in post.tags if t != "O")
        if not types:
            raise MmnerError("training data has no entities: cannot build a label vocabulary")
        return cls(sorted(types), scheme)

    def check_types(self, posts: list[Post], where: str) -> None:
        """Gold entity types outside this vocabulary: an error naming them (a model cannot be scored on
        a type it was never trained on, e.g. Twitter-2015's OTHER against a Twitter-2017 model's MISC)."""
        seen = {t[2:] for post in posts if post.tags for t in post.tags if t != "O"}
        unknown = sorted(seen - set(self.types))
        if unknown:
            raise MmnerError(
                f"{where}: entity types {', '.join(unknown)} are not in the model's labels ({', '.join(self.types)})"
            )

    def __len__(self) -> int:
        return len(self.tags)

    def encode(self, post: Post) -> list[int]:
        """Gold tags of a post as ids in this scheme; an unseen entity type is an error."""
        assert post.tags is not None
        converted = schemes.convert(post.tags, self.scheme)
        ids = []
        for tag in converted:
            if tag not in self.index:
                raise MmnerError(
                    f"post {post.id}: label {tag!r} is not in the model's labels "
                    f"(types: {', '.join(self.types)})"
                )
            ids.append(self.index[tag])
        return ids

    def decode(self, ids: list[int]) -> list[str]:
        """Label ids -> IOB2 tags."""
        return schemes.convert([self.tags[i] for i in ids], "bio")

    def allowed_transitions(self) -> list[tuple[int, int]]:
        """(from, to) pairs valid in this scheme, for constrained decoding."""
        return [
            (i, j)
            for i, a in enumerate(self.tags)
            for j, b in enumerate(self.tags)
            if schemes.transition_allowed(a, b, self.scheme)
        ]

    def allowed_starts(self) -> list[int]:
        return [i for i, t in enumerate(self.tags) if schemes.transition_allowed("O", t, self.scheme)]

    def allowed_ends(self) -> list[int]:
        return [i for i, t in enumerate(self.tags) if schemes.transition_allowed(t, "O", self.scheme)]

    def to_json(self) -> dict:
        return {"scheme": self.scheme, "types": self.types, "tags": self.tags}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "LabelVocab":
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["types"], data["scheme"])
        except (OSError, ValueError, KeyError) as exc:
            raise MmnerError(f"{path}: not a readable labels file ({exc})") from exc
