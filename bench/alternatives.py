"""Rules tried on the chosen setting's maps and not adopted: ``python -m bench.alternatives`` (QUALITY.md).

Every rule reads the same maps: the chosen setting's class-level fused map of each target and check scene
(``bench.quality.CHOSEN``: four scales, kernel 3), and that of its mirror image, flipped back. The network runs
twice per scene; the rules are scored with ``bench.quality``'s own functions and targets. About 8 minutes on the
2-core machine.

The rules (each a keyword of ``answer``):

- ``threshold`` / ``min_cells``: core's two settings at other values;
- ``mirror``: the map averaged with the mirror image's (twice the network);
- ``low``: a second, lower threshold for large regions: also name what wins at least ``cells`` cells above it;
- ``parts``: a part gives way to its whole: an entry whose every region touches (8-connected) a region of another
  entry at least ``ratio`` times its size is dropped (a cap on a uniform, a bridle on a horse);
- ``hedge``: Hedging Your Bets (Deng et al., CVPR 2012) at group level: per cell, the most specific WordNet node
  whose summed probability passes the threshold, among the 1000 classes and the synsets with ``MIN_MEMBERS`` to
  ``MAX_GROUP_MEMBERS`` classes under them. The nodes overlap (a cell may answer "beagle", "hound" or "dog"), so it
  is not a granularity core offers: core's groups partition the classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import ImageOps
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
    margin,
    regroup,
    score_scene,
    target_values,
)
from bench.quality_data import Scene, scene_sets
from core.hierarchy import (
    MAX_GROUP_MEMBERS,
    Vocabulary,
    class_wnids,
    classes_under_synsets,
    vocabulary,
    wordnet_name,
)
from core.postprocess import find_boxes, find_classes
from core.registry import IMAGENET_CATEGORIES

__all__ = ["RULES", "SceneMaps", "answer", "hedged", "hedging_nodes", "main", "parts_give_way", "rule_setting"]

MIN_MEMBERS = 5  # a hedging node above the classes has at least this many classes (core's groups' minimum)
_EIGHT = np.ones((3, 3), dtype=bool)
_CLASSES = vocabulary("class", IMAGENET_CATEGORIES)

# (label, keywords of ``answer``): the best variant of each rule (QUALITY.md's table); the first is core's rule.
RULES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the chosen setting (core)", {}),
    ("mirror image averaged in, threshold 0.45, min_cells 4", {"mirror": True, "threshold": 0.45, "min_cells": 4}),
    ("threshold 0.55", {"threshold": 0.55}),
    ("min_cells 3", {"min_cells": 3}),
    ("threshold 0.45, min_cells 4", {"threshold": 0.45, "min_cells": 4}),
    ("parts give way to a 6x larger whole", {"parts": 6.0}),
    ("threshold 0.6, and 0.3 over 12 cells", {"threshold": 0.6, "low": (0.3, 12)}),
    ("threshold 0.6, 0.3 over 9 cells, parts 6x", {"threshold": 0.6, "low": (0.3, 9), "parts": 6.0}),
    ("hedging", {"hedge": True}),
    ("hedging, parts 6x", {"hedge": True, "parts": 6.0}),
)


@dataclass(frozen=True)
class SceneMaps:
    """One scene's class-level fused maps at the chosen setting (1000 x rows x cols each) and where they lie."""

    probabilities: np.ndarray
    mirrored: np.ndarray  # the mirror image's map, flipped back to the photo's left and right
    extent: tuple[float, float, float, float]
    image_size: tuple[int, int]  # (height, width)


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
    )


@functools.cache
def hedging_nodes() -> tuple[torch.Tensor, torch.Tensor, Vocabulary]:
    """The nodes hedging may answer, most specific first: ``(membership, sizes, vocabulary)``.

    ``membership`` is nodes x 1000 (1 where a class lies under the node); ``sizes`` its row sums. A node's
    probability in a cell is the sum of its classes' (the classes are disjoint), so ``membership @ probabilities``.
    """
    under = classes_under_synsets()
    nodes = sorted(
        (wnid for wnid, classes in under.items() if MIN_MEMBERS <= len(classes) <= MAX_GROUP_MEMBERS),
        key=lambda w: (len(under[w]), w),
    )
    wnids = [*class_wnids(), *nodes]  # the classes (one each), then the synsets above them
    members = tuple(tuple(sorted(under[w])) for w in wnids)
    membership = torch.zeros(len(wnids), len(_CLASSES))
    for row, classes in enumerate(members):
        membership[row, list(classes)] = 1.0
    labels = tuple(wordnet_name(w) for w in wnids)
    # of_class is unused (the nodes overlap); find_classes and find_boxes read labels, members and wnids
    vocab = Vocabulary("group", labels, tuple(wnids), members, np.zeros(len(_CLASSES), dtype=np.int64))
    return membership, membership.sum(dim=1), vocab


