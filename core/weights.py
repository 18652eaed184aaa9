"""Where a backbone's weights come from, loaded without ever executing code from a file.

Three sources, one result (a state dict whose keys match the backbone's ``build()``):

- ``"default"``: embedded weights from an installed package (``core.embedded``), or torchvision's checkpoint from
  torch's hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there with a progress bar on first use;
- a path to a local checkpoint: safetensors, or a ``torch.save``-d state dict read with ``weights_only=True``.

Downloads are verified against the SHA-256 prefix that torchvision puts in every file name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch
from tqdm.auto import tqdm

from core import embedded
from core.registry import Backbone, StateDict

__all__ = ["WeightsError", "cached_weights_path", "download", "load_state_dict", "weights_status"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded, or read; the message says what to do."""


def cached_weights_path(url: str) -> Path:
    """Where torch's hub cache keeps (or will keep) the file behind ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def download(url: str, destination: Path, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``destination`` atomically, checking the SHA-256 prefix in the file name if present.

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


def read_checkpoint(path: str | os.PathLike) -> StateDict:
    """Read a state dict from a safetensors file or a ``torch.save`` file, never executing code from it.

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


def load_state_dict(backbone: Backbone, weights: str = "default", *, progress: bool = True) -> StateDict:
    """The state dict for ``backbone`` from ``weights`` ("default" or a checkpoint path), keys fixed up.

    Raises:
        WeightsError: the weights are missing (offline and not cached) or unreadable; the message names the file
            and where to put it.
    """
    if weights != "default":
        state = read_checkpoint(weights)
    elif backbone.weights_url is None:
        try:
            state = embedded.embedded_state_dict(backbone.name)
        except FileNotFoundError as error:
            raise WeightsError(str(error)) from error
    else:
        path = cached_weights_path(backbone.weights_url)
        if not path.is_file():
            try:
                download(backbone.weights_url, path, progress=progress)
            except WeightsError as error:
                raise WeightsError(
                    f"weights for {backbone.name!r} are not cached at {path} and the download failed ({error}). "
                    f"Connect to the internet once, or fetch {backbone.weights_url} on another machine and put "
                    f"it at that path, or pass a local checkpoint file."
                ) from error
        state = read_checkpoint(path)
    if backbone.fix_state_dict is not None:
        state = backbone.fix_state_dict(state)
    return state


def weights_status(backbone: Backbone) -> str:
    """A short human description of where this backbone's default weights are, for listings."""
    if backbone.weights_url is None:
        path = embedded.embedded_weights_path(backbone.name)
        return f"embedded ({path})" if path else "embedded package NOT installed"
    path = cached_weights_path(backbone.weights_url)
    return f"cached ({path})" if path.is_file() else "downloads on first use"
