"""Pictures from an analysis: pseudo-CAM overlays and the box view. PIL images out; no torch here.

- ``overlay``: one class's probability where it wins (0 elsewhere), upsampled bicubic onto the part of the image
  the map spans, coloured with matplotlib's "hot" (the seed's colormap, on a fixed 0..1 scale so colours mean the
  same probability in every picture) and blended at alpha 0.5 over the photo.
- ``box_view``: the photo with each box drawn and labelled in its class's colour.
- ``class_map_layers``: the class map of everything: per class (or group) that wins some map cell above the box
  threshold, the pixels of those cells, in its colour (the box view's colours for the found ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from core.analysis import Analysis

__all__ = ["ClassMapLayer", "Overlay", "box_view", "class_colors", "class_map_layers", "overlay", "overlays"]

_HOT = colormaps["hot"]
# The "hot" colormap's 256 colours as 0..255 float32 RGB: row i is what ``_HOT`` gives for values in [i, i+1) / 256.
_HOT_RGB = (_HOT(np.arange(_HOT.N))[:, :3] * 255.0).astype(np.float32)
_PALETTE = colormaps["tab10"]


@dataclass(frozen=True)
class Overlay:
    """A pseudo-CAM picture of one found class or group (``channel`` of the analysis's map), with its caption."""

    channel: int
    label: str
    score: float
    image: Image.Image

    @property
    def caption(self) -> str:
        """The gallery's caption: the label and the score."""
        return f"{self.label} ({self.score:.2f})"


def upsample(heat: np.ndarray, extent: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """A map (rows x cols, values 0..1) resampled bicubic onto an image of ``size`` (width, height).

    The map is stretched over ``extent`` (x0, y0, x1, y1 in image pixels); pixels outside it are 0.
    """
    return np.clip(_sample(heat, extent, size), 0.0, 1.0)


def _sample(heat: np.ndarray, extent: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    # ``upsample`` before its clip to 0..1 (bicubic overshoots a little near steep edges).
    width, height = size
    out = np.zeros((height, width), dtype=np.float32)
    found = _sample_region(heat, extent, size)
    if found is not None:
        block, (top, bottom, left, right) = found
        out[top:bottom, left:right] = block
    return out


Region = tuple[int, int, int, int]  # top, bottom, left, right (exclusive) in output pixels


def _sample_region(
    heat: np.ndarray, extent: tuple[float, float, float, float], size: tuple[int, int]
) -> tuple[np.ndarray, Region] | None:
    """``_sample`` over the smallest box of pixels that can be non-zero (float32 values and the box), or None.

    Map the image's pixel centres into map coordinates and sample there, so any extent (also one that is not a whole
    number of pixels) lines up exactly; pixels outside the extent are 0. The interpolation is Pillow's bicubic, as
    ``Image.transform(size, AFFINE, (sx, 0, -x0 * sx, 0, sy, -y0 * sy), BICUBIC)`` on the map as an "F" image
    computes it (Geometry.c), bit for bit, but separably: each output column's horizontal taps once per map row,
    then each run of output rows that share their 4 vertical taps as one block. That is ~5x faster than Pillow's
    per-pixel loop, and leaves out the rows and columns whose taps are all 0 (most of a class map is other classes').
    """
    width, height = size
    x0, y0, x1, y1 = extent
    rows, cols = heat.shape
    sx, sy = cols / (x1 - x0), rows / (y1 - y0)
    source = np.ascontiguousarray(heat, dtype=np.float32)
    nonzero = source != 0
    first_x, dx, valid_x = _taps(sx, -x0 * sx, width, cols)
    taps_x = np.clip(first_x[:, None] + np.arange(4), 0, cols - 1)
    touched = valid_x & nonzero.any(axis=0)[taps_x].any(axis=1)  # elsewhere every tap is 0, and so is the result
    first_y, dy, valid_y = _taps(sy, -y0 * sy, height, rows)
    shown = np.flatnonzero(valid_y)  # a contiguous run: the mapping is monotonic
    if not touched.any() or not shown.size:
        return None
    left, right = (int(v) for v in np.flatnonzero(touched)[[0, -1]] + (0, 1))
    firsts, starts = np.unique(first_y[shown], return_index=True)
    stops = np.append(starts[1:], shown.size)
    tap_rows = np.clip(firsts[:, None] + np.arange(4), 0, rows - 1)  # Pillow's edge rule (clamp), in its own form
    live = nonzero.any(axis=1)[tap_rows].any(axis=1)
    # each run of output rows that share their 4 tap rows, one of them non-zero: (tap rows, top, bottom)
    runs = [(tap_rows[i], int(starts[i] + shown[0]), int(stops[i] + shown[0])) for i in np.flatnonzero(live)]
    if not runs:
        return None
    v = source[:, taps_x[left:right]]  # rows x columns x 4 taps
    across = _cubic(v[..., 0], v[..., 1], v[..., 2], v[..., 3], dx[left:right])  # rows x columns, float64
    top, bottom = runs[0][1], runs[-1][2]
    block = np.zeros((bottom - top, right - left), dtype=np.float32)
    for r, a, b in runs:
        _cubic_down(across[r[0]], across[r[1]], across[r[2]], across[r[3]], dy[a:b, None], block[a - top : b - top])
    xs = np.arange(left, right) + 0.5
    ys = np.arange(top, bottom) + 0.5
    block[:, (xs < x0) | (xs > x1)] = 0.0
    block[(ys < y0) | (ys > y1), :] = 0.0
    return block, (top, bottom, left, right)


def _taps(scale: float, offset: float, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bicubic sampling positions along one axis: first of 4 taps, fraction, inside the source."""
    position = scale * (np.arange(n_out) + 0.5) + offset  # affine_transform; the zero shear term adds nothing
    inside = (position >= 0.0) & (position < n_in)  # outside: filled with 0
    shifted = position - 0.5
    base = np.floor(shifted)
    return base.astype(np.int64) - 1, shifted - base, inside


def _cubic_down(v1: np.ndarray, v2: np.ndarray, v3: np.ndarray, v4: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:
    """``_cubic`` for a run of output rows (``d``: rows x 1) written into float32 ``out``, with no temporaries.

    The same operations as ``_cubic`` (addition and multiplication commute exactly), in place; the last sum is
    rounded to float32 as it is stored, as Pillow stores its double result.
    """
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    t = d * p4
    t += p3
    t *= d
    t += p2
    t *= d
    np.add(t, v2, out=out)


def _cubic(v1: np.ndarray, v2: np.ndarray, v3: np.ndarray, v4: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Pillow's BICUBIC macro, the same operations in the same order.

    The p terms are computed in the taps' dtype (float32 across the map, float64 down it), the polynomial in float64.
    """
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def overlay(
    image: Image.Image, heat: np.ndarray, extent: tuple[float, float, float, float], alpha: float = 0.5
) -> Image.Image:
    """The photo with ``heat`` (a map of probabilities) as a "hot" heat map blended at ``alpha`` over it."""
    return _Blender(image, alpha).blend(heat, extent)


class _Blender:
    """``overlay`` by table look-up, for one photo and alpha (``overlays`` draws every class over the same photo).

    Equal, bit for bit, to ``rint(photo * (1 - alpha) + hot(upsample(heat))[..., :3] * 255 * alpha)`` in float32:
    a value v in 0..1 takes the colormap's row min(floor(v * 256), 255), as matplotlib picks it, and each of the
    3 x 256 x 256 (colour row, photo value) pairs is blended and rounded once, into a table. Where the map is 0 (most
    of a class map) every overlay of the photo is the same picture, the photo under colormap row 0: it is drawn once
    and copied, and only the box of pixels that can be non-zero is looked up, in strips of rows. That replaces an
    8-byte RGBA colormap copy and float32 copies of the photo per overlay (~2.5 GB at 8000 x 6000).
    """

    STRIP = 256  # rows per look-up strip: a few MB of temporaries even at 8000 px wide
    KEEP = 16_000_000  # photos up to this many pixels are kept as an array; larger ones are read strip by strip

    def __init__(self, image: Image.Image, alpha: float) -> None:
        self.image = image if image.mode == "RGB" else image.convert("RGB")
        width, height = self.image.size
        self.photo = np.asarray(self.image) if width * height <= self.KEEP else None
        share = np.arange(256, dtype=np.float32) * (1.0 - alpha)  # the photo's term for each value, float32
        colors = _HOT_RGB * alpha  # the colormap's term for each row (256 x 3), float32
        # tables[c, row * 256 + value]: channel c of the blended, rounded pixel
        self.tables = np.rint(colors.T[:, :, None] + share).astype(np.uint8).reshape(3, -1)
        self._zero: Image.Image | None = None  # the photo under colormap row 0: an overlay where the map is 0

    def _look_up(self, region: Region, rows: np.ndarray | None) -> np.ndarray:
        """The blend of the photo in ``region`` with colormap rows ``rows`` (None: row 0), strip by strip."""
        top, bottom, left, right = region
        out = np.empty((bottom - top, right - left, 3), dtype=np.uint8)
        for a in range(top, bottom, self.STRIP):
            b = min(a + self.STRIP, bottom)
            if self.photo is not None:
                photo = self.photo[a:b, left:right]
            else:
                photo = np.asarray(self.image.crop((left, a, right, b)))
            keys = np.zeros(photo.shape[:2], dtype=np.uint16) if rows is None else rows[a - top : b - top] << 8
            for channel in range(3):
                out[a - top : b - top, :, channel] = self.tables[channel].take(keys | photo[..., channel], mode="clip")
        return out

    def blend(self, heat: np.ndarray, extent: tuple[float, float, float, float]) -> Image.Image:
        width, height = self.image.size
        found = _sample_region(heat, extent, self.image.size)
        if found is not None:
            values, region = found
            values *= _HOT.N  # matplotlib's scaling, float32; clipping to 0..255 after it = clipping v to 0..1 before
            np.clip(values, 0.0, _HOT.N - 1, out=values)
            picture = Image.fromarray(self._look_up(region, values.astype(np.uint16)), "RGB")  # row: floor
            if region == (0, height, 0, width):
                return picture
        if self._zero is None:
            self._zero = Image.fromarray(self._look_up((0, height, 0, width), None), "RGB")
        out = self._zero.copy()
        if found is not None:
            out.paste(picture, (region[2], region[0]))
        return out


def _scale(analysis: Analysis, size: tuple[int, int]) -> tuple[float, float]:
    """How original image pixels map onto a picture of ``size`` (width, height), the photo as drawn."""
    height, width = analysis.image_size
    return size[0] / width, size[1] / height


def _on_picture(extent: tuple[float, ...], sx: float, sy: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = extent
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def overlays(analysis: Analysis, image: Image.Image, limit: int | None = None) -> list[Overlay]:
    """One pseudo-CAM overlay per found class (or group), in the analysis's order (best score first).

    Args:
        analysis: the analysis.
        image: the photo to draw on, at the size to draw: the original, or a copy reduced for the screen.
        limit: draw at most this many (the best).

    Returns:
        The overlays, each the size of ``image``.
    """
    classes = analysis.classes[:limit]
    if not classes:
        return []
    blender = _Blender(image, 0.5)
    extent = _on_picture(analysis.extent, *_scale(analysis, image.size))
    return [Overlay(c.channel, c.label, c.score, blender.blend(analysis.heat_map(c.channel), extent)) for c in classes]


def class_colors(analysis: Analysis) -> dict[int, tuple[int, int, int]]:
    """A distinct colour per found class or group, keyed by channel (tab10, in the order of ``analysis.classes``)."""
    return {
        c.channel: tuple(round(v * 255) for v in _PALETTE(i % _PALETTE.N)[:3]) for i, c in enumerate(analysis.classes)
    }


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sizeable default font
        return ImageFont.load_default()


def _box_on_picture(box: tuple[int, int, int, int], sx: float, sy: float) -> tuple[int, int, int, int]:
    if sx == 1.0 and sy == 1.0:
        return box
    x1, y1, x2, y2 = box
    return (
        round(x1 * sx),
        round(y1 * sy),
        max(round(x2 * sx), round(x1 * sx) + 1),
        max(round(y2 * sy), round(y1 * sy) + 1),
    )


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The area two (x1, y1, x2, y2) rectangles share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def label_position(
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    image_size: tuple[int, int],
    placed: list[tuple[int, int, int, int]],
) -> tuple[int, int]:
    """Where a box's label goes: the first place that covers no earlier label.

    The places, in order: above the box, inside its top, below it, inside its bottom (each at the box's left edge,
    then its right), then stacked higher above it, one label height at a time. Every place is kept inside the
    image. Free means sharing no pixel with an earlier label (``placed``); when no place is free, the one that
    covers the least of them.

    Args:
        box: the box on the picture, (x1, y1, x2, y2), x2/y2 exclusive.
        size: the label's (width, height).
        image_size: the picture's (width, height).
        placed: the rectangles of the labels already drawn.

    Returns:
        The label's top-left corner.
    """
    x1, y1, x2, y2 = box
    (tw, th), (width, height) = size, image_size
    tops = [y1 - th, y1, y2, y2 - th] + [y1 - th * (k + 2) for k in range(len(placed))]
    candidates = []
    for ty in tops:
        for tx in (x1, x2 - tw):
            x = min(max(0, tx), max(0, width - tw))
            y = min(max(0, ty), max(0, height - th))
            candidates.append((x, y))
    costs = [sum(_overlap((x, y, x + tw, y + th), other) for other in placed) for x, y in candidates]
    return candidates[costs.index(min(costs))]


def _line_and_font(size: tuple[int, int]) -> tuple[int, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    scale = max(size)
    return max(2, round(scale / 250)), _font(max(11, round(scale / 40)))


def box_labels(analysis: Analysis, size: tuple[int, int]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Each box's label on a picture of ``size`` (width, height): its text and its rectangle (x1, y1, x2, y2).

    In the order of ``analysis.boxes``, placed one after the other by ``label_position``.
    """
    line, font = _line_and_font(size)
    sx, sy = _scale(analysis, size)
    labels: list[tuple[str, tuple[int, int, int, int]]] = []
    for box in analysis.boxes:
        text = f"{box.label} {box.score:.2f}"
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        tx, ty = label_position(_box_on_picture(box.box, sx, sy), (tw, th), size, [r for _, r in labels])
        labels.append((text, (tx, ty, tx + tw, ty + th)))
    return labels


def box_view(analysis: Analysis, image: Image.Image) -> Image.Image:
    """The photo with every box drawn and labelled ("label 0.97") in its class's colour.

    Line width and text size follow the image size. A label sits above its box, or where it covers no earlier
    label (``label_position``), and is always kept inside the image. Text is black or white, whichever reads on
    the colour.
    """
    out = image.copy() if image.mode == "RGB" else image.convert("RGB")  # convert() alone copies too
    draw = ImageDraw.Draw(out)
    line, font = _line_and_font(out.size)
    colors = class_colors(analysis)
    sx, sy = _scale(analysis, out.size)
    for box in analysis.boxes:
        x1, y1, x2, y2 = _box_on_picture(box.box, sx, sy)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colors.get(box.channel, (255, 255, 0)), width=line)
    # Labels after all rectangles, so no line crosses a label.
    for box, (text, (tx, ty, tx2, ty2)) in zip(analysis.boxes, box_labels(analysis, out.size), strict=True):
        color = colors.get(box.channel, (255, 255, 0))
        left, top, _, _ = font.getbbox(text)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        draw.rectangle((tx, ty, tx2 - 1, ty2 - 1), fill=color)
        draw.text((tx + line - left, ty + line - top), text, fill=ink, font=font)
    return out


@dataclass(frozen=True)
class ClassMapLayer:
    """The cells one class (or group) wins above the box threshold, as pixels of a picture.

    Attributes:
        channel: the class index or group number (``Analysis.winner``'s value).
        label: its name.
        color: its colour, RGB 0..255 (the box view's colour for a found class).
        mask: picture height x width, bool: the pixels of its cells.
        cells: how many map cells it wins above the box threshold.
    """

    channel: int
    label: str
    color: tuple[int, int, int]
    mask: np.ndarray = field(repr=False)
    cells: int


# Colours after the found classes' tab10: tab20b's 20, then grey.
_MORE = colormaps["tab20b"]


def class_map_layers(analysis: Analysis, size: tuple[int, int]) -> list[ClassMapLayer]:
    """The class map of everything at ``size`` (width, height): a layer per class winning a cell above box threshold.

    Found classes come first (best score first), the others by area. Each map cell is drawn where it lies on the
    photo (through ``analysis.extent``), nearest-neighbour: the cell boundaries stay visible, as they are in the
    network's answer.
    """
    width, height = size
    sx, sy = width / analysis.image_size[1], height / analysis.image_size[0]
    x0, y0, x1, y1 = _on_picture(analysis.extent, sx, sy)
    rows, cols = analysis.map_size
    col = np.floor((np.arange(width) + 0.5 - x0) / ((x1 - x0) / cols)).astype(np.int64)
    row = np.floor((np.arange(height) + 0.5 - y0) / ((y1 - y0) / rows)).astype(np.int64)
    inside_x, inside_y = (col >= 0) & (col < cols), (row >= 0) & (row < rows)
    won = np.where(analysis.max_prob > analysis.settings.box_threshold, analysis.winner, -1)
    channels, counts = np.unique(won[won >= 0], return_counts=True)
    area = dict(zip(channels.tolist(), counts.tolist(), strict=True))
    found = {c.channel: i for i, c in enumerate(analysis.classes)}
    order = sorted(area, key=lambda ch: (found.get(ch, len(found)), -area[ch], ch))
    colors = class_colors(analysis)
    pixels = won[np.ix_(np.clip(row, 0, rows - 1), np.clip(col, 0, cols - 1))]
    pixels[~inside_y, :] = -1
    pixels[:, ~inside_x] = -1
    layers = []
    for rank, channel in enumerate(order):
        if channel in colors:
            color = colors[channel]
        else:
            extra = rank - len(found)
            rgb = _MORE(extra)[:3] if extra < _MORE.N else (0.5, 0.5, 0.5)
            color = tuple(round(v * 255) for v in rgb)
        label = analysis.vocabulary.labels[channel]
        layers.append(ClassMapLayer(channel, label, color, pixels == channel, area[channel]))
    return layers
