"""Model registry: config names -> model classes (DESIGN §4)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mmner.errors import MmnerError

if TYPE_CHECKING:
    from mmner.models.base import Tagger

_REGISTRY: dict[str, type["Tagger"]] = {}

# Built-in models by module, imported on first use so that `mmner score` never loads a model.
_BUILTIN = {
    "bert-crf": "mmner.models.bert_crf",
    "bert-crf-caption": "mmner.models.bert_crf_caption",
    "bilstm-crf": "mmner.models.bilstm_crf",
    "caption-distill": "mmner.models.caption_distill",
    "ctx-crf": "mmner.models.context_crf",
    "fusion-cam": "mmner.models.fusion",
    "fusion-cm": "mmner.models.fusion",
    "fusion-tam": "mmner.models.fusion",
    "fusion-vam": "mmner.models.fusion",
    "umt": "mmner.models.umt",
    "rpbert": "mmner.models.rpbert",
    "rgcn": "mmner.models.rgcn",
    "visualbert-crf": "mmner.models.visualbert_crf",
}


def register(name: str):
    """Class decorator: make a `Tagger` subclass buildable from `model.name: <name>`."""

    def wrap(cls: type["Tagger"]) -> type["Tagger"]:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get(name: str) -> type["Tagger"]:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # runs its @register
    if name not in _REGISTRY:
        raise MmnerError(f"model.name: unknown model {name!r} (choose one of: {', '.join(names())})")
    return _REGISTRY[name]
