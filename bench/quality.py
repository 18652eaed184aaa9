"""Map quality: how often the maps find the right objects in the right place, on real labelled photos.

Run ``python -m bench.quality`` (the full sweep) or ``python -m bench.quality --quick`` (core's defaults, the chosen
setting and the seed preset only). The scenes are ``bench.quality_data``'s: single photos, 2 x 2 and 3 x 3 mosaics
whose every labelled thing's classes and place are known. Per scene:

- recall: the fraction of required things (``Scene.objects``) for which a right entry was found;
- precision: the fraction of found entries (classes or groups) that are right somewhere in the scene (1 when
  nothing is found);
- localization: the fraction of found right entries with a box whose centre lies in a region where that entry is
  right (undefined, and left out of the mean, when no right entry is found);
- placed: the fraction of required things whose region holds the centre of a box of a found entry right for it.

An entry (``core.FoundClass`` / ``core.Box``) is *right* for a region when its ``members`` (ImageNet indices: one
for a class, several for a group) include one of the region's accepted classes, unless it is a group whose WordNet
subtree holds more than ``BROAD_GROUP`` classes: such a group ("organism", "artifact") says nothing, and never counts
as right. The same rule scores both granularities (a class is its own one-member group).

Each set's numbers are means over its scenes. The CNN runs once per (scene, backbone, resolution) at the most scales
any setting needs; fewer scales reuse the first of those features, and every head setting (kernel, granularity,
grouping, thresholds, scale check, minimum region) re-analyses them. Groupings other than core's default are summed
here from the class-level fused map (``Prepared.maps(...).probabilities``), as core does for its own grouping.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import gzip
import itertools
import math
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

import core
import core.analysis
from bench.quality_data import PHOTOS, Scene, scene_sets
from core.analysis import pyramid
from core.hierarchy import DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS, Vocabulary, grouping, subtree_classes, vocabulary
from core.postprocess import find_boxes, find_classes, parts_give_way
from core.registry import IMAGENET_CATEGORIES

__all__ = [
    "BROAD_GROUP",
    "CHECK_OF",
    "CHOSEN",
    "SEED",
    "TARGETS",
    "Answer",
    "SceneScore",
    "SetScore",
    "Setting",
    "Target",
    "aggregate",
    "answer_map",
    "choose",
    "fewer_scales",
    "full_grid",
    "fused_map",
    "is_right",
    "main",
    "read_csv",
    "report",
    "score_scene",
    "sweep",
    "target_values",
    "write_csv",
]

# A group whose WordNet subtree holds more ImageNet classes than this never counts as right: it says nothing.
BROAD_GROUP = 129
TARGET_SETS = ("single", "2x2", "3x3")  # the targets are about these (held-back-like) sets
CHECK_SETS = ("2x2-256", "3x3-256")  # the same photos in other arrangements and tile sizes: a check of the choice
CHECK_OF = {"2x2": "2x2-256", "3x3": "3x3-256"}  # the check set standing in for each target set


# -------------------------------------------------------------------------------------------------------------
# Settings
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One point of the sweep: core's settings and the grouping.

    ``min_members`` / ``max_members`` are the grouping's (``core.hierarchy.grouping``), 0 for granularity "class"
    and "adaptive" (core's synsets). ``min_region``: an entry must win at least two map cells above the threshold
    (core's ``min_cells=2``; False: ``min_cells=1``, any single cell, the seed's rule). ``part_ratio``: core's.
    """

    backbone: str
    resolution: int | str
    scales: int
    kernel_size: int
    granularity: str
    min_members: int
    max_members: int
    threshold: float
    box_threshold: float
    scale_check: bool
    min_region: bool = False
    part_ratio: int = 0

    def core(self) -> core.Settings:
        """The core settings of this point (the grouping is not a core setting)."""
        return core.Settings(
            backbone=self.backbone,
            resolution=self.resolution,
            kernel_size=self.kernel_size,
            threshold=self.threshold,
            box_threshold=self.box_threshold,
            scale_check=self.scale_check,
            granularity=self.granularity,
            scales=self.scales,
            min_cells=2 if self.min_region else 1,
            part_ratio=self.part_ratio,
        )

    @classmethod
    def of(cls, settings: core.Settings) -> Setting:
        """The point for core settings, with core's grouping for granularity "group".

        Raises:
            ValueError: a ``min_cells`` other than 1 or 2 (the sweep's two minimum regions).
        """
        if settings.min_cells not in (1, 2):
            raise ValueError(f"the sweep knows min_cells 1 and 2, not {settings.min_cells}")
        group = settings.granularity == "group"
        return cls(
            settings.backbone,
            settings.resolution,
            settings.scales,
            settings.kernel_size,
            settings.granularity,
            DEFAULT_MIN_MEMBERS if group else 0,
            MAX_GROUP_MEMBERS if group else 0,
            settings.threshold,
            settings.box_threshold,
            settings.scale_check,
            settings.min_cells == 2,
            settings.part_ratio,
        )

    @property
    def native(self) -> bool:
        """Whether core computes this granularity itself (class, adaptive, or core's default grouping)."""
        return self.granularity != "group" or (self.min_members, self.max_members) == (
            DEFAULT_MIN_MEMBERS,
            MAX_GROUP_MEMBERS,
        )

    def as_class(self) -> Setting:
        """The same setting at granularity "class" (where the class-level targets are measured)."""
        return dataclasses.replace(self, granularity="class", min_members=0, max_members=0)

    def label(self) -> str:
        """A short name for tables."""
        name = self.backbone.replace("efficientnet_", "")
        granularity = _dimension(self, "grouping")
        return (
            f"{name} {self.resolution} s{self.scales} k{self.kernel_size} {granularity} t{self.threshold:g} "
            f"b{self.box_threshold:g}{' check' if self.scale_check else ''}{' minreg' if self.min_region else ''}"
            f"{f' parts{self.part_ratio}' if self.part_ratio else ''}"
        )


