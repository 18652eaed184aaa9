"""Rules tried on top of the chosen setting and not adopted: ``python -m bench.alternatives`` (QUALITY.md).

Every rule reads the same maps: the chosen setting's class-level fused map of each target and check scene
(``bench.quality.CHOSEN``), and that of its mirror image, flipped back. The network runs twice per scene; each rule
turns the class map into answers with core's own functions (the chosen granularity, ``core.analysis.hedged`` at
"adaptive", ``core.postprocess``'s rules) and is scored with ``bench.quality``'s functions and targets. About
three minutes on the 2-core machine.

The rules (each a keyword of ``answer``):

- ``threshold`` / ``min_cells`` / ``part_ratio`` / ``granularity``: core's settings at other values;
- ``mirror``: the map averaged with the mirror image's (twice the network);
- ``low``: a second, lower threshold for large regions: also name what wins at least ``cells`` cells above it;
- ``nested``: of two touching answers where one holds the other's classes ("cat" around "Egyptian cat"), the one
  with fewer cells gives way;
- ``one_answer=False``: without core's last rule (``core.postprocess.one_answer_per_object``: touching answers of
  one lineage become the broadest, over all their cells);
- ``broadest=True``: each object named by the broadest answer of its cells (last round's core), without core's
  ``core.postprocess.hedge_each_object``, which names it by the most specific channel whose mean probability over
  the object passes the threshold;
- ``hedging_min``: the adaptive vocabulary's synsets from this many classes (last round: 5; core: 2);
- ``join`` / ``box_cells``: ``core.postprocess.find_boxes``'s options: one box for regions of an answer a few
  cells apart; no box for a region of fewer cells;
- ``relative``: no answer with fewer than 1/``relative`` of the largest answer's cells;
- ``verify``: ``(margin, bar)``, a second look at each answer in the network's own view, as R-CNN's second stage:
  each of its boxes, grown ``margin`` times into a square, cropped from the photo and resized to 224 px, is given to
  the unmodified classifier; an answer none of whose crops gets at least ``bar`` of the classifier's probability
  for its classes is dropped (one forward per box).

Besides the nine targets, the table gives the answers per scene, how broad they are (the mean number of ImageNet
classes per found entry) and how scattered (boxes per found entry).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

import core
from bench.quality import (
    CHECK_OF,
    CHECK_SETS,
    CHOSEN,
    TARGET_SETS,
    TARGETS,
    Answer,
    SceneScore,
    SetScore,
    Setting,
    aggregate,
    fused_map,
    margin,
    score_scene,
    target_values,
)
from bench.quality_data import Scene, scene_sets
from core.analysis import analysis_pixels
from core.hierarchy import adaptive_vocabulary
from core.postprocess import find_boxes, find_classes, hedge_each_object, one_answer_per_object, parts_give_way
from core.registry import IMAGENET_CATEGORIES

__all__ = ["RULES", "SceneMaps", "answer", "main", "rule_setting"]

# (label, keywords of ``answer``): the best variant of each rule (QUALITY.md's table); the first is core's rule.
RULES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the chosen setting (core)", {}),
    ("mirror image averaged in", {"mirror": True}),
    ("threshold 0.55", {"threshold": 0.55}),
    ("threshold 0.65", {"threshold": 0.65}),
    ("min_cells 3", {"min_cells": 3}),
    ("part_ratio 2", {"part_ratio": 2}),
    ("part_ratio 4", {"part_ratio": 4}),
    ("and 0.3 over 12 cells", {"low": (0.3, 12)}),
    ("nested answers: the smaller gives way", {"nested": True}),
    ("answers of one lineage kept apart", {"one_answer": False}),
    ("no parts rule", {"part_ratio": 0}),
    ("each object named by its broadest answer (last round)", {"broadest": True}),
    ("synsets of 5 classes or more (last round)", {"hedging_min": 5}),
    ("both (last round's core)", {"broadest": True, "hedging_min": 5}),
    ("one box for regions up to 2 cells apart", {"join": 1}),
    ("one box for regions up to 4 cells apart", {"join": 2}),
    ("boxes of 2 cells or more", {"box_cells": 2}),
    ("boxes of 3 cells or more", {"box_cells": 3}),
    ("no answer 10 times smaller than the largest", {"relative": 10}),
    ("no answer 16 times smaller than the largest", {"relative": 16}),
    ("no answer 25 times smaller than the largest", {"relative": 25}),
    ("answers checked on crops of their boxes (1.5x, 0.1)", {"verify": (1.5, 0.1)}),
    ("answers checked on crops of their boxes (1.5x, 0.3)", {"verify": (1.5, 0.3)}),
    ("answers checked on crops of their boxes (1x, 0.3)", {"verify": (1.0, 0.3)}),
    ("answers checked on crops of their boxes (1.5x, 0.1), threshold 0.5", {"verify": (1.5, 0.1), "threshold": 0.5}),
)


@dataclass(frozen=True)
class SceneMaps:
    """One scene's class-level fused maps at the chosen setting (1000 x rows x cols each) and where they lie."""

    probabilities: np.ndarray
    mirrored: np.ndarray  # the mirror image's map, flipped back to the photo's left and right
    extent: tuple[float, float, float, float]
    image_size: tuple[int, int]  # (height, width)
    image: Image.Image | None = None  # the scene, for ``verify``
    crops: dict = field(default_factory=dict, compare=False, repr=False)  # (box, margin) -> the classifier's view


