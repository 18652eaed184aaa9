"""Our kernel-size-1 logit map is torch-cam's CAM: the same ``sum_c w_c A_c`` at every location, bias aside.

CAM (Zhou et al. 2016, ``torchcam.methods.CAM``) hooks the last feature map and weights it with the classifier's
Linear weights; our head at kernel size 1 applies that Linear at every location, bias included. So per class the
two maps differ by the bias alone, a constant that min-max normalisation removes. Checked in float64 on the default
backbone with its real weights, against torch-cam's own normalisation.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn
from torchcam.methods import CAM

import core

CLASSES = 8  # the image-level top 8 and a class the photo does not show


@pytest.fixture(scope="module")
def lite0() -> core.ClassMapModel:
    return core.load_backbone("efficientnet_lite0").double()


@pytest.fixture(scope="module")
def photo(examples) -> Image.Image:
    return Image.open(examples / "chelsea.png").convert("RGB").resize((320, 224), Image.Resampling.BICUBIC)


def _fc(model: core.ClassMapModel) -> tuple[str, nn.Linear]:
    linear = next(m for m in model.head_modules if isinstance(m, nn.Linear))
    return next(name for name, m in model.network.named_modules() if m is linear), linear


def test_kernel_size_1_logit_map_equals_torchcam_cam(lite0: core.ClassMapModel, photo: Image.Image) -> None:
    x = lite0.preprocess(photo)
    fc_name, linear = _fc(lite0)
    ours = lite0.logit_map(x, 1)[0]  # 1000 x h x w, float64
    assert ours.dtype == torch.float64 and ours.shape[-2:] == (7, 10)
    with CAM(lite0.network, target_layer=lite0.features_layer, fc_layer=fc_name) as extractor:
        with torch.inference_mode():
            scores = lite0.network(lite0.to_model_input(x))
        classes = [*scores[0].topk(CLASSES).indices.tolist(), int(scores[0].argmin())]
        for index in classes:
            raw = extractor(class_idx=index, normalized=False)[0][0]
            cam = extractor(class_idx=index)[0][0]  # min-max normalised by torch-cam
            without_bias = ours[index] - linear.bias[index]
            torch.testing.assert_close(without_bias, raw, rtol=1e-10, atol=1e-10)
            assert raw.amax() - raw.amin() > 1.0, "a flat map would make the comparison vacuous"
            # torch-cam's own normalisation, on our map with and without the bias (a constant it removes)
            for map_ in (without_bias, ours[index]):
                normalised = CAM._normalize(map_.clone()[None])[0]
                torch.testing.assert_close(normalised, cam, rtol=0, atol=1e-10)
