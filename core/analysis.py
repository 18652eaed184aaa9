"""From an image to classes, boxes and maps: the analysis, in two stages.

1. ``prepare(image, settings)`` runs the network: the image is resized to each analysis size (one per scale),
   normalised, and run through the trunk; the features of every scale are kept, with the original classifier's
   image-level answer. Only ``Settings.network_key`` (backbone, resolution, scales) matters here.
2. ``Prepared.analyze(settings)`` runs only the converted head and the bookkeeping, on the kept features: per-cell
   softmax -> (sums over groups or synsets) -> the scales' maps fused on one grid -> the answer per cell and its
   probability (the winner; at granularity "adaptive" the most specific synset above ``threshold``) -> classes
   above ``threshold`` -> parts dropped beside their whole -> one answer per object (touching answers of one WordNet
   lineage become one) -> each object named as specifically as the network is sure of it as a whole -> boxes
   (``core.postprocess``). A slider move in the app is stage 2 only.

``analyze(...)`` is both stages at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.cache import get_model
from core.hierarchy import NUM_CLASSES, Vocabulary, vocabulary
from core.images import load_image
from core.model import ClassMapModel, class_softmax
from core.postprocess import (
    find_boxes,
    find_classes,
    hedge_each_object,
    one_answer_per_object,
    parts_give_way,
    scale_checked,
)
from core.results import Analysis, TopClass, readonly
from core.settings import MIN_RESOLUTION, Settings

__all__ = [
    "CLASSIFIER_VIEW",
    "MAX_ANALYSIS_PIXELS",
    "MAX_ENLARGEMENT",
    "SCALE_STEP",
    "SCALE_WEIGHTS",
    "CellEntry",
    "FusedMap",
    "Prepared",
    "analysis_pixels",
    "analysis_size",
    "analyze",
    "channel_sums",
    "fused_probabilities",
    "hedged",
    "image_array",
    "prepare",
    "pyramid",
    "top5_of",
]

# Side in pixels of the square view the classifiers were trained to pool over (ImageNet's 224 x 224 crop). The
# scale check compares each found class with the map pooled over this window (``core.postprocess.scale_checked``).
CLASSIFIER_VIEW = 224
# Each scale of the pyramid is this much larger than the one before (OverFeat used steps of ~1.2-1.5): with three
# scales from 320 px, an object that fills a half or a third of the photo is seen at ~224 px at one of them.
SCALE_STEP = math.sqrt(2.0)
# A scale beyond the first is skipped when it would enlarge the photo more than this: enlarging adds no detail, and
# the network then names the blurred parts of a small photo (QUALITY.md: no cap -0.19, 3x -0.14, 2x -0.15 worst
# margin; 2x runs a 300-px photo at 2 sizes instead of 4, 0.2 of the pixels).
MAX_ENLARGEMENT = 2.0
# How much each scale counts in the fused map, smallest first: the larger scales resolve more of each object and are
# trusted more (QUALITY.md: equal weights -0.19, these -0.15 worst margin; on the check sets -0.23 -> -0.16).
SCALE_WEIGHTS = (1.0, 1.0, 2.0, 3.0)
# Most pixels the network is shown; a larger analysis size (native resolution of a huge photo, or an extreme
# aspect ratio) is scaled down to this, with a notice. Bounds memory: ~2 GB peak for EfficientNet-Lite0.
MAX_ANALYSIS_PIXELS = 4_194_304  # 2048 x 2048


def analysis_size(width: int, height: int, resolution: int | str) -> tuple[tuple[int, int], list[str]]:
    """The (height, width) the network sees for an image, and notices for any change beyond the resolution rule.

    Args:
        width: the original image's width.
        height: the original image's height.
        resolution: the short side in pixels, or "native" (the image as it is); validated by ``Settings``.

    Returns:
        The size, at most ``MAX_ANALYSIS_PIXELS`` and at least 32 px on the short side, and notices.

    Raises:
        ValueError: an aspect ratio too extreme to fit both limits.
    """
    notices = []
    scale = 1.0 if resolution == "native" else resolution / min(width, height)
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


def pyramid(width: int, height: int, settings: Settings) -> tuple[tuple[tuple[int, int], ...], list[str]]:
    """The analysis sizes of every scale, smallest first, and notices (sizes that hit a limit are merged).

    Scale i has the short side ``resolution * SCALE_STEP ** i`` ("native": the image's own short side, then larger).
    Scales after the first that would enlarge the image more than ``MAX_ENLARGEMENT`` times are skipped.
    """
    own = min(width, height)
    base = own if settings.resolution == "native" else settings.resolution
    sizes: list[tuple[int, int]] = []
    notices: list[str] = []
    for level in range(settings.scales):
        resolution = "native" if level == 0 and settings.resolution == "native" else round(base * SCALE_STEP**level)
        if level > 0 and resolution > MAX_ENLARGEMENT * own:
            notices.append(
                f"the image is small ({own} px): {level} of {settings.scales} scales were run, the others would "
                f"enlarge it more than {MAX_ENLARGEMENT:g}x"
            )
            return tuple(sizes), notices
        size, notes = analysis_size(width, height, resolution)
        notices += [n for n in notes if n not in notices]
        if size not in sizes:
            sizes.append(size)
    if len(sizes) < settings.scales:
        notices.append(f"{settings.scales} scales were asked for; the size limit leaves {len(sizes)}")
    return tuple(sizes), notices


def image_array(image: Image.Image) -> np.ndarray:
    """An RGB image's pixels as a writable H x W x 3 uint8 array (one copy; ``analysis_pixels`` reads it per scale)."""
    return np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8, order="C")


