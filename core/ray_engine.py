"""Class maps beyond one machine, on Ray Data (optional: ``pip install classmap-explorer[ray]``).

``ClassMapBatch`` is a callable for ``ray.data.Dataset.map_batches``: point it at your own dataset of image paths
(local, NFS) or image bytes (e.g. ``ray.data.read_binary_files("s3://bucket/photos/")``), and each row gets the
analysis's JSON record, exactly what ``classmap analyze --json`` writes for it::

    import ray
    from core import Settings
    from core.ray_engine import ClassMapBatch

    ds = ray.data.read_binary_files("s3://my-bucket/photos/", include_paths=True)
    records = ds.map_batches(
        ClassMapBatch,
        fn_constructor_kwargs={"settings": Settings(granularity="group").to_dict()},
        batch_size=16,
        concurrency=4,   # actors, each with its own copy of the network
        num_gpus=1,      # per actor, on a cluster with GPU workers
    )
    records.write_json("s3://my-bucket/classmaps/")        # or .write_parquet(...)

Inside each actor the batch goes through ``core.analyze_many``: the same decoding, batching and analysis as on one
machine, so the records are the same. ``run`` is what ``classmap analyze --engine ray`` calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from core.batch import analyze_many
from core.settings import Settings

__all__ = ["ClassMapBatch", "run"]


class ClassMapBatch:
    """A ``map_batches`` callable: a batch of images in, their JSON records out (one actor, one network).

    Args:
        settings: the analysis settings, as a ``Settings`` or its ``to_dict()`` (Ray ships it to the actors).
        batch_size: most images per forward pass inside the actor.
        device: where the actor runs the network ("cpu", "cuda"); default CUDA when the actor has a GPU.
    """

    def __init__(
        self, settings: Settings | dict[str, Any] | None = None, batch_size: int = 8, device: str | None = None
    ):
        if isinstance(settings, dict):
            settings = Settings(**settings)
        self.settings = settings if settings is not None else Settings()
        self.batch_size = batch_size
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Analyse one batch.

        Args:
            batch: columns ``path`` (file paths) and/or ``bytes`` (encoded images, as ``read_binary_files`` gives);
                an optional ``source`` column names the images in the records (default: the path's file name).

        Returns:
            The batch's columns plus ``record``: each image's JSON record (a string), in the batch's order.

        Raises:
            ValueError: a batch with neither a ``path`` nor a ``bytes`` column.
        """
        if "bytes" in batch:
            images: Sequence[Any] = [bytes(b) for b in batch["bytes"]]
        elif "path" in batch:
            images = [str(p) for p in batch["path"]]
        else:
            raise ValueError(f"a batch needs a 'path' or a 'bytes' column, got {sorted(batch)}")
        if "source" in batch:
            sources = [str(s) for s in batch["source"]]
        elif "path" in batch:
            sources = [os.path.basename(str(p)) or str(p) for p in batch["path"]]
        else:
            sources = [f"<image {i}>" for i in range(len(images))]
        results = analyze_many(images, self.settings, batch_size=self.batch_size, device=self.device, sources=sources)
        records = [json.dumps(result.to_dict()) for result in results]
        out = {key: value for key, value in batch.items() if key != "bytes"}
        out["record"] = np.array(records, dtype=object)
        return out


def run(
    paths: Sequence[str],
    settings: Settings,
    *,
    batch_size: int = 8,
    device: str | None = None,
    actors: int = 1,
    address: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Analyse files on Ray Data and yield their JSON records in input order (``classmap analyze --engine ray``).

    Args:
        paths: image files every Ray worker can read (a shared file system on a cluster).
        settings: the analysis settings.
        batch_size: images per batch (and per forward pass).
        device: where the actors run the network.
        actors: how many actors (copies of the network) run at once.
        address: a Ray cluster to join ("auto", "ray://host:10001"); None starts a local Ray runtime.

    Yields:
        One JSON object per path, in order: the analysis, or ``{"image": {"source": ...}, "error": ...}``.

    Raises:
        ImportError: Ray is not installed (``pip install classmap-explorer[ray]``).
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError("the ray engine needs Ray Data: pip install 'classmap-explorer[ray]'") from error

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # records in input order, as the local engine writes them
        context.enable_progress_bars = False
        dataset = ray.data.from_items([{"path": os.path.abspath(p), "source": os.path.basename(p)} for p in paths])
        records = dataset.map_batches(
            ClassMapBatch,
            fn_constructor_kwargs={"settings": settings.to_dict(), "batch_size": batch_size, "device": device},
            batch_size=batch_size,
            concurrency=actors,
            batch_format="numpy",
        )
        for row in records.iter_rows():
            yield json.loads(row["record"])
    finally:
        if started:
            ray.shutdown()
