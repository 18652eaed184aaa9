"""Many images at once: ``analyze_many``.

The same analysis as ``core.analyze``, organised for throughput:

1. decoding and resizing (PIL, exactly as ``core.prepare`` does them) run in ``torch.utils.data.DataLoader`` workers,
   which hand over small uint8 arrays at the analysis sizes;
2. images whose analysis sizes are equal are stacked into one batch (bucketing, no padding: nothing an image did not
   show ever enters its maps), and each batch's pixels go to the device once, as uint8;
3. normalisation, trunk, head, softmax, group sums and the scales' fusion run batched on the device; one transfer per
   image brings back its small per-cell maps;
4. classes and boxes per image, on the host, and the analyses come out in input order. An image that fails yields a
   ``Failure`` (its error record) and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.analysis import (
    FusedMap,
    Prepared,
    analysis_pixels,
    fused_probabilities,
    image_array,
    pyramid,
    top5_of,
)
from core.cache import get_model
from core.hierarchy import vocabulary
from core.images import ImageError, load_image
from core.model import ClassMapModel, load_backbone
from core.results import Analysis
from core.settings import Settings

__all__ = ["Failure", "analyze_many"]

# Images decoded ahead of the network, per batch: enough to fill buckets of equal sizes in a folder of mixed photos.
_WINDOW_BATCHES = 4


@dataclass(frozen=True)
class Failure:
    """An image that could not be analysed: its error record (``{"image": {"source": ...}, "error": ...}``)."""

    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of a failed image."""
        return {"image": {"source": self.source}, "error": self.error}


@dataclass(frozen=True)
class _Decoded:
    """One image after a worker: its pixels at every analysis size (uint8, H x W x 3), or why it failed."""

    position: int
    source: str
    image_size: tuple[int, int] = (0, 0)
    scales: tuple[tuple[int, int], ...] = ()
    pixels: tuple[np.ndarray, ...] = ()
    notices: tuple[str, ...] = ()
    error: str | None = None


def _source_of(item: Any, position: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.path.basename(os.fspath(item)) or os.fspath(item)
    return f"<image {position}>"


class _Images(Dataset):
    """Decodes and resizes one input per index (in a worker process when ``workers`` > 0)."""

    def __init__(self, items: list[Any], sources: list[str], settings: Settings) -> None:
        self.items, self.sources, self.settings = items, sources, settings

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> _Decoded:
        source = self.sources[position]
        try:
            loaded = load_image(self.items[position], source)
            width, height = loaded.image.size
            sizes, notices = pyramid(width, height, self.settings)
            array = image_array(loaded.image)
            pixels = tuple(analysis_pixels(array, size) for size in sizes)
        except (ImageError, ValueError, OSError) as error:
            return _Decoded(position, source, error=str(error))
        notices = loaded.notices + tuple(notices)
        return _Decoded(position, loaded.source, (height, width), sizes, pixels, notices)


def _unbatched(item: _Decoded) -> _Decoded:
    return item  # the DataLoader hands items over one by one: buckets are formed here, by size


def analyze_many(
    images: Iterable[Any],
    settings: Settings | None = None,
    *,
    backbone: str | ClassMapModel | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    workers: int = 0,
    sources: Iterable[str] | None = None,
) -> Iterator[Analysis | Failure]:
    """Analyse many images, batched; analyses (or failures) come out in input order.

    Args:
        images: file paths, bytes, PIL images or uint8 arrays.
        settings: every setting (default ``Settings()``); ``backbone`` overrides its backbone.
        backbone: a registry name, or a loaded ``ClassMapModel``.
        batch_size: most images per forward pass (images of equal analysis size only).
        device: where the network runs ("cpu", "cuda", ...); default: the cached model's (CUDA when available).
        workers: decoding processes (``DataLoader`` workers); 0 decodes in this process.
        sources: names to report for the images (default: file names, or ``<image N>``).

    Yields:
        An ``Analysis`` per image, or a ``Failure`` for an image that could not be read; never stops early.

    Raises:
        ValueError: a setting, batch size or worker count that is not allowed (before any image is read).
        core.weights.WeightsError: the backbone's weights are missing.
    """
    model = backbone if isinstance(backbone, ClassMapModel) else None
    settings = settings if settings is not None else Settings()
    if backbone is not None:
        settings = settings.replace(backbone=model.name if model is not None else backbone)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if model is None:
        model = (
            get_model(settings.backbone)
            if device is None
            else load_backbone(settings.backbone, device=device, fold_batchnorms=True)
        )
    items = list(images)
    names = list(sources) if sources is not None else [_source_of(item, i) for i, item in enumerate(items)]
    if len(names) != len(items):
        raise ValueError(f"got {len(names)} sources for {len(items)} images")
    loader = DataLoader(
        _Images(items, names, settings),
        batch_size=None,
        num_workers=workers,
        collate_fn=_unbatched,
        prefetch_factor=2 * batch_size if workers else None,
        persistent_workers=False,
    )
    window: list[_Decoded] = []
    for decoded in loader:
        window.append(decoded)
        if len(window) >= batch_size * _WINDOW_BATCHES:
            yield from _analyze_window(window, model, settings, batch_size)
            window = []
    yield from _analyze_window(window, model, settings, batch_size)


def _analyze_window(
    window: list[_Decoded], model: ClassMapModel, settings: Settings, batch_size: int
) -> Iterator[Analysis | Failure]:
    results: dict[int, Analysis | Failure] = {}
    buckets: dict[tuple[tuple[int, int], ...], list[_Decoded]] = {}
    for item in window:
        if item.error is not None:
            results[item.position] = Failure(item.source, item.error)
        else:
            buckets.setdefault(item.scales, []).append(item)
    for bucket in buckets.values():
        for start in range(0, len(bucket), batch_size):
            chunk = bucket[start : start + batch_size]
            for item, analysis in zip(chunk, _analyze_batch(chunk, model, settings), strict=True):
                results[item.position] = analysis
    for item in window:
        yield results[item.position]


def _analyze_batch(chunk: list[_Decoded], model: ClassMapModel, settings: Settings) -> list[Analysis]:
    features = []
    for scale in range(len(chunk[0].scales)):
        pixels = torch.from_numpy(np.stack([item.pixels[scale] for item in chunk]))  # N x H x W x 3, uint8
        features.append(model.features(model.normalize(pixels)))
    vocab = vocabulary(settings.granularity, tuple(model.categories))
    with torch.inference_mode():
        fused = fused_probabilities(model, tuple(features), settings.kernel_size, settings.padding, vocab)
    top5 = top5_of(model, features[-1])
    analyses = []
    for i, item in enumerate(chunk):
        prepared = Prepared(
            model=model,
            settings=settings,
            source=item.source,
            image_size=item.image_size,
            picture=None,  # the batch keeps no photo: the network's small copies are all it needs
            scales=item.scales,
            features=tuple(f[i : i + 1] for f in features),
            top5=top5[i],
            notices=item.notices,
        )
        prepared.keep_maps(settings, FusedMap(fused[i], vocab))
        analyses.append(prepared.analyze(settings))
    return analyses
