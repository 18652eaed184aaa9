"""Where weights come from: the real download path (served on 127.0.0.1), the cache, checkpoints, refusals."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import core
from core import registry
from core.weights import WeightsError, cached_weights_path

NAME = "mobilenet_v3_large"  # a torchvision backbone with a small checkpoint (22 MB)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a real checkpoint named like torchvision's (hash prefix in the name)."""
    root = tmp_path_factory.mktemp("www")
    state = core.load_backbone(NAME, weights=None).network.state_dict()
    good = root / "tmp.pth"
    torch.save(state, good)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    good = good.rename(root / f"{NAME}-{digest[:8]}.pth")
    (root / f"{NAME}-deadbeef.pth").write_bytes(b"not the checkpoint you are looking for" * 100)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"good": f"{base}/{good.name}", "corrupt": f"{base}/{NAME}-deadbeef.pth", "state": state}
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _use_url(monkeypatch, url: str) -> None:
    monkeypatch.setitem(registry.BACKBONES, NAME, replace(registry.BACKBONES[NAME], weights_url=url))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.network
def test_download_fills_the_cache_then_works_offline(served, torch_home, monkeypatch, capfd):
    _use_url(monkeypatch, served["good"])
    model = core.load_backbone(NAME)
    cached = cached_weights_path(served["good"])
    assert cached.is_file() and cached.is_relative_to(torch_home)
    for key, value in served["state"].items():
        assert torch.equal(model.network.state_dict()[key], value), key
    assert "100%" in capfd.readouterr().err  # the progress bar went to stderr

    # Offline now: the server's address no longer answers, the cached file is used.
    _use_url(monkeypatch, f"http://127.0.0.1:{_closed_port()}/{cached.name}")
    again = core.load_backbone(NAME)
    assert torch.equal(again.network.classifier[3].weight, model.network.classifier[3].weight)


@pytest.mark.network
def test_a_corrupt_download_is_refused_and_nothing_is_kept(served, torch_home, monkeypatch):
    _use_url(monkeypatch, served["corrupt"])
    with pytest.raises(WeightsError, match="does not match"):
        core.load_backbone(NAME)
    assert not cached_weights_path(served["corrupt"]).exists()
    assert not any(cached_weights_path(served["corrupt"]).parent.glob("*.partial"))


def test_missing_weights_offline_say_which_file_and_where_to_put_it(torch_home, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/{NAME}-5c1a4163.pth"
    _use_url(monkeypatch, url)
    with pytest.raises(WeightsError) as info:
        core.load_backbone(NAME)
    message = str(info.value)
    assert str(cached_weights_path(url)) in message
    assert "put it at that path" in message and url in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_checkpoint_loads(tmp_path, suffix):
    state = core.load_backbone("squeezenet1_1", weights=None).network.state_dict()
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    model = core.load_backbone("squeezenet1_1", weights=str(path))
    for key, value in state.items():
        assert torch.equal(model.network.state_dict()[key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EXPLOIT_MARKER', '/tmp/classmap-exploit')}",))


def test_a_malicious_checkpoint_is_refused_without_running_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.weight": _Exploit()}))
    with pytest.raises(WeightsError, match="weights-only"):
        core.load_backbone("squeezenet1_1", weights=str(path))
    assert not marker.exists()


def test_a_checkpoint_of_another_network_is_refused_with_the_mismatch(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(core.load_backbone("googlenet", weights=None).network.state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit 'squeezenet1_1'"):
        core.load_backbone("squeezenet1_1", weights=str(path))


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        core.load_backbone("squeezenet1_1", weights=str(tmp_path / "nope.pth"))
