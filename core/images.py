"""Image input: decode anything a user may hand us into an upright 8-bit RGB PIL image, or say clearly why not.

Every refusal is an ``ImageError`` whose message says what was wrong with the input; nothing here lets a
decoder's traceback or a decompression bomb through.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_DECODE_PIXELS", "ImageError", "LoadedImage", "load_image"]

# Largest image we agree to decode (8000 x 8000). Pillow's own guard is set just above it, so a file that claims
# more is refused from its header, before any pixel is decompressed.
MAX_DECODE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS


class ImageError(ValueError):
    """The input is not an image we can analyse; the message says why."""


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image, where it came from, and what was done to it on the way in."""

    image: Image.Image
    source: str
    notices: tuple[str, ...] = ()


def load_image(image: str | os.PathLike | bytes | Image.Image | np.ndarray, source: str | None = None) -> LoadedImage:
    """Decode a path, bytes, PIL image or array into an upright RGB image.

    Transparency is composited over white; 16-bit and float images are scaled to 8 bits; EXIF orientation is
    applied; an animated image contributes its first frame (with a notice).

    Raises:
        ImageError: missing, not a regular file (a directory, a FIFO, a device), empty, unreadable, not an image,
            or too large to decode.
    """
    if isinstance(image, np.ndarray):
        return LoadedImage(_from_array(image), source or "<array>")
    if isinstance(image, Image.Image):
        return _decode(image, source or "<image>")
    if isinstance(image, (bytes, bytearray)):
        name = source or "<bytes>"
        return _decode(_open(io.BytesIO(image), name), name)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        name = source or path.name or str(path)
        with _open_path(path, name) as file:  # open until the pixels are converted: Pillow reads lazily
            return _decode(_open(file, name), name)
    raise ImageError(f"expected an image file path, bytes, a PIL image or an array, got {type(image).__name__}")


def _open_path(path: Path, name: str) -> BinaryIO:
    """Open a regular, non-empty file for reading, or say what the path is instead.

    ``os.stat`` comes before any ``open``: opening a FIFO blocks until something writes to it, and a device such as
    ``/dev/zero`` never ends. The file is then opened non-blocking and checked again on its descriptor, so a path
    swapped for a FIFO between the two calls is refused too, never waited on.
    """
    try:
        _check_kind(os.stat(path), name)
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied (the file cannot be read)") from None
    except OSError as error:
        raise ImageError(f"{name}: could not be read ({error.strerror or error})") from error
    try:
        _check_kind(os.fstat(descriptor), name)
    except ImageError:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _check_kind(info: os.stat_result, name: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{name}: is not a regular file (a FIFO, socket or device), so it is not read")
    if info.st_size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes)")


def _decode(pil: Image.Image, name: str) -> LoadedImage:
    notices: list[str] = []
    width, height = pil.size
    if width * height > MAX_DECODE_PIXELS:
        raise ImageError(
            f"{name}: {width} x {height} pixels is more than the {MAX_DECODE_PIXELS // 1_000_000} megapixels "
            f"we decode (a decompression bomb, or a very large image): scale it down first"
        )
    if getattr(pil, "n_frames", 1) > 1:
        notices.append(f"{name} has {pil.n_frames} frames; the first one is analysed")
        pil.seek(0)
    try:
        pil.load()
        pil = ImageOps.exif_transpose(pil)
        rgb = _to_rgb(pil)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: the image data is corrupt or truncated ({error})") from error
    return LoadedImage(rgb, name, tuple(notices))


def _open(fp, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name}: the image claims more pixels than the {MAX_DECODE_PIXELS // 1_000_000} megapixels we "
            f"decode (a decompression bomb, or a very large image): scale it down first"
        ) from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{name}: not an image file we can read (PNG, JPEG, WebP, GIF, BMP, TIFF...)") from error
    except OSError as error:
        raise ImageError(f"{name}: could not be read ({error})") from error


# 16-bit and float modes: scaled to 8 bits (``_peak``, ``_strip_to_rgb``).
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# Pixels converted at a time. Every step of the conversion acts on each pixel alone, so converting strips of rows
# gives the whole image's result; a strip's float64 copies (8 bytes a pixel, a few at once) stay near 16 MB each
# instead of 0.5 GB for an 8000 x 8000 image.
_STRIP_PIXELS = 1 << 21


def _to_rgb(pil: Image.Image) -> Image.Image:
    """A new 8-bit RGB image of ``pil``, converted a strip of rows at a time (see ``_STRIP_PIXELS``).

    The one rule that looks at the whole image, the scale of a 16-bit or float image (``_peak``), is decided before
    the first strip.
    """
    peak = _peak(pil) if pil.mode in _DEEP_MODES else 255.0
    width, height = pil.size
    rows = max(1, _STRIP_PIXELS // max(1, width))
    if height <= rows:
        return _strip_to_rgb(pil, peak)
    rgb = Image.new("RGB", pil.size)
    for top in range(0, height, rows):
        strip = pil.crop((0, top, width, min(top + rows, height)))  # crop keeps the palette and the transparency
        rgb.paste(_strip_to_rgb(strip, peak), (0, top))
    return rgb


def _peak(pil: Image.Image) -> float:
    """The value a 16-bit or float image's white is.

    65535 for 16 bits; for 32-bit integers and floats 65535 if any value is above 255 (a 16-bit range), else 255 (an
    8-bit range). NaN anywhere means 255, as ``max`` says.
    """
    if pil.mode.startswith("I;16"):
        return 65535.0
    width, height = pil.size
    rows = max(1, _STRIP_PIXELS // max(1, width))
    # the maximum of the strips' maxima, in the image's own type: equal to the whole float64 array's (int32 and
    # float32 values are exact in float64), NaN included
    top = np.max([np.asarray(pil.crop((0, y, width, min(y + rows, height)))).max() for y in range(0, height, rows)])
    return 65535.0 if float(top) > 255 else 255.0


def _strip_to_rgb(pil: Image.Image, peak: float) -> Image.Image:
    if pil.mode in _DEEP_MODES:  # 16-bit or float: scale the full range to 8 bits
        array = np.asarray(pil, dtype=np.float64)
        pil = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if pil.mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return pil.convert("RGB")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(f"an image array must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGB" if array.shape[2] == 3 else "RGBA"))
    raise ImageError(f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {array.shape}")
