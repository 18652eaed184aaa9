"""Where weights come from: the real download paths (served on 127.0.0.1), the caches, checkpoints, refusals.

torchvision's path is served as plain files; timm's goes through huggingface_hub, served here as a minimal Hub
(``/<repo>/resolve/<revision>/<file>`` with the ``X-Repo-Commit`` and ``ETag`` headers huggingface_hub needs).
huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` once, when it is imported: in this process the tests
patch ``huggingface_hub.constants``; one test sets the two variables for a fresh interpreter, as a user would.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import save_file

import core
from core import registry
from core.registry import TorchvisionWeights
from core.weights import WeightsError, WeightsKind, cached_weights_path, weights_status

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
    monkeypatch.setitem(registry.BACKBONES, NAME, replace(registry.BACKBONES[NAME], weights=TorchvisionWeights(url)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.network
def test_download_fills_the_cache_then_works_offline(served, torch_home, monkeypatch, capfd):
    _use_url(monkeypatch, served["good"])
    assert weights_status(registry.BACKBONES[NAME]).kind is WeightsKind.DOWNLOAD_ON_FIRST_USE
    model = core.load_backbone(NAME)
    cached = cached_weights_path(served["good"])
    status = weights_status(registry.BACKBONES[NAME])
    assert status.kind is WeightsKind.CACHED and status.path == cached and str(status) == f"cached ({cached})"
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


# ---------------------------------------------------------------------------------------------------------
# timm: the Hugging Face hub path, served by a minimal Hub on 127.0.0.1
# ---------------------------------------------------------------------------------------------------------
TIMM = "timm:test_resnet"  # timm's 0.5M-parameter test network; its default tag's weights live in a hub repo
HUB_FILE = "/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(http.server.BaseHTTPRequestHandler):
    """Answers HEAD and GET for one file the way the Hub does; ``files`` maps a path to (bytes, ETag)."""

    files: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        data, etag = self.files.get(self.path, (None, None))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub on 127.0.0.1 serving random test_resnet weights as timm/test_resnet.r160_in1k's model.safetensors."""
    import timm

    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()}
    path = tmp_path_factory.mktemp("hub") / "model.safetensors"
    save_file(state, str(path))
    handler = type("Hub", (_Hub,), {"files": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "state": state, "file": path, "files": handler.files}
    server.shutdown()
    server.server_close()


def _serve(hub, data: bytes, etag: str | None = None) -> None:
    hub["files"].clear()
    hub["files"][HUB_FILE] = (data, etag or hashlib.sha256(data).hexdigest())


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache, and the hub's address in huggingface_hub's constants (read at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return cache


def _use_endpoint(monkeypatch, url: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def _usable_files(cache: Path) -> list[Path]:
    """Weights files the hub cache could hand out: blobs, and the snapshot links to them."""
    return [p for p in cache.rglob("*") if p.is_file() and ("blobs" in p.parts or "snapshots" in p.parts)]


@pytest.mark.network
def test_timm_weights_download_into_the_hub_cache_then_work_offline(hub, hf_cache, monkeypatch, capfd):
    _serve(hub, hub["file"].read_bytes())
    _use_endpoint(monkeypatch, hub["url"])
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub shows its bar on a terminal only, unless this is set
    entry = registry.get_backbone(TIMM)
    assert weights_status(entry).will_download
    model = core.load_backbone(TIMM, device="cpu")
    for key, value in hub["state"].items():
        assert torch.equal(model.network.state_dict()[key], value), key
    assert "model.safetensors" in capfd.readouterr().err  # huggingface_hub's progress bar
    status = weights_status(entry)
    assert status.kind is WeightsKind.CACHED and status.path.is_relative_to(hf_cache)

    _use_endpoint(monkeypatch, f"http://127.0.0.1:{_closed_port()}")  # offline now: the cache answers
    again = core.load_backbone(TIMM, device="cpu")
    assert torch.equal(again.network.fc.weight, model.network.fc.weight)


@pytest.mark.network
def test_a_corrupt_timm_download_is_refused_and_nothing_usable_is_kept(hub, hf_cache, monkeypatch):
    _serve(hub, b"not a safetensors file" * 100)
    _use_endpoint(monkeypatch, hub["url"])
    with pytest.raises(WeightsError, match=r"but the file is corrupt .* it was removed"):
        core.load_backbone(TIMM, device="cpu")
    assert _usable_files(hf_cache) == []
    assert weights_status(registry.get_backbone(TIMM)).will_download


@pytest.mark.network
def test_a_tampered_timm_download_fails_its_hash_and_nothing_is_kept(hub, hf_cache, monkeypatch):
    # A readable file that is not the one the hub named: the blob's SHA-256 must equal the ETag it is stored under.
    _serve(hub, hub["file"].read_bytes(), etag=hashlib.sha256(b"the real file").hexdigest())
    _use_endpoint(monkeypatch, hub["url"])
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        core.load_backbone(TIMM, device="cpu")
    assert _usable_files(hf_cache) == []


def test_missing_timm_weights_offline_say_what_where_and_what_to_do(hf_cache, monkeypatch):
    _use_endpoint(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(WeightsError) as info:
        core.load_backbone(TIMM, device="cpu")
    message = str(info.value)
    assert "timm/test_resnet.r160_in1k (file model.safetensors)" in message
    assert str(hf_cache) in message and "Connect to the internet once" in message and "weights=PATH" in message


@pytest.mark.network
def test_hf_endpoint_and_hf_hub_cache_variables_are_honoured(hub, tmp_path, examples):
    # What a user behind a mirror does: the two variables, set before huggingface_hub is imported; then the whole
    # analysis on a timm backbone, as for any registered name.
    _serve(hub, hub["file"].read_bytes())
    env = {**os.environ, "HF_ENDPOINT": hub["url"], "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    script = (
        "import json, core; from core.registry import get_backbone; from core.weights import weights_status; "
        f"record = core.analyze({str(examples / 'chelsea.png')!r}, backbone={TIMM!r}).to_dict(); "
        f"print(json.dumps([record, str(weights_status(get_backbone({TIMM!r})))]))"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record, status = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["backbone"] == TIMM and len(record["top5"]) == 5
    assert status.startswith(f"cached ({tmp_path / 'hf'}")
