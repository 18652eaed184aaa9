"""timm backbones: the same conversion rule through timm's own split, float64-exact on one network per family."""

from __future__ import annotations

import io
import time

import pytest
import timm
import torch
from conftest import randomize
from torch import nn
from torch.testing import assert_close

import core
from core import registry
from core.model import seed_logit_map
from core.registry import get_backbone, list_timm_backbones, timm_head
from core.weights import weights_status

# One small network per family, and what its head does after the pool.
FAMILIES = {
    "timm:resnet18": "Linear",
    "timm:convnext_tiny": "LayerNorm2d -> Linear (the acceptance network)",
    "timm:efficientnet_b0": "Linear",
    "timm:regnetx_002": "Linear",
    "timm:mobilenetv3_small_050": "1x1 conv_head -> Hardswish -> Linear",
    "timm:mobilenetv4_conv_small": "1x1 conv_head -> BatchNormAct2d (norm + ReLU) -> Linear",
    "timm:tf_efficientnet_lite0": "Linear (the embedded Lite architecture)",
    "timm:pvt_v2_b0": "pools in code (x.mean) -> Linear",
    "timm:hgnetv2_b0": "1x1 conv -> ReLU -> LearnableAffineBlock -> Linear",
}


def _randomized(name: str) -> core.ClassMapModel:
    """A float64 model whose every layer keeps unit-scale activations (conftest's rule, plus timm's layer scales)."""
    model = core.load_backbone(name, weights=None, device="cpu")
    randomize(model.network)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, parameter in model.network.named_parameters():
            if key.endswith("gamma"):  # ConvNeXt's layer scale starts at 1e-6: the blocks would hardly count
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
    return model.double()


def _image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request) -> core.ClassMapModel:
    return _randomized(request.param)


def test_window_covering_the_map_equals_timms_classifier(model):
    x = _image(96, 96)
    features = model.features(x)
    reference = model.reference_logits(x)
    assert features.std() > 1e-3 and reference.std() > 1e-2  # real computations, not biases over vanishing features
    logits = model.logit_map(x, features.shape[-1], padding="valid")
    assert logits.shape == (1, 1000, 1, 1)
    assert_close(logits.flatten(1), reference, rtol=1e-10, atol=1e-10 * reference.abs().max().item())


def test_global_logits_from_cached_features_equal_timms_classifier(model):
    x = _image(64, 96)
    assert_close(model.global_logits(model.features(x)), model.reference_logits(x), rtol=1e-10, atol=1e-12)


