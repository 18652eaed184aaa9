"""Timing on a shared, noisy machine: interleaved repeats after a warm-up, medians, and paired ratios.

Every comparison in the benchmark is between cases timed in the same rounds: each round runs every case once (in
an order that rotates from round to round), so a burst of load from another process slows all of them alike. A
ratio is the median over rounds of the per-round ratio, which cancels slow drifts in load that a ratio of two
medians would not.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Machine", "Samples", "interleave", "machine", "paired_ratio"]

# A case may return {stage: seconds} to report where its time went (e.g. prepare / analyze / render).
Case = Callable[[], Mapping[str, float] | Any]


@dataclass(frozen=True)
class Samples:
    """The wall times of one case, one per round (seconds), and the stage times it reported."""

    name: str
    seconds: tuple[float, ...]
    stages: tuple[Mapping[str, float], ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ms(self) -> float:
        """Median in milliseconds."""
        return 1000.0 * self.median

    def stage_ms(self, stage: str) -> float:
        """Median time of one reported stage, in milliseconds (NaN when the case reported none)."""
        values = [s[stage] for s in self.stages if stage in s]
        return 1000.0 * statistics.median(values) if values else float("nan")


def interleave(
    cases: Mapping[str, Case], repeats: int, warmup: int = 1, budget: float | None = None, least: int = 2
) -> dict[str, Samples]:
    """Time several cases in interleaved rounds.

    Args:
        cases: name -> a callable with no arguments (its return value is kept alive until the case is timed, so
            freeing it is not charged to the next case; a mapping of floats is taken as stage times).
        repeats: timed rounds (at most); each runs every case once.
        warmup: untimed rounds first (allocator, oneDNN primitive caches, lazy imports).
        budget: seconds of timed rounds after which no new round starts once ``least`` rounds are done (slow cases
            get fewer rounds, fast ones all ``repeats``); None for no limit.
        least: the fewest timed rounds when a budget applies.

    Returns:
        name -> ``Samples``, in the order of ``cases``.

    Raises:
        ValueError: no cases, or fewer than one repeat.
    """
    if not cases:
        raise ValueError("interleave needs at least one case")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    stages: dict[str, list[Mapping[str, float]]] = {name: [] for name in names}
    began = time.perf_counter()
    for round_ in range(repeats):
        if budget is not None and round_ >= least and time.perf_counter() - began > budget:
            break
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            result = cases[name]()
            seconds[name].append(time.perf_counter() - start)
            if isinstance(result, Mapping) and all(isinstance(v, float) for v in result.values()):
                stages[name].append(result)
            del result
    return {name: Samples(name, tuple(seconds[name]), tuple(stages[name])) for name in names}


def paired_ratio(numerator: Samples, denominator: Samples) -> float:
    """Median over rounds of ``numerator / denominator`` (both timed in the same rounds)."""
    if len(numerator.seconds) != len(denominator.seconds):
        raise ValueError("paired_ratio needs samples from the same rounds")
    return statistics.median(a / b for a, b in zip(numerator.seconds, denominator.seconds, strict=True))


@dataclass(frozen=True)
class Machine:
    """What the numbers were measured on."""

    cpu: str
    cores: int
    threads: int
    torch: str
    python: str
    numpy: str
    pillow: str
    date: str
    load: tuple[float, float, float] = field(default=(float("nan"),) * 3)

    def describe(self) -> list[tuple[str, str]]:
        return [
            ("CPU", self.cpu),
            ("Cores (os.cpu_count)", str(self.cores)),
            ("torch threads (torch.get_num_threads, the default)", str(self.threads)),
            ("torch", self.torch),
            ("Python / NumPy / Pillow", f"{self.python} / {self.numpy} / {self.pillow}"),
            ("Date", self.date),
            ("Load average at start (1, 5, 15 min)", ", ".join(f"{v:.2f}" for v in self.load)),
        ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    """The 1/5/15-minute load average (NaN where the OS has none): how busy the machine was."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return (float("nan"),) * 3


def machine() -> Machine:
    """Describe this machine and the libraries the benchmark runs on."""
    import numpy
    import PIL
    import torch

    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
        numpy=numpy.__version__,
        pillow=PIL.__version__,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        load=load_average(),
    )