def analysis_pixels(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image as the network sees it at ``size`` (height, width): H x W x 3 uint8, resized if needed.

    The one resizing rule of every path (one image, a batch, the benchmarks), so they all give the same maps:
    bilinear, antialiased when reducing (Pillow's bilinear filter over the whole source under its support, computed
    by torch on the uint8 pixels: 2-3x faster than ``PIL.Image.resize`` at a pyramid's sizes, the interpolation
    alone 3-10x, and within two grey levels of it, on a few percent of the values at most:
    ``tests/test_recorded.py``).

    Args:
        image: an RGB PIL image, or its pixels (``image_array``: pass them when resizing one image to several sizes).
        size: (height, width).

    Raises:
        ValueError: an array that is not H x W x 3 uint8.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"pixels must be an H x W x 3 uint8 array, got {image.shape} {image.dtype}")
        pixels = np.require(image, requirements=["C", "W"])  # torch reads it in place: contiguous and writable
    else:
        pixels = image_array(image)
    if size == pixels.shape[:2]:
        return pixels
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # 1 x 3 x H x W, channels-last strides: uint8 fast path
    resized = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)  # 3 planes back
    # H x W x 3 from the three planes: numpy's stack interleaves them 3x faster than torch's permuted copy (1.0
    # against 3.4 ms at 905 x 905 on 2 cores) and 8x faster than numpy's own transposed copy.
    return np.stack(resized[0].numpy(), axis=-1)


@dataclass(frozen=True)
class CellEntry(TopClass):
    """One class (or group) of the probability distribution in one map cell (what the probe shows).

    Attributes:
        index, label, probability: as ``TopClass`` (``index`` is None for a group).
        members: the ImageNet class indices it stands for.
        wnid: its WordNet 3.0 id.
    """

    members: tuple[int, ...] = ()
    wnid: str = ""


_KEPT_ANSWERS = 8  # per fused map, the answers of this many thresholds are kept (adaptive answers depend on it)


