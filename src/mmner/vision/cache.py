"""On-disk cache of image grid features, keyed by image id and encoder identity.

Layout of a cache folder `CACHE` (one folder can hold several encoders side by side):

```
CACHE/
  skipped.txt                          last extraction's unreadable files: `relative/path<TAB>reason`
  <encoder>-<hash12>/                  one folder per (encoder identity, storage dtype)
    meta.json                          {"identity", "dtype", "regions", "dim"}
    features/<image id>.npy            one array [R, D] per image (float16 by default)
```

- **Image id** = the file's path relative to the `--images` folder, without its extension, with `/`
  separators. For a flat folder (the datasets' `twitter2015_images/16_05_01_360.jpg`) that is the
  file stem, i.e. the dataset's `IMGID` and `Post.image_id`; nested folders keep their sub-path
  (`twitter2017_samples/train/1`), so equal stems in different folders never collide. Two files that
  differ only by extension (`a.jpg`, `a.png`) would share an id: the first in sorted order wins and
  the other is reported as skipped.
- **Atomic writes**: every entry is written to a temporary file in the same folder and renamed into
  place (`os.replace`), so an interrupted run never leaves a half-written entry; a rerun skips the
  images already present and encodes only the rest.
- **dtype**: float16 halves the size (49 x 1280 x 2 bytes = 123 KB per image for EfficientNet-Lite0);
  `get` returns the stored dtype, so compare with `fresh.to(torch.float16)`.
- An entry is trusted if its file exists: the cache does not notice an image file that changed
  after it was encoded (delete its entry, or the encoder folder, to recompute).
- An unreadable image is never replaced: it is logged as a warning, listed in `skipped.txt` with the
  reason, and retried on the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mmner.errors import MmnerError
from mmner.vision.grid import GridEncoder, build_encoder
from mmner.vision.images import IMAGE_SUFFIXES, load_image

__all__ = [
    "ExtractSummary",
    "FeatureCache",
    "extract_features",
    "format_size",
    "image_id_for",
    "iter_image_files",
]

log = logging.getLogger("mmner.vision")

_DTYPES = {"float16": (torch.float16, np.float16), "float32": (torch.float32, np.float32)}
SKIPPED_FILE = "skipped.txt"


def _slug(identity: str, dtype: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split("|", 1)[0]).strip("._") or "encoder"
    digest = hashlib.sha256(f"{identity}|dtype={dtype}".encode()).hexdigest()[:12]
    return f"{name}-{digest}"


def _check_id(image_id: str) -> str:
    parts = PurePosixPath(image_id).parts
    if (
        not image_id
        or "\\" in image_id
        or image_id.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\x00" in image_id
    ):
        raise MmnerError(f"invalid image id {image_id!r} (expected a relative path without '..', e.g. 16_05_01_360)")
    return image_id


class FeatureCache:
    """Grid features on disk for one encoder identity: `get`, `put`, `in`, `len`."""

    def __init__(self, path: str | Path, identity: str, dtype: str = "float16") -> None:
        if dtype not in _DTYPES:
            raise MmnerError(f"feature cache dtype {dtype!r}: choose float16 or float32")
        self.root = Path(path)
        self.identity = identity
        self.dtype = dtype
        self.folder = self.root / _slug(identity, dtype)
        self.features_dir = self.folder / "features"
        self._meta: dict | None = None
        meta_file = self.folder / "meta.json"
        if meta_file.is_file():
            try:
                self._meta = json.loads(meta_file.read_text())
            except (OSError, ValueError) as exc:
                raise MmnerError(f"{meta_file}: unreadable cache metadata ({exc})") from None
            if self._meta.get("identity") != identity or self._meta.get("dtype") != dtype:
                raise MmnerError(f"{meta_file}: belongs to encoder {self._meta.get('identity')!r}, not {identity!r}")

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.folder)!r})"

    def _entry(self, image_id: str) -> Path:
        return self.features_dir / f"{_check_id(image_id)}.npy"

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        try:
            return self._entry(image_id).is_file()
        except MmnerError:  # not a valid id, so certainly not cached
            return False

    def ids(self) -> Iterator[str]:
        """The cached image ids (sorted)."""
        if not self.features_dir.is_dir():
            return iter(())
        base = self.features_dir
        return iter(sorted(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.npy") if p.is_file()))

    def __len__(self) -> int:
        return sum(1 for _ in self.ids())

    def get(self, image_id: str) -> torch.Tensor | None:
        """The cached features [R, D] (stored dtype), or None when the image is not cached."""
        entry = self._entry(image_id)
        try:
            arr = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            raise MmnerError(f"{entry}: corrupt cache entry ({exc}); delete it to recompute") from None
        meta = self._meta
        if arr.ndim != 2 or (meta and tuple(arr.shape) != (meta.get("regions"), meta.get("dim"))):
            raise MmnerError(f"{entry}: cache entry has shape {arr.shape}, expected [regions, dim]; delete it to recompute")
        return torch.from_numpy(arr)

    def put(self, image_id: str, features: torch.Tensor) -> None:
        """Store features [R, D] for an image id (atomically: temporary file, then rename)."""
        entry = self._entry(image_id)
        if features.dim() != 2:
            raise MmnerError(f"image {image_id}: features must be [regions, dim], got {tuple(features.shape)}")
        torch_dtype, np_dtype = _DTYPES[self.dtype]
        values = features.detach().to("cpu", torch_dtype).contiguous()
        if not bool(torch.isfinite(values).all()):
            raise MmnerError(f"image {image_id}: features are not finite in {self.dtype}")
        self._ensure_meta(int(values.shape[0]), int(values.shape[1]))
        if self._meta and (self._meta["regions"], self._meta["dim"]) != tuple(values.shape):
            raise MmnerError(
                f"image {image_id}: features {tuple(values.shape)} do not match this cache's "
                f"[{self._meta['regions']}, {self._meta['dim']}]"
            )
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.save(fh, values.numpy().astype(np_dtype, copy=False), allow_pickle=False)
        os.replace(tmp, entry)

    def _ensure_meta(self, regions: int, dim: int) -> None:
        if self._meta is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"identity": self.identity, "dtype": self.dtype, "regions": regions, "dim": dim}
        tmp = self.folder / f".meta.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, self.folder / "meta.json")
        self._meta = meta

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by killed runs (older than `older_than_s`); returns the count."""
        if not self.features_dir.is_dir():
            return 0
        now, n = time.time(), 0
        for p in self.features_dir.rglob(".*.tmp*"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    n += 1
            except OSError:
                pass
        return n


# --------------------------------------------------------------------------------------------------
# extraction


def iter_image_files(root: str | Path) -> list[Path]:
    """Image files under a folder, recursively, sorted by relative path (hidden files skipped)."""
    base = Path(root)
    if not base.is_dir():
        raise MmnerError(f"{base}: no such folder of images")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(found, key=lambda p: p.relative_to(base).as_posix())


def image_id_for(path: str | Path, root: str | Path) -> str:
    """The cache id of an image file: its path under `root` without extension (`/`-separated)."""
    return Path(path).relative_to(root).with_suffix("").as_posix()


def format_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _disk_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@dataclass
class ExtractSummary:
    """What one extraction run did. `images_per_second` counts newly encoded images over the run's
    wall time (reading, preprocessing, encoding, writing; not loading the model); `cache_bytes` is
    the size on disk of the whole cache folder."""

    encoded: int = 0
    cached: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    seconds: float = 0.0
    cache_bytes: int = 0
    cache_folder: str = ""
    skipped_file: str = ""

    @property
    def images_per_second(self) -> float | None:
        return self.encoded / self.seconds if self.encoded and self.seconds > 0 else None

    def line(self) -> str:
        rate = f"{self.images_per_second:.1f} images/s" if self.images_per_second is not None else "n/a images/s"
        return (
            f"encoded {self.encoded} images, {self.cached} from cache, {len(self.skipped)} skipped; "
            f"{rate}; cache size {format_size(self.cache_bytes)} ({self.cache_folder})"
        )


def check_output(output: str | Path) -> None:
    """Refuse a cache path that is a file, before any encoder is loaded."""
    if Path(output).exists() and not Path(output).is_dir():
        raise MmnerError(f"{output}: exists and is not a folder (--output names the cache folder)")


def plan_extraction(root: Path, files: list[Path], cache: FeatureCache, summary: ExtractSummary,
                    limit: int | None) -> list[tuple[str, Path]]:
    """(image id, file) of the images to encode: not cached yet, at most `limit`; files whose id another
    file already has are recorded as skipped, cached ones counted."""
    cache.remove_stale_temporaries()
    todo: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for path in files:
        image_id = image_id_for(path, root)
        rel = path.relative_to(root).as_posix()
        if image_id in seen:
            reason = f"duplicate image id {image_id!r} (also {seen[image_id].relative_to(root).as_posix()})"
            summary.skipped.append((rel, reason))
            log.warning("skipped %s: %s", path, reason)
            continue
        seen[image_id] = path
        if image_id in cache:
            summary.cached += 1
        else:
            todo.append((image_id, path))
    if limit is not None:
        todo = todo[: max(0, limit)]
    return todo


def unreadable_reason(exc: MmnerError, path: Path) -> str:
    """Why an image could not be read, without the path that `load_image` puts first."""
    reason, prefix = str(exc), f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def skip_unreadable(summary: ExtractSummary, root: Path, path: Path, reason: str) -> None:
    summary.skipped.append((path.relative_to(root).as_posix(), reason))
    log.warning("skipped %s: %s", path, reason)


def finish_extraction(output: str | Path, summary: ExtractSummary) -> None:
    """Write `skipped.txt` (this run's skipped files) and measure the cache."""
    skipped_file = Path(output) / SKIPPED_FILE
    Path(output).mkdir(parents=True, exist_ok=True)
    tmp = skipped_file.with_name(f".{SKIPPED_FILE}.tmp{os.getpid()}")
    tmp.write_text("".join(f"{rel}\t{reason}\n" for rel, reason in summary.skipped), encoding="utf-8")
    os.replace(tmp, skipped_file)
    summary.skipped_file = str(skipped_file)
    summary.cache_bytes = _disk_size(Path(output))


def _prepare(path: Path, encoder: GridEncoder) -> torch.Tensor:
    return encoder.preprocess(load_image(path))


def extract_features(
    images: str | Path,
    encoder: GridEncoder | str,
    output: str | Path,
    *,
    weights: str | Path | None = None,
    batch_size: int = 16,
    dtype: str = "float16",
    device: str = "cpu",
    limit: int | None = None,
    workers: int = 2,
    progress: bool = True,
    on_batch: Callable[[list[str]], None] | None = None,
) -> ExtractSummary:
    """Encode every image under `images` not yet in the cache at `output`; stream, batch, resume.

    `limit` stops after that many newly encoded images (a partial run; the rest follows next time).
    `on_batch(ids)` is called after each batch is stored. Images are read and preprocessed by
    `workers` threads, at most two batches ahead, so memory stays bounded by the batch size.
    """
    if batch_size < 1:
        raise MmnerError(f"--batch-size {batch_size}: must be at least 1")
    root = Path(images)
    files = iter_image_files(root)
    check_output(output)
    enc = encoder if isinstance(encoder, GridEncoder) else build_encoder(encoder, weights, device)
    cache = FeatureCache(output, enc.identity, dtype)
    summary = ExtractSummary(cache_folder=str(cache.folder))
    todo = plan_extraction(root, files, cache, summary, limit)

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(files), initial=summary.cached + len(summary.skipped), desc="features",
               unit="img", disable=not progress)
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mmner-img")
    pending: deque[tuple[str, Path, Future]] = deque()
    queue = iter(todo)
    batch_ids: list[str] = []
    batch_pixels: list[torch.Tensor] = []

    def flush() -> None:
        if not batch_ids:
            return
        feats = enc.encode_pixels(torch.stack(batch_pixels))
        for image_id, f in zip(batch_ids, feats):
            cache.put(image_id, f)
        summary.encoded += len(batch_ids)
        bar.update(len(batch_ids))
        done = list(batch_ids)
        batch_ids.clear()
        batch_pixels.clear()
        if on_batch is not None:
            on_batch(done)

    with contextlib.ExitStack() as stack:
        if progress:
            stack.enter_context(logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("mmner")]))  # warnings print above the bar, not through it
        try:
            while True:
                while len(pending) < 2 * batch_size:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending.append((nxt[0], nxt[1], pool.submit(_prepare, nxt[1], enc)))
                if not pending:
                    break
                image_id, path, fut = pending.popleft()
                try:
                    pixels = fut.result()
                except MmnerError as exc:
                    skip_unreadable(summary, root, path, unreadable_reason(exc, path))
                    bar.update(1)
                    continue
                batch_ids.append(image_id)
                batch_pixels.append(pixels)
                if len(batch_ids) >= batch_size:
                    flush()
            flush()
        finally:
            for _, _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            summary.seconds = time.perf_counter() - start
            finish_extraction(output, summary)
    return summary
