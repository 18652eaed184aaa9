"""What every benchmark shares: the run's settings, the backbones (loaded once) and the test photo."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

import core
from core.model import ClassMapModel
from core.registry import BACKBONES as BACKBONE_ENTRIES
from core.registry import DEFAULT_BACKBONE

__all__ = ["EXAMPLES", "PHOTO", "Config", "model", "photo", "weights_note"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# A real photo with two objects (a cat and a coffee cup): the default backbone finds classes in it, so the overlays
# that the end-to-end timings include are really drawn.
PHOTO = EXAMPLES / "cat_and_coffee.jpg"
# The backbones the issue names: the seed article's GoogLeNet, ResNet-50, and the offline default (plus the current
# default, should it be another).
BACKBONES = tuple(dict.fromkeys(("googlenet", "resnet50", "efficientnet_lite0", DEFAULT_BACKBONE)))


@dataclass(frozen=True)
class Config:
    """One run's settings. ``--quick`` is a smoke run: one backbone, small sizes, two rounds."""

    quick: bool = False
    backbones: tuple[str, ...] = BACKBONES
    conversion_sizes: tuple[int, ...] = (224, 512, 1024)
    e2e_sizes: tuple[int, ...] = (224, 512, 1024, 2048)
    slider_size: int = 1024
    peer_sizes: tuple[int, ...] = (224, 448)
    memory_sizes: tuple[tuple[int, int], ...] = ((1024, 1024), (2048, 2048), (4096, 4096), (8000, 6000))
    webcam_frames: int = 15
    app_repeats: int = 3

    @classmethod
    def make(cls, quick: bool) -> Config:
        if not quick:
            return cls()
        return cls(
            quick=True,
            backbones=(DEFAULT_BACKBONE,),
            conversion_sizes=(224,),
            e2e_sizes=(224, 512),
            slider_size=512,
            peer_sizes=(224,),
            memory_sizes=((1024, 1024), (2048, 2048)),
            webcam_frames=4,
            app_repeats=1,
        )

    def repeats(self, pixels: int) -> int:
        """Most timed rounds for an input of this many pixels: fewer for the big, slow ones (2 in a quick run)."""
        if self.quick:
            return 2
        side = pixels**0.5
        return 7 if side <= 300 else 5 if side <= 600 else 3

    @property
    def budget(self) -> float:
        """Seconds of timed rounds per comparison after which no new round starts (at least 2 rounds run)."""
        return 4.0 if self.quick else 15.0


def real_weights(name: str) -> bool:
    """Whether a backbone runs with its real weights here: the offline ones, whose weights are installed packages.

    The others are timed with random weights (same architecture, same cost): torchvision's pretrained weights cannot
    be downloaded on the benchmark machine, and a download must not be part of a timing.
    """
    return BACKBONE_ENTRIES[name].offline


@functools.cache
def model(name: str, *, folded: bool = False) -> ClassMapModel:
    """A backbone, loaded once: real weights where installed (the offline backbones), random ones otherwise.

    Random weights are drawn from a fixed seed, so the classes they happen to "find" (and the overlays drawn for
    them) are the same from run to run.

    Args:
        name: a registry name.
        folded: its BatchNorms folded into the convolutions, as ``core.get_model`` serves it to the app, the CLI
            and ``core.analyze`` (what "ours" runs); False: the unmodified classifier (the baselines).
    """
    if real_weights(name):
        return core.load_backbone(name, fold_batchnorms=folded)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return core.load_backbone(name, weights=None, fold_batchnorms=folded)


def weights_note(name: str) -> str:
    return "real" if real_weights(name) else "random"


@functools.cache
def _photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def photo(width: int, height: int | None = None) -> Image.Image:
    """The test photo resized (bicubic) to width x height (square when height is None)."""
    return _photo().resize((width, height or width), Image.Resampling.BICUBIC)
