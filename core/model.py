"""The conversion: any registered classifier as a fully convolutional class-map model.

One general rule turns the head ``pool to P x P -> flatten -> per-location ops`` into a map-producing head:

    features (N x C x h x w)
      -> k x k average pool, stride 1     (replaces the global pool; "same" or "valid" padding)
      -> the first Linear as a P x P conv  (P = 1: a 1x1 conv; VGG's fc6: a 7x7 conv)
      -> every later op per location       (Linear as 1x1, LayerNorm over channels, activations as they are)
      -> logits (N x 1000 x h' x w')

For a single Linear head this equals the seed article's k x k convolution with weights W / k^2 replicated over the
kernel (``seed_logit_map`` below, kept as the reference the tests compare against), at a cost of one 1x1 conv
instead of k^2 of them. The trunk runs once; ``features()`` is public so a caller can re-run only the head when the
kernel size changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from core.registry import Backbone, get_backbone
from core.weights import load_state_dict

__all__ = ["ClassMapModel", "Padding", "load_backbone", "seed_logit_map"]

Padding = Literal["same", "valid"]
HeadOp = Callable[[Tensor], Tensor]

# Modules that act on each value (or are inactive at inference): valid per location as they are.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
)
_SKIPPED = (nn.Dropout, nn.Flatten, nn.Identity)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Inference mode with every submodule in eval mode; restores each module's ``training`` flag afterwards."""
    # Only the modules in training mode change, and only they are set back: a model already in eval mode (the usual
    # case) costs one walk over its modules, not ~2 ms of attribute writes per call (EfficientNet-Lite2: 290 modules).
    training = [m for m in module.modules() if m.training]
    try:
        if training:
            module.eval()
        with torch.inference_mode():
            yield
    finally:
        for m in training:
            m.training = True


def _expand(module: nn.Module) -> list[nn.Module]:
    return [leaf for child in module for leaf in _expand(child)] if isinstance(module, nn.Sequential) else [module]