def crop_view(image: Image.Image, box: tuple[int, int, int, int], grow: float) -> np.ndarray:
    """The unmodified classifier's 1000 probabilities for a box grown ``grow`` times into a square (kept inside the
    photo, as large as it allows), resized to 224 x 224 px."""
    width, height = image.size
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * grow
    sx, sy = min(side, width), min(side, height)
    left = min(max((x1 + x2 - sx) / 2, 0), width - sx)
    top = min(max((y1 + y2 - sy) / 2, 0), height - sy)
    crop = image.convert("RGB").crop((round(left), round(top), round(left + sx), round(top + sy)))
    model = core.get_model(CHOSEN.backbone)  # core's cached, shared model
    with torch.inference_mode():  # core's one resizing rule, as every analysis resizes
        x = model.preprocess(analysis_pixels(crop, (224, 224)))
        return model.reference_logits(x).softmax(1)[0].double().numpy()


def scene_maps(scene: Scene, model: core.ClassMapModel) -> SceneMaps:
    """Run the network on the scene and on its mirror image at the chosen setting."""
    settings = CHOSEN.as_class().core()
    prepared = core.prepare(scene.image, settings, model=model, source=scene.name)
    mirror = core.prepare(ImageOps.mirror(scene.image), settings, model=model, source=scene.name)
    return SceneMaps(
        np.array(prepared.maps(settings).probabilities),
        np.ascontiguousarray(mirror.maps(settings).probabilities[:, :, ::-1]),
        prepared.analyze(settings).extent,
        prepared.image_size,
        scene.image,
    )


def nested_give_way(found: list[Any], max_prob: np.ndarray, winner: np.ndarray, threshold: float) -> list[Any]:
    """The entries that touch no larger entry of their own lineage (one's classes include the other's)."""
    cells = {e.channel: (winner == e.channel) & (max_prob > threshold) for e in found}
    sizes = {channel: int(mask.sum()) for channel, mask in cells.items()}
    kept = []
    for entry in found:
        around = ndimage.binary_dilation(cells[entry.channel], np.ones((3, 3), dtype=bool))
        mine = set(entry.members)
        lineage = (
            o
            for o in found
            if o.channel != entry.channel
            and sizes[o.channel] > sizes[entry.channel]
            and (mine <= set(o.members) or set(o.members) <= mine)
        )
        if not any((around & cells[o.channel]).any() for o in lineage):
            kept.append(entry)
    return kept


def answer(
    maps: SceneMaps,
    level: str,
    *,
    threshold: float = CHOSEN.threshold,
    min_cells: int = 2 if CHOSEN.min_region else 1,
    part_ratio: int = CHOSEN.part_ratio,
    granularity: str = CHOSEN.granularity,
    mirror: bool = False,
    low: tuple[float, int] | None = None,
    nested: bool = False,
    one_answer: bool = True,
    broadest: bool = False,
    hedging_min: int | None = None,
    join: int = 0,
    box_cells: int = 1,
    relative: int = 0,
    verify: tuple[float, float] | None = None,
) -> Answer:
    """One rule's answer for a scene at "group" level (``granularity``) or "class" level.

    With ``low``, the parts rule counts each entry's cells above the lower threshold.
    """
    probabilities = (maps.probabilities + maps.mirrored) / 2 if mirror else maps.probabilities
    setting = Setting.of(CHOSEN.core().replace(granularity=granularity)) if level == "group" else CHOSEN.as_class()
    other = hedging_min is not None and setting.granularity == "adaptive"
    fused = fused_map(probabilities, setting, adaptive_vocabulary(IMAGENET_CATEGORIES, hedging_min) if other else None)
    (max_prob, winner), vocab = fused.answer(threshold), fused.vocabulary
    found = find_classes(max_prob, winner, threshold, vocab, min_cells)
    box_threshold = CHOSEN.box_threshold
    if low is not None:
        named = {e.channel for e in found}
        found += [e for e in find_classes(max_prob, winner, low[0], vocab, low[1]) if e.channel not in named]
        box_threshold = min(box_threshold, low[0])
    if part_ratio:
        found = parts_give_way(found, max_prob, winner, threshold if low is None else low[0], part_ratio)
    if nested:
        found = nested_give_way(found, max_prob, winner, threshold)
    if one_answer:
        lowest = threshold if low is None else low[0]
        found, max_prob, winner = one_answer_per_object(found, max_prob, winner, lowest, fused.channel)
        if not broadest:
            found, max_prob, winner = hedge_each_object(
                found, max_prob, winner, lowest, fused.vocabulary, fused.probabilities
            )
    if relative:
        largest = max((e.area for e in found), default=0.0)
        found = [e for e in found if e.area * relative >= largest]
    height, width = maps.image_size
    boxes = find_boxes(
        max_prob, winner, found, min(box_threshold, threshold), maps.extent, (width, height), join, box_cells
    )
    if verify is not None:
        grow, bar = verify

        def backed(entry: Any) -> bool:
            for box in (b for b in boxes if b.channel == entry.channel):
                if (box.box, grow) not in maps.crops:
                    maps.crops[box.box, grow] = crop_view(maps.image, box.box, grow)
                if maps.crops[box.box, grow][list(entry.members)].sum() >= bar:
                    return True
            return False

        found = [e for e in found if backed(e)]
        boxes = [b for b in boxes if b.channel in {e.channel for e in found}]
    return Answer(tuple(found), tuple(boxes), (int(max_prob.shape[0]), int(max_prob.shape[1])))


