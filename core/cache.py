"""Loaded networks, kept in memory and shared: the model cache.

Loading a backbone takes seconds (and a download the first time), so the app, the CLI and ``core.analyze`` share
the three most recently used. Loading is serialised: two users asking for the same backbone at once load it once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

import torch

from core.model import ClassMapModel, load_backbone
from core.registry import DEFAULT_BACKBONE, get_backbone

__all__ = ["clear_model_cache", "get_model", "intra_op_threads"]

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=int(os.environ.get("CLASSMAP_MODEL_CACHE", "3")))
def _cached(name: str, weights: str | None) -> ClassMapModel:
    return load_backbone(name, weights, fold_batchnorms=True)


def get_model(name: str = DEFAULT_BACKBONE, weights: str | None = "default") -> ClassMapModel:
    """A loaded backbone from the cache (the three most recently used stay in memory).

    Args:
        name: a registry name.
        weights: "default", None (random) or a checkpoint path, as ``core.load_backbone``.

    Returns:
        The shared model, its BatchNorms folded for inference (``ClassMapModel.fold_batchnorms``); callers must
        not change it.

    Raises:
        ValueError: an unknown backbone (the message lists the choices).
        core.weights.WeightsError: the weights are missing or unreadable.
    """
    get_backbone(name)  # unknown names fail here, with the list of choices, before any lock is taken
    with _LOCK:
        return _cached(name, weights)


def clear_model_cache() -> None:
    """Forget every loaded model (tests that change how models load; freeing memory)."""
    with _LOCK:
        _cached.cache_clear()


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``count``, then restore it.

    The setting is process-wide: the caller makes sure no other network run overlaps the block (the app holds its
    compute lock).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