class ClassMapModel(nn.Module):
    """A pretrained classifier that also answers "which class where": its head applied at every location.

    Attributes:
        name: registry name.
        categories: the 1000 ImageNet class names, index order.
        backbone: the registry entry.
        network: the unmodified classifier (``reference_logits`` runs it).
    """

    def __init__(self, backbone: Backbone, network: nn.Module) -> None:
        super().__init__()
        self.name = backbone.name
        self.categories = list(backbone.categories)
        self.backbone = backbone
        self.network = network.eval()
        # The trunk shares the network's modules (and so its weights, dtype and device). It is kept out of the
        # module tree so that parameters and state_dict() are not listed twice.
        trunk = create_feature_extractor(network, return_nodes={backbone.features: "features"})
        object.__setattr__(self, "_trunk", trunk)
        self._head = [m for path in backbone.head for m in _expand(network.get_submodule(path))]
        for module in self._head:
            if not isinstance(module, (nn.Linear, nn.LayerNorm, nn.Conv2d, *_ELEMENTWISE, *_SKIPPED)):
                raise TypeError(f"{self.name}: head module {type(module).__name__} has no per-location form")
            if isinstance(module, nn.Conv2d) and (module.kernel_size != (1, 1) or module.stride != (1, 1)):
                raise TypeError(f"{self.name}: only 1x1 stride-1 convolutions may follow the pool")

    # ---------------------------------------------------------------------------------------------------------
    # Pixels in
    # ---------------------------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image | np.ndarray) -> Tensor:
        """The backbone's own normalisation of an RGB image, no resizing or cropping.

        Args:
            image: a PIL image (converted to RGB) or an H x W x 3 uint8 array.

        Returns:
            A float32 tensor of shape (1, 3, H, W) on the CPU.

        Raises:
            TypeError: not a PIL image or a uint8 array.
            ValueError: an array that is not H x W x 3.
        """
        if isinstance(image, Image.Image):
            array = np.asarray(image.convert("RGB"))
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(f"image array must be uint8 (0..255), got {image.dtype}")
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image array must be H x W x 3 (RGB), got shape {image.shape}")
            array = image
        else:
            raise TypeError(f"image must be a PIL image or an H x W x 3 uint8 array, got {type(image).__name__}")
        norm = self.backbone.normalization
        # One uint8 and one float32 copy, normalised in place: ~2.5x faster at 2048 px than three float32 tensors.
        x = torch.from_numpy(np.array(array, order="C")).permute(2, 0, 1).to(torch.float32)
        mean = torch.tensor(norm.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32).view(3, 1, 1)
        x.sub_(mean).div_(std)
        if norm.bgr:
            x = x.flip(0)
        return x.unsqueeze(0)

    def _to_model(self, x: Tensor) -> Tensor:
        parameter = next(self.network.parameters())
        return x.to(device=parameter.device, dtype=parameter.dtype)

    # ---------------------------------------------------------------------------------------------------------
    # The trunk (run once per image) and the converted head (cheap, re-run per kernel size)
    # ---------------------------------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """The per-location trunk: the tensor the original classifier would pool, N x C x h x w."""
        with evaluating(self.network):
            return self._trunk(self._to_model(x))["features"]

    def head(self, features: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """The converted head on trunk features: class logits at every location, N x 1000 x h' x w'.

        ``padding="same"`` keeps h' x w' = h x w (border windows average only what lies inside);
        ``padding="valid"`` is the seed's convolution: h' = h - kernel_size - P + 2 (P = 7 for VGG, else 1).

        Raises:
            ValueError: a kernel size that is not a positive integer (odd for "same"), an unknown padding, or a
                "valid" window larger than the feature map.
        """
        k = _check_kernel(kernel_size, padding)
        grid = self.backbone.pool_grid
        h, w = features.shape[-2:]
        if padding == "valid" and (h < k + grid - 1 or w < k + grid - 1):
            raise ValueError(
                f"kernel_size {k} with padding 'valid' needs a feature map of at least {k + grid - 1} x "
                f"{k + grid - 1}, but this image gives {h} x {w}: use padding 'same', a smaller kernel or a "
                f"larger image"
            )
        with evaluating(self.network):
            x = features
            if k > 1:
                pad = k // 2 if padding == "same" else 0
                x = F.avg_pool2d(x, k, stride=1, padding=pad, count_include_pad=False)
            return self._apply_head(x, padding)

    def _apply_head(self, x: Tensor, padding: Padding) -> Tensor:
        grid = self.backbone.pool_grid
        if grid > 1:  # the first Linear reads a P x P window of C channels (flatten order C, P, P): a P x P conv
            first = next(i for i, m in enumerate(self._head) if isinstance(m, nn.Linear))
            linear = self._head[first]
            weight = linear.weight.view(linear.out_features, -1, grid, grid)
            x = F.conv2d(x, weight, linear.bias, padding=grid // 2 if padding == "same" else 0)
            rest = self._head[first + 1 :]
        else:
            rest = self._head
        x = x.permute(0, 2, 3, 1)  # channels last: every remaining op acts on the last dim, per location
        for module in rest:
            if isinstance(module, nn.Linear):
                x = F.linear(x, module.weight, module.bias)
            elif isinstance(module, nn.Conv2d):
                x = F.linear(x, module.weight.flatten(1), module.bias)
            elif isinstance(module, nn.LayerNorm):  # includes ConvNeXt's LayerNorm2d: a norm over channels
                x = F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)
            elif isinstance(module, _ELEMENTWISE):
                x = module(x)
        return x.permute(0, 3, 1, 2)

    def logit_map(self, x: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """Class logits at every location of a preprocessed batch: N x 1000 x h' x w'."""
        return self.head(self.features(x), kernel_size, padding)

    def prob_map(self, x: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """Softmax of ``logit_map`` over the classes (dim 1)."""
        return self.logit_map(x, kernel_size, padding).softmax(dim=1)

    def global_logits(self, features: Tensor) -> Tensor:
        """The original classifier's image-level logits (N x 1000), computed from trunk features.

        The pool the classifier used (adaptive, to P x P) followed by the same head: equal to
        ``reference_logits`` on the image that gave ``features``, without re-running the trunk.
        """
        grid = self.backbone.pool_grid
        with evaluating(self.network):
            pooled = F.adaptive_avg_pool2d(features, grid)
            return self._apply_head(pooled, "valid").flatten(1)

    def reference_logits(self, x: Tensor) -> Tensor:
        """The UNMODIFIED original classifier applied to ``x``: N x 1000 logits."""
        with evaluating(self.network):
            return self.network(self._to_model(x))


def _check_kernel(kernel_size: int, padding: str) -> int:
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    if padding == "same" and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd with padding 'same' (a centred window), got {kernel_size}")
    return int(kernel_size)


def seed_logit_map(model: ClassMapModel, features: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
    """The seed article's literal head: a k x k conv with weights W / k^2 replicated over the kernel, bias b.

    Only for heads that start with a Linear right after a global pool; the reference that ``ClassMapModel.head``
    is tested against, and the baseline of the benchmark. With "same" padding the border windows are rescaled to
    average only what lies inside, as the pool does.
    """
    k = _check_kernel(kernel_size, padding)
    if model.backbone.pool_grid != 1 or not model._head or not isinstance(model._head[0], (nn.Linear, nn.Dropout)):
        raise ValueError(f"{model.name}: the seed's form needs a global pool followed by a Linear")
    first = next(i for i, m in enumerate(model._head) if isinstance(m, nn.Linear))
    linear = model._head[first]
    weight = linear.weight[:, :, None, None].expand(-1, -1, k, k) / (k * k)
    pad = k // 2 if padding == "same" else 0
    with evaluating(model.network):
        x = F.conv2d(features, weight, None, padding=pad)
        if pad:  # windows at the border hold fewer than k^2 cells: rescale their sum to an average
            ones = torch.ones_like(features[:1, :1])
            inside = F.conv2d(ones, torch.ones_like(ones[:, :, :1, :1]).expand(1, 1, k, k), padding=pad)
            x = x * (k * k) / inside
        x = x + linear.bias.view(1, -1, 1, 1)
        x = x.permute(0, 2, 3, 1)
        for module in model._head[first + 1 :]:
            x = F.linear(x, module.weight, module.bias) if isinstance(module, nn.Linear) else module(x)
        return x.permute(0, 3, 1, 2)


def load_backbone(
    name: str,
    weights: str | None = "default",
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ClassMapModel:
    """Build a registered backbone as a ``ClassMapModel``.

    Args:
        name: a name from ``core.list_backbones()``.
        weights: "default" (embedded package, or torchvision cache / download), None (random initialisation,
            built exactly as the pretrained model is built), or the path of a local checkpoint (safetensors, or a
            state dict read with ``weights_only=True``).
        device: where to run; CUDA when available, else CPU.
        progress: show a progress bar while downloading.

    Raises:
        ValueError: unknown backbone (the message lists the choices).
        core.weights.WeightsError: weights missing offline, failed to download, or unreadable.
    """
    backbone = get_backbone(name)
    network = backbone.build()
    if weights is not None:
        if not isinstance(weights, str):
            raise TypeError(f"weights must be 'default', None or a checkpoint path, got {type(weights).__name__}")
        state = load_state_dict(backbone, weights, progress=progress)
        _load_checked(network, state, name)
    device = torch.device(device) if device is not None else _default_device()
    network = network.to(device).eval()
    if device.type == "cpu":
        # NHWC weights: oneDNN's CPU convolutions run 1.4-1.6x faster on them (``preprocess`` already hands out
        # NHWC-strided pixels), and the features come out NHWC, so the head's Linear reads them without a transpose.
        # Values change only by float32 rounding (float64 results are as exact as before).
        network = network.to(memory_format=torch.channels_last)
    return ClassMapModel(backbone, network)


def _load_checked(network: nn.Module, state: dict[str, Tensor], name: str) -> None:
    from core.weights import WeightsError

    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise WeightsError(f"these weights do not fit {name!r} ({detail})")
    network.load_state_dict(state, strict=True)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