def rule_setting(label: str) -> Setting:
    """The chosen setting, renamed after a rule: the key of the rule's group-level results (``as_class()``: class)."""
    return dataclasses.replace(CHOSEN, backbone=f"{CHOSEN.backbone} | {label}")


Key = tuple[str, Setting]


def evaluate(
    sets: dict[str, list[Scene]], progress: bool = True
) -> tuple[dict[Key, SetScore], dict[Key, tuple[float, float]]]:
    """Every rule's scores, keyed as ``bench.quality.sweep``'s (set, ``rule_setting(label)`` or its class twin).

    Also, under the same keys, the mean number of ImageNet classes per found entry (how broad the answers are) and
    the mean number of boxes per found entry (per scene, then over the scenes).

    The network runs once per scene and once per mirror image.
    """
    model = core.get_model(CHOSEN.backbone)
    scores: dict[tuple[str, Setting], list[SceneScore]] = defaultdict(list)
    breadth: dict[tuple[str, Setting], list[int]] = defaultdict(list)
    boxes: dict[tuple[str, Setting], list[float]] = defaultdict(list)
    start = time.perf_counter()
    for set_name, scenes in sets.items():
        for scene in scenes:
            maps = scene_maps(scene, model)
            for label, rule in RULES:
                setting = rule_setting(label)
                for level, key in (("group", setting), ("class", setting.as_class())):
                    found = answer(maps, level, **rule)
                    scores[set_name, key].append(score_scene(found, scene))
                    breadth[set_name, key].extend(len(entry.members) for entry in found.classes)
                    boxes[set_name, key].append(len(found.boxes) / max(1, len(found.classes)))
        if progress:
            print(f"  {set_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    results = {key: aggregate(values) for key, values in scores.items()}
    return results, {key: (float(np.mean(breadth[key] or [0])), float(np.mean(boxes[key]))) for key in boxes}


def report(results: dict[Key, SetScore], extras: dict[Key, tuple[float, float]]) -> list[str]:
    """The Markdown table: each rule's nine target values, worst margins, and its answers per target scene, their
    classes and their boxes."""
    header = [t.name().replace(" group ", " g ").replace(" class ", " c ") for t in TARGETS]
    lines = [
        "| rule | "
        + " | ".join(header)
        + " | worst | check sets: worst | answers per scene | classes per answer | boxes per answer |",
        "|---|" + "---:|" * (len(header) + 5),
    ]
    for label, _ in RULES:
        values = target_values(results, rule_setting(label))
        checked = target_values(results, rule_setting(label), CHECK_OF)
        cells = " | ".join(f"{v:.2f}" for v in values.values())
        answers = np.mean([results[name, rule_setting(label)].classes for name in TARGET_SETS])
        classes, boxes = np.mean([extras[name, rule_setting(label)] for name in TARGET_SETS], axis=0)
        lines.append(
            f"| {label} | {cells} | {margin(values):+.3f} | {margin(checked):+.3f} | {answers:.2f} | {classes:.1f}"
            f" | {boxes:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.alternatives``: print the table of QUALITY.md's "Tried this round, not adopted"."""
    parser = argparse.ArgumentParser(prog="python -m bench.alternatives", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results, extras = evaluate(scene_sets(0, TARGET_SETS + CHECK_SETS))
    print("\n".join(report(results, extras)))
    print(f"\n`python -m bench.alternatives`: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
