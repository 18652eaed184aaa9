"""The converted head is the original classifier: float64 exactness on every registered backbone."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import randomize
from torch import nn
from torch.testing import assert_close

import core
from core.model import _CONV_FROM, _per_location, seed_logit_map

BACKBONES = core.list_backbones()
# Square sizes where a GAP head's window (kernel = feature-map size, "valid") covers exactly what the head saw,
# plus a rectangular one for everything that holds at any size.
SQUARE, RECTANGLE = (224, 160), (256, 320)


@pytest.fixture(scope="module", params=BACKBONES)
def model(request) -> core.ClassMapModel:
    return randomize(core.load_backbone(request.param, weights=None, device="cpu")).double()


def _image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", BACKBONES)
def test_folding_batchnorms_into_convolutions_keeps_the_network_exact(name):
    plain = randomize(core.load_backbone(name, weights=None, device="cpu")).double()
    folded = randomize(core.load_backbone(name, weights=None, device="cpu")).double()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in plain.network.modules())
    count = folded.fold_batchnorms()
    assert (count > 0) == (norms > 0) and folded.folded_batchnorms == count
    left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.network.modules())
    assert left == norms - count  # DenseNet's BatchNorms after a concatenation stay
    x = _image(*RECTANGLE)
    features = plain.features(x)
    assert_close(folded.features(x), features, rtol=1e-10, atol=1e-10 * features.abs().max().item())
    reference = plain.reference_logits(x)
    assert_close(folded.reference_logits(x), reference, rtol=1e-10, atol=1e-10 * reference.abs().max().item())
    assert folded.fold_batchnorms() == 0  # nothing left to fold: a second call changes nothing


def test_random_model_is_not_degenerate(model):
    # Guards the tests below: they compare real computations, not biases over vanishing features.
    x = _image(224, 224)
    logits = model.reference_logits(x)
    assert model.features(x).std() > 1e-3
    assert logits.std() > 1e-2
    assert logits.shape == (1, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("size", SQUARE)
def test_window_covering_the_map_equals_the_original_classifier(model, size):
    x = _image(size, size)
    features = model.features(x)
    reference = model.reference_logits(x)
    if model.backbone.pool_grid == 1:
        kernel = features.shape[-1]  # the whole map: what global average pooling saw
    else:
        if size != 224:
            pytest.skip("VGG's fc6 window covers what its head saw only at 224 x 224")
        kernel = 1
    logits = model.logit_map(x, kernel, padding="valid")
    assert logits.shape == (1, 1000, 1, 1)
    assert_close(logits.flatten(1), reference, rtol=1e-10, atol=1e-10 * reference.abs().max().item())


@pytest.mark.parametrize("size", [(224, 224), RECTANGLE])
def test_global_logits_from_cached_features_equal_the_original_classifier(model, size):
    x = _image(*size)
    reference = model.reference_logits(x)
    assert_close(model.global_logits(model.features(x)), reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_pool_then_1x1_equals_the_seeds_kxk_convolution(model, kernel_size, padding):
    first = next((m for m in model.head_modules if not isinstance(m, nn.Dropout)), None)
    if model.backbone.pool_grid != 1 or not isinstance(first, nn.Linear):
        pytest.skip(f"{model.name}: no Linear right after a global pool, so no seed-form convolution")
    features = model.features(_image(*RECTANGLE))
    ours = model.head(features, kernel_size, padding)
    seed = seed_logit_map(model, features, kernel_size, padding)
    h, w = features.shape[-2:]
    expected = (h, w) if padding == "same" else (h - kernel_size + 1, w - kernel_size + 1)
    assert ours.shape == (1, 1000, *expected)
    assert_close(ours, seed, rtol=1e-10, atol=1e-10 * seed.abs().max().item())


def test_logit_map_is_head_of_cached_features(model):
    x = _image(*RECTANGLE)
    features = model.features(x)
    assert_close(model.logit_map(x, 3), model.head(features, 3), rtol=0, atol=0)
    probs = model.prob_map(x, 3)
    assert_close(probs.sum(dim=1), torch.ones_like(probs[:, 0]), rtol=0, atol=1e-12)
    assert_close(probs, model.logit_map(x, 3).softmax(dim=1), rtol=1e-12, atol=1e-15)  # the same softmax...
    assert probs.permute(0, 2, 3, 1).is_contiguous()  # ...over each cell's adjacent classes (the fast resampling)


def test_same_padding_keeps_the_map_aligned_and_valid_shrinks_it(model):
    features = model.features(_image(*RECTANGLE))
    h, w = features.shape[-2:]
    grid = model.backbone.pool_grid
    kernel = 5 if grid == 1 else 1  # VGG's 7 x 7 fc6 window leaves room for no more on an 8 x 10 map
    assert model.head(features, kernel, "same").shape[-2:] == (h, w)
    shrink = kernel - 1 + grid - 1
    assert model.head(features, kernel, "valid").shape[-2:] == (h - shrink, w - shrink)


def test_kernel_larger_than_the_map_is_a_clear_error_in_valid_and_works_in_same(model):
    features = model.features(_image(64, 64))  # a 2 x 2 (SqueezeNet: 3 x 3) feature map
    kernel = features.shape[-1] + 2 if features.shape[-1] % 2 else features.shape[-1] + 3
    with pytest.raises(ValueError, match=f"kernel_size {kernel} with padding 'valid' needs a feature map of"):
        model.head(features, kernel, "valid")
    same = model.head(features, kernel, "same")
    assert same.shape[-2:] == features.shape[-2:]
    assert torch.isfinite(same).all()


@pytest.mark.parametrize("kernel_size", [0, -1, 2, 2.5, True, "3"])
def test_bad_kernel_sizes_are_refused(kernel_size):
    model = core.load_backbone("squeezenet1_1", weights=None)
    features = model.features(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="kernel_size"):
        model.head(features, kernel_size, "same")


def test_inference_leaves_the_model_as_found():
    model = core.load_backbone("googlenet", weights=None)
    model.train()
    model.network.inception3a.eval()  # a mixed state must come back mixed
    before = {name: m.training for name, m in model.named_modules()}
    x = torch.randn(1, 3, 96, 96)
    model.logit_map(x, 3)
    model.reference_logits(x)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert torch.is_grad_enabled()


def test_googlenet_random_weights_are_built_like_the_pretrained_model():
    network = core.load_backbone("googlenet", weights=None).network
    assert network.transform_input is True
    assert network.aux1 is None and network.aux2 is None


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'; choose one of: efficientnet_lite0, "):
        core.load_backbone("alexnet")


def test_registry_lists_offline_backbones_first_and_the_contract_names():
    assert core.list_backbones() == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "squeezenet1_1",
        "googlenet", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "densenet121", "convnext_tiny", "vgg16",
    ]  # fmt: skip
    assert core.DEFAULT_BACKBONE == "efficientnet_lite2"  # chosen by QUALITY.md; offline, as CONTRACT.md asks


def test_preprocess_is_the_backbones_own_normalisation():
    import numpy as np

    pixel = np.array([[[200, 100, 50]]], dtype=np.uint8)
    lite = core.load_backbone("efficientnet_lite0", weights=None).preprocess(pixel)
    assert_close(lite[0, :, 0, 0], torch.tensor([(200 - 127) / 128, (100 - 127) / 128, (50 - 127) / 128]))
    caffe = core.load_backbone("squeezenet1_1", weights=None).preprocess(pixel)  # BGR, minus means, no scale
    assert_close(caffe[0, :, 0, 0], torch.tensor([50 - 104.006, 100 - 116.669, 200 - 122.679]))
    tv = core.load_backbone("resnet50", weights=None).preprocess(pixel)
    assert_close(tv[0, 0, 0, 0], torch.tensor((200 / 255 - 0.485) / 0.229))
    with pytest.raises(TypeError, match="uint8"):
        core.load_backbone("squeezenet1_1", weights=None).preprocess(pixel.astype(np.float32))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "squeezenet1_1", "resnet50"])
def test_normalize_is_each_channels_own_formula_at_every_pixel_of_a_batch(name):
    # Every pixel of every row and column, channel by channel, to the last bit: the fast path broadcasts the means
    # and scales as one repeated row, and a wrong repetition would shift them between channels or columns.
    m = core.load_backbone(name, weights=None)
    norm = m.backbone.normalization
    pixels = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = torch.stack(
        [(pixels[..., c].to(torch.float32) - torch.tensor(norm.mean[c])) / torch.tensor(norm.std[c]) for c in range(3)],
        dim=1,
    )
    expected = expected.flip(1) if norm.bgr else expected
    got = m.normalize(pixels)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert got.permute(0, 2, 3, 1).is_contiguous()  # channels-last strides, as the trunk runs fastest
    assert torch.equal(m.preprocess(pixels[1].numpy()), got[1:])


def test_a_network_running_in_another_thread_survives_a_torchvision_backbone_being_built():
    # Building a torchvision backbone traces it with torch.fx, which patches every module's __call__ for the whole
    # process while it traces; the app's warm-up or another user's analysis running meanwhile used to fail with
    # "NameError: module is not installed as a submodule". Runs and traces now wait for each other.
    running = core.load_backbone("efficientnet_lite0")
    errors: list[BaseException] = []
    stop = threading.Event()

    def analyse_until_stopped() -> None:
        x = torch.zeros(1, 3, 64, 64)
        while not stop.is_set():
            try:
                running.features(x)
            except BaseException as error:  # anything the tracer makes of a foreign call
                errors.append(error)
                return

    worker = threading.Thread(target=analyse_until_stopped)
    worker.start()
    try:
        for _ in range(3):
            core.load_backbone("resnet50", weights=None)
    finally:
        stop.set()
        worker.join()
    assert errors == []


@pytest.mark.parametrize("side", [7, 12, 20])  # below and from the size where the CPU takes a 1x1 convolution
def test_a_per_location_linear_is_the_linear_at_every_location_in_float64(side):
    assert 7 * 7 < _CONV_FROM <= 12 * 12
    generator = torch.Generator().manual_seed(side)
    x = torch.randn(2, side, side, 48, generator=generator, dtype=torch.float64)
    weight = torch.randn(30, 48, generator=generator, dtype=torch.float64)
    bias = torch.randn(30, generator=generator, dtype=torch.float64)
    out = _per_location(x, weight, bias)
    assert out.shape == (2, side, side, 30) and out.is_contiguous()
    assert_close(out, torch.einsum("nhwc,oc->nhwo", x, weight) + bias, rtol=0, atol=1e-12)
