"""Every analysis setting in one frozen, validated value: ``Settings``.

One ``Settings`` travels from the CLI, the app or a script through ``core`` unchanged. Adding a setting touches this
dataclass (field, default, validation), the CLI flag and the app's widget — nothing in between.

Two kinds of setting, and why the split matters: ``backbone`` and ``resolution`` decide what the network sees, so a
change runs the network again (``Settings.network_key``); everything else only re-runs the cheap converted head and
the bookkeeping on cached features, which is what a slider move does.

Values from outside (a CLI string, a JSON number, a Gradio slider's float) go through ``Settings.parse``, which
converts what is unambiguous ("3", 3.0, "false") and refuses the rest with a message that names the setting and its
allowed values. The constructor itself takes only well-typed values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from core.hierarchy import GRANULARITIES
from core.registry import DEFAULT_BACKBONE, get_backbone

__all__ = [
    "GRANULARITIES",
    "KERNEL_SIZES",
    "MAX_MIN_CELLS",
    "MAX_PART_RATIO",
    "MAX_RESOLUTION",
    "MAX_SCALES",
    "MIN_RESOLUTION",
    "PADDINGS",
    "Settings",
]

KERNEL_SIZES = (1, 3, 5)
PADDINGS = ("same", "valid")
MAX_SCALES = 4
MAX_MIN_CELLS = 16
MAX_PART_RATIO = 20
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096
Padding = Literal["same", "valid"]

# An echoed value in an error message is cut to this many characters: a 20 MB string argument must not come back.
_ECHO = 40


def echo(value: Any) -> str:
    """``repr(value)``, cut to a few dozen characters for error messages."""
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


@dataclass(frozen=True)
class Settings:
    """Every setting of one analysis.

    Attributes:
        backbone: registry name of the network (``core.list_backbones()``).
        resolution: short side in pixels the image is resized to for the network (32..4096), or "native" (the
            seed's way: the image as it is). 320 px was the best fixed size in QUALITY.md.
        kernel_size: averaging window on the feature map, in cells: 1, 3 or 5 (the seed used 3).
        threshold: a class is found where it wins a map cell with probability above this (the seed: 0.85).
        box_threshold: boxes enclose the cells where a found class wins above this (the seed: 0.5).
        padding: "same" keeps the map aligned with the image; "valid" is the seed's convolution.
        scale_check: keep a class only where the classifier, pooling over its own 224-px training view, also picks
            it (hides parts named as if they were whole objects); False is the seed's rule.
        granularity: "class" (the 1000 ImageNet classes, the seed's), "group" (classes summed within fixed WordNet
            groups such as "car" or "wading bird": ``core.hierarchy``) or "adaptive" (per cell, the most specific
            of the classes and the WordNet synsets of 2 to 129 classes whose probability passes ``threshold``:
            "beagle" where the network is sure of the breed, "hound" or "dog" where it is not; each object then
            named as specifically as its mean probability allows).
        scales: how many image sizes the network sees (1..4): ``resolution``, then each step sqrt(2) larger, none
            enlarging the image more than 2x (``core.analysis.pyramid``); their maps are averaged per cell on the
            finest grid, the larger ones weighted more. 1 is the seed's single scale.
        min_cells: a class (or group) is found only where it wins at least this many map cells above
            ``threshold`` (1..16): a lone confident cell is more often a part or a texture than an object. 1 is the
            seed's rule.
        part_ratio: a found class (or group) that touches another at least this many times its size (in cells above
            ``threshold``) is a part of it and is dropped: a cap on a uniform, a bridle on a horse. 0 keeps every
            one (the seed's rule); otherwise 2..20.
    """

    # The defaults: the best worst case of issue 12's nine targets measured in QUALITY.md (`python -m bench.quality`,
    # 24 photos): adaptive granularity, four scales (weighted, at most 2x enlargement), the finest kernel, a lower
    # threshold, at least two cells per answer, parts giving way to a 3x larger whole (worst margin -0.099, with no
    # group of 130 classes or more counting; the best fixed groups -0.148; the seed's settings -0.56). The seed's
    # settings are a preset; fewer scales are faster.
    backbone: str = DEFAULT_BACKBONE
    resolution: int | str = 320
    kernel_size: int = 1
    threshold: float = 0.6
    box_threshold: float = 0.5
    padding: Padding = "same"
    scale_check: bool = False
    granularity: Literal["class", "group", "adaptive"] = "adaptive"
    scales: int = 4
    min_cells: int = 2
    part_ratio: int = 3

    PRESETS: ClassVar[tuple[str, ...]] = ("seed", "best")

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or len(self.backbone) > 200:
            raise ValueError(f"backbone must be a backbone name (see `classmap backbones`), got {echo(self.backbone)}")
        get_backbone(self.backbone)  # unknown names fail with the list of choices
        _check_resolution(self.resolution)
        if type(self.kernel_size) is not int and not isinstance(self.kernel_size, np.integer):
            raise ValueError(f"kernel_size must be one of {_choices(KERNEL_SIZES)}, got {echo(self.kernel_size)}")
        if self.kernel_size not in KERNEL_SIZES:
            raise ValueError(f"kernel_size must be one of {_choices(KERNEL_SIZES)}, got {echo(self.kernel_size)}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {_choices(PADDINGS)}, got {echo(self.padding)}")
        if not isinstance(self.scale_check, (bool, np.bool_)):
            raise ValueError(f"scale_check must be true or false, got {echo(self.scale_check)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {_choices(GRANULARITIES)}, got {echo(self.granularity)}")
        _check_count("scales", self.scales, MAX_SCALES)
        _check_count("min_cells", self.min_cells, MAX_MIN_CELLS)
        _check_part_ratio(self.part_ratio)
        if self.scales > 1 and self.padding != "same":
            raise ValueError("scales above 1 need padding 'same' (the maps of several sizes are fused on one grid)")
        # Normalised types: plain int / float / bool, so that equal settings compare (and hash) equal.
        object.__setattr__(self, "kernel_size", int(self.kernel_size))
        object.__setattr__(self, "threshold", _probability("threshold", self.threshold))
        object.__setattr__(self, "box_threshold", _probability("box_threshold", self.box_threshold))
        object.__setattr__(self, "scale_check", bool(self.scale_check))
        object.__setattr__(self, "scales", int(self.scales))
        object.__setattr__(self, "min_cells", int(self.min_cells))
        object.__setattr__(self, "part_ratio", int(self.part_ratio))
        if not isinstance(self.resolution, str):
            object.__setattr__(self, "resolution", int(self.resolution))

    # -------------------------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated like a new value).

        Raises:
            ValueError: a changed value that is not allowed; TypeError: an unknown setting.
        """
        return dataclasses.replace(self, **changes)

    @property
    def network_key(self) -> tuple[str, int | str, int]:
        """What the network's output depends on: a change here runs the network again, anything else does not."""
        return (self.backbone, self.resolution, self.scales)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> Settings:
        """A named preset, with ``changes`` on top.

        - ``"seed"``: the seed article's settings (kernel 3, threshold 0.85, box threshold 0.5, one scale, classes,
          any single cell, no part dropped).
        - ``"best"``: the best setting measured in QUALITY.md (the defaults: see the fields' comment).

        Raises:
            ValueError: an unknown preset name.
        """
        if name == "seed":
            base = cls(
                kernel_size=3,
                threshold=0.85,
                box_threshold=0.5,
                padding="same",
                scale_check=False,
                granularity="class",
                scales=1,
                min_cells=1,
                part_ratio=0,
            )
        elif name == "best":
            base = cls()
        else:
            raise ValueError(f"preset must be one of {_choices(cls.PRESETS)}, got {echo(name)}")
        return base.replace(**changes) if changes else base

    @classmethod
    def parse(cls, base: Settings | None = None, **values: Any) -> Settings:
        """Settings from loosely typed outside values (CLI strings, JSON numbers, slider floats), on ``base``.

        ``None`` or a missing value keeps the base's (default's) value. Converted: integral numbers and numeric
        strings for ``kernel_size``, ``resolution``, ``scales`` and ``min_cells`` ("3", 3.0; "native"), numbers and
        numeric strings for the thresholds, "true"/"false"/0/1 for ``scale_check``. Refused, with the setting named:
        anything else (3.9, "abc", [3], NaN).

        Raises:
            ValueError: a value that is not allowed; the message names the setting and its allowed values.
            TypeError: an unknown setting name.
        """
        base = base if base is not None else cls()
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in _PARSERS:
                raise TypeError(f"unknown setting {name!r}; the settings are: {', '.join(_PARSERS)}")
            if value is None:
                continue
            changes[name] = _PARSERS[name](value)
        return base.replace(**changes) if changes else base


def _choices(values: tuple[Any, ...]) -> str:
    return ", ".join(map(str, values))


def _check_count(name: str, value: Any, most: int) -> None:
    integral = type(value) is int or isinstance(value, np.integer)
    if not integral or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer from 1 to {most}, got {echo(value)}")


def _check_part_ratio(value: Any) -> None:
    integral = type(value) is int or isinstance(value, np.integer)
    if not integral or not (value == 0 or 2 <= value <= MAX_PART_RATIO):
        raise ValueError(f"part_ratio must be 0 (off) or an integer from 2 to {MAX_PART_RATIO}, got {echo(value)}")


def _check_resolution(value: Any) -> None:
    if value == "native" and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"resolution must be an integer short side ({MIN_RESOLUTION}..{MAX_RESOLUTION}) or 'native', "
            f"got {echo(value)}"
        )
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise ValueError(
            f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels (short side) or 'native', "
            f"got {value}"
        )


def _probability(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number between 0 and 1, got {echo(value)}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"{name} must be a number between 0 and 1, got {echo(value)}")
    return value


# -------------------------------------------------------------------------------------------------------------
# Parsers of outside values, one per setting
# -------------------------------------------------------------------------------------------------------------
def _integral(name: str, value: Any, allowed: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
    else:
        whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))  # True is no size
        whole = whole or (isinstance(value, (float, np.floating)) and math.isfinite(value) and value.is_integer())
        if whole:
            return int(value)
    raise ValueError(f"{name} must be {allowed}, got {echo(value)}")


