"""Model registry: config names -> model classes (DESIGN §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmner.errors import MmnerError

if TYPE_CHECKING:
    from mmner.models.base import Tagger

_REGISTRY: dict[str, type["Tagger"]] = {}


def register(name: str):
    """Class decorator: make a `Tagger` subclass buildable from `model.name: <name>`."""

    def wrap(cls: type["Tagger"]) -> type["Tagger"]:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from mmner.models import bert_crf, bilstm_crf  # noqa: F401


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> type["Tagger"]:
    _load_builtin()
    if name not in _REGISTRY:
        raise MmnerError(f"model.name: unknown model {name!r} (choose one of: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]