# The chosen defaults (QUALITY.md: the best of the sweep by ``choose``'s rule): one setting for the app, the CLI
# and the API. min_members / max_members are core.hierarchy's grouping.
CHOSEN = Setting("efficientnet_lite2", 320, 4, 1, "adaptive", 0, 0, 0.6, 0.5, False, True, 3)
# The seed article's rule on today's backbone and resolution: kernel 3, threshold 0.85, box 0.5, 1 scale, classes.
SEED = Setting("efficientnet_lite2", 320, 1, 3, "class", 0, 0, 0.85, 0.5, False, False)


@dataclass(frozen=True)
class Grid:
    """A cross product of settings; ``groupings`` are (min_members, max_members) pairs for granularity "group"."""

    backbones: tuple[str, ...]
    resolutions: tuple[int | str, ...]
    scales: tuple[int, ...]
    kernels: tuple[int, ...]
    granularities: tuple[str, ...]
    groupings: tuple[tuple[int, int], ...]
    thresholds: tuple[float, ...]
    box_thresholds: tuple[float, ...]
    scale_checks: tuple[bool, ...]
    min_regions: tuple[bool, ...]
    part_ratios: tuple[int, ...] = (0,)

    def settings(self) -> list[Setting]:
        """Every point; the scale check only with class maps and core's own grouping (it needs core's head)."""
        out = []
        for bb, res, n, k, gran in itertools.product(
            self.backbones, self.resolutions, self.scales, self.kernels, self.granularities
        ):
            for m, big in self.groupings if gran == "group" else ((0, 0),):
                for t, b, check, minreg, parts in itertools.product(
                    self.thresholds, self.box_thresholds, self.scale_checks, self.min_regions, self.part_ratios
                ):
                    setting = Setting(bb, res, n, k, gran, m, big, t, b, check, minreg, parts)
                    if check and not setting.native:
                        continue
                    out.append(setting)
        return out


GROUPINGS = ((3, 129), (3, 130), (5, 129), (5, 130), (8, 129), (8, 130))
THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.85)


def full_grid() -> list[Setting]:
    """The sweep of QUALITY.md, in three parts (the CNN still runs once per scene, backbone and resolution).

    - networks: every EfficientNet-Lite, resolution and number of scales (at 448 px up to 3: the fourth would
      analyse at 1267 px), with kernels 1 and 3, classes and core's groups, every threshold, with and without the
      minimum region; box threshold 0.3, no scale check;
    - heads: at efficientnet_lite2 and 320 px, every head setting: kernels 1, 3, 5, every grouping, box thresholds,
      the scale check (a pilot of this part showed kernel 5 and the scale check losing, box threshold 0.3 and 0.5
      equal, hence the narrower network part);
    - SqueezeNet, briefly: 320 px, 1 or 2 scales, kernels 3 and 5.
    """
    networks = Grid(
        backbones=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
        resolutions=(224, 320, 448),
        scales=(1, 2, 3, 4),
        kernels=(1, 3),
        granularities=("class", "group"),
        groupings=((DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS),),
        thresholds=THRESHOLDS,
        box_thresholds=(0.3,),
        scale_checks=(False,),
        min_regions=(False, True),
    )
    heads = Grid(
        backbones=("efficientnet_lite2",),
        resolutions=(320,),
        scales=(1, 2, 3, 4),
        kernels=(1, 3, 5),
        granularities=("class", "group"),
        groupings=GROUPINGS,
        thresholds=THRESHOLDS,
        box_thresholds=(0.3, 0.5),
        scale_checks=(False, True),
        min_regions=(False, True),
    )
    squeeze = Grid(
        backbones=("squeezenet1_1",),
        resolutions=(320,),
        scales=(1, 2),
        kernels=(3, 5),
        granularities=("class", "group"),
        groupings=((DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS),),
        thresholds=THRESHOLDS,
        box_thresholds=(0.5,),
        scale_checks=(False, True),
        min_regions=(False, True),
    )
    # The adaptive granularity and the parts rule (this round): at efficientnet_lite2, the networks' part's best
    # resolutions and scales, both kernels, every threshold and minimum region, box threshold 0.5 (equal to 0.3
    # above); the parts rule at three ratios, also for core's groups (its class-level twins come with every setting).
    adaptive = Grid(
        backbones=("efficientnet_lite2",),
        resolutions=(320, 448),
        scales=(2, 3, 4),
        kernels=(1, 3),
        granularities=("adaptive", "group"),
        groupings=((DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS),),
        thresholds=(0.4, 0.5, 0.6, 0.7),
        box_thresholds=(0.5,),
        scale_checks=(False,),
        min_regions=(False, True),
        part_ratios=(0, 3, 4, 5, 6, 8),
    )
    too_large = [s for s in networks.settings() + adaptive.settings() if s.resolution == 448 and s.scales == 4]
    parts = [s for s in adaptive.settings() if s not in too_large and (s.granularity, s.part_ratio) != ("group", 0)]
    return [s for s in networks.settings() if s not in too_large] + heads.settings() + squeeze.settings() + parts