def test_each_cell_is_the_classifier_on_that_cell(model):
    # Kernel 1: every cell of the map is forward_head applied to that cell's features alone.
    features = model.features(_image(64, 96))
    ours = model.head(features, 1, "same")
    with torch.inference_mode():
        for i, j in ((0, 0), (1, 2)):
            cell = model.network.forward_head(features[..., i : i + 1, j : j + 1])
            assert_close(ours[..., i, j], cell, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_folding_batchnorms_keeps_a_timm_network_exact(name):
    plain, folded = _randomized(name), _randomized(name)
    head = {id(m) for m in folded.head_modules}
    count = folded.fold_batchnorms()
    norms = [m for m in plain.network.modules() if isinstance(m, nn.BatchNorm2d)]
    if any(type(m) in (nn.BatchNorm2d, timm.layers.BatchNormAct2d) for m in norms):
        assert count > 0
    assert {id(m) for m in folded.head_modules} == head  # the head keeps its own modules (MobileNetV4's norm)
    x = _image(64, 96)
    features = plain.features(x)
    assert_close(folded.features(x), features, rtol=1e-10, atol=1e-10 * features.abs().max().item())
    reference = plain.reference_logits(x)
    assert_close(folded.reference_logits(x), reference, rtol=1e-10, atol=1e-10 * reference.abs().max().item())


def test_the_head_is_read_from_timms_modules():
    assert get_backbone("timm:resnet50.a1_in1k").head == ("fc",)
    convnext = ("head.norm", "head.flatten", "head.pre_logits", "head.drop", "head.fc")  # NormMlpClassifierHead
    assert get_backbone("timm:convnext_tiny").head == convnext
    mobilenet = get_backbone("timm:mobilenetv3_small_050")
    assert mobilenet.head == ("conv_head", "norm_head", "act2", "flatten", "classifier")
    assert mobilenet.features is None  # the trunk is timm's forward_features
    assert get_backbone("timm:convnext_tiny") is get_backbone("timm:convnext_tiny")  # built once, then cached


def test_timm_metadata_gives_normalisation_and_a_summary():
    entry = get_backbone("timm:tf_efficientnet_lite0")
    assert entry.normalization.mean == (127.5, 127.5, 127.5) and entry.normalization.std == (127.5, 127.5, 127.5)
    assert entry.summary.startswith("timm tf_efficientnet_lite0.in1k, 4.7M params")
    assert get_backbone("timm:convnext_tiny").weights == registry.TimmWeights("convnext_tiny")


def test_the_embedded_lite_entries_are_timm_networks():
    model = core.load_backbone("efficientnet_lite2", weights=None, device="cpu")
    assert type(model.network).__module__ == "timm.models.efficientnet"
    assert model.backbone.features is None and model.backbone.head is None  # the same rule as any timm: name
    assert model.head_modules == (model.network.classifier,)


def test_pool_then_1x1_equals_the_seeds_kxk_convolution_on_a_timm_network():
    model = _randomized("timm:resnet18")
    features = model.features(_image(160, 224))
    for k, padding in ((3, "same"), (3, "valid"), (5, "same")):
        seed = seed_logit_map(model, features, k, padding)
        assert_close(model.head(features, k, padding), seed, rtol=1e-10, atol=1e-10 * seed.abs().max().item())


# ---------------------------------------------------------------------------------------------------------
# What the rule refuses, and why
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("timm:vit_tiny_patch16_224", r"no pooled feature map \(a token head"),
        ("timm:convnext_tiny.fb_in22k", "21841 classes, not the 1000 of ImageNet-1k"),
        ("timm:swin_tiny_patch4_window7_224", "needs a fixed 224x224 input"),
        ("timm:mambaout_femto", r"not an N x \d+ x h x w map \(channels-last"),
        ("timm:vgg11", r"runs Conv2d \(pre_logits.fc1\) before any global average pool"),
        ("timm:repvit_m0_9", r"not one chain of ops: head\.head_dist\.bn .*\(two classifiers averaged"),
        ("timm:convnext_zepto_rms", r"head.norm \(SimpleNorm2d\) has no per-location form"),
        ("timm:resnet50.bogus", "no pretrained tag 'bogus' for resnet50; its tags: resnet50.a1_in1k"),
        ("timm:alexnet", "unknown timm model 'alexnet'"),
    ],
)
def test_unconvertible_timm_models_are_refused_naming_why(name, why):
    with pytest.raises(ValueError, match=why):
        core.load_backbone(name, weights=None)


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda: timm.create_model("resnet18", global_pool="max"), r"'max' \(max pooling\), not a global average"),
        (lambda: timm.create_model("resnet18", global_pool="avgmax"), "max pooling"),
        (lambda: timm.create_model("resnet50_clip", num_classes=1000), r"pools with attention \(AttentionPool2d"),
        (lambda: timm.create_model("resnet18", num_classes=10), r"gives \(1, 10\), not N x 1000"),
    ],
)
def test_heads_that_are_not_an_average_then_per_location_ops_are_refused(build, why):
    with torch.device("meta"):
        network = build().eval()
    with pytest.raises(ValueError, match=why):
        timm_head(network, network.forward_features(torch.empty(1, 3, 224, 224, device="meta")))


def test_code_between_the_head_modules_is_caught_on_numbers(monkeypatch):
    # timm_head sees modules only; a forward_head that also computes in code must fail the numeric check.
    network_class = type(timm.create_model("resnet18", pretrained=False))
    original = network_class.forward_head
    monkeypatch.setattr(network_class, "forward_head", lambda self, x, pre_logits=False: 2 * original(self, x))
    with pytest.raises(ValueError, match="does more than a global average pool and the modules after it"):
        core.load_backbone("timm:resnet18", weights=None)


# ---------------------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------------------
def test_listing_the_convertible_timm_models_is_cheap_and_sensible():
    list_timm_backbones()  # timm imported, its registry warm
    start = time.perf_counter()
    names = list_timm_backbones()
    assert time.perf_counter() - start < 2.0  # metadata only: no model is built
    assert len(names) > 500 and all(name.startswith("timm:") for name in names)
    for expected in ("timm:resnet50.a1_in1k", "timm:convnext_tiny.in12k_ft_in1k", "timm:tf_efficientnet_lite0.in1k"):
        assert expected in names
    assert not any(name.startswith(("timm:vit_", "timm:swin_", "timm:vgg")) for name in names)
    registered = core.list_backbones()  # the 11 registered names, offline first, as before
    assert len(registered) == 11 and registered[:2] == ["efficientnet_lite0", "efficientnet_lite1"]


def test_a_sample_of_the_listing_converts():
    for name in list_timm_backbones()[::97]:  # nine names across the alphabet (and so across families)
        assert get_backbone(name).name == name


def test_status_and_cli_listing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from core import cli

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    status = weights_status(get_backbone("timm:resnet18"))
    assert status.will_download and not status.available and str(status) == "downloads on first use"
    out = io.StringIO()
    assert cli.main(["backbones", "--all"], stdout=out) == 0
    text = out.getvalue()
    assert "efficientnet_lite2" in text and "timm:convnext_tiny.in12k_ft_in1k\n" in text
    assert "convertible timm models" in text


def test_head_ops_act_per_location_with_an_inplace_activation_first():
    # A head whose first op after the pool is an in-place activation must not write into cached features.
    model = _randomized("timm:resnet18")
    features = model.features(_image(64, 64))
    before = features.clone()
    head = (nn.ReLU(inplace=True), *model.head_modules)
    object.__setattr__(model, "_head", head)
    model.head(features, 1, "same")
    assert torch.equal(features, before)
