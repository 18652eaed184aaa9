"""Class Map Explorer's engine: an ImageNet classifier's head as a convolution, and what its maps show.

Read top-down, the modules are the pipeline:

- ``core.registry``     which networks, where their features end, what their head is, how they normalise (data);
- ``core.weights``      where the weights come from (embedded packages, torchvision cache/download, checkpoints);
- ``core.model``        the conversion: one rule turns any registered head into a per-location head;
- ``core.cache``        loaded networks, shared;
- ``core.images``       decoding user images safely into upright RGB;
- ``core.hierarchy``    the 1000 classes and their WordNet groups (what a map's channels stand for);
- ``core.settings``     ``Settings``: every analysis setting in one validated value;
- ``core.results``      what an analysis returns (frozen dataclasses) and its JSON (docs/CONTRACT.md);
- ``core.analysis``     image -> features of every scale (``prepare``) -> fused maps -> an ``Analysis``;
- ``core.postprocess``  maps -> classes (or groups) and boxes;
- ``core.batch``        many images at once (``analyze_many``): decoding workers, equal sizes batched, input order;
- ``core.ray_engine``   the same on Ray Data, beyond one machine (optional);
- ``core.render``       pseudo-CAM overlays and the box view (PIL images);
- ``core.cli``          the ``classmap`` command.
"""

import os

# OpenMP threads that spin while waiting steal the CPU from each other when an app serves a stream and a photo at
# once on few cores (a webcam frame took 0.8-2 s instead of 0.1 s on 2 busy cores). Sleeping waits cost nothing
# measurable for a single analysis. Must be set before torch loads its OpenMP runtime; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from core.analysis import CellEntry, Prepared, analyze, prepare
from core.batch import Failure, analyze_many
from core.cache import get_model
from core.images import ImageError, load_image
from core.model import ClassMapModel, load_backbone
from core.registry import DEFAULT_BACKBONE, list_backbones
from core.results import Analysis, Box, FoundClass, TopClass
from core.settings import Settings
from core.weights import WeightsError

__all__ = [
    "DEFAULT_BACKBONE",
    "Analysis",
    "Box",
    "CellEntry",
    "ClassMapModel",
    "Failure",
    "FoundClass",
    "ImageError",
    "Prepared",
    "Settings",
    "TopClass",
    "WeightsError",
    "analyze",
    "analyze_many",
    "get_model",
    "list_backbones",
    "load_backbone",
    "load_image",
    "prepare",
]
