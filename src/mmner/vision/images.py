"""Loading post images: always an RGB `PIL.Image`, or an `MmnerError` naming the file.

`load_image(path)`:
- applies the EXIF orientation (`ImageOps.exif_transpose`), so a phone photo stands upright;
- converts every mode to RGB: grayscale (`1`, `L`, 16-bit `I;16`, `I`, `F`), palette (`P`), `CMYK`,
  `YCbCr`, `LAB`, `HSV`; images with transparency (`RGBA`, `LA`, `PA`, `P` with a transparent colour)
  are composited on white, so transparent pixels do not turn black;
- takes the first frame of an animated GIF / WebP;
- bounds memory for huge images. JPEGs are decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`, the
  decoder's own DCT scaling, so the full-size bitmap never exists) when larger than `max_side`; this
  also applies to JPEGs over Pillow's decompression-bomb limit, which are then opened without it
  (the scaled decode is what keeps them safe). Any other format whose decoded size would exceed
  `max_pixels` (default: Pillow's `Image.MAX_IMAGE_PIXELS`, about 89.5 Mpx) is refused with a
  clear error ("too large"), never decoded. Finally the image is downscaled so that its longer side
  is at most `max_side` (default 2048 px, far above what any encoder uses; None keeps the size);
- raises `MmnerError("<path>: unreadable image (<reason>)")` for a missing, empty, truncated,
  corrupt or non-image file. Nothing is ever silently replaced by a blank image: what to do with a
  post whose image is unreadable is the caller's policy (`visual.missing: error | mask`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmner.errors import MmnerError

__all__ = ["IMAGE_SUFFIXES", "DEFAULT_MAX_SIDE", "is_image_file", "load_image", "to_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
DEFAULT_MAX_SIDE = 2048

_JPEG_MAGIC = b"\xff\xd8\xff"


def is_image_file(path: str | Path) -> bool:
    """Whether a path has one of the image suffixes mmner looks for (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _unreadable(path: str | Path, reason: str) -> MmnerError:
    return MmnerError(f"{path}: unreadable image ({reason})")


def _open(path: Path) -> Image.Image:
    """`Image.open`, except that a JPEG over the decompression-bomb limit is opened without the check.

    Such a JPEG is always drafted (decoded at reduced scale) by the caller before anything is decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            with open(path, "rb") as fh:
                magic = fh.read(3)
            if magic != _JPEG_MAGIC:
                raise
            from PIL import JpegImagePlugin

            return JpegImagePlugin.JpegImageFile(str(path))


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8-bit `L`, scaled by the type's range (not clipped)."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":  # arbitrary range: stretch min..max to 0..255
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    elif im.mode.startswith("I;16") or (arr.size and arr.max() > 255):  # 16-bit samples
        scaled = arr / 257.0
    else:
        scaled = arr
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _sixteen_bit_to_l(im)
    elif im.mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _draft(im: Image.Image, max_side: int | None, limit: int) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale decode where that loses nothing we keep.

    The scale is the largest that keeps the longer side >= `max_side` (the image is thumbnailed to
    `max_side` afterwards anyway), and at least the smallest that brings the pixel count under `limit`.
    """
    w, h = im.size
    scales = (1, 2, 4, 8)
    s_side = 1 if max_side is None else max((s for s in scales if max(w, h) // s >= max_side), default=1)
    s_mem = next((s for s in scales if -(-w // s) * -(-h // s) <= limit), 8)
    s = max(s_side, s_mem)
    if s > 1 and w // s >= 1 and h // s >= 1:
        im.draft(im.mode, (w // s, h // s))


def load_image(
    path: str | Path,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int | None = None,
) -> Image.Image:
    """Read an image file as an upright RGB image (see the module docstring for every rule)."""
    p = Path(path)
    if not p.exists():
        raise _unreadable(p, "no such file")
    if p.is_dir():
        raise _unreadable(p, "is a folder")
    if p.stat().st_size == 0:
        raise _unreadable(p, "empty file")
    limit = max_pixels if max_pixels is not None else (Image.MAX_IMAGE_PIXELS or 2**62)
    try:
        im = _open(p)
    except UnidentifiedImageError:
        raise _unreadable(p, "not an image file Pillow can identify") from None
    except Image.DecompressionBombError as exc:
        raise _unreadable(p, f"too large: {exc}") from None
    except OSError as exc:
        raise _unreadable(p, exc.strerror or str(exc) or type(exc).__name__) from None
    except (SyntaxError, ValueError, IndexError, TypeError, EOFError) as exc:
        raise _unreadable(p, f"{type(exc).__name__}: {exc}") from None
    try:
        with im:
            if im.format == "JPEG":
                _draft(im, max_side, limit)
            w, h = im.size
            if w * h > limit:
                raise _unreadable(
                    p, f"too large: {w}x{h} = {w * h} pixels, over the limit of {limit} pixels "
                    "(only JPEG images can be decoded at reduced scale)"
                )
            if w <= 0 or h <= 0:
                raise _unreadable(p, f"empty image ({w}x{h})")
            im.seek(0)  # first frame of an animation
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
            out = ImageOps.exif_transpose(im) or im
            out = to_rgb(out)
            if out is im:  # detach from the file before it is closed
                out = im.copy()
    except MmnerError:
        raise
    except MemoryError:
        raise _unreadable(p, "out of memory while decoding") from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, struct.error, ValueError, ...
        msg = str(exc) or type(exc).__name__
        raise _unreadable(p, msg) from None
    if max_side is not None and max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return out