def _parse_kernel(value: Any) -> int:
    return _integral("kernel_size", value, f"one of {_choices(KERNEL_SIZES)}")


def _parse_resolution(value: Any) -> int | str:
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("px").strip()
        if text == "native":
            return "native"
        value = text
    allowed = f"an integer short side ({MIN_RESOLUTION}..{MAX_RESOLUTION}) or 'native'"
    return _integral("resolution", value, allowed)


def _parse_probability(name: str):
    def parse(value: Any) -> float:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ValueError(f"{name} must be a number between 0 and 1, got {echo(value)}") from None
        return value  # the constructor checks type and range

    return parse


def _parse_count(name: str, allowed: str):
    def parse(value: Any) -> int:
        return _integral(name, value, allowed)  # the constructor checks the range

    return parse


def _parse_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError(f"scale_check must be true or false, got {echo(value)}")


def _parse_text(name: str, allowed: tuple[str, ...] | None = None):
    def parse(value: Any) -> str:
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            choices = f"one of {_choices(allowed)}" if allowed else "a name"
            raise ValueError(f"{name} must be {choices}, got {echo(value)}")
        return value

    return parse


_PARSERS = {
    "backbone": _parse_text("backbone"),
    "resolution": _parse_resolution,
    "kernel_size": _parse_kernel,
    "threshold": _parse_probability("threshold"),
    "box_threshold": _parse_probability("box_threshold"),
    "padding": _parse_text("padding", PADDINGS),
    "scale_check": _parse_bool,
    "granularity": _parse_text("granularity", GRANULARITIES),
    "scales": _parse_count("scales", f"an integer from 1 to {MAX_SCALES}"),
    "min_cells": _parse_count("min_cells", f"an integer from 1 to {MAX_MIN_CELLS}"),
    "part_ratio": _parse_count("part_ratio", f"0 (off) or an integer from 2 to {MAX_PART_RATIO}"),
}