def with_class_level(settings: Iterable[Setting]) -> list[Setting]:
    """The settings and their class-level twins (where the class-level targets are measured), once each."""
    return list(dict.fromkeys(s for setting in settings for s in (setting, setting.as_class())))


# -------------------------------------------------------------------------------------------------------------
# Scoring
# -------------------------------------------------------------------------------------------------------------
class AnalysisLike(Protocol):
    """What scoring reads from an analysis: ``core.Analysis``, an ``Answer`` or a hand-made stand-in whose entries
    have ``members`` and ``wnid`` (or only ``index``, for a class) and whose boxes also have ``box``."""

    @property
    def classes(self) -> Sequence[Any]: ...

    @property
    def boxes(self) -> Sequence[Any]: ...


@functools.cache
def _too_broad(wnid: str) -> bool:
    return len(subtree_classes(wnid)) > BROAD_GROUP


def _members(entry: Any) -> tuple[int, ...]:
    members = getattr(entry, "members", None)
    return tuple(members) if members else (entry.index,)


def _key(entry: Any) -> Any:
    return getattr(entry, "wnid", None) or entry.index


def is_right(entry: Any, accepted: frozenset[int]) -> bool:
    """Whether a found class or group is right where ``accepted`` classes count.

    Right: its members include an accepted class, and it is not a group whose WordNet subtree holds more than
    ``BROAD_GROUP`` classes.
    """
    members = _members(entry)
    if accepted.isdisjoint(members):
        return False
    wnid = getattr(entry, "wnid", None)
    return not (len(members) > 1 and wnid and _too_broad(wnid))


@dataclass(frozen=True)
class SceneScore:
    """The scores of one analysed scene (see the module docstring for each metric)."""

    scene: str
    objects: int
    found: int
    right: int
    recall: float
    precision: float
    localization: float  # NaN when no right entry was found
    placed: float


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2


def score_scene(analysis: AnalysisLike, scene: Scene) -> SceneScore:
    """Score one analysis against its scene's ground truth.

    Args:
        analysis: the analysis of ``scene.image`` (its boxes in the scene's pixels).
        scene: the labelled scene.

    Returns:
        Recall, precision, localization and placed recall for this scene.
    """
    entries = {_key(c): c for c in analysis.classes}
    regions = [tile for tile in scene.tiles if tile.accepted]
    objects = scene.objects
    right = [key for key, entry in entries.items() if any(is_right(entry, r.accepted) for r in regions)]
    centres: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for box in analysis.boxes:
        centres[_key(box)].append(_centre(box.box))

    def holds(region: Any, key: Any) -> bool:  # the region holds a box centre of this entry, and it is right there
        return is_right(entries[key], region.accepted) and any(region.contains(*c) for c in centres[key])

    found_for = [any(is_right(e, tile.accepted) for e in entries.values()) for tile in objects]
    placed = [any(holds(tile, key) for key in right) for tile in objects]
    localized = sum(any(holds(region, key) for region in regions) for key in right)
    count = len(objects)
    return SceneScore(
        scene=scene.name,
        objects=count,
        found=len(entries),
        right=len(right),
        recall=sum(found_for) / count if count else math.nan,
        precision=len(right) / len(entries) if entries else 1.0,
        localization=localized / len(right) if right else math.nan,
        placed=sum(placed) / count if count else math.nan,
    )


@dataclass(frozen=True)
class SetScore:
    """Mean scores over one set's scenes at one setting."""

    recall: float
    precision: float
    localization: float
    placed: float
    classes: float  # entries found per scene
    scenes: int


def _mean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def aggregate(scores: Sequence[SceneScore]) -> SetScore:
    """The mean of each metric over scenes; a scene where a metric is undefined (NaN) is left out of that mean."""
    return SetScore(
        recall=_mean(s.recall for s in scores),
        precision=_mean(s.precision for s in scores),
        localization=_mean(s.localization for s in scores),
        placed=_mean(s.placed for s in scores),
        classes=_mean(s.found for s in scores),
        scenes=len(scores),
    )


# -------------------------------------------------------------------------------------------------------------
# Analyses: core's, regrouped, minimum region
# -------------------------------------------------------------------------------------------------------------
class Answer(NamedTuple):
    """Found entries and their boxes, and the map's size (what scoring reads)."""

    classes: tuple[Any, ...]
    boxes: tuple[Any, ...]
    map_size: tuple[int, int]


@functools.cache
def _group_vocabulary(min_members: int, max_members: int) -> Vocabulary:
    groups = grouping(min_members, max_members)
    return Vocabulary("group", groups.labels, groups.wnids, groups.members)


def answer_map(
    probabilities: np.ndarray, setting: Setting, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, Vocabulary]:
    """A class-level map's answer per cell at the setting's granularity and grouping, by core's own functions.

    Args:
        probabilities: 1000 x rows x cols, the classes' probabilities per cell (``Prepared.maps(...)``).
        setting: its granularity, grouping (any ``grouping()``'s, not only core's) and threshold count.
        threshold: the threshold to answer at instead of the setting's (it matters at "adaptive").

    Returns:
        ``(max_prob, winner, vocabulary)`` per cell, as ``core.postprocess.find_classes`` reads them.
    """
    fused = fused_map(probabilities, setting)
    max_prob, winner = fused.answer(setting.threshold if threshold is None else threshold)
    return max_prob, winner, fused.vocabulary


