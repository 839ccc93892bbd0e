"""Where the datasets live, and short names for them (`twitter2017:test`).

The data is never shipped with mmner (licences, size), so every command finds it through one lookup
and, when it is absent, says in one line what is missing and how to point mmner at it.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmner.data.post import Post
from mmner.errors import MmnerError

ENV_VAR = "MMNER_DATA_DIR"

# SOURCES.md (captions/blip2_twitter2017.txt): 358 Twitter-2017 images were blank when BLIP-2
# captioned them, and every one of them reads exactly this. It describes no real image, so readers of
# the captions treat it as "no image" rather than as evidence about the post.
BLANK_IMAGE_CAPTION = "a man is standing on a skateboard in the snow"

# dataset -> (folder under the data dir, {split name: file or folder name})
DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "twitter2015": ("twitter2015", {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}),
    "twitter2017": ("twitter2017", {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}),
    # RiTUAL-UH sample folders: the only real images at hand (demo, web page, image-pipeline tests).
    "twitter2015_samples": ("images/twitter2015_samples", {"train": "train", "valid": "dev", "test": "test"}),
    "twitter2017_samples": ("images/twitter2017_samples", {"train": "train", "valid": "dev", "test": "test"}),
    # The text-image relation corpus's tweets, without entity tags (`readers.read_trc_posts`): unlabelled
    # in-domain posts for `data.extra_train` with a teacher's tags.
    "trc": ("trc", {"all": "textimage-data.csv"}),
}
SPLIT_ALIASES = {"dev": "valid", "val": "valid", "validation": "valid"}
CAPTION_SOURCES = ("blip2", "owl")


def _not_found(tried: str = "") -> str:
    """The one-line message for "no data": what mmner needs, where it comes from, how to point at it."""
    return (
        "mmner needs the Twitter-2015/2017 MNER data (UMT release layout: twitter2015/{train,valid,test}.txt, "
        "twitter2017/{train,valid,test}.txt, captions/blip2_twitter2015.txt ...; github.com/jefferyYu/UMT data/) "
        f"and found none{tried}; set {ENV_VAR}=/path/to/data"
    )


def _repo_default() -> Path:
    # src/mmner/data/datadir.py -> parents[3] is the repository root (src layout).
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: `explicit`, else `$MMNER_DATA_DIR`, else `../shared/data` from the current
    folder, else `../shared/data` next to the repository.

    A folder given explicitly or through the variable must exist: silently falling back to another
    copy would score the wrong files. Only the implicit defaults are tried in turn.
    """
    if explicit is not None and str(explicit) != "":
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise MmnerError(f"data dir {p} does not exist; " + _not_found())
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise MmnerError(f"{ENV_VAR}={env} is not a folder; " + _not_found())
        return p
    candidates = [Path.cwd() / ".." / "shared" / "data", _repo_default()]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = " (tried " + ", ".join(str(c.resolve()) for c in candidates) + ")"
    raise MmnerError(_not_found(tried))


def _choices() -> str:
    tagged = [name for name, (_, splits) in DATASETS.items() if "test" in splits]
    untagged = [f"{name} (split: {'|'.join(splits)}, no entity tags)"
                for name, (_, splits) in DATASETS.items() if "test" not in splits]
    return "; ".join([", ".join(tagged) + " (splits: train|valid|test, dev = valid)", *untagged])


def resolve(name_or_path: str | Path, data_dir: str | Path | None = None) -> Path:
    """A file argument as a path: an existing file (or RiTUAL folder) as is, or a dataset name such as
    `twitter2015:train`, `twitter2017:dev` resolved inside the data dir.

    The data dir is only looked up for names, so plain files work without any data installed.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    text = str(name_or_path)
    if ":" not in text:
        if text in DATASETS:
            raise MmnerError(f"{text}: name a split too, e.g. {text}:test (choose from: {_choices()})")
        raise MmnerError(f"{text}: no such file (or give a dataset name: {_choices()})")
    dataset, split = text.split(":", 1)
    if dataset not in DATASETS:
        raise MmnerError(f"{text}: unknown dataset {dataset!r} (choose from: {_choices()})")
    split = SPLIT_ALIASES.get(split, split)
    folder, splits = DATASETS[dataset]
    if split not in splits:
        raise MmnerError(f"{text}: unknown split {split!r} (choose from: {_choices()})")
    path = _lookup(data_dir) / folder / splits[split]
    if not path.exists():
        raise MmnerError(f"{text}: {path} does not exist (is the data dir complete?)")
    return path


def _lookup(explicit: str | Path | None) -> Path:
    """`data_dir()` for functions whose `data_dir` parameter shadows it."""
    return data_dir(explicit)


def caption_file(dataset: str, source: str = "blip2", data_dir: str | Path | None = None) -> Path:
    """The caption file of a dataset: `captions/blip2_<dataset>.txt`, or for `owl` the mPLUG-Owl
    file that covers both datasets. `dataset` may carry a split (`twitter2017:test`); it is ignored.
    """
    name = dataset.split(":", 1)[0].removesuffix("_samples")
    if name not in ("twitter2015", "twitter2017"):
        raise MmnerError(f"captions: unknown dataset {dataset!r} (choose from: twitter2015, twitter2017)")
    if source == "blip2":
        rel = f"captions/blip2_{name}.txt"
    elif source == "owl":
        rel = "captions/mplug_owl_twitter10000.txt"
    else:
        raise MmnerError(f"captions: unknown source {source!r} (choose from: {', '.join(CAPTION_SOURCES)})")
    path = _lookup(data_dir) / rel
    if not path.is_file():
        raise MmnerError(f"captions: {path} does not exist")
    return path


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None) -> list[Post]:
    """Posts of a dataset name or file: `resolve` then `readers.read_posts`."""
    from mmner.data.readers import read_posts

    return read_posts(resolve(name_or_path, data_dir))
