"""From an image to classes, boxes and maps: the analysis, in two stages.

1. ``prepare(image, backbone, resolution)`` runs the CNN once: resize for analysis, normalise, trunk features, and
   the original classifier's image-level answer. The result (``Prepared``) keeps the features.
2. ``Prepared.analyze(kernel_size, threshold, box_threshold)`` runs only the converted head and the bookkeeping:
   per-location softmax -> winning class and its probability per cell -> classes above ``threshold`` -> boxes
   (8-connected regions where a found class wins above ``box_threshold``) in original image pixels.

``analyze(...)`` is both stages at once. A slider move in the app is stage 2 only.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from core.images import LoadedImage, load_image
from core.model import ClassMapModel, Padding, _check_kernel, load_backbone
from core.registry import DEFAULT_BACKBONE, get_backbone

__all__ = [
    "BEST_MEASURED",
    "CLASSIFIER_VIEW",
    "DEFAULT_BOX_THRESHOLD",
    "DEFAULT_KERNEL_SIZE",
    "DEFAULT_RESOLUTION",
    "DEFAULT_SCALE_CHECK",
    "DEFAULT_THRESHOLD",
    "KERNEL_SIZES",
    "Analysis",
    "Box",
    "FoundClass",
    "Prepared",
    "TopClass",
    "analyze",
    "check_settings",
    "get_model",
    "prepare",
    "scale_checked",
]

KERNEL_SIZES = (1, 3, 5)
# The defaults of the app, the CLI and the API: the seed's (and CONTRACT.md's) kernel 3 and threshold 0.85, with the
# per-cell rule (no scale check), so that "classes" means exactly what CONTRACT.md says. QUALITY.md measured the
# alternatives: kernel 1, threshold 0.7 and the scale check raise 2 x 2 recall from 0.66 to 0.78 at equal precision
# on our eight photos; they are one argument away, and the app offers them as a preset.
DEFAULT_KERNEL_SIZE = 3
DEFAULT_THRESHOLD = 0.85
DEFAULT_BOX_THRESHOLD = 0.5
DEFAULT_SCALE_CHECK = False
# The best setting QUALITY.md measured at the default backbone and resolution (the app's one-click preset).
BEST_MEASURED = {"kernel_size": 1, "threshold": 0.7, "box_threshold": 0.5, "scale_check": True}
# Side in pixels of the square view the classifiers were trained to pool over (ImageNet's 224 x 224 crop). The
# scale check compares each found class with the map pooled over this window (see ``scale_checked``).
CLASSIFIER_VIEW = 224
# Short side the image is resized to for analysis. 320 px was the best fixed size in the map-quality evaluation
# (QUALITY.md) over single photos, 2 x 2 and 3 x 3 scenes together: a photo-filling object stays near the 224-260 px
# the networks were trained at, and a quarter of a 2 x 2 scene still spans 5 map cells.
DEFAULT_RESOLUTION = 320
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096
# Most pixels the network is shown; a larger analysis size (native resolution of a huge photo, or an extreme
# aspect ratio) is scaled down to this, with a notice. Bounds memory: ~2 GB peak for EfficientNet-Lite0.
MAX_ANALYSIS_PIXELS = 4_194_304  # 2048 x 2048
# Connectivity for regions: 8-connected (diagonal neighbours join), as MATLAB's regionprops in the seed.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class FoundClass:
    """A class that wins some map cell with probability above the threshold."""

    index: int
    label: str
    score: float  # highest probability among the cells it wins
    area: float  # fraction of map cells it wins above the threshold


@dataclass(frozen=True)
class Box:
    """A connected region of map cells won by one found class above the box threshold."""

    index: int
    label: str
    score: float  # highest probability inside the region
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in original image pixels, x2/y2 exclusive


@dataclass(frozen=True)
class TopClass:
    index: int
    label: str
    probability: float


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Analysis:
    """One analysed image: the JSON of CONTRACT.md (``to_dict``) plus the maps the renderer needs.

    ``max_prob`` and ``winner`` are the map (read-only arrays, ``map_size``); ``extent`` is the rectangle of the
    original image (x0, y0, x1, y1, floats) that the map spans, so renderers align it under either padding.
    """

    source: str
    image_size: tuple[int, int]  # height, width of the original image
    backbone: str
    kernel_size: int
    padding: str
    threshold: float
    box_threshold: float
    analysis_size: tuple[int, int]
    map_size: tuple[int, int]
    classes: tuple[FoundClass, ...]
    boxes: tuple[Box, ...]
    top5: tuple[TopClass, ...]
    max_prob: np.ndarray = field(repr=False)
    winner: np.ndarray = field(repr=False)
    extent: tuple[float, float, float, float] = field(repr=False)
    notices: tuple[str, ...] = ()
    scale_check: bool = False

    def class_map(self, index: int) -> np.ndarray:
        """The seed's pseudo-CAM for one class: its probability where it wins, 0 elsewhere (map size, float32)."""
        return np.where(self.winner == index, self.max_prob, 0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of CONTRACT.md for this image."""
        height, width = self.image_size
        out: dict[str, Any] = {
            "image": {"source": self.source, "width": width, "height": height},
            "backbone": self.backbone,
            "kernel_size": self.kernel_size,
            "padding": self.padding,
            "threshold": self.threshold,
            "box_threshold": self.box_threshold,
            "scale_check": self.scale_check,
            "analysis_size": list(self.analysis_size),
            "map_size": list(self.map_size),
            "classes": [vars(c).copy() for c in self.classes],
            "boxes": [{**vars(b), "box": list(b.box)} for b in self.boxes],
            "top5": [vars(t).copy() for t in self.top5],
        }
        if self.notices:
            out["notices"] = list(self.notices)
        return out


# -------------------------------------------------------------------------------------------------------------
# Models are loaded once per (backbone, weights) and shared; loading is serialised so two users asking for the
# same backbone at once load it once.
# -------------------------------------------------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=int(os.environ.get("CLASSMAP_MODEL_CACHE", "3")))
def _cached_model(name: str, weights: str | None) -> ClassMapModel:
    return load_backbone(name, weights)


def get_model(name: str = DEFAULT_BACKBONE, weights: str | None = "default") -> ClassMapModel:
    """A loaded backbone, cached (the three most recently used stay in memory)."""
    get_backbone(name)  # unknown names fail here, with the list of choices, before any lock is taken
    with _MODEL_LOCK:
        return _cached_model(name, weights)


def analysis_size(
    width: int, height: int, resolution: int | str = DEFAULT_RESOLUTION
) -> tuple[tuple[int, int], list[str]]:
    """The (height, width) the network sees for an image, and notices for any change beyond the resolution rule.

    ``resolution`` is the short side in pixels (32..4096) or "native" (the seed's way: the image as it is).
    The result is at most ``MAX_ANALYSIS_PIXELS`` and at least 32 px on the short side.

    Raises:
        ValueError: a resolution that is neither "native" nor an integer in 32..4096.
    """
    notices = []
    if resolution == "native":
        scale = 1.0
    else:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
            raise ValueError(
                f"resolution must be an integer short side ({MIN_RESOLUTION}..{MAX_RESOLUTION}) or 'native', "
                f"got {resolution!r}"
            )
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ValueError(
                f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels (short side) or "
                f"'native', got {resolution}"
            )
        scale = resolution / min(width, height)
    if min(width, height) * scale < MIN_RESOLUTION:
        scale = MIN_RESOLUTION / min(width, height)
        notices.append(f"the image is smaller than {MIN_RESOLUTION} px: it was enlarged for analysis")
    if width * height * scale * scale > MAX_ANALYSIS_PIXELS:
        scale = math.sqrt(MAX_ANALYSIS_PIXELS / (width * height))
        notices.append(
            f"the image was downscaled to {MAX_ANALYSIS_PIXELS / 1e6:.1f} megapixels for analysis "
            f"(boxes are still in original pixels)"
        )
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size[0] * size[1] > MAX_ANALYSIS_PIXELS:  # rounding up may overshoot the cap by a row
        size = (int(height * scale), int(width * scale))
    if min(size) < MIN_RESOLUTION:
        raise ValueError(
            f"the image's aspect ratio ({width} x {height}) is too extreme to analyse: its short side would be "
            f"{min(size)} px at the largest size allowed"
        )
    return size, notices


@dataclass(frozen=True)
class Prepared:
    """An image after the CNN: trunk features and the classifier's image-level answer, ready for any settings."""

    model: ClassMapModel
    loaded: LoadedImage
    analysis_size: tuple[int, int]
    features: torch.Tensor = field(repr=False)
    top5: tuple[TopClass, ...]
    notices: tuple[str, ...] = ()
    # (kernel_size, padding) -> (max_prob, winner): a threshold change reuses the head's map instead of re-running it.
    _maps: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def image(self) -> Image.Image:
        return self.loaded.image

    def winning_map(self, kernel_size: int, padding: Padding = "same") -> tuple[np.ndarray, np.ndarray]:
        """The winning class and its probability per map cell (read-only arrays), computed once per setting."""
        key = (kernel_size, padding)
        if key not in self._maps:
            probs = self.model.head(self.features, kernel_size, padding).softmax(dim=1)[0]  # 1000 x h x w
            max_prob, winner = probs.max(dim=0)
            self._maps[key] = (
                _readonly(max_prob.float().cpu().numpy()),
                _readonly(winner.cpu().numpy().astype(np.int64)),
            )
        return self._maps[key]

    def view_cells(self) -> int:
        """The classifier's training view (``CLASSIFIER_VIEW`` px) in feature cells at this analysis size, odd."""
        stride = self.analysis_size[0] / self.features.shape[-2]
        cells = max(1, round(CLASSIFIER_VIEW / stride) - self.model.backbone.pool_grid + 1)
        return cells if cells % 2 else cells + 1

    def analyze(
        self,
        kernel_size: int = DEFAULT_KERNEL_SIZE,
        threshold: float = DEFAULT_THRESHOLD,
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        padding: Padding = "same",
        scale_check: bool = DEFAULT_SCALE_CHECK,
    ) -> Analysis:
        """Classes, boxes and maps for these settings, from the cached features (the CNN does not run again).

        With ``scale_check`` a found class is kept only where the classifier, pooling over its own training view
        (``CLASSIFIER_VIEW`` pixels), also picks it (``scale_checked``); False is the seed's rule.

        Raises:
            ValueError: a kernel size not in (1, 3, 5), a threshold outside [0, 1], an unknown padding, or a
                "valid" kernel larger than the feature map.
        """
        kernel_size, threshold, box_threshold = check_settings(kernel_size, threshold, box_threshold, padding)

        max_prob, winner = self.winning_map(kernel_size, padding)
        classes = find_classes(max_prob, winner, threshold, self.model.categories)
        if scale_check:
            view = self.view_cells()
            if view > kernel_size:
                _, view_winner = self.winning_map(view, "same")
                if padding == "valid":  # the "valid" map starts (k - 1 + P - 1) / 2 cells in: align the view's map
                    inset = (kernel_size - 1 + self.model.backbone.pool_grid - 1) // 2
                    view_winner = view_winner[inset : inset + winner.shape[0], inset : inset + winner.shape[1]]
                classes = scale_checked(classes, max_prob, winner, view_winner, box_threshold)
        extent = self._map_extent(max_prob.shape, kernel_size, padding)
        boxes = find_boxes(
            max_prob,
            winner,
            [c.index for c in classes],
            box_threshold,
            extent,
            self.image.size,
            self.model.categories,
        )
        width, height = self.image.size
        return Analysis(
            source=self.loaded.source,
            image_size=(height, width),
            backbone=self.model.name,
            kernel_size=kernel_size,
            padding=padding,
            threshold=threshold,
            box_threshold=box_threshold,
            analysis_size=self.analysis_size,
            map_size=(int(max_prob.shape[0]), int(max_prob.shape[1])),
            classes=tuple(classes),
            boxes=tuple(boxes),
            top5=self.top5,
            max_prob=_readonly(max_prob),
            winner=_readonly(winner),
            extent=extent,
            notices=self.notices,
            scale_check=bool(scale_check),
        )

    def _map_extent(self, map_shape: tuple[int, int], kernel_size: int, padding: str) -> tuple[float, ...]:
        # A map cell is a window of feature cells; a feature cell covers (analysis size / feature size) pixels.
        # "same": the map is the feature grid. "valid": it is smaller by (k - 1) + (P - 1) cells and starts that
        # many half-cells in from the edge.
        fh, fw = self.features.shape[-2:]
        width, height = self.image.size
        inset = 0.0 if padding == "same" else (kernel_size - 1 + self.model.backbone.pool_grid - 1) / 2
        cell_h, cell_w = height / fh, width / fw
        return (
            inset * cell_w,
            inset * cell_h,
            (inset + map_shape[1]) * cell_w,
            (inset + map_shape[0]) * cell_h,
        )


def check_settings(
    kernel_size: int, threshold: float, box_threshold: float, padding: str = "same"
) -> tuple[int, float, float]:
    """Validate the analysis settings; returns them normalised (int, float, float).

    Raises:
        ValueError: naming the setting and its allowed values.
    """
    if isinstance(kernel_size, bool) or kernel_size not in KERNEL_SIZES:
        raise ValueError(f"kernel_size must be one of {', '.join(map(str, KERNEL_SIZES))}, got {kernel_size!r}")
    _check_kernel(kernel_size, padding)
    return (
        int(kernel_size),
        _check_probability("threshold", threshold),
        _check_probability("box_threshold", box_threshold),
    )


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def find_classes(max_prob: np.ndarray, winner: np.ndarray, threshold: float, categories: list[str]) -> list[FoundClass]:
    """Every class that wins a cell with probability above ``threshold``, by score descending."""
    above = max_prob > threshold
    found = []
    for index in np.unique(winner[above]):
        cells = above & (winner == index)
        found.append(FoundClass(int(index), categories[index], float(max_prob[cells].max()), float(cells.mean())))
    return sorted(found, key=lambda c: (-c.score, c.index))


def scale_checked(
    classes: list[FoundClass],
    max_prob: np.ndarray,
    winner: np.ndarray,
    view_winner: np.ndarray,
    box_threshold: float,
) -> list[FoundClass]:
    """The found classes that the classifier also picks at its own scale, somewhere in their own regions.

    A class is kept when, in at least one cell where it wins the fine map above ``box_threshold`` (its box
    regions), it also wins ``view_winner``: the map pooled over the classifier's training view. A part that the
    network names on its own (a motorbike's disc brake, a temple's bell cote) loses there to the whole object.
    """
    return [c for c in classes if ((winner == c.index) & (max_prob > box_threshold) & (view_winner == c.index)).any()]


def find_boxes(
    max_prob: np.ndarray,
    winner: np.ndarray,
    indices: list[int],
    box_threshold: float,
    extent: tuple[float, float, float, float],
    image_size: tuple[int, int],
    categories: list[str],
) -> list[Box]:
    """Boxes around 8-connected regions where each class in ``indices`` wins above ``box_threshold``.

    Map cells are mapped to the original image through ``extent``; boxes are integer pixels, x2/y2 exclusive,
    clipped to the image.
    """
    width, height = image_size
    rows, cols = max_prob.shape
    x0, y0, x1, y1 = extent
    cell_w, cell_h = (x1 - x0) / cols, (y1 - y0) / rows
    boxes = []
    for index in indices:
        mask = (winner == index) & (max_prob > box_threshold)
        labels, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        for region, slices in enumerate(ndimage.find_objects(labels), start=1):
            rs, cs = slices
            score = float(max_prob[slices][labels[slices] == region].max())
            box = (
                max(0, math.floor(x0 + cs.start * cell_w)),
                max(0, math.floor(y0 + rs.start * cell_h)),
                min(width, math.ceil(x0 + cs.stop * cell_w)),
                min(height, math.ceil(y0 + rs.stop * cell_h)),
            )
            boxes.append(Box(int(index), categories[index], score, box))
    return sorted(boxes, key=lambda b: (-b.score, b.index, b.box))


def prepare(
    image: Any,
    backbone: str | ClassMapModel = DEFAULT_BACKBONE,
    resolution: int | str = DEFAULT_RESOLUTION,
    source: str | None = None,
) -> Prepared:
    """Run the CNN once on an image: everything ``Prepared.analyze`` needs for any kernel size or threshold.

    Args:
        image: a file path, bytes, PIL image or uint8 array.
        backbone: a registry name, or a loaded ``ClassMapModel``.
        resolution: analysis short side in pixels, or "native".
        source: the name to report for the image (defaults to the file name).

    Raises:
        core.images.ImageError: the image cannot be read.
        ValueError: unknown backbone or bad resolution.
        core.weights.WeightsError: the backbone's weights are missing.
    """
    model = backbone if isinstance(backbone, ClassMapModel) else get_model(backbone)
    loaded = load_image(image, source)
    width, height = loaded.image.size
    size, notices = analysis_size(width, height, resolution)
    shown = (
        loaded.image
        if size == (height, width)
        else loaded.image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    features = model.features(model.preprocess(shown))
    probs = model.global_logits(features).softmax(dim=1)[0]
    values, indices = probs.topk(5)
    top5 = tuple(
        TopClass(int(i), model.categories[int(i)], float(v))
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    )
    return Prepared(model, loaded, size, features, top5, loaded.notices + tuple(notices))


def analyze(
    image: Any,
    backbone: str | ClassMapModel = DEFAULT_BACKBONE,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    resolution: int | str = DEFAULT_RESOLUTION,
    padding: Padding = "same",
    source: str | None = None,
    scale_check: bool = DEFAULT_SCALE_CHECK,
) -> Analysis:
    """Analyse one image: the classes it shows, where, and the classifier's own top 5 (see CONTRACT.md)."""
    check_settings(kernel_size, threshold, box_threshold, padding)  # fail before the CNN runs
    return prepare(image, backbone, resolution, source).analyze(
        kernel_size, threshold, box_threshold, padding, scale_check
    )
