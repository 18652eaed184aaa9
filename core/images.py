"""Image input: decode anything a user may hand us into an upright 8-bit RGB PIL image, or say clearly why not.

Every refusal is an ``ImageError`` whose message says what was wrong with the input; nothing here lets a
decoder's traceback or a decompression bomb through.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

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
        ImageError: missing, empty, unreadable, not an image, or too large to decode.
    """
    notices: list[str] = []
    if isinstance(image, np.ndarray):
        return LoadedImage(_from_array(image), source or "<array>")
    if isinstance(image, Image.Image):
        pil = image
        name = source or "<image>"
    elif isinstance(image, (bytes, bytearray)):
        name = source or "<bytes>"
        pil = _open(io.BytesIO(image), name)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        name = source or path.name
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: the file is empty (0 bytes)")
        pil = _open(path, name)
    else:
        raise ImageError(f"expected an image file path, bytes, a PIL image or an array, got {type(image).__name__}")

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


def _to_rgb(pil: Image.Image) -> Image.Image:
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float: scale the full range to 8 bits
        array = np.asarray(pil, dtype=np.float64)
        peak = 65535.0 if pil.mode.startswith("I;16") or array.max() > 255 else 255.0
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