def fused_map(probabilities: np.ndarray, setting: Setting, vocab: Vocabulary | None = None) -> core.analysis.FusedMap:
    """A class-level map summed into the setting's vocabulary (its granularity and grouping; or ``vocab``), as core
    sums it."""
    if vocab is None and setting.granularity == "group":
        vocab = _group_vocabulary(setting.min_members, setting.max_members)
    elif vocab is None:
        vocab = vocabulary(setting.granularity, IMAGENET_CATEGORIES)
    probs = core.analysis.channel_sums(torch.from_numpy(np.array(probabilities, np.float32))[None], vocab)[0]
    return core.analysis.FusedMap(probs, vocab)


class _Answers:
    """Every setting's answer for one prepared scene, sharing maps, regroupings and base answers."""

    def __init__(self, prepared: core.Prepared):
        self.prepared = prepared
        self.cache: dict[Any, Any] = {}

    def __call__(self, setting: Setting) -> Answer:
        if setting in self.cache:
            return self.cache[setting]
        if setting.native:
            analysis = self.prepared.analyze(setting.core())
            answer = Answer(analysis.classes, analysis.boxes, analysis.map_size)
            self.cache["extent", setting.kernel_size] = analysis.extent
        else:
            if setting.scale_check:
                raise ValueError("the scale check needs core's own grouping (core computes the classifier's view)")
            answer = self._regrouped(setting)
        self.cache[setting] = answer
        return answer

    def _regrouped(self, setting: Setting) -> Answer:
        key = ("answer", setting.kernel_size, setting.min_members, setting.max_members)
        if key not in self.cache:
            fused = self.prepared.maps(setting.as_class().core())
            self.cache[key] = answer_map(fused.probabilities, setting)
        max_prob, winner, vocab = self.cache[key]
        extent_key = ("extent", setting.kernel_size)
        if extent_key not in self.cache:
            self(dataclasses.replace(setting.as_class(), threshold=1.0, scale_check=False))
        height, width = self.prepared.image_size
        classes = find_classes(max_prob, winner, setting.threshold, vocab, 2 if setting.min_region else 1)
        if setting.part_ratio:
            classes = parts_give_way(classes, max_prob, winner, setting.threshold, setting.part_ratio)
        boxes = find_boxes(max_prob, winner, classes, setting.box_threshold, self.cache[extent_key], (width, height))
        return Answer(tuple(classes), tuple(boxes), (int(max_prob.shape[0]), int(max_prob.shape[1])))


def fewer_scales(prepared: core.Prepared, scales: int) -> core.Prepared:
    """The prepared image as if prepared with its first ``scales`` scales under the pyramid rule in force (no network).

    The pyramid's sizes do not depend on how many scales follow, so the first ``scales`` features are exactly
    those ``core.prepare`` computes for ``scales``; checked against ``core.analysis.pyramid``.

    Raises:
        ValueError: the sizes differ (a size limit merged scales).
    """
    height, width = prepared.image_size
    asked = prepared.settings.replace(scales=scales)
    sizes, _ = pyramid(width, height, asked)
    if sizes != prepared.scales[: len(sizes)]:
        raise ValueError(f"{scales} scales of {prepared.source} are {sizes}, not {prepared.scales[: len(sizes)]}")
    # A small image runs fewer sizes than asked (core.analysis.MAX_ENLARGEMENT); its settings still say how many.
    return dataclasses.replace(prepared.first_scales(len(sizes)), settings=asked)


