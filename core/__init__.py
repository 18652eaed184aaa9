"""Class Map Explorer's engine: an ImageNet classifier's head as a convolution, and what its maps show.

Read top-down, the modules are the pipeline:

- ``core.registry``  which networks, where their features end, what their head is, how they normalise (data);
- ``core.weights``   where the weights come from (embedded packages, torchvision cache/download, checkpoints);
- ``core.model``     the conversion: one rule turns any registered head into a per-location head;
- ``core.images``    decoding user images safely into upright RGB;
- ``core.analysis``  probability maps -> classes, boxes, top 5 (the JSON of CONTRACT.md);
- ``core.render``    pseudo-CAM overlays and the box view (PIL images);
- ``core.cli``       the ``classmap`` command.
"""

from core.analysis import Analysis, Box, FoundClass, Prepared, TopClass, analyze, prepare
from core.images import ImageError, load_image
from core.model import ClassMapModel, load_backbone
from core.registry import DEFAULT_BACKBONE, list_backbones
from core.weights import WeightsError

__all__ = [
    "DEFAULT_BACKBONE",
    "Analysis",
    "Box",
    "ClassMapModel",
    "FoundClass",
    "ImageError",
    "Prepared",
    "TopClass",
    "WeightsError",
    "analyze",
    "list_backbones",
    "load_backbone",
    "load_image",
    "prepare",
]
