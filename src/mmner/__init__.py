"""mmner: multimodal named entity recognition for social-media posts.

`mmner.Tagger` (tag new posts from a run directory) is imported on first use, so that `import mmner`
stays light (no torch, no transformers) for tools that only read posts or score files.
"""

from typing import TYPE_CHECKING, Any

from mmner.data.post import Post
from mmner.errors import MmnerError

if TYPE_CHECKING:
    from mmner.api import Tagger

__version__ = "0.1.0"
__all__ = ["MmnerError", "Post", "Tagger", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Tagger":
        from mmner.api import Tagger

        return Tagger
    raise AttributeError(f"module 'mmner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Tagger"})
