"""mmner: multimodal named entity recognition for social-media posts."""

from mmner.data.post import Post
from mmner.errors import MmnerError

__version__ = "0.1.0"
__all__ = ["Post", "MmnerError", "__version__"]