def hedged(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, Vocabulary]:
    """Per cell, the most specific node whose probability passes ``threshold`` (ties: the more probable).

    Returns:
        ``(max_prob, winner, vocabulary)`` as ``find_classes`` reads them; a cell where no node passes has
        probability 0.
    """
    membership, sizes, vocab = hedging_nodes()
    channels, rows, cols = probabilities.shape
    nodes = membership @ torch.from_numpy(np.asarray(probabilities, np.float32)).reshape(channels, -1)
    passing = nodes > threshold
    # fewest classes first; among nodes of one size the more probable (probabilities < 1 never outweigh a class)
    key = torch.where(passing, -sizes[:, None] + 0.5 * nodes, torch.tensor(-np.inf))
    winner = key.argmax(dim=0)
    max_prob = torch.where(passing.any(dim=0), nodes.gather(0, winner[None])[0], torch.tensor(0.0))
    return max_prob.reshape(rows, cols).numpy(), winner.reshape(rows, cols).numpy().astype(np.int64), vocab


def parts_give_way(
    found: list[Any], max_prob: np.ndarray, winner: np.ndarray, thresholds: dict[int, float], ratio: float
) -> list[Any]:
    """The entries that do not touch an entry at least ``ratio`` times their size (cells above their thresholds)."""
    masks = {e.channel: (winner == e.channel) & (max_prob > thresholds[e.channel]) for e in found}
    sizes = {channel: int(mask.sum()) for channel, mask in masks.items()}
    kept = []
    for entry in found:
        grown = ndimage.binary_dilation(masks[entry.channel], _EIGHT)
        wholes = (o for o in found if o.channel != entry.channel and sizes[o.channel] >= ratio * sizes[entry.channel])
        if not any((grown & masks[o.channel]).any() for o in wholes):
            kept.append(entry)
    return kept


def answer(
    maps: SceneMaps,
    level: str,
    *,
    threshold: float = CHOSEN.threshold,
    min_cells: int = 2,
    mirror: bool = False,
    low: tuple[float, int] | None = None,
    parts: float | None = None,
    hedge: bool = False,
) -> Answer:
    """One rule's answer for a scene at "group" or "class" level (hedging applies to groups only)."""
    probabilities = (maps.probabilities + maps.mirrored) / 2 if mirror else maps.probabilities
    if hedge and level == "group":
        max_prob, winner, vocab = hedged(probabilities, threshold)
    elif level == "group":
        max_prob, winner, vocab = regroup(probabilities, CHOSEN.min_members, CHOSEN.max_members)
    else:
        best = torch.from_numpy(np.asarray(probabilities, np.float32)).max(dim=0)
        max_prob, winner, vocab = best.values.numpy(), best.indices.numpy().astype(np.int64), _CLASSES
    found = find_classes(max_prob, winner, threshold, vocab, min_cells)
    thresholds = dict.fromkeys((e.channel for e in found), threshold)
    if low is not None:
        named = set(thresholds)
        extra = [e for e in find_classes(max_prob, winner, low[0], vocab, low[1]) if e.channel not in named]
        found += extra
        thresholds.update(dict.fromkeys((e.channel for e in extra), low[0]))
    if parts is not None:
        found = parts_give_way(found, max_prob, winner, thresholds, parts)
    height, width = maps.image_size
    boxes = []
    for entry in found:
        box = min(CHOSEN.box_threshold, thresholds[entry.channel])
        boxes += find_boxes(max_prob, winner, [entry], box, maps.extent, (width, height))
    return Answer(tuple(found), tuple(boxes), (int(max_prob.shape[0]), int(max_prob.shape[1])))


def rule_setting(label: str) -> Setting:
    """The chosen setting, renamed after a rule: the key of the rule's group-level results (``as_class()``: class)."""
    return dataclasses.replace(CHOSEN, backbone=f"{CHOSEN.backbone} | {label}")


def evaluate(sets: dict[str, list[Scene]], progress: bool = True) -> dict[tuple[str, Setting], SetScore]:
    """Every rule's scores, keyed as ``bench.quality.sweep``'s (set, ``rule_setting(label)`` or its class twin).

    The network runs once per scene and once per mirror image.
    """
    model = core.get_model(CHOSEN.backbone)
    scores: dict[tuple[str, Setting], list[SceneScore]] = defaultdict(list)
    start = time.perf_counter()
    for set_name, scenes in sets.items():
        for scene in scenes:
            maps = scene_maps(scene, model)
            for label, rule in RULES:
                setting = rule_setting(label)
                for level, key in (("group", setting), ("class", setting.as_class())):
                    scores[set_name, key].append(score_scene(answer(maps, level, **rule), scene))
        if progress:
            print(f"  {set_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {key: aggregate(values) for key, values in scores.items()}


def report(results: dict[tuple[str, Setting], SetScore]) -> list[str]:
    """The Markdown table: each rule's nine target values and worst margin, and its worst margin on the check sets."""
    header = [t.name().replace(" group ", " g ").replace(" class ", " c ") for t in TARGETS]
    lines = [
        "| rule | " + " | ".join(header) + " | worst | check sets: worst |",
        "|---|" + "---:|" * (len(header) + 2),
    ]
    for label, _ in RULES:
        values = target_values(results, rule_setting(label))
        checked = target_values(results, rule_setting(label), CHECK_OF)
        cells = " | ".join(f"{v:.2f}" for v in values.values())
        lines.append(f"| {label} | {cells} | {margin(values):+.3f} | {margin(checked):+.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.alternatives``: print the table of QUALITY.md's "Tried this round, not adopted"."""
    parser = argparse.ArgumentParser(prog="python -m bench.alternatives", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = evaluate(scene_sets(0, TARGET_SETS + CHECK_SETS))
    print("\n".join(report(results)))
    print(f"\n`python -m bench.alternatives`: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
