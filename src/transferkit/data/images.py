"""Opening one image file safely and turning it into 8-bit RGB.

Every image that enters transferkit goes through :func:`to_rgb`, so the loader's
up-front readability check (:func:`check_image_bytes`) and the later decode
(:func:`decode_image_bytes`) run the same conversion code and cannot disagree.

Decisions (documented once, here):

- Transparency (RGBA, LA, PA, palette with a transparent index) is **composited on
  white**. Dropping alpha would expose whatever colour a transparent pixel happens to
  store (often black or garbage); white is what a viewer shows for product shots and icons.
- 16-bit images (``I;16*``, and ``I`` holding 16-bit data) are **scaled** to 8 bit
  (``v / 257``, rounded), not clipped. ``I`` images whose values all lie in 0..255 are
  taken as 8-bit data. ``F`` images are taken as 0..1 when their maximum is <= 1, else
  clipped to 0..255.
- 1-bit images become black/white, CMYK goes through Pillow's conversion, grayscale is
  repeated over three channels.
- EXIF orientation is applied (``ImageOps.exif_transpose``); a broken EXIF block is
  ignored (the pixels are still good).
- Animated files (GIF, APNG, WebP) contribute their first frame.
- Decompression bombs: the header size is checked against ``max_pixels`` *before* any
  pixel is decoded; Pillow's own ``DecompressionBombError`` is caught as well.
- ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never changed: truncated files fail and are skipped.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Same default as Pillow (about 89.5 megapixels, a 1 GB RGBA image); refused, not warned about.
DEFAULT_MAX_PIXELS = 89_478_485


class UnreadableImage(Exception):
    """Internal: the bytes are not a usable image. ``str(exc)`` is the reason shown to users."""


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def resample_for(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[str(interpolation).lower()]
    except KeyError:
        raise ConfigError(
            f"interpolation={interpolation!r} is not known; use one of {sorted(INTERPOLATIONS)}."
        ) from None


def normalize_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``size`` is ``(H, W)`` (or one int for a square); returns ``(H, W)``."""
    if isinstance(size, int | np.integer):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size={size!r} must be (height, width) or one int, e.g. (224, 224).") from None
    if h < 1 or w < 1:
        raise ConfigError(f"size={size!r}: height and width must be >= 1.")
    return h, w


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only, refusing enormous declared sizes before any pixel is decoded."""
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"decompression bomb refused: {exc}") from None
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct.error, ...
        raise UnreadableImage(_reason(exc)) from None
    w, h = im.size
    if w < 1 or h < 1:
        raise UnreadableImage(f"image header declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise UnreadableImage(
            f"decompression bomb refused: header declares {w}x{h} = {w * h:,} pixels, "
            f"more than the limit of {max_pixels:,} (max_pixels)"
        )
    return im


@contextlib.contextmanager
def bomb_warnings_as_errors() -> Iterator[None]:
    """Turn Pillow's DecompressionBombWarning into an error for the duration.

    ``warnings.catch_warnings`` is process-global and not thread-safe, so the loaders enter
    this once in the calling thread around a whole thread-pool run, never inside workers.
    (The explicit ``max_pixels`` check in ``_open`` refuses the same images in any case.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if len(text) > 200:
        text = text[:200] + "..."
    if "cannot identify image file" in text:
        return "not an image Pillow can read (unknown format or corrupt header)"
    return f"{type(exc).__name__}: {text}"


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: the pixels are still usable
        return im
    return im if out is None else out


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded (or lazily opened) Pillow image of any mode to 8-bit RGB."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = _exif_transpose(im)
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _on_white(im)
    if mode == "P":
        if "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA":
            return _on_white(im)
        return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 255:
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = np.rint(np.clip(arr, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.rint(np.clip(arr, 0, 255)).astype(np.uint8), "L").convert("RGB")
    # "1", "L", "CMYK", "YCbCr", "RGBX", "LAB", "HSV", ...: Pillow knows these.
    return im.convert("RGB")


def check_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise :class:`UnreadableImage` unless ``data`` decodes completely to RGB.

    JPEGs are decoded with DCT scaling (``draft``, up to 1/8 size): every byte of the
    entropy-coded stream is still parsed, so truncation and corruption are caught, at a
    fraction of the cost of a full-size decode.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    im = _open(data, max_pixels)
    try:
        if im.format == "JPEG":
            w, h = im.size
            im.draft(None, (max(1, w // 8), max(1, h // 8)))
        im.load()
        out = to_rgb(im)
        out.load()
    except UnreadableImage:
        raise
    except Exception as exc:
        raise UnreadableImage(_reason(exc)) from None
    finally:
        im.close()


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Full-size RGB image from file bytes; raises :class:`UnreadableImage` on any failure."""
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    im = _open(data, max_pixels)
    try:
        im.load()
        out = to_rgb(im)
        out.load()
        return out
    except UnreadableImage:
        raise
    except Exception as exc:
        raise UnreadableImage(_reason(exc)) from None


def resize_to_chw(
    im: Image.Image, size: tuple[int, int], resample: Image.Resampling, contiguous: bool = True
) -> np.ndarray:
    """Resize the whole image (no crop) to ``size`` = (H, W); uint8 (3, H, W).

    ``contiguous=False`` returns a transposed view (for callers that copy it into place anyway).
    """
    h, w = size
    if im.size != (w, h):
        im = im.resize((w, h), resample=resample)
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    chw = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(chw) if contiguous else chw


def load_image_uint8(
    path: str | os.PathLike[str],
    size: int | tuple[int, int],
    interpolation: str = "bilinear",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """One loose image file (for ``predict``) as uint8 (3, H, W), converted like the datasets.

    Raises :class:`DataError` naming the file when it cannot be read.
    """
    hw = normalize_size(size)
    resample = resample_for(interpolation)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read image {path}: {exc.strerror or exc}. Check the path.") from exc
    try:
        with bomb_warnings_as_errors():
            im = decode_image_bytes(data, max_pixels)
    except UnreadableImage as exc:
        raise DataError(f"{path} is not a readable image ({exc}). Replace or remove the file.") from None
    return resize_to_chw(im, hw, resample)


def _truncation_guard() -> bool:
    """True when someone switched Pillow's global truncated-image loading on."""
    return bool(ImageFile.LOAD_TRUNCATED_IMAGES)