class FusedMap:
    """The probability map of one (kernel size, padding, granularity), the scales fused.

    Attributes:
        vocabulary: what the channels stand for.
    """

    def __init__(self, fused: torch.Tensor, vocabulary: Vocabulary) -> None:
        # Every channel's map stays where it was computed; only the small per-cell answers come back, the full
        # map when someone asks for it (the probe).
        self.vocabulary = vocabulary
        self._fused = fused
        self._answers: dict[float | None, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def answer(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Per cell, the answer and its probability: ``(max_prob, winner)``, rows x cols each, read-only.

        The answer is the most probable channel, except at granularity "adaptive" (Hedging Your Bets, Deng et al.
        2012): there it is the most specific channel (fewest classes; ties: the more probable) whose probability
        passes ``threshold``, and where none does, the most probable class. Kept per threshold.
        """
        key = threshold if self.vocabulary.granularity == "adaptive" else None
        with self._lock:
            if key not in self._answers:
                if len(self._answers) >= _KEPT_ANSWERS:  # a slider's last few positions; any float may come in
                    del self._answers[next(iter(self._answers))]
                if key is None:
                    max_prob, winner = self._fused.max(dim=0)
                else:
                    max_prob, winner = hedged(self._fused, torch.from_numpy(self.vocabulary.sizes), threshold)
                self._answers[key] = (readonly(max_prob.float().cpu().numpy()), readonly(winner.cpu().numpy()))
            return self._answers[key]

    @functools.cached_property
    def probabilities(self) -> np.ndarray:
        """Channels x rows x cols, float32, read-only: every channel's probability in every cell."""
        return readonly(self._fused.float().cpu().numpy())

    def channel(self, channel: int) -> np.ndarray:
        """One channel's probability in every cell: rows x cols, float32."""
        return self._fused[channel].float().cpu().numpy()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the map."""
        return (int(self._fused.shape[-2]), int(self._fused.shape[-1]))


def hedged(probs: torch.Tensor, sizes: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell, the most specific channel whose probability passes ``threshold``, and its probability.

    Args:
        probs: V x rows x cols, the adaptive vocabulary's probabilities: the 1000 classes, then the synsets.
        sizes: (V,) the number of classes in each channel.
        threshold: the probability a channel must exceed.

    Returns:
        ``(max_prob, winner)``: rows x cols each (winner int64); where no channel passes, the most probable class.
    """
    best_prob, best = probs[:NUM_CLASSES].max(dim=0)  # a class is as specific as it gets: the best one, if it passes
    synsets = probs[NUM_CLASSES:]
    passing = synsets > threshold
    # Else the synset with the fewest classes; among equal sizes the more probable, then the first (half a
    # probability never outweighs one class more; float64 keeps the probabilities' differences beside sizes up to
    # 129). ``max`` gives the first maximum's index as ``argmax`` does, in a third of the time over channels.
    size = sizes[NUM_CLASSES:].to(probs.device, torch.float64)[:, None, None]
    key = (0.5 * synsets.double()).sub_(size).masked_fill_(~passing, -math.inf)  # a new tensor: probs untouched
    top, synset = key.max(dim=0)
    use_synset = (best_prob <= threshold) & (top > -math.inf)  # no class passes, some synset does
    winner = torch.where(use_synset, synset + NUM_CLASSES, best)
    return probs.gather(0, winner[None])[0], winner


def channel_sums(probs: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Class probabilities (N x 1000 x h x w) summed into ``vocab``'s channels (N x V x h x w).

    Exact: the classes are disjoint, so P(channel) is the sum of its members' P. At granularity "class", ``probs``.
    On the CPU one sparse product per image (a channels x 1000 matrix of ones), bit-equal to adding the members one
    by one and a third of the time of gathering them (``tests/test_analysis.py``); on other devices, where that
    was not measured, the members gathered and added by index.
    """
    if vocab.sums is None:
        return probs
    if probs.device.type != "cpu":
        return _gathered_sums(probs, vocab)
    n, classes, h, w = probs.shape
    matrix = _sum_matrix(vocab, probs.dtype)
    # The product reads the classes row by row: a channels-last map (``class_softmax``'s) is copied into that layout
    # first (0.5 ms at 1000 x 34 x 29; read across its strides, the product takes 3.8 ms instead of 1.5).
    sums = [torch.sparse.mm(matrix, image.contiguous().view(classes, h * w)) for image in probs]
    return torch.stack(sums).view(n, len(vocab), h, w)


def _gathered_sums(probs: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    # channel_sums off the CPU: every member's map gathered, then added into its channel by index.
    channels, members = (torch.from_numpy(a).to(probs.device) for a in vocab.sums)
    summed = probs.new_zeros((probs.shape[0], len(vocab), *probs.shape[2:]))
    return summed.index_add_(1, channels, probs.index_select(1, members))


@functools.lru_cache(maxsize=16)
def _sum_matrix(vocab: Vocabulary, dtype: torch.dtype) -> torch.Tensor:
    # vocab.sums as a sparse (CSR) channels x 1000 matrix of ones: its pairs come channel by channel, in order.
    classes = vocab.sums[1]
    rows = np.concatenate([[0], np.cumsum(vocab.sizes)])
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(rows),
            torch.from_numpy(classes),
            torch.ones(len(classes), dtype=dtype),
            size=(len(vocab), NUM_CLASSES),
        )


def fused_probabilities(
    model: ClassMapModel, features: tuple[torch.Tensor, ...], kernel_size: int, padding: str, vocab: Vocabulary
) -> torch.Tensor:
    """The per-cell distribution over ``vocab``, the scales' maps averaged on the finest grid: N x V x rows x cols.

    Scale i counts ``SCALE_WEIGHTS[i]`` times (a weighted mean, so each cell still sums to 1).

    Args:
        model: the network whose head to run.
        features: the trunk's output at each scale, smallest first (N x C x h x w each).
        kernel_size: the head's window, in feature cells.
        padding: "same" or "valid".
        vocab: classes, groups or synsets (a channel's probability is the sum of its members').

    Returns:
        The fused probabilities, on the features' device.
    """
    # Summing into the vocabulary and fusing the scales are both linear, so either may come first: the one that
    # leaves fewer channels to resample goes first (groups: 218 before fusing; synsets: 1382 after, 13% faster at
    # four scales).
    sum_first = len(vocab) <= NUM_CLASSES

    def probs_of(x: torch.Tensor) -> torch.Tensor:
        probs = class_softmax(model.head(x, kernel_size, padding))
        return channel_sums(probs, vocab) if sum_first else probs

    fused = probs_of(features[-1])
    if len(features) > 1:  # OverFeat's multi-scale dense evaluation: the maps averaged on the finest grid
        weights = SCALE_WEIGHTS[: len(features)]
        fused = fused * weights[-1]
        for x, weight in zip(features[:-1], weights, strict=False):
            up = F.interpolate(probs_of(x), size=fused.shape[-2:], mode="bilinear", align_corners=False)
            fused = fused + weight * up
        fused = fused / sum(weights)
    return fused if sum_first else channel_sums(fused, vocab)


@dataclass(frozen=True)
class Prepared:
    """An image after the network: the features of every scale, ready for any head settings.

    Attributes:
        model: the network that made the features.
        settings: the settings it was prepared with (their ``network_key`` is fixed; the rest is a default).
        source: the image's name.
        image_size: (height, width) of the original image.
        picture: the photo to draw on: the original, or a copy reduced to ``prepare``'s ``picture_side``; None when
            not kept (``analyze_many`` keeps none unless asked).
        scales: the (height, width) of every analysis size, smallest first.
        features: the trunk's output at each scale (N=1 x C x h x w), on the model's device.
        top5: the unmodified classifier's answer at the largest scale.
        notices: what was done to the image on the way in.
    """

    model: ClassMapModel
    settings: Settings
    source: str
    image_size: tuple[int, int]
    picture: Image.Image | None = field(repr=False)
    scales: tuple[tuple[int, int], ...]
    features: tuple[torch.Tensor, ...] = field(repr=False)
    top5: tuple[TopClass, ...]
    notices: tuple[str, ...] = ()
    # (kernel size, padding, granularity) -> the fused map: a threshold change reuses it instead of re-running heads.
    _maps: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def analysis_size(self) -> tuple[int, int]:
        """The largest size the network saw."""
        return self.scales[-1]

    def first_scales(self, count: int) -> Prepared:
        """The same image with only its ``count`` smallest scales, without running the network again.

        What ``prepare`` with ``scales=count`` would give (whenever the pyramid had room for them). Maps are not shared.

        Raises:
            ValueError: ``count`` not in 1..len(scales).
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(self.scales):
            raise ValueError(f"count must be an integer from 1 to {len(self.scales)}, got {count!r}")
        return dataclasses.replace(
            self,
            settings=self.settings.replace(scales=count),
            scales=self.scales[:count],
            features=self.features[:count],
            top5=top5_of(self.model, self.features[count - 1])[0],
        )

    def clear_maps(self) -> None:
        """Forget the maps computed so far (the next ``analyze`` runs the head again; benchmarks of a first move)."""
        with self._lock:
            self._maps.clear()

    def feature_bytes(self) -> int:
        """Memory held by the features (what a cache of prepared images should count)."""
        return sum(f.numel() * f.element_size() for f in self.features)

    # -------------------------------------------------------------------------------------------------------------
    def maps(self, settings: Settings | None = None) -> FusedMap:
        """The fused probability map for these settings' head (kept: the next call with them is free).

        Raises:
            ValueError: settings for another backbone, resolution or number of scales.
        """
        settings = self._settings(settings, {})
        return self._fused(settings.kernel_size, settings.padding, settings.granularity)

    def _fused(self, kernel_size: int, padding: str, granularity: str, smallest_only: bool = False) -> FusedMap:
        # smallest_only: the smallest scale's map alone (the scale check's view), whatever the settings' scales.
        key = (kernel_size, padding, granularity) + (("smallest",) if smallest_only else ())
        with self._lock:
            if key not in self._maps:
                vocab = vocabulary(granularity, tuple(self.model.categories))
                features = self.features[:1] if smallest_only else self.features
                with torch.inference_mode():
                    fused = fused_probabilities(self.model, features, kernel_size, padding, vocab)
                self._maps[key] = FusedMap(fused[0], vocab)
            return self._maps[key]

    def classifier_top5(self) -> tuple[TopClass, ...]:
        """What the unmodified classifier answers for the whole photo at its own input size.

        The whole kept picture resized to the classifier's input, ``CLASSIFIER_VIEW`` x ``CLASSIFIER_VIEW`` (224 x 224:
        nothing cropped, the aspect ratio not kept), through the unchanged network: the answer a viewer can compare
        with any classification demo. On the six examples it is the sharpest of the three usual views (short side
        224: a 3:1 photo averages a cat and a cup into 7% / 4%; centre crop: half the photo unseen). ``top5`` is the
        same classifier pooled over the (larger) analysis size, where many cells average into a flatter answer. One
        small forward pass, the first time.

        Raises:
            ValueError: no picture was kept (``analyze_many`` keeps none).
        """
        if self.picture is None:
            raise ValueError("no picture was kept for this image, so the classifier cannot see it whole")
        with self._lock:
            if ("classifier",) not in self._maps:
                pixels = torch.from_numpy(analysis_pixels(self.picture, (CLASSIFIER_VIEW, CLASSIFIER_VIEW)))[None]
                logits = self.model.reference_logits(self.model.normalize(pixels))
                self._maps[("classifier",)] = _top5(self.model, logits)[0]
            return self._maps[("classifier",)]

    def keep_maps(self, settings: Settings, maps: FusedMap) -> None:
        """Keep maps computed elsewhere for these settings' head (a batch computes them for all its images at once)."""
        with self._lock:
            self._maps[(settings.kernel_size, settings.padding, settings.granularity)] = maps

    def _view_winner(self, settings: Settings, grid: tuple[int, int]) -> np.ndarray | None:
        """The winner per cell when the head pools over the classifier's training view (None: not wider than k)."""
        features = self.features[0]  # the smallest scale: where the view covers the most
        stride = self.scales[0][0] / features.shape[-2]
        view = max(1, round(CLASSIFIER_VIEW / stride) - self.model.backbone.pool_grid + 1)
        view = view if view % 2 else view + 1
        if view <= settings.kernel_size:
            return None
        winner = self._fused(view, "same", settings.granularity, smallest_only=True).answer(settings.threshold)[1]
        if settings.padding == "valid":  # the "valid" map starts (k - 1 + P - 1) / 2 cells in: align the view's map
            inset = (settings.kernel_size - 1 + self.model.backbone.pool_grid - 1) // 2
            return winner[inset : inset + grid[0], inset : inset + grid[1]]
        if winner.shape != grid:  # several scales: the view's map is the smallest scale's, on the fused grid
            rows = (np.arange(grid[0]) * winner.shape[0]) // grid[0]
            cols = (np.arange(grid[1]) * winner.shape[1]) // grid[1]
            return winner[np.ix_(rows, cols)]
        return winner

    def _settings(self, settings: Settings | None, changes: dict[str, Any]) -> Settings:
        settings = (settings or self.settings).replace(**changes) if changes else (settings or self.settings)
        if settings.network_key != self.settings.network_key:
            raise ValueError(
                f"these features are for backbone {self.settings.backbone!r} at resolution "
                f"{self.settings.resolution!r} with {self.settings.scales} scale(s); prepare the image again for "
                f"{settings.backbone!r} at {settings.resolution!r} with {settings.scales}"
            )
        return settings

    def _extent(self, map_shape: tuple[int, int], settings: Settings) -> tuple[float, float, float, float]:
        # A map cell is a window of feature cells; a feature cell covers (image size / feature size) pixels.
        # "same": the map is the feature grid. "valid": it is smaller by (k - 1) + (P - 1) cells and starts that
        # many half-cells in from the edge.
        fh, fw = self.features[-1].shape[-2:]
        height, width = self.image_size
        inset = 0.0
        if settings.padding == "valid":
            inset = (settings.kernel_size - 1 + self.model.backbone.pool_grid - 1) / 2
        cell_h, cell_w = height / fh, width / fw
        return (inset * cell_w, inset * cell_h, (inset + map_shape[1]) * cell_w, (inset + map_shape[0]) * cell_h)

    # -------------------------------------------------------------------------------------------------------------
    def analyze(self, settings: Settings | None = None, **changes: Any) -> Analysis:
        """Classes, boxes and maps for these settings, from the kept features (the network does not run again).

        Args:
            settings: the settings (default: those it was prepared with); only their head part may differ.
            **changes: single settings to change on top, e.g. ``threshold=0.6``.

        Returns:
            The analysis.

        Raises:
            ValueError: a setting that is not allowed, a change of backbone, resolution or scales (prepare again),
                or a "valid" kernel larger than the feature map.
        """
        settings = self._settings(settings, changes)
        maps = self._fused(settings.kernel_size, settings.padding, settings.granularity)
        max_prob, winner = maps.answer(settings.threshold)
        classes = find_classes(max_prob, winner, settings.threshold, maps.vocabulary, settings.min_cells)
        if settings.scale_check:
            view_winner = self._view_winner(settings, winner.shape)
            if view_winner is not None:
                classes = scale_checked(classes, max_prob, winner, view_winner, settings.box_threshold)
        if settings.part_ratio:
            classes = parts_give_way(classes, max_prob, winner, settings.threshold, settings.part_ratio)
        classes, max_prob, winner = one_answer_per_object(classes, max_prob, winner, settings.threshold, maps.channel)
        classes, max_prob, winner = hedge_each_object(
            classes, max_prob, winner, settings.threshold, maps.vocabulary, maps.probabilities
        )
        extent = self._extent(max_prob.shape, settings)
        height, width = self.image_size
        boxes = find_boxes(max_prob, winner, classes, settings.box_threshold, extent, (width, height))
        return Analysis(
            source=self.source,
            image_size=self.image_size,
            settings=settings,
            analysis_size=self.analysis_size,
            scales=self.scales,
            map_size=(int(max_prob.shape[0]), int(max_prob.shape[1])),
            classes=tuple(classes),
            boxes=tuple(boxes),
            top5=self.top5,
            max_prob=max_prob,
            winner=winner,
            extent=extent,
            vocabulary=maps.vocabulary,
            notices=self.notices,
        )

    def probe(self, x: float, y: float, settings: Settings | None = None, top: int = 5) -> tuple[CellEntry, ...]:
        """The ``top`` classes (or groups) of the map cell under the point (x, y), in original image pixels.

        Args:
            x: a point's horizontal position in the original image, in pixels.
            y: its vertical position.
            settings: the head settings (default: those it was prepared with).
            top: how many entries.

        Returns:
            The cell's most probable classes or groups, most probable first, from the kept maps (no network run).
            At granularity "adaptive": the cell's answer (when one passes the threshold), then its most probable
            classes.

        Raises:
            ValueError: a point outside the part of the image the map spans, or settings as for ``analyze``.
        """
        settings = self._settings(settings, {})
        maps, row, col, _ = self._cell(x, y, settings)
        cell = maps.probabilities[:, row, col]
        vocab = maps.vocabulary
        if vocab.granularity == "adaptive":  # the cell's answer, then the classes it was drawn from
            max_prob, winner = maps.answer(settings.threshold)
            answer = [int(winner[row, col])] if max_prob[row, col] > settings.threshold else []
            classes = np.argsort(-cell[:NUM_CLASSES], kind="stable")
            order = (answer + [int(c) for c in classes if c not in answer])[:top]
        else:
            order = np.argsort(-cell, kind="stable")[:top]
        return tuple(
            CellEntry(vocab.index(int(c)), vocab.labels[c], float(cell[c]), vocab.members[c], vocab.wnids[c])
            for c in order
        )

    def cell_box(self, x: float, y: float, settings: Settings | None = None) -> tuple[float, float, float, float]:
        """The rectangle (x0, y0, x1, y1, original pixels) of the map cell under (x, y), for marking it.

        Raises:
            ValueError: as ``probe``.
        """
        _, row, col, (x0, y0, cw, ch) = self._cell(x, y, self._settings(settings, {}))
        return (x0 + col * cw, y0 + row * ch, x0 + (col + 1) * cw, y0 + (row + 1) * ch)

    def _cell(self, x: float, y: float, settings: Settings) -> tuple[FusedMap, int, int, tuple[float, ...]]:
        # The map, the cell under (x, y), and the map's origin and cell size in original pixels.
        maps = self._fused(settings.kernel_size, settings.padding, settings.granularity)
        rows, cols = maps.shape
        x0, y0, x1, y1 = self._extent((rows, cols), settings)
        if not (x0 <= x < x1 and y0 <= y < y1):
            raise ValueError(f"the point ({x:g}, {y:g}) is outside the part of the image the map covers")
        cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
        row, col = min(rows - 1, int((y - y0) / ch)), min(cols - 1, int((x - x0) / cw))
        return maps, row, col, (x0, y0, cw, ch)


def top5_of(model: ClassMapModel, features: torch.Tensor) -> list[tuple[TopClass, ...]]:
    """The unmodified classifier's five best classes for each image of a batch of trunk features (N x C x h x w)."""
    return _top5(model, model.global_logits(features))


def _top5(model: ClassMapModel, logits: torch.Tensor) -> list[tuple[TopClass, ...]]:
    values, indices = logits.softmax(dim=1).topk(5, dim=1)
    return [
        tuple(TopClass(int(i), model.categories[int(i)], float(v)) for v, i in zip(vs, js, strict=True))
        for vs, js in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def prepare(
    image: Any,
    settings: Settings | None = None,
    *,
    model: ClassMapModel | None = None,
    source: str | None = None,
    picture_side: int | None = None,
) -> Prepared:
    """Run the network on an image: everything ``Prepared.analyze`` needs for any head settings.

    Args:
        image: a file path, bytes, PIL image or uint8 array.
        settings: the settings (default ``Settings()``); the backbone, resolution and scales are used here.
        model: a loaded model to use instead of the cached one for ``settings.backbone``.
        source: the name to report for the image (defaults to the file name).
        picture_side: keep the photo for drawing at most this many pixels on its long side (None: as it is).
            The app keeps screen-sized pictures, so a session never holds a 48-megapixel photo.

    Returns:
        The prepared image.

    Raises:
        core.images.ImageError: the image cannot be read.
        ValueError: an aspect ratio too extreme to analyse.
        core.weights.WeightsError: the backbone's weights are missing.
    """
    settings = settings if settings is not None else Settings()
    model = model if model is not None else get_model(settings.backbone)
    loaded = load_image(image, source)
    width, height = loaded.image.size
    sizes, notices = pyramid(width, height, settings)
    array = image_array(loaded.image)
    features = []
    for size in sizes:
        pixels = torch.from_numpy(analysis_pixels(array, size))[None]  # 1 x H x W x 3, as bytes
        features.append(model.features(model.normalize(pixels)))
    picture = loaded.image
    if picture_side is not None and max(width, height) > picture_side:
        scale = picture_side / max(width, height)
        picture = picture.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
        )
    return Prepared(
        model=model,
        settings=settings.replace(backbone=model.name) if settings.backbone != model.name else settings,
        source=loaded.source,
        image_size=(height, width),
        picture=picture,
        scales=sizes,
        features=tuple(features),
        top5=top5_of(model, features[-1])[0],
        notices=loaded.notices + tuple(notices),
    )


def analyze(
    image: Any,
    backbone: str | ClassMapModel | None = None,
    kernel_size: int | None = None,
    threshold: float | None = None,
    box_threshold: float | None = None,
    resolution: int | str | None = None,
    *,
    settings: Settings | None = None,
    source: str | None = None,
    **changes: Any,
) -> Analysis:
    """Analyse one image: the classes it shows, where, and the classifier's own top 5 (``docs/CONTRACT.md``).

    Args:
        image: a file path, bytes, PIL image or uint8 array.
        backbone: a registry name, or a loaded ``ClassMapModel``.
        kernel_size: one setting, on top of ``settings`` (as are the next three).
        threshold: one setting.
        box_threshold: one setting.
        resolution: one setting.
        settings: every setting at once (default ``Settings()``, the project's measured defaults).
        source: the name to report for the image (defaults to the file name).
        **changes: any other setting by name (``padding``, ``scale_check``, ``granularity``, ``scales``,
            ``min_cells``).

    Returns:
        The analysis.

    Raises:
        ValueError: a setting that is not allowed (checked before the network runs).
        core.images.ImageError: the image cannot be read.
        core.weights.WeightsError: the backbone's weights are missing.
    """
    model = backbone if isinstance(backbone, ClassMapModel) else None
    named = {
        "backbone": model.name if model is not None else backbone,
        "kernel_size": kernel_size,
        "threshold": threshold,
        "box_threshold": box_threshold,
        "resolution": resolution,
        **changes,
    }
    settings = (settings or Settings()).replace(**{k: v for k, v in named.items() if v is not None})
    return prepare(image, settings, model=model, source=source).analyze(settings)
