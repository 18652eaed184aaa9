"""7. A folder of photos: ``core.analyze_many`` (and the CLI) against the network's batched forward.

The photos: the six examples, each eleven times (66 files, as the GPU check of the issue), written as files so that
decoding counts. The reference is the physical limit for a folder: the batched forward pass of the network ours runs
(the classifier with its BatchNorms folded, as ``core.get_model`` serves it) on the same images, already decoded,
resized to the same analysis sizes and normalised, in batches of the same size; the unmodified classifier's is
timed too.
Ours: ``analyze_many`` over the files (decoding, resizing, network, maps, classes, boxes, JSON records), one scale
at 320 px, and ``classmap analyze`` on the same files as a subprocess (start-up included).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import core
from bench.common import EXAMPLES, Config, model
from bench.report import Goal, Section, Table, times
from core.analysis import analysis_pixels, pyramid

__all__ = ["run"]

INTRO = __doc__.split("\n\n", 1)[1].replace("\n", " ")
NAMES = ["chelsea.png", "coffee.png", "cat_and_coffee.jpg", "rocket.jpg", "astronaut.jpg", "grace_hopper.jpg"]
GOAL = 0.90  # of the batched bare forward's throughput, on the CPU


def _files(folder: Path, copies: int) -> list[Path]:
    paths = []
    for copy in range(copies):
        for name in NAMES:
            path = folder / f"{copy:02d}_{name}"
            path.write_bytes((EXAMPLES / name).read_bytes())
            paths.append(path)
    return paths


def _bare_forward(m: core.ClassMapModel, paths: list[Path], settings: core.Settings, batch_size: int) -> float:
    """Seconds for ``m``'s classifier on every image, batched by equal size (pixels ready on the host)."""
    buckets: dict[tuple[int, int], list[np.ndarray]] = {}
    for path in paths:
        image = Image.open(path).convert("RGB")
        [size], _ = pyramid(image.width, image.height, settings)
        pixels = analysis_pixels(image, size)
        buckets.setdefault(size, []).append(pixels)
    batches = [
        torch.from_numpy(np.stack(group[i : i + batch_size]))
        for group in buckets.values()
        for i in range(0, len(group), batch_size)
    ]
    m.reference_logits(m.normalize(batches[0]))  # warm-up
    start = time.perf_counter()
    for batch in batches:
        m.reference_logits(m.normalize(batch))
    return time.perf_counter() - start


def run(config: Config) -> Section:
    """Folder throughput on this machine's device (CPU here; the GPU numbers come from ``bench.gpu``)."""
    copies = 2 if config.quick else 11
    batch_size = 8
    settings = core.Settings(resolution=320, scales=1)
    m, plain = model(settings.backbone, folded=True), model(settings.backbone)  # served (BatchNorms folded), as shipped
    with tempfile.TemporaryDirectory(prefix="classmap-folder-") as folder:
        paths = _files(Path(folder), copies)
        bare = min(_bare_forward(m, paths, settings, batch_size) for _ in range(2))
        unmodified = min(_bare_forward(plain, paths, settings, batch_size) for _ in range(2))
        start = time.perf_counter()
        records = [r.to_dict() for r in core.analyze_many(paths, settings, backbone=m, batch_size=batch_size)]
        ours = time.perf_counter() - start
        start = time.perf_counter()
        one_by_one = [core.prepare(p, settings, model=m).analyze() for p in paths[: len(NAMES) * 2]]
        single = (time.perf_counter() - start) / len(one_by_one) * len(paths)
        out = Path(folder) / "out.jsonl"
        command = [sys.executable, "-m", "core.cli", "analyze", *map(str, paths), "--json", str(out),
                   "--scales", "1", "--resolution", "320", "--batch-size", str(batch_size)]  # fmt: skip
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        cli = time.perf_counter() - start
        cli_ok = result.returncode == 0 and len(out.read_text().splitlines()) == len(paths)
    assert all("error" not in r for r in records) and json.dumps(records)
    n = len(paths)
    rate = {"bare": n / bare, "unmodified": n / unmodified, "ours": n / ours, "single": n / single, "cli": n / cli}
    table = Table(
        f"{n} photos (the six examples x {copies}), {settings.backbone}, 320 px, one scale, batches of {batch_size}",
        ("path", "images/s", "of the batched bare forward"),
        (
            ("the served network (BatchNorms folded), batched forward (pixels ready)", f"{rate['bare']:.1f}", "1.00"),
            ("the unmodified classifier, batched forward (pixels ready)", f"{rate['unmodified']:.1f}",
             f"{rate['unmodified'] / rate['bare']:.2f}"),
            ("`core.analyze_many` (files: decode, network, maps, records)", f"{rate['ours']:.1f}",
             f"{rate['ours'] / rate['bare']:.2f}"),
            ("`core.prepare(...).analyze()` one at a time", f"{rate['single']:.1f}",
             f"{rate['single'] / rate['bare']:.2f}"),
            ("`classmap analyze ... --json` (a new process, start-up included)", f"{rate['cli']:.1f}",
             f"{rate['cli'] / rate['bare']:.2f}" + ("" if cli_ok else " (FAILED)")),
        ),
    )  # fmt: skip
    ratio = rate["ours"] / rate["bare"]
    goal = Goal(
        "7. folder throughput (CPU)",
        f">= {GOAL:.2f} of the batched bare forward",
        f"{ratio:.2f} ({times(bare / ours * 1.0)} the bare forward's rate)",
        ratio >= GOAL,
        why="" if ratio >= GOAL else "see bench/FINDINGS.md",
    )
    return Section("folder", "7. A folder of photos", INTRO, (table,), (goal,))
