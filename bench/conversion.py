"""0. The converted head against the trunk it follows, and against the seed's literal k x k convolution.

``model.head(features, k)`` (k x k average pool, stride 1, then the Linear as a 1x1 conv) is timed against
``model.features(x)`` at several input sizes, and against ``core.model.seed_logit_map`` (a k x k conv with
W / k^2 replicated over the kernel) on the same features. Multiply-accumulates (MACs) are counted with
``torch.utils.flop_counter`` on the same calls, so a missed goal can be told apart from a slow kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Config, model, photo, weights_note
from bench.report import Goal, Section, Table, ms, pct, times
from bench.timing import interleave, paired_ratio
from core.model import seed_logit_map

__all__ = ["run"]

KERNELS = (1, 3, 5)
LIMIT = 0.05  # the head may cost at most 5% of the trunk
SEVERAL = 3.0  # "several times cheaper" than the seed's conv, for k = 3 and 5


def macs(fn: Callable[[], object]) -> float:
    """Multiply-accumulates of one call (convolutions and matrix products; pooling and softmax are not counted)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2


def run(config: Config) -> Section:
    head_rows, seed_rows, worst, cases_total = [], [], (0.0, ""), 0
    misses: dict[str, list[tuple[float, str]]] = {}  # backbone -> (share, "size k") over the limit
    counts: dict[str, str] = {}  # backbone -> what the MAC counts say
    speedups: dict[int, list[float]] = {k: [] for k in KERNELS}
    for name in config.backbones:
        m = model(name, folded=True)  # the trunk as core.get_model serves it
        for size in config.conversion_sizes:
            x = m.preprocess(photo(size))
            features = m.features(x)
            _, channels, h, w = features.shape
            trunk_macs = macs(lambda m=m, x=x: m.features(x))
            head_macs = {k: macs(lambda m=m, f=features, k=k: m.head(f, k)) for k in KERNELS}
            heads: dict[str, Callable[[], object]] = {
                f"head{k}": lambda m=m, f=features, k=k: m.head(f, k) for k in KERNELS
            }
            seeds = {f"seed{k}": lambda m=m, f=features, k=k: seed_logit_map(m, f, k) for k in KERNELS}
            s = interleave(
                {"trunk": lambda m=m, x=x: m.features(x), **heads}, config.repeats(size * size), budget=config.budget
            )
            # The seed's convolutions (up to 25x the head's work) against the head again, in rounds of their own.
            vs_seed = interleave({**heads, **seeds}, min(3, config.repeats(size * size)), budget=config.budget)
            trunk = s["trunk"]
            cells = []
            for k in KERNELS:
                share = paired_ratio(s[f"head{k}"], trunk)
                cells.append(f"{ms(s[f'head{k}'].ms)} ({pct(share)})")
                label = f"{name} {size} px k={k}"
                if share > worst[0]:
                    worst = (share, label)
                cases_total += 1
                if share > LIMIT:
                    misses.setdefault(name, []).append((share, f"{size} px k={k}"))
            counts.setdefault(
                name,
                f"head {channels} x 1000 = {channels * 1000 / 1e6:.2f} MMAC per map cell against the trunk's "
                f"{trunk_macs / (h * w) / 1e6:.1f} MMAC per cell ({trunk_macs / 1e6:.0f} MMAC over {h} x {w} cells at "
                f"{size} px): {pct(head_macs[1] / trunk_macs)} by count alone",
            )
            head_rows.append(
                (
                    f"{name} ({weights_note(name)})",
                    f"{size}",
                    f"{channels}x{h}x{w}",
                    ms(trunk.ms),
                    f"{trunk_macs / 1e9:.2f}",
                    *cells,
                    pct(head_macs[1] / trunk_macs),
                )
            )
            ratios = []
            for k in KERNELS:
                ratio = paired_ratio(vs_seed[f"seed{k}"], vs_seed[f"head{k}"])
                speedups[k].append(ratio)
                ratios += [ms(vs_seed[f"seed{k}"].ms), times(ratio)]
            seed_rows.append((f"{name}", f"{size}", *ratios))

    head_table = Table(
        "Converted head vs trunk (ms, median; in brackets: head time / trunk time, paired)",
        (
            "backbone (weights)",
            "input px",
            "features",
            "trunk ms",
            "trunk GMAC",
            "head k=1",
            "head k=3",
            "head k=5",
            "head/trunk MACs",
        ),
        tuple(head_rows),
    )
    seed_table = Table(
        "Seed's literal k x k conv vs pool-then-1x1 on the same features (ms; x = seed time / ours, paired)",
        ("backbone", "input px", "seed k=1", "ratio", "seed k=3", "ratio", "seed k=5", "ratio"),
        tuple(seed_rows),
    )
    met = not misses
    explained = "; ".join(
        f"{name} ({len(over)} cases, {pct(min(over)[0])}-{pct(max(over)[0])}): {counts[name]}"
        for name, over in misses.items()
    )
    head_goal = Goal(
        "0a. head cost vs trunk (k = 1/3/5)",
        f"<= {pct(LIMIT)} of the trunk's forward",
        f"worst {pct(worst[0])} ({worst[1]}); {sum(map(len, misses.values()))} of {cases_total} cases over"
        + (f" ({', '.join(misses)})" if misses else ""),
        met,
        why=(
            "every case within the limit."
            if met
            else "the head is one 1000-way Linear per map cell, the least any per-location classifier can do, and "
            "it misses where the trunk is light per cell: " + explained + ". Both costs grow with the number of "
            "cells, so the ratio does not fall with the input size."
        ),
    )
    low = min(min(speedups[3]), min(speedups[5]))
    seed_goal = Goal(
        "0b. pool-then-1x1 vs the seed's k x k conv",
        f">= {SEVERAL:.0f}x cheaper at k = 3 and 5",
        f"k=3: {times(min(speedups[3]))}-{times(max(speedups[3]))}, k=5: {times(min(speedups[5]))}-"
        f"{times(max(speedups[5]))} (k=1, the same 1x1 product: {times(min(speedups[1]))}-{times(max(speedups[1]))})",
        low >= SEVERAL,
        why="the seed's conv does k^2 times the multiply-accumulates (9x at k=3, 25x at k=5); the pool is a few "
        "additions per value.",
    )
    return Section(
        "conversion",
        "0. The converted head: cost against the trunk and against the seed's convolution",
        __doc__.split("\n\n", 1)[1].strip(),
        (head_table, seed_table),
        (head_goal, seed_goal),
        (
            "trunk = `model.features(x)`, head = `model.head(features, k)` (same padding), seed = "
            "`core.model.seed_logit_map(model, features, k)`; all on the CPU at the default thread count.",
            "MACs from `torch.utils.flop_counter` (convolutions and matrix products only).",
        ),
    )
