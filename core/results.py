"""What an analysis returns: frozen result types, and their JSON (``docs/CONTRACT.md``).

Results are made once, by ``core.analysis``, and never edited afterwards: a renderer that draws at another size
maps the original-pixel boxes onto its picture itself. Arrays handed out are read-only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.hierarchy import Vocabulary
from core.settings import Settings

__all__ = ["Analysis", "Box", "FoundClass", "TopClass", "json_fields", "readonly"]


def readonly(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, read-only view (or copy) of ``array``."""
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def json_fields(entry: Any) -> dict[str, Any]:
    """A result dataclass's fields as plain JSON values, in field order (tuples as lists), without ``channel``."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in asdict(entry).items()
        if key != "channel"
    }


@dataclass(frozen=True)
class _Entry:
    """What every entry of ``classes`` and ``boxes`` says: which class (or group) it is."""

    index: int | None
    label: str
    score: float
    members: tuple[int, ...]
    wnid: str
    channel: int = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON object."""
        return json_fields(self)


@dataclass(frozen=True)
class FoundClass(_Entry):
    """A class, or a group of classes, that wins some map cell with probability above the threshold.

    Attributes:
        index: the ImageNet class index; None for a group.
        label: a readable name.
        score: the highest probability among the cells it wins.
        members: the ImageNet class indices it stands for (``(index,)`` for a class).
        wnid: its WordNet 3.0 id.
        channel: its position in the analysis's vocabulary (what ``Analysis.winner`` holds); not in the JSON.
        area: the fraction of map cells it wins above the threshold.
    """

    area: float = 0.0


@dataclass(frozen=True)
class Box(_Entry):
    """A connected region of map cells won by one found class (or group) above the box threshold.

    Attributes:
        index, label, members, wnid, channel: as ``FoundClass``.
        score: the highest probability inside the region.
        box: ``(x1, y1, x2, y2)`` in original image pixels, x2/y2 exclusive.
    """

    box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True)
class TopClass:
    """One of the unmodified classifier's five best classes for the whole image."""

    index: int
    label: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one entry of ``top5``."""
        return json_fields(self)


@dataclass(frozen=True)
class Analysis:
    """One analysed image: the JSON of ``docs/CONTRACT.md`` (``to_dict``) plus the maps the renderers need.

    Attributes:
        source: the image's name.
        image_size: (height, width) of the original image.
        settings: every setting the analysis used.
        analysis_size: (height, width) the network saw (the largest scale).
        scales: every (height, width) the network saw, smallest first.
        map_size: (rows, cols) of the (fused) probability map.
        classes: found classes or groups, best score first.
        boxes: their regions, best score first.
        top5: the unmodified classifier's answer for the whole image at ``analysis_size``.
        max_prob: per map cell, the winning channel's probability (read-only, ``map_size``).
        winner: per map cell, the winning channel of ``vocabulary`` (read-only, ``map_size``).
        extent: the rectangle of the original image (x0, y0, x1, y1, floats) that the map spans.
        vocabulary: what the map's channels stand for (the 1000 classes, or groups of them).
        notices: what was done to the image on the way in (downscaled, first frame of an animation, ...).
    """

    source: str
    image_size: tuple[int, int]
    settings: Settings
    analysis_size: tuple[int, int]
    scales: tuple[tuple[int, int], ...]
    map_size: tuple[int, int]
    classes: tuple[FoundClass, ...]
    boxes: tuple[Box, ...]
    top5: tuple[TopClass, ...]
    max_prob: np.ndarray = field(repr=False, compare=False)
    winner: np.ndarray = field(repr=False, compare=False)
    extent: tuple[float, float, float, float] = field(repr=False)
    vocabulary: Vocabulary = field(repr=False, compare=False)
    notices: tuple[str, ...] = ()

    # The settings most readers want, by name.
    @property
    def backbone(self) -> str:
        """The network's registry name."""
        return self.settings.backbone

    @property
    def threshold(self) -> float:
        """The threshold a found class had to pass."""
        return self.settings.threshold

    @property
    def granularity(self) -> str:
        """What the map's channels are: "class", "group" or "adaptive"."""
        return self.settings.granularity

    def heat_map(self, channel: int) -> np.ndarray:
        """The seed's pseudo-CAM of one channel: its probability where it wins, 0 elsewhere (map size, float32)."""
        return np.where(self.winner == channel, self.max_prob, 0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``docs/CONTRACT.md`` for this image."""
        height, width = self.image_size
        settings = self.settings
        out: dict[str, Any] = {
            "image": {"source": self.source, "width": width, "height": height},
            "backbone": settings.backbone,
            "kernel_size": settings.kernel_size,
            "padding": settings.padding,
            "threshold": settings.threshold,
            "box_threshold": settings.box_threshold,
            "scale_check": settings.scale_check,
            "min_cells": settings.min_cells,
            "part_ratio": settings.part_ratio,
            "granularity": settings.granularity,
            "resolution": settings.resolution,
            "scales": [list(size) for size in self.scales],
            "analysis_size": list(self.analysis_size),
            "map_size": list(self.map_size),
            "classes": [c.to_dict() for c in self.classes],
            "boxes": [b.to_dict() for b in self.boxes],
            "top5": [t.to_dict() for t in self.top5],
        }
        if self.notices:
            out["notices"] = list(self.notices)
        return out
