"""From a map of winners to answers: the classes (or groups) found, and their boxes.

Input: per map cell, the winning channel of a vocabulary (``winner``) and its probability (``max_prob``), as
``core.analysis`` computes them. Plain numpy; no network runs here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from core.hierarchy import Vocabulary
from core.results import Box, FoundClass, readonly

__all__ = [
    "find_boxes",
    "find_classes",
    "hedge_each_object",
    "one_answer_per_object",
    "parts_give_way",
    "scale_checked",
]

# Connectivity for regions: 8-connected (diagonal neighbours join), as MATLAB's regionprops in the seed.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def find_classes(
    max_prob: np.ndarray, winner: np.ndarray, threshold: float, vocabulary: Vocabulary, min_cells: int = 1
) -> list[FoundClass]:
    """Every channel that wins at least ``min_cells`` cells with probability above ``threshold``, by score descending.

    Args:
        max_prob: per cell, the winning channel's probability.
        winner: per cell, the winning channel.
        threshold: the probability a cell must exceed.
        vocabulary: what the channels stand for.
        min_cells: how many such cells a channel needs (1: any one, the seed's rule).

    Returns:
        The found classes (or groups), each with its best cell's probability and the fraction of cells it wins.
    """
    above = max_prob > threshold
    found = []
    for channel in np.unique(winner[above]):
        channel = int(channel)
        cells = above & (winner == channel)
        if cells.sum() < min_cells:
            continue
        found.append(
            FoundClass(
                index=vocabulary.index(channel),
                label=vocabulary.labels[channel],
                score=float(max_prob[cells].max()),
                members=vocabulary.members[channel],
                wnid=vocabulary.wnids[channel],
                channel=channel,
                area=float(cells.mean()),
            )
        )
    return sorted(found, key=lambda c: (-c.score, c.channel))


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
    return [
        c for c in classes if ((winner == c.channel) & (max_prob > box_threshold) & (view_winner == c.channel)).any()
    ]


def parts_give_way(
    classes: list[FoundClass], max_prob: np.ndarray, winner: np.ndarray, threshold: float, ratio: int
) -> list[FoundClass]:
    """The found classes that are not parts of another: those touching no found class ``ratio`` times their size.

    A class's cells are those it wins above ``threshold``; it is a part when one of them touches (8-connected) a
    cell of another found class with at least ``ratio`` times as many. The network names parts of a large object
    on their own (a cap on a uniform, a bridle on a horse, the toppings of a pizza) right beside the whole. Two
    things side by side are rarely that unequal in a photo framed on them.

    Args:
        classes: the found classes (``find_classes``).
        max_prob: per cell, the winning channel's probability.
        winner: per cell, the winning channel.
        threshold: the probability a cell must exceed to count.
        ratio: how many times larger the whole must be (>= 2).

    Returns:
        The classes kept, in their order.
    """
    cells = _cells(classes, max_prob, winner, threshold)
    sizes = {channel: int(mask.sum()) for channel, mask in cells.items()}
    kept = []
    for entry in classes:
        around = ndimage.binary_dilation(cells[entry.channel], _EIGHT_CONNECTED)
        wholes = (c for c in classes if c.channel != entry.channel and sizes[c.channel] >= ratio * sizes[entry.channel])
        if not any((around & cells[whole.channel]).any() for whole in wholes):
            kept.append(entry)
    return kept


def one_answer_per_object(
    classes: list[FoundClass],
    max_prob: np.ndarray,
    winner: np.ndarray,
    threshold: float,
    probability_of: Callable[[int], np.ndarray],
) -> tuple[list[FoundClass], np.ndarray, np.ndarray]:
    """Found answers of one lineage that touch become one: the broadest, over all their cells (adaptive answers).

    At granularity "adaptive" the network's certainty fades towards an object's edges, so one cat reads "Egyptian
    cat" in the middle and "domestic cat" around it, in interleaved patches. Where a found answer touches
    (8-connected, cells above ``threshold``) a found answer that holds all its classes, its cells are answered with
    that broader one, which passes the threshold there too (its probability is at least the narrower one's). The
    broadest of a touching lineage takes them all, so each object gets one answer, one heat map and one box.
    Answers whose classes do not nest (a cup beside a cat, or any two classes or groups) are left alone.

    Args:
        classes: the found answers (after ``find_classes``, ``parts_give_way``).
        max_prob: per cell, the answer's probability.
        winner: per cell, the answer's channel.
        threshold: the probability a cell must exceed to count.
        probability_of: a channel's probability map (rows x cols).

    Returns:
        ``(classes, max_prob, winner)``: the answers kept (their ``score`` and ``area`` over their new cells), and
        the maps with the taken cells answered by their new owner (new arrays; the inputs are not changed).
    """
    cells = _cells(classes, max_prob, winner, threshold)
    owner = {c.channel: c.channel for c in classes}
    members = {c.channel: frozenset(c.members) for c in classes}
    broadest_first = sorted(classes, key=lambda c: (-len(c.members), c.channel))
    for whole in broadest_first:
        # Still free (not taken by a broader one), and narrower than the whole: classes and groups never are.
        parts = [
            c.channel
            for c in broadest_first
            if owner[c.channel] == c.channel and members[c.channel] < members[whole.channel]
        ]
        if owner[whole.channel] != whole.channel or not parts:
            continue
        region, grown = cells[whole.channel].copy(), True
        while grown:  # a narrower one may touch the whole only through another narrower one
            grown = False
            around = ndimage.binary_dilation(region, _EIGHT_CONNECTED)
            for part in parts:
                if owner[part] == part and (around & cells[part]).any():
                    owner[part], region, grown = whole.channel, region | cells[part], True
    takers = {whole for part, whole in owner.items() if part != whole}
    if not takers:
        return classes, max_prob, winner
    max_prob, winner = max_prob.copy(), winner.copy()
    for part, whole in owner.items():
        if part != whole:
            winner[cells[part]], max_prob[cells[part]] = whole, probability_of(whole)[cells[part]]
    kept = []
    for entry in classes:
        if entry.channel in takers:  # its own cells, and those it took
            mine = (winner == entry.channel) & (max_prob > threshold)
            entry = dataclasses.replace(entry, score=float(max_prob[mine].max()), area=float(mine.mean()))
        if owner[entry.channel] == entry.channel:
            kept.append(entry)
    return sorted(kept, key=lambda c: (-c.score, c.channel)), readonly(max_prob), readonly(winner)


def hedge_each_object(
    classes: list[FoundClass],
    max_prob: np.ndarray,
    winner: np.ndarray,
    threshold: float,
    vocabulary: Vocabulary,
    probabilities: np.ndarray,
) -> tuple[list[FoundClass], np.ndarray, np.ndarray]:
    """Each answer named as specifically as the network is sure of the object as a whole (adaptive answers).

    ``one_answer_per_object`` names an object by the broadest answer of its cells, so a few unsure cells at its
    edge make it vague: "matter" for a cheeseburger that most cells call "cheeseburger", "domestic animal" for a
    cat. This is Hedging Your Bets (Deng et al. 2012) once more, for the object: its cells' distributions averaged,
    each answer is renamed to the most specific channel among those its classes hold (``Vocabulary.narrower``)
    whose mean probability over its cells passes ``threshold`` (ties: the higher mean). Its cells take that
    channel's probability, so where it is unsure they no longer count. Answers that come to one name become one,
    and cells the new name already won count with it, as ``find_classes`` counts every cell a channel wins: on
    the 96 evaluation scenes (QUALITY.md) that happens in 11, in 10 of them only cells touching the object (its
    fringe, read as the new name directly). A no-op for classes and groups, which have nothing narrower.

    Args:
        classes: the found answers (after ``one_answer_per_object``).
        max_prob: per cell, the answer's probability.
        winner: per cell, the answer's channel.
        threshold: the probability a cell, and the object's mean, must exceed.
        vocabulary: what the channels stand for.
        probabilities: channels x rows x cols, every channel's probability in every cell.

    Returns:
        ``(classes, max_prob, winner)`` as ``one_answer_per_object`` returns them (new arrays when anything is
        renamed; the inputs are not changed).
    """
    renamed = {}
    for entry in classes:
        narrower = vocabulary.narrower(entry.channel)
        if not len(narrower):
            continue
        rows, cols = np.nonzero((winner == entry.channel) & (max_prob > threshold))
        if not len(rows):
            continue
        means = probabilities[narrower[:, None], rows, cols].mean(axis=1)  # only the object's cells are read
        passing = np.flatnonzero(means > threshold)
        if len(passing):  # the fewest classes, then the higher mean
            best = min(passing, key=lambda k: (vocabulary.sizes[narrower[k]], -means[k]))
            renamed[entry.channel] = int(narrower[best])
    if not renamed:
        return classes, max_prob, winner
    max_prob, winner = max_prob.copy(), winner.copy()
    for old, mask in [(old, winner == old) for old in renamed]:
        winner[mask], max_prob[mask] = renamed[old], probabilities[renamed[old]][mask]
    named = {renamed.get(c.channel, c.channel) for c in classes}
    kept = [c for c in find_classes(max_prob, winner, threshold, vocabulary) if c.channel in named]
    return kept, readonly(max_prob), readonly(winner)


def _cells(classes: list[FoundClass], max_prob: np.ndarray, winner: np.ndarray, threshold: float) -> dict:
    """Each found class's cells: where it wins above ``threshold`` (channel -> rows x cols bool)."""
    return {c.channel: (winner == c.channel) & (max_prob > threshold) for c in classes}


def find_boxes(
    max_prob: np.ndarray,
    winner: np.ndarray,
    found: list[FoundClass],
    box_threshold: float,
    extent: tuple[float, float, float, float],
    image_size: tuple[int, int],
    join: int = 0,
    min_cells: int = 1,
) -> list[Box]:
    """Boxes around the 8-connected regions where each found class wins above ``box_threshold``.

    Two options the seed does not have (both off by default): regions of one class that ``join`` cells around
    each would make touch share one box (gaps of up to ``2 * join`` cells), and regions of fewer than
    ``min_cells`` cells get no box.

    Args:
        max_prob: per cell, the winning channel's probability.
        winner: per cell, the winning channel.
        found: the classes (or groups) to box.
        box_threshold: the probability a cell must exceed to be part of a region.
        extent: the rectangle of the original image (x0, y0, x1, y1) that the map spans.
        image_size: (width, height) of the original image.
        join: how many cells to grow each region by when deciding which share a box.
        min_cells: the fewest cells a box may hold.

    Returns:
        Boxes in original image pixels, integers, x2/y2 exclusive, clipped to the image; best score first.
    """
    width, height = image_size
    rows, cols = max_prob.shape
    x0, y0, x1, y1 = extent
    cell_w, cell_h = (x1 - x0) / cols, (y1 - y0) / rows
    boxes = []
    for entry in found:
        mask = (winner == entry.channel) & (max_prob > box_threshold)
        if join:  # label the grown regions, then keep only their own cells
            labels = ndimage.label(ndimage.binary_dilation(mask, _EIGHT_CONNECTED, iterations=join), _EIGHT_CONNECTED)
            labels = labels[0] * mask
        else:
            labels = ndimage.label(mask, structure=_EIGHT_CONNECTED)[0]
        for region, slices in enumerate(ndimage.find_objects(labels), start=1):
            if slices is None:  # a bridge between regions has no cell of its own
                continue
            inside = labels[slices] == region
            if min_cells > 1 and inside.sum() < min_cells:
                continue
            rs, cs = slices
            score = float(max_prob[slices][inside].max())
            box = (
                max(0, math.floor(x0 + cs.start * cell_w)),
                max(0, math.floor(y0 + rs.start * cell_h)),
                min(width, math.ceil(x0 + cs.stop * cell_w)),
                min(height, math.ceil(y0 + rs.stop * cell_h)),
            )
            boxes.append(Box(entry.index, entry.label, score, entry.members, entry.wnid, entry.channel, box=box))
    return sorted(boxes, key=lambda b: (-b.score, b.channel, b.box))
