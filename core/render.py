"""Pictures from an analysis: pseudo-CAM overlays and the box view. PIL images out; no torch here.

- ``overlay``: one class's probability where it wins (0 elsewhere), upsampled bicubic onto the part of the image
  the map spans, coloured with matplotlib's "hot" (the seed's colormap, on a fixed 0..1 scale so colours mean the
  same probability in every picture) and blended at alpha 0.5 over the photo.
- ``box_view``: the photo with each box drawn and labelled in its class's colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from core.analysis import Analysis

__all__ = ["Overlay", "box_view", "class_colors", "overlay", "overlays"]

_HOT = colormaps["hot"]
_PALETTE = colormaps["tab10"]


@dataclass(frozen=True)
class Overlay:
    """A pseudo-CAM picture of one found class, with its caption."""

    index: int
    label: str
    score: float
    image: Image.Image

    @property
    def caption(self) -> str:
        return f"{self.label} ({self.score:.2f})"


def upsample(heat: np.ndarray, extent: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """A map (rows x cols, values 0..1) resampled bicubic onto an image of ``size`` (width, height).

    The map is stretched over ``extent`` (x0, y0, x1, y1 in image pixels); pixels outside it are 0.
    """
    width, height = size
    x0, y0, x1, y1 = extent
    cols, rows = heat.shape[1], heat.shape[0]
    # Map the image's pixel centres into map coordinates and sample there, so any extent (also one that is not a
    # whole number of pixels) lines up exactly; PIL's bicubic does the interpolation.
    source = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32), mode="F")
    sx, sy = cols / (x1 - x0), rows / (y1 - y0)
    affine = (sx, 0.0, -x0 * sx, 0.0, sy, -y0 * sy)
    sampled = source.transform((width, height), Image.Transform.AFFINE, affine, resample=Image.Resampling.BICUBIC)
    out = np.asarray(sampled, dtype=np.float32).copy()
    xs = np.arange(width) + 0.5
    ys = np.arange(height) + 0.5
    out[:, (xs < x0) | (xs > x1)] = 0.0
    out[(ys < y0) | (ys > y1), :] = 0.0
    return np.clip(out, 0.0, 1.0)


def overlay(
    image: Image.Image, heat: np.ndarray, extent: tuple[float, float, float, float], alpha: float = 0.5
) -> Image.Image:
    """The photo with ``heat`` (a map of probabilities) as a "hot" heat map blended at ``alpha`` over it."""
    full = upsample(heat, extent, image.size)
    colored = (_HOT(full)[..., :3] * 255.0).astype(np.float32)
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.rint(photo * (1.0 - alpha) + colored * alpha).astype(np.uint8), "RGB")


def overlays(analysis: Analysis, image: Image.Image, limit: int | None = None) -> list[Overlay]:
    """One pseudo-CAM overlay per found class, in the analysis's order (best score first)."""
    return [
        Overlay(c.index, c.label, c.score, overlay(image, analysis.class_map(c.index), analysis.extent))
        for c in analysis.classes[:limit]
    ]


def class_colors(analysis: Analysis) -> dict[int, tuple[int, int, int]]:
    """A distinct colour per found class (tab10, in the order of ``analysis.classes``)."""
    return {
        c.index: tuple(round(v * 255) for v in _PALETTE(i % _PALETTE.N)[:3]) for i, c in enumerate(analysis.classes)
    }


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sizeable default font
        return ImageFont.load_default()


def box_view(analysis: Analysis, image: Image.Image) -> Image.Image:
    """The photo with every box drawn and labelled ("label 0.97") in its class's colour.

    Line width and text size follow the image size; a label sits above its box, or inside it when there is no
    room above, and is always kept inside the image. Text is black or white, whichever reads on the colour.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    scale = max(width, height)
    line = max(2, round(scale / 250))
    font = _font(max(11, round(scale / 40)))
    colors = class_colors(analysis)
    for box in analysis.boxes:
        color = colors.get(box.index, (255, 255, 0))
        x1, y1, x2, y2 = box.box
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=color, width=line)
    for box in analysis.boxes:  # labels after all rectangles, so no line crosses a label
        color = colors.get(box.index, (255, 255, 0))
        x1, y1, x2, y2 = box.box
        text = f"{box.label} {box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        tx = min(max(0, x1), max(0, width - tw))
        ty = y1 - th if y1 - th >= 0 else min(y1, max(0, height - th))
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=color)
        draw.text((tx + line - left, ty + line - top), text, fill=ink, font=font)
    return out
