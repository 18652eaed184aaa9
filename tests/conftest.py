"""Shared fixtures: example photos, randomised backbones, and the Chromium rule for CI."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.browser import chromium_path, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def examples() -> Path:
    return EXAMPLES


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every weight and BatchNorm statistic a well-scaled random value.

    torchvision's own initialisations leave some networks (GoogLeNet's truncated normal with std 0.01) with
    features of ~1e-12, where an exactness test would compare biases only. Here every layer keeps unit-scale
    activations, so a float64 comparison checks the whole computation.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                    module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            elif isinstance(getattr(module, "layer_scale", None), torch.Tensor):  # ConvNeXt's scale starts at 1e-6
                module.layer_scale.copy_(0.5 + torch.rand(module.layer_scale.shape, generator=generator))
    return model


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium; with CI=true a missing browser fails the test instead of skipping it."""
    path = chromium_path()
    if path is None:
        message = "Debian chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The real app, launched in this process on 127.0.0.1 (one per test module), as every launch configures it."""
    from ui.app import build_app, launch_options

    app = build_app()
    _, local_url, _ = app.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options()
    )
    try:
        yield local_url
    finally:
        app.close()