def sweep(
    sets: dict[str, list[Scene]], settings: Sequence[Setting], progress: bool = True
) -> dict[tuple[str, Setting], SetScore]:
    """Score every setting on every set.

    The CNN runs once per (scene, backbone, resolution), at the most scales any of the settings needs.

    Returns:
        ``(set name, setting) -> SetScore``.
    """
    plan: dict[tuple[str, int | str], dict[int, list[Setting]]] = defaultdict(lambda: defaultdict(list))
    for setting in dict.fromkeys(settings):
        plan[setting.backbone, setting.resolution][setting.scales].append(setting)
    results: dict[tuple[str, Setting], SetScore] = {}
    for (backbone, resolution), by_scales in plan.items():
        start = time.perf_counter()
        model = core.get_model(backbone)
        most = max(by_scales)
        scores: dict[tuple[str, Setting], list[SceneScore]] = defaultdict(list)
        for set_name, scenes in sets.items():
            for scene in scenes:
                network = core.Settings(backbone=backbone, resolution=resolution, scales=most)
                top = core.prepare(scene.image, network, model=model, source=scene.name)
                for count, group in by_scales.items():
                    answers = _Answers(fewer_scales(top, count))
                    for setting in group:
                        scores[set_name, setting].append(score_scene(answers(setting), scene))
        results.update({key: aggregate(values) for key, values in scores.items()})
        if progress:
            settings_here = sum(len(g) for g in by_scales.values())
            print(
                f"  {backbone} at {resolution}: {settings_here} settings, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return results


# -------------------------------------------------------------------------------------------------------------
# The fusion rule: how the scales' maps are weighted, and how far a small image is enlarged
# -------------------------------------------------------------------------------------------------------------
# (label, core.analysis.SCALE_WEIGHTS, core.analysis.MAX_ENLARGEMENT): core's rule and the ones it was chosen over.
FUSIONS = (
    ("weights 1, 1, 2, 3, no cap", (1.0, 1.0, 2.0, 3.0), math.inf),
    ("equal, at most 2x", (1.0, 1.0, 1.0, 1.0), 2.0),
    ("weights 1, 2, 3, 4, at most 2x", (1.0, 2.0, 3.0, 4.0), 2.0),
    ("weights 1, 1, 2, 3, at most 2x (core)", (1.0, 1.0, 2.0, 3.0), 2.0),
    ("weights 1, 1, 2, 3, at most 3x", (1.0, 1.0, 2.0, 3.0), 3.0),
    ("weights 1, 2, 4, 8, at most 2x", (1.0, 2.0, 4.0, 8.0), 2.0),
    ("weights 2, 2, 2, 3, at most 2x", (2.0, 2.0, 2.0, 3.0), 2.0),
    ("weights 1, 1, 3, 3, at most 2x", (1.0, 1.0, 3.0, 3.0), 2.0),
    ("weights 0.5, 1, 2, 3, at most 2x", (0.5, 1.0, 2.0, 3.0), 2.0),
)
# Around the chosen threshold (0.6), where the adaptive answers' rules were chosen.
FUSION_THRESHOLDS = (0.5, 0.55, 0.6, 0.65)


@contextlib.contextmanager
def fusion_rule(weights: tuple[float, ...], enlargement: float) -> Iterator[None]:
    """Core's fusion constants replaced while the block runs (``fused_probabilities`` and ``pyramid`` read them)."""
    saved = core.analysis.SCALE_WEIGHTS, core.analysis.MAX_ENLARGEMENT
    core.analysis.SCALE_WEIGHTS, core.analysis.MAX_ENLARGEMENT = weights, enlargement
    try:
        yield
    finally:
        core.analysis.SCALE_WEIGHTS, core.analysis.MAX_ENLARGEMENT = saved


def compare_fusions(
    sets: dict[str, list[Scene]], base: Setting, progress: bool = True
) -> dict[tuple[str, Setting], SetScore]:
    """Score ``base`` (and its class-level twin) at ``FUSION_THRESHOLDS`` under every rule of ``FUSIONS``.

    The network runs once per scene, uncapped; a capped rule uses the first scales its cap allows (what ``prepare``
    gives under it). A rule's results are keyed by a ``Setting`` whose backbone reads "<backbone> | <rule>".

    Returns:
        ``(set name, setting) -> SetScore``, as ``sweep``.
    """
    model = core.get_model(base.backbone)
    scores: dict[tuple[str, Setting], list[SceneScore]] = defaultdict(list)
    start = time.perf_counter()
    for set_name, scenes in sets.items():
        for scene in scenes:
            with fusion_rule(FUSIONS[0][1], math.inf):
                top = core.prepare(scene.image, base.core(), model=model, source=scene.name)
            for label, weights, enlargement in FUSIONS:
                with fusion_rule(weights, enlargement):
                    answers = _Answers(fewer_scales(top, base.scales))
                    for threshold in FUSION_THRESHOLDS:
                        for setting in with_class_level([dataclasses.replace(base, threshold=threshold)]):
                            named = dataclasses.replace(setting, backbone=f"{base.backbone} | {label}")
                            scores[set_name, named].append(score_scene(answers(setting), scene))
        if progress:
            print(f"  fusions, {set_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {key: aggregate(values) for key, values in scores.items()}


def fusion_report(results: dict[tuple[str, Setting], SetScore]) -> list[str]:
    """One row per (rule, threshold): the nine targets, the worst margin, and the same on the check sets."""
    lines = [
        "| rule | threshold | "
        + " | ".join(f"{t.set} {t.level[0]} {t.metric[0].upper()}" for t in TARGETS)
        + " | worst | check sets: worst |",
        "|---|---:|" + "---:|" * len(TARGETS) + "---:|---:|",
    ]
    for setting in sorted(
        {s for _, s in results if s.granularity != "class"},
        key=lambda s: (s.backbone, s.threshold),
    ):
        values = target_values(results, setting)
        if values is None:
            continue
        checked = target_values(results, setting, CHECK_OF)
        worst_check = (
            "" if checked is None else f"{margin({t: v for t, v in checked.items() if t.set != 'single'}):+.2f}"
        )
        lines.append(
            f"| {setting.backbone.split(' | ', 1)[1]} | {setting.threshold:g} | "
            + " | ".join(_f(values[t]) for t in TARGETS)
            + f" | {margin(values):+.2f} | {worst_check} |"
        )
    return lines


# -------------------------------------------------------------------------------------------------------------
# Targets and the choice
# -------------------------------------------------------------------------------------------------------------
class Target(NamedTuple):
    """One of issue 12's targets: a metric of a set at a granularity, and its bound."""

    set: str
    level: str  # "group": the setting itself; "class": the same setting at granularity "class"
    metric: str
    bound: float

    def name(self) -> str:
        """E.g. "2x2 group recall"."""
        return f"{self.set} {self.level} {self.metric}"


TARGETS = (
    Target("2x2", "group", "recall", 0.95),
    Target("2x2", "group", "precision", 0.95),
    Target("2x2", "group", "localization", 0.95),
    Target("2x2", "class", "recall", 0.90),
    Target("2x2", "class", "precision", 0.90),
    Target("3x3", "group", "recall", 0.90),
    Target("3x3", "group", "precision", 0.90),
    Target("single", "group", "recall", 0.95),
    Target("single", "group", "precision", 0.90),
)


def _level(setting: Setting, level: str) -> Setting:
    return setting.as_class() if level == "class" else setting


def target_values(
    results: dict[tuple[str, Setting], SetScore], setting: Setting, rename: dict[str, str] | None = None
) -> dict[Target, float] | None:
    """Each target's value at a setting (class-level targets from its class-level twin); None if any is missing.

    ``rename`` maps a target's set to another set (e.g. "2x2" -> "2x2-256") to read the check sets.
    """
    values = {}
    for target in TARGETS:
        key = ((rename or {}).get(target.set, target.set), _level(setting, target.level))
        if key not in results:
            return None
        value = getattr(results[key], target.metric)
        values[target] = 0.0 if math.isnan(value) else value
    return values


def margin(values: dict[Target, float]) -> float:
    """The worst shortfall (negative) or smallest excess over the targets: the number the choice maximises."""
    return min(value - target.bound for target, value in values.items())


def choose(results: dict[tuple[str, Setting], SetScore]) -> list[tuple[Setting, float, float]]:
    """Every setting with all its targets measured, best first: ``(setting, worst margin, mean of the targets)``.

    The rule: maximise the worst margin over issue 12's targets (``TARGETS``); ties by the mean of their values.
    """
    ranked = []
    for setting in {s for _, s in results}:
        values = target_values(results, setting)
        if values is not None:
            # Rounded: equal margins must tie (0.90 - 0.95 and 0.85 - 0.90 differ in the last bits).
            ranked.append((setting, round(margin(values), 6), sum(values.values()) / len(values)))
    ranked.sort(key=lambda r: (-r[1], -r[2], r[0].label()))
    return ranked


# -------------------------------------------------------------------------------------------------------------
# Misses, false positives and cost at one setting (runs the network again)
# -------------------------------------------------------------------------------------------------------------
def _thing(tile: Any) -> str:
    return f"{tile.name} ({IMAGENET_CATEGORIES[min(tile.accepted)]})"


def explain(sets: dict[str, list[Scene]], setting: Setting) -> dict[str, tuple[Counter, Counter, int]]:
    """Per set: the required things missed (``photo (class)``: times), the wrong entries (``label @ photo``, the
    photo under their best box: times), and the number of scenes. Runs the network again."""
    out = {}
    for set_name, scenes in sets.items():
        missed: Counter = Counter()
        wrong: Counter = Counter()
        for scene in scenes:
            prepared = core.prepare(scene.image, setting.core(), source=scene.name)
            answer = _Answers(prepared)(setting)
            regions = [tile for tile in scene.tiles if tile.accepted]
            for tile in scene.objects:
                if not any(is_right(c, tile.accepted) for c in answer.classes):
                    missed[_thing(tile)] += 1
            for entry in answer.classes:
                if not any(is_right(entry, r.accepted) for r in regions):
                    boxes = [b for b in answer.boxes if _key(b) == _key(entry)]
                    where = ""
                    if boxes:
                        centre = _centre(max(boxes, key=lambda b: b.score).box)
                        where = next((f" @ {t.name}" for t in scene.tiles if t.contains(*centre)), "")
                    wrong[entry.label + where] += 1
        out[set_name] = (missed, wrong, len(scenes))
    return out


def network_seconds(
    scenes: Sequence[Scene],
    backbone: str,
    resolution: int | str,
    scales: Sequence[int] = (1, 2, 3, 4),
    repeats: int = 5,
) -> dict[int, tuple[float, float]]:
    """Per number of scales: the median over ``scenes`` of the fastest of ``repeats`` ``core.prepare`` runs, as
    (wall seconds, CPU seconds of this process, all threads)."""
    model = core.get_model(backbone)
    out = {}
    for count in scales:
        settings = core.Settings(backbone=backbone, resolution=resolution, scales=count)
        walls, cpus = [], []
        for scene in scenes:
            wall = cpu = math.inf
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                core.prepare(scene.image, settings, model=model)
                wall = min(wall, time.perf_counter() - start)
                cpu = min(cpu, time.process_time() - start_cpu)
            walls.append(wall)
            cpus.append(cpu)
        out[count] = (statistics.median(walls), statistics.median(cpus))
    return out


# -------------------------------------------------------------------------------------------------------------
# Report
# -------------------------------------------------------------------------------------------------------------
def _f(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


_ROW_TARGETS = TARGETS


def _row_header(extra: str = "") -> list[str]:
    names = ["setting", *(f"{t.set} {t.level[0]} {t.metric[0].upper()}" for t in _ROW_TARGETS), "worst", "mean"]
    if extra:
        names.insert(0, extra)
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _row(results: dict, setting: Setting, first: str | None = None, rename: dict[str, str] | None = None) -> str:
    values = target_values(results, setting, rename)
    cells = [] if first is None else [first]
    cells.append(setting.label())
    if values is None:
        cells += ["—"] * (len(_ROW_TARGETS) + 2)
    else:
        cells += [_f(values[t]) for t in _ROW_TARGETS]
        cells += [f"{margin(values):+.2f}", f"{sum(values.values()) / len(values):.3f}"]
    return "| " + " | ".join(cells) + " |"


def _target_table(results: dict, columns: list[tuple[str, Setting, dict[str, str] | None]]) -> list[str]:
    head = ["target", "bound", *(name for name, _, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    all_values = [target_values(results, s, rename) for _, s, rename in columns]
    for target in TARGETS:
        cells = [target.name(), f"≥ {target.bound:.2f}"]
        for values in all_values:
            if values is None:
                cells.append("—")
            else:
                v = values[target]
                cells.append(f"{v:.2f} {'met' if v >= target.bound else 'missed'}")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["worst margin", ""]
    cells += ["—" if values is None else f"{margin(values):+.2f}" for values in all_values]
    lines.append("| " + " | ".join(cells) + " |")
    return lines


DIMENSIONS = (
    "backbone",
    "resolution",
    "scales",
    "kernel_size",
    "grouping",
    "threshold",
    "box_threshold",
    "scale_check",
    "min_region",
    "part_ratio",
)


def _dimension(setting: Setting, name: str) -> Any:
    if name == "grouping":
        if setting.granularity == "group":
            return f"group {setting.min_members}/{setting.max_members}"
        return setting.granularity
    return getattr(setting, name)


def _with(setting: Setting, name: str, value: Any) -> Setting:
    if name != "grouping":
        return dataclasses.replace(setting, **{name: value})
    if value == "class":
        return setting.as_class()
    if value == "adaptive":
        return dataclasses.replace(setting, granularity="adaptive", min_members=0, max_members=0)
    m, big = (int(x) for x in value.split()[1].split("/"))
    return dataclasses.replace(setting, granularity="group", min_members=m, max_members=big)


def report(
    results: dict[tuple[str, Setting], SetScore],
    *,
    chosen: Setting,
    seed: Setting,
    defaults: Setting,
    command: str,
    seconds: float,
    explained: dict[str, tuple[Counter, Counter, int]] | None = None,
    cost: dict[int, float] | None = None,
    top: int = 15,
) -> str:
    """The Markdown tables of QUALITY.md."""
    ranked = choose(results)
    settings = {s for _, s in results}
    set_names = sorted({name for name, _ in results}, key=lambda n: (n not in TARGET_SETS, n))
    counts = {name: next(v.scenes for (n, _), v in results.items() if n == name) for name in set_names}
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}; {date.today().isoformat()}; {seconds:.0f} s in all.  ",
        f"{len(PHOTOS)} photos; scenes: {', '.join(f'{n} {c}' for n, c in counts.items())}; {len(settings)} settings. "
        "Columns: a target's set, g(roup)/c(lass) level, R(ecall)/P(recision)/L(ocalization); worst = the worst "
        "margin over the targets (the rule), mean = the mean of the target values.",
        "",
    ]
    columns = [("chosen", chosen, None), ("seed preset", seed, None)]
    seed_groups = dataclasses.replace(
        seed, granularity="group", min_members=DEFAULT_MIN_MEMBERS, max_members=MAX_GROUP_MEMBERS
    )
    if target_values(results, seed_groups) is not None:
        columns.append(("seed preset, groups", seed_groups, None))
    if defaults not in (chosen, seed):
        columns.append(("core's defaults", defaults, None))
    if ranked and ranked[0][0] != chosen:
        columns.append(("best by the rule", ranked[0][0], None))
    lines += ["**Targets** (" + "; ".join(f"{n}: `{s.label()}`" for n, s, _ in columns) + ")", ""]
    lines += [*_target_table(results, columns), ""]
    check = [(f"{n}, other arrangements", s, CHECK_OF) for n, s, _ in columns if n != "seed preset, groups"]
    if all(target_values(results, s, r) is not None for _, s, r in check):
        lines += ["**The same on the check sets** (2x2-256, 3x3-256; single photos as above)", ""]
        lines += [*_target_table(results, check), ""]
    if ranked:
        lines += [f"**Best {top} by the rule**", "", *_row_header()]
        lines += [_row(results, s) for s, _, _ in ranked[:top]] + [""]
        lines += ["**Each backbone's best by the rule**", "", *_row_header()]
        seen = []
        for s, _, _ in ranked:
            if s.backbone not in seen:
                seen.append(s.backbone)
                lines.append(_row(results, s))
        lines.append("")
        best_of: dict[tuple[str, Any], Setting] = {}
        for s, _, _ in ranked:
            for name in DIMENSIONS:
                best_of.setdefault((name, _dimension(s, name)), s)
        for name in DIMENSIONS:
            values = sorted({_dimension(s, name) for s in settings}, key=str)
            if len(values) < 2:
                continue
            lines += [
                f"**{name}**: the chosen setting with only this changed, and the best setting with this value",
                "",
            ]
            lines += _row_header(name)
            for value in values:
                one = _with(chosen, name, value)
                if target_values(results, one) is not None:  # swept, with its class-level twin
                    lines.append(_row(results, one, f"{value} (chosen, changed)"))
            for value in values:
                if (name, value) in best_of:
                    lines.append(_row(results, best_of[name, value], f"{value} (best)"))
            lines.append("")
    if explained:
        lines += [f"**Misses and false positives at the chosen setting** (`{chosen.label()}`)", ""]
        lines += ["| set | scenes | missed things (photo: times) | wrong entries (label: times) |", "|---|---|---|---|"]
        for set_name, (missed, wrong, scenes) in explained.items():
            m = ", ".join(f"{k}: {v}" for k, v in missed.most_common()) or "none"
            w = ", ".join(f"{k}: {v}" for k, v in wrong.most_common()) or "none"
            lines.append(f"| {set_name} | {scenes} | {m} | {w} |")
        lines.append("")
    if cost:
        lines += [
            f"**Cost**: network per scene (`core.prepare`: every scale's trunk), {chosen.backbone} at "
            f"{chosen.resolution}, median over 3 scenes (640-px mosaics, a 800 x 598 photo) of the best of 5",
            "",
        ]
        lines += ["| scales | " + " | ".join(str(n) for n in cost) + " |", "|---|" + "---|" * len(cost)]
        lines += ["| wall seconds | " + " | ".join(f"{w:.2f}" for w, _ in cost.values()) + " |"]
        lines += ["| CPU seconds (all threads) | " + " | ".join(f"{c:.2f}" for _, c in cost.values()) + " |", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------
# CSV
# -------------------------------------------------------------------------------------------------------------
def _open_text(path: Path, mode: str) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", newline="", encoding="utf-8")
    return path.open(mode, newline="", encoding="utf-8")


def write_csv(results: dict[tuple[str, Setting], SetScore], path: Path) -> None:
    """Every (set, setting) row of the sweep (gzip-compressed when the name ends in .gz)."""
    fields = [f.name for f in dataclasses.fields(Setting)]
    with _open_text(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", *fields, *(f.name for f in dataclasses.fields(SetScore))])
        for (set_name, setting), score in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1].label())):
            writer.writerow(
                [set_name, *(getattr(setting, f) for f in fields), *(_round(v) for v in dataclasses.astuple(score))]
            )


def read_csv(path: Path) -> dict[tuple[str, Setting], SetScore]:
    """A sweep written by ``write_csv``, back as results (to re-render the tables without running the CNN)."""
    results = {}
    with _open_text(path, "r") as handle:
        for row in csv.DictReader(handle):
            resolution = row["resolution"]
            setting = Setting(
                row["backbone"],
                resolution if resolution == "native" else int(resolution),
                int(row["scales"]),
                int(row["kernel_size"]),
                row["granularity"],
                int(row["min_members"]),
                int(row["max_members"]),
                float(row["threshold"]),
                float(row["box_threshold"]),
                row["scale_check"] == "True",
                row["min_region"] == "True",
                int(row.get("part_ratio") or 0),  # sweeps before the parts rule have no column
            )
            metrics = (float(row[name]) for name in ("recall", "precision", "localization", "placed", "classes"))
            results[row["set"], setting] = SetScore(*metrics, scenes=int(row["scenes"]))
    return results


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.quality``: run the sweep and print the Markdown tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="core's defaults, the chosen setting and the seed only, on the target sets"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the mosaics' tile selection (default 0)")
    parser.add_argument("--csv", type=Path, help="also write every (set, setting) row to this CSV file (.gz: gzip)")
    parser.add_argument(
        "--from-csv",
        type=Path,
        help="re-render the tables from a sweep's CSV (the misses and the cost still run the network: --no-explain)",
    )
    parser.add_argument("--report", type=Path, help="also write the Markdown tables to this file")
    parser.add_argument("--no-explain", action="store_true", help="skip the misses / false positives and the cost")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--fusion", action="store_true", help="compare core's fusion rule (scale weights, enlargement cap) with others"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fusion:
        sets = scene_sets(args.seed, TARGET_SETS + CHECK_SETS)
        print("\n".join(fusion_report(compare_fusions(sets, CHOSEN))))
        return 0

    defaults = Setting.of(core.Settings())
    start = time.perf_counter()
    sets = scene_sets(args.seed, TARGET_SETS if args.quick else None)
    print(f"{len(PHOTOS)} photos; " + ", ".join(f"{n}: {len(s)} scenes" for n, s in sets.items()), file=sys.stderr)
    targets = {name: sets[name] for name in TARGET_SETS}
    if args.from_csv:
        results = read_csv(args.from_csv)
    elif args.quick:
        results = sweep(targets, with_class_level([defaults, CHOSEN, SEED]))
    else:
        results = sweep(targets, with_class_level([*full_grid(), SEED, defaults]))
        # The check sets: the chosen, seed and default settings and the best ten by the rule.
        watched = [CHOSEN, SEED, defaults, *(s for s, _, _ in choose(results)[:10])]
        results.update(sweep({name: sets[name] for name in CHECK_SETS}, with_class_level(watched)))
        if args.csv:  # first: the sweep is the expensive part
            write_csv(results, args.csv)
    explained = cost = None
    if not (args.quick or args.no_explain):
        explained = explain(targets, CHOSEN)
        cost_scenes = [sets["2x2"][0], sets["3x3"][0], sets["single"][-1]]
        cost = network_seconds(cost_scenes, CHOSEN.backbone, CHOSEN.resolution)
    seconds = time.perf_counter() - start
    command = "python -m bench.quality" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = report(
        results,
        chosen=CHOSEN,
        seed=SEED,
        defaults=defaults,
        command=command.strip(),
        seconds=seconds,
        explained=explained,
        cost=cost,
    )
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
