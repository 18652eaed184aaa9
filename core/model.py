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
import functools
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.layers import BatchNormAct2d, Conv2dSame
from timm.layers.padding import get_same_padding
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torchvision.models.feature_extraction import create_feature_extractor

from core.registry import INACTIVE, Backbone, Normalization, get_backbone, head_problem, timm_head
from core.weights import load_weights

__all__ = ["ClassMapModel", "Padding", "class_softmax", "evaluating", "load_backbone", "seed_logit_map"]

Padding = Literal["same", "valid"]


class _RunsAndTraces:
    """Many threads may run networks at once; tracing one must wait until none runs, and they wait for it.

    While torch.fx traces a network (``create_feature_extractor``, when a torchvision backbone is built) it patches
    ``torch.nn.Module.__call__`` for the whole process: a network running in another thread meanwhile (the app's
    warm-up, another user's analysis) would be routed into the tracer and fail. Runs share (they may nest: a run
    inside a run never waits); a trace is exclusive.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._runs = 0
        self._tracing = False

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._tracing)
            self._runs += 1
        try:
            yield
        finally:
            with self._changed:
                self._runs -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def trace(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._tracing and not self._runs)
            self._tracing = True
        try:
            yield
        finally:
            with self._changed:
                self._tracing = False
                self._changed.notify_all()


_RUNS_AND_TRACES = _RunsAndTraces()


@contextlib.contextmanager
def evaluating(module: nn.Module, modules: tuple[nn.Module, ...] | None = None) -> Iterator[None]:
    """Inference mode with every submodule in eval mode; restores each module's ``training`` flag afterwards.

    Args:
        module: the network to run.
        modules: ``tuple(module.modules())`` when the caller keeps it (a walk of the module tree costs ~1 ms for
            EfficientNet-Lite2, and an analysis enters this block about seven times).

    Yields:
        Nothing; inside the block the network is in eval mode under ``torch.inference_mode()``, and no torch.fx
        trace runs anywhere in the process (``_RunsAndTraces``).
    """
    # Only the modules in training mode change, and only they are set back: a model already in eval mode (the usual
    # case) costs one pass over its modules, not ~2 ms of attribute writes per call (EfficientNet-Lite2: 290 modules).
    training = [m for m in (modules if modules is not None else module.modules()) if m.training]
    try:
        if training:
            module.eval()
        with _RUNS_AND_TRACES.run(), torch.inference_mode():
            yield
    finally:
        for m in training:
            m.training = True


def _expand(path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(module, nn.Sequential):
        return [(path, module)]
    return [leaf for name, child in module.named_children() for leaf in _expand(f"{path}.{name}", child)]


class ClassMapModel(nn.Module):
    """A pretrained classifier that also answers "which class where": its head applied at every location.

    Attributes:
        name: registry name.
        categories: the 1000 ImageNet class names, index order.
        backbone: the registry entry.
        network: the unmodified classifier (``reference_logits`` runs it).
    """

    def __init__(self, backbone: Backbone, network: nn.Module) -> None:
        """Wrap ``network`` (built by ``backbone.build``) for per-location answers.

        Args:
            backbone: the registry entry.
            network: the classifier, weights loaded or not (it is shared, not copied).

        Raises:
            ValueError: a head module with no per-location form, or (timm) a ``forward_head`` that the converted head
                does not reproduce.
        """
        super().__init__()
        self.name = backbone.name
        self.categories = list(backbone.categories)
        self.backbone = backbone
        self.network = network.eval()
        # The trunk shares the network's modules (and so its weights, dtype and device). It is kept out of the
        # module tree so that parameters and state_dict() are not listed twice.
        self.folded_batchnorms = 0
        self._build_trunk()
        paths = backbone.head if backbone.head is not None else timm_head(network)
        named = [leaf for path in paths for leaf in _expand(path, network.get_submodule(path))]
        for path, module in named:
            problem = head_problem(path, module)
            if problem is not None:
                raise ValueError(f"{self.name}: {problem}")
        self._head = tuple(module for _, module in named)
        if backbone.features is None:
            self._check_against_forward_head()

    def _build_trunk(self) -> None:
        # The module tree is fixed from here on (``fold_batchnorms`` calls this again after changing it).
        object.__setattr__(self, "_network_modules", tuple(self.network.modules()))
        if self.backbone.features is None:  # timm: the network's own split
            trunk = self.network.forward_features
        else:
            with _RUNS_AND_TRACES.trace():  # no network may run anywhere while torch.fx traces this one
                extractor = create_feature_extractor(self.network, return_nodes={self.backbone.features: "features"})
            trunk = _FirstOutput(extractor)
        object.__setattr__(self, "_trunk", trunk)

    def fold_batchnorms(self) -> int:
        """Fold each BatchNorm that only reads a convolution's output into that convolution (for inference).

        In eval mode a BatchNorm is a per-channel ``a * x + b``; after a convolution it can be folded into the
        convolution's weights and bias, and the network skips one pass over every such feature map (~25% of
        EfficientNet-Lite2's CPU time). Which convolution feeds which BatchNorm is read from one small run of the
        trunk, watching every tensor operation: a pair is folded only when the convolution's output goes to that
        BatchNorm and nowhere else, and each module runs once. Only plain convolutions (``nn.Conv2d``, timm's
        ``Conv2dSame``) and BatchNorms (``nn.BatchNorm2d``, timm's ``BatchNormAct2d``, which keeps its activation)
        are folded; the converted head is left as it is.

        The network then computes the same function up to float32 rounding (about 1e-6 of the logits), but it is
        changed for good: its ``state_dict`` differs from the checkpoint's and it cannot be trained. The shared
        models of ``core.get_model`` are folded; ``load_backbone`` leaves a network as it is unless asked.

        Returns:
            How many BatchNorms were folded (0 when called again).

        Raises:
            RuntimeError: the folded trunk's output differs from the unfolded one's (a bug of this rule).
        """
        parameter = next(self.network.parameters())
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(1, 3, 64, 64, generator=generator).to(device=parameter.device, dtype=parameter.dtype)
        pairs, before = _conv_batchnorm_pairs(self, example)  # the trunk's: the head does not run in it
        if not pairs:
            return 0
        parents = {
            id(child): (parent, name) for parent in self.network.modules() for name, child in parent.named_children()
        }
        with torch.no_grad():
            for conv, norm in pairs:
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
                parent, name = parents[id(norm)]
                setattr(parent, name, _after_norm(norm))
        self.folded_batchnorms += len(pairs)
        self._build_trunk()
        after = self.features(example)
        error = (after - before).abs().max().item()
        if not error <= 1e-3 * max(1.0, before.abs().max().item()):
            raise RuntimeError(f"{self.name}: folding BatchNorms changed the features by {error:.3g}")
        return len(pairs)

    @property
    def head_modules(self) -> tuple[nn.Module, ...]:
        """The modules applied after the pool, in order (``nn.Sequential`` heads expanded into their children)."""
        return self._head

    @functools.cached_property
    def features_layer(self) -> str | None:
        """Path of the module whose output is ``features(x)`` (for hook-based tools such as torch-cam), or None.

        torchvision entries name it (unless the trunk ends in a function, as DenseNet's final ReLU); for timm
        networks it is the outermost module whose output ``forward_features`` returns, found by one small run.
        """
        if self.backbone.features is not None:
            try:
                self.network.get_submodule(self.backbone.features)
            except AttributeError:
                return None
            return self.backbone.features
        outputs: list[tuple[str, object]] = []
        hooks = [
            module.register_forward_hook(lambda _m, _a, out, path=path: outputs.append((path, out)))
            for path, module in self.network.named_modules()
            if path
        ]
        try:
            parameter = next(self.network.parameters())
            features = self.features(torch.zeros(1, 3, 64, 64, dtype=parameter.dtype, device=parameter.device))
        finally:
            for hook in hooks:
                hook.remove()
        return next((path for path, out in reversed(outputs) if out is features), None)

    def _check_against_forward_head(self) -> None:
        # timm_head read the head from the modules forward_head calls; code between them (a scale, a second
        # classifier) would be invisible there. On a random 2 x 3 map, each cell of the converted head must equal
        # forward_head on that cell alone, and the global logits forward_head on the whole map.
        parameter = next(self.network.parameters())
        generator = torch.Generator().manual_seed(0)
        features = torch.randn(1, self.network.num_features, 2, 3, generator=generator)
        features = features.to(dtype=parameter.dtype, device=parameter.device)
        with evaluating(self.network, self._network_modules):
            per_cell = [
                self.network.forward_head(features[..., i : i + 1, j : j + 1]) for i in range(2) for j in range(3)
            ]
            expected = torch.stack(per_cell, dim=-1).view(1, -1, 2, 3)
            ours = self.head(features, 1, "same")
            whole, ours_whole = self.network.forward_head(features), self.global_logits(features)
        for a, b in ((ours, expected), (ours_whole, whole)):
            error = (a - b).abs().max().item() if a.shape == b.shape else float("inf")
            if not error <= 1e-4 * max(1.0, b.abs().max().item()):
                raise ValueError(
                    f"{self.name}: its forward_head does more than a global average pool and the modules after it "
                    f"(the converted head differs by {error:.3g}), so it cannot be converted"
                )

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
        # _normalized makes the one float32 copy; the pixels are copied only where torch cannot read them in place.
        pixels = torch.from_numpy(np.require(array, requirements=["C", "W"]))
        return _normalized(pixels[None], self.backbone.normalization)

    def normalize(self, pixels: Tensor) -> Tensor:
        """``preprocess`` for a batch of uint8 pixels, on the network's device: the pixels cross to it once, as bytes.

        The same arithmetic as ``preprocess`` (equal values on the CPU), so a batch gives what single images give.

        Args:
            pixels: N x H x W x 3 uint8 (RGB), on any device.

        Returns:
            N x 3 x H x W in the network's dtype, on its device (channels-last strides, as ``preprocess`` gives).

        Raises:
            ValueError: not an N x H x W x 3 uint8 tensor.
        """
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"pixels must be N x H x W x 3 uint8, got {tuple(pixels.shape)} {pixels.dtype}")
        parameter = next(self.network.parameters())
        return _normalized(pixels.to(parameter.device, non_blocking=True), self.backbone.normalization).to(
            parameter.dtype
        )

    def to_model_input(self, x: Tensor) -> Tensor:
        """``x`` on the network's device and in its dtype (what the trunk and the original classifier are fed).

        Args:
            x: a preprocessed batch, N x 3 x H x W.

        Returns:
            The same values, moved and cast as the network's parameters are.
        """
        parameter = next(self.network.parameters())
        return x.to(device=parameter.device, dtype=parameter.dtype)

    # ---------------------------------------------------------------------------------------------------------
    # The trunk (run once per image) and the converted head (cheap, re-run per kernel size)
    # ---------------------------------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """The per-location trunk: the tensor the original classifier would pool.

        Args:
            x: a preprocessed batch, N x 3 x H x W.

        Returns:
            N x C x h x w features (1/32 of the image for most backbones).
        """
        with evaluating(self.network, self._network_modules):
            return self._trunk(self.to_model_input(x))

    def head(self, features: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """The converted head on trunk features: class logits at every location, N x 1000 x h' x w'.

        ``padding="same"`` keeps h' x w' = h x w (border windows average only what lies inside);
        ``padding="valid"`` is the seed's convolution: h' = h - kernel_size - P + 2 (P = 7 for VGG, else 1).

        Args:
            features: ``features(x)``, N x C x h x w.
            kernel_size: the averaging window, in feature cells (odd for "same").
            padding: "same" or "valid".

        Returns:
            Logits, N x 1000 x h' x w'.

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
        with evaluating(self.network, self._network_modules):
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
        fresh = grid > 1  # otherwise x may still be the caller's features (kernel 1): never write into them
        for module in rest:
            if isinstance(module, nn.Linear):
                x = _per_location(x, module.weight, module.bias)
            elif isinstance(module, nn.Conv2d):  # 1x1, stride 1, one group: a Linear over channels
                x = _per_location(x, module.weight.flatten(1), module.bias)
            elif isinstance(module, nn.LayerNorm):  # includes ConvNeXt's LayerNorm2d: a norm over channels
                x = F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):  # inference: an affine map per channel
                x = F.batch_norm(
                    x.reshape(-1, x.shape[-1]), module.running_mean, module.running_var, module.weight, module.bias,
                    False, 0.0, module.eps,
                ).view(x.shape)  # fmt: skip
            elif isinstance(module, INACTIVE):  # dropout at inference, flatten, identity
                continue
            else:  # elementwise (checked when the model was built), perhaps in place
                x = module(x if fresh else x.clone())
            fresh = True
        return x.permute(0, 3, 1, 2)

    def logit_map(self, x: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """Class logits at every location of a preprocessed batch: ``head(features(x), kernel_size, padding)``.

        Args:
            x: a preprocessed batch, N x 3 x H x W.
            kernel_size: the averaging window, in feature cells.
            padding: "same" or "valid".

        Returns:
            N x 1000 x h' x w' logits.

        Raises:
            ValueError: see ``head``.
        """
        return self.head(self.features(x), kernel_size, padding)

    def prob_map(self, x: Tensor, kernel_size: int, padding: Padding = "same") -> Tensor:
        """``logit_map``'s softmax over the classes (dim 1): N x 1000 x h' x w', arguments and errors as there."""
        return class_softmax(self.logit_map(x, kernel_size, padding))

    def global_logits(self, features: Tensor) -> Tensor:
        """The original classifier's image-level logits (N x 1000), computed from trunk features.

        The pool the classifier used (adaptive, to P x P) followed by the same head: equal to
        ``reference_logits`` on the image that gave ``features``, without re-running the trunk.

        Args:
            features: ``features(x)``, N x C x h x w.

        Returns:
            N x 1000 logits.
        """
        grid = self.backbone.pool_grid
        with evaluating(self.network, self._network_modules):
            pooled = F.adaptive_avg_pool2d(features, grid)
            return self._apply_head(pooled, "valid").flatten(1)

    def reference_logits(self, x: Tensor) -> Tensor:
        """The UNMODIFIED original classifier applied to ``x``.

        After ``fold_batchnorms`` (the shared models of ``core.get_model``) it is the same function with the
        BatchNorms folded in: equal up to float32 rounding.

        Args:
            x: a preprocessed batch, N x 3 x H x W.

        Returns:
            N x 1000 logits.
        """
        with evaluating(self.network, self._network_modules):
            return self.network(self.to_model_input(x))


def _normalized(pixels: Tensor, norm: Normalization) -> Tensor:
    """N x H x W x 3 uint8 pixels as the network's float32 input, N x 3 x H x W with channels-last strides.

    One float32 copy, normalised in place. Each image row is W x 3 values in memory, so the per-channel mean and
    std, repeated W times, broadcast over the rows along contiguous memory: one vectorised pass each (at 1061 x 905
    px 1.5 ms in all; a 3-vector broadcast across the channels-last strides took 6-10 ms). Then BGR order if the
    weights want it.
    """
    n, h, w, c = pixels.shape
    x = pixels.reshape(n * h, w * c).to(torch.float32)
    x.sub_(torch.tensor(norm.mean, dtype=torch.float32, device=x.device).repeat(w))
    x.div_(torch.tensor(norm.std, dtype=torch.float32, device=x.device).repeat(w))
    x = x.view(n, h, w, c).permute(0, 3, 1, 2)
    return x.flip(1) if norm.bgr else x


def class_softmax(logits: Tensor) -> Tensor:
    """The softmax over the classes (dim 1) of a logit map, N x 1000 x h x w, computed where each cell's classes lie.

    The head leaves its logits with channels-last strides (a cell's 1000 classes adjacent in memory). The softmax
    runs over that last, contiguous dimension and its output keeps those strides: at EfficientNet-Lite2's 34 x 29
    cells 0.75 ms against 3.9 ms for ``softmax(dim=1)`` across the strides (which also returns the map in plain
    layout), and the bilinear resampling of the multi-scale fusion then reads it 10x faster (0.3 against 4-5 ms).
    The same function; float32 may round differently in the last bit (``tests/test_conversion.py`` compares it).
    """
    return logits.permute(0, 2, 3, 1).softmax(dim=-1).permute(0, 3, 1, 2)


_CONV_FROM = 144  # locations (a 12 x 12 map) from which the CPU runs a per-location Linear as a 1 x 1 convolution


def _per_location(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A Linear applied at every location of ``x`` (N x h x w x C, channels last): N x h x w x out.

    On the CPU, from ``_CONV_FROM`` locations on, it runs as a 1 x 1 convolution: the same products and sums, by
    oneDNN's convolution, there 1.1-2.2x faster than the BLAS product ``F.linear`` calls (1280 -> 1000 channels at
    986 locations: 7.7 against 15.8 ms on 2 cores). Below that the product is kept: with 1024 or 2048 channels it
    was faster there (a 7 x 7 map: 0.5-0.6x). Elsewhere ``F.linear``: on CUDA a convolution may run in TF32
    (``torch.backends.cudnn.allow_tf32`` is on by default), a matmul does not.
    """
    if x.device.type != "cpu" or x.numel() < _CONV_FROM * x.shape[-1]:
        return F.linear(x, weight, bias)
    return F.conv2d(x.permute(0, 3, 1, 2), weight[:, :, None, None], bias).permute(0, 2, 3, 1)


class _PaddedInside(Conv2dSame):
    """timm's ``Conv2dSame`` (TensorFlow's "SAME" padding, computed per input size) without padding a large copy first.

    timm pads the input with ``F.pad`` and then convolves. On the CPU that copy can cost far more than the
    convolution: EfficientNet-Lite's stride-2 depthwise convolution of a 96 x 452 x 452 map took 5 ms, its padding
    50 ms (2 cores; every allocation of 32 MiB or more, glibc's largest ``mmap`` threshold, is fresh pages).
    Here, where the padding is the same on both sides (odd map sizes for EfficientNet-Lite), the convolution pads
    itself: no copy. Where TensorFlow's rule adds one more row (column) at the bottom (right), there is a copy
    either way, and the smaller one is made: below ``_COPY_FROM`` bytes of padded input, or when the output is
    larger than the input (a stem of 3 channels), timm's; otherwise the output's: the convolution pads both sides by
    the smaller amount, which gives every output row but the last, the last row is computed from the few input rows
    it reads, padded, the same for the last column, and the three are put together. Each output is the same sum
    over the same window of the same values (bit-equal on the CPU, ``tests/test_embedded.py`` checks float64).
    ``load_backbone`` gives every CPU model's ``Conv2dSame`` modules this class (as ``torch.nn.utils.parametrize``
    swaps a module's class), so the parameters, the ``state_dict`` and ``isinstance(m, Conv2dSame)`` stay as they
    were.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":  # not measured elsewhere: timm's own padding
            return super().forward(x)
        (height, width), (kh, kw) = x.shape[-2:], self.weight.shape[-2:]
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pad_h, pad_w = get_same_padding(height, kh, sh, dh), get_same_padding(width, kw, sw, dw)
        top, left = pad_h // 2, pad_w // 2
        if pad_h % 2 == 0 and pad_w % 2 == 0:
            return self._conv(x, (top, left))
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # input rows (columns) one output reads
        rows, cols = -(-height // sh), -(-width // sw)
        last_row, last_col = (rows - 1) * sh - top, (cols - 1) * sw - left  # where the last window starts
        padded = x.shape[0] * x.shape[1] * (height + pad_h) * (width + pad_w) * x.element_size()
        output = x.shape[0] * self.out_channels * rows * cols * x.element_size()
        smaller_than_a_window = min(last_row, last_col) < 0 or height + 2 * top < span_h or width + 2 * left < span_w
        if padded < _COPY_FROM or output > padded or smaller_than_a_window:
            return super().forward(x)  # timm's padded copy is the cheaper one
        inner = self._conv(x, (top, left))
        out = torch.empty(
            (*inner.shape[:2], rows, cols),
            dtype=inner.dtype,
            device=inner.device,
            memory_format=torch.channels_last if _channels_last(inner) else torch.contiguous_format,
        )
        out[..., : inner.shape[-2], : inner.shape[-1]] = inner
        if pad_h % 2:
            strip = F.pad(x[..., last_row:, :], (left, pad_w - left, 0, span_h - (height - last_row)))
            out[..., rows - 1 :, :] = self._conv(strip, 0)
        if pad_w % 2:
            strip = F.pad(x[..., last_col:], (0, span_w - (width - last_col), top, pad_h - top))
            out[..., cols - 1 :] = self._conv(strip, 0)
        return out

    def _conv(self, x: Tensor, padding: int | tuple[int, int]) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


# Asymmetric padding of a smaller input is cheaper as timm's copy: three convolutions instead of one cost more than
# it saves (0.4-18 MB: 1.0-2.4x timm's time; 19-75 MB: 0.15-0.86x; EfficientNet-Lite's shapes, 2 cores).
_COPY_FROM = 32 * 2**20


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _FirstOutput(nn.Module):
    """An FX feature extractor returning its one output as a tensor, not a dict."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)["features"]


# The convolutions and BatchNorms ``fold_batchnorms`` folds: exact types, since a subclass may do more in its forward
# (timm's StdConv2d standardises its weights; its Conv2dSame only pads, and so does ``_PaddedInside``).
_FOLDABLE_CONVS = (nn.Conv2d, Conv2dSame, _PaddedInside)
_FOLDABLE_NORMS = (nn.BatchNorm2d, BatchNormAct2d)


def _after_norm(norm: nn.Module) -> nn.Module:
    """What is left of a folded BatchNorm: nothing, or timm's BatchNormAct2d's dropout and activation."""
    if type(norm) is not BatchNormAct2d:
        return nn.Identity()
    if isinstance(norm.drop, nn.Identity):
        return norm.act
    return nn.Sequential(norm.drop, norm.act)


def _conv_batchnorm_pairs(
    model: ClassMapModel, example: Tensor
) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], Tensor]:
    """The (convolution, BatchNorm) pairs of the trunk whose BatchNorm alone reads the convolution's output.

    One run of the trunk on ``example``: hooks note which module made which tensor and which module runs, and a
    ``TorchFunctionMode`` sees every operation that reads a convolution's output, inside a module or not.

    Returns:
        The pairs, in the order they ran, and the trunk's output on ``example``.
    """
    made: dict[int, tuple[nn.Module, Tensor]] = {}  # id(output) -> (convolution, output: kept alive for its id)
    readers: dict[int, list[nn.Module | None]] = {}
    runs: Counter[int] = Counter()
    inside: list[nn.Module] = []

    def made_by(module: nn.Module, _args: object, out: Tensor) -> None:
        made[id(out)] = (module, out)
        inside.pop()

    def enter(module: nn.Module, _args: object) -> None:
        runs[id(module)] += 1
        inside.append(module)

    def leave(_module: nn.Module, _args: object, _out: object) -> None:
        inside.pop()

    class Readers(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            for value in _tensors((args, kwargs)):
                if id(value) in made:
                    readers.setdefault(id(value), []).append(inside[-1] if inside else None)
            return func(*args, **kwargs)

    hooks = []
    for module in model.network.modules():
        if type(module) in _FOLDABLE_CONVS:
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(made_by)]
        elif type(module) in _FOLDABLE_NORMS:
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with Readers():
            output = model.features(example)
    finally:
        for hook in hooks:
            hook.remove()
    pairs = []
    for key, (conv, _) in made.items():
        read = readers.get(key, [])
        norm = read[0] if read else None
        if (
            norm is not None
            and type(norm) in _FOLDABLE_NORMS
            and all(reader is norm for reader in read)
            and runs[id(conv)] == 1
            and runs[id(norm)] == 1
            and norm.track_running_stats
            and norm.affine
        ):
            pairs.append((conv, norm))
    return pairs, output


def _tensors(value: object) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


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

    Args:
        model: a class-map model whose head starts with a Linear (dropout and flatten before it are skipped).
        features: ``model.features(x)``.
        kernel_size: the convolution's size, in feature cells.
        padding: "same" or "valid".

    Returns:
        N x 1000 x h' x w' logits.

    Raises:
        ValueError: a head that does not start with a Linear after a global pool, or a bad kernel size.
    """
    k = _check_kernel(kernel_size, padding)
    head = [m for m in model.head_modules if not isinstance(m, INACTIVE)]
    if model.backbone.pool_grid != 1 or not head or not isinstance(head[0], nn.Linear):
        raise ValueError(f"{model.name}: the seed's form needs a global pool followed by a Linear")
    linear = head[0]
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
        for module in head[1:]:
            x = F.linear(x, module.weight, module.bias) if isinstance(module, nn.Linear) else module(x)
        return x.permute(0, 3, 1, 2)


def load_backbone(
    name: str,
    weights: str | None = "default",
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    fold_batchnorms: bool = False,
) -> ClassMapModel:
    """Build a backbone as a ``ClassMapModel``.

    The head is converted (and checked) before any weights are read, so a network the rule cannot convert fails
    before a download.

    Args:
        name: a name from ``core.list_backbones()``, or ``"timm:<model name>"`` (``list_timm_backbones()``).
        weights: "default" (embedded package, torchvision's cache / download, or timm's Hugging Face hub cache /
            download), None (random initialisation, built exactly as the pretrained model is built), or the path
            of a local checkpoint (safetensors, or a state dict read with ``weights_only=True``).
        device: where to run; CUDA when available, else CPU.
        progress: show a progress bar while downloading.
        fold_batchnorms: fold the trunk's BatchNorms into their convolutions (``ClassMapModel.fold_batchnorms``):
            faster inference, but ``network`` is no longer the checkpoint's classifier module by module.

    Returns:
        The model, in eval mode, on ``device``.

    Raises:
        TypeError: ``weights`` of another type.
        ValueError: unknown backbone (the message lists the choices), or a timm model the rule cannot convert.
        core.weights.WeightsError: weights missing offline, failed to download, or unreadable.
    """
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"weights must be 'default', None or a checkpoint path, got {type(weights).__name__}")
    backbone = get_backbone(name)
    model = ClassMapModel(backbone, backbone.build())
    if weights is not None:
        load_weights(model.network, backbone, weights, progress=progress)
    if fold_batchnorms:
        model.fold_batchnorms()
    device = torch.device(device) if device is not None else _default_device()
    model.network.to(device)
    if device.type == "cpu":
        # NHWC weights: oneDNN's CPU convolutions run 1.4-1.6x faster on them (``preprocess`` already hands out
        # NHWC-strided pixels), and the features come out NHWC, so the head's Linear reads them without a transpose.
        # Values change only by float32 rounding (float64 results are as exact as before).
        model.network.to(memory_format=torch.channels_last)
        for module in model.network.modules():
            if type(module) is Conv2dSame:
                module.__class__ = _PaddedInside  # the same convolution, padded inside (its docstring)
    return model.eval()


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
