"""Map quality: how often the class maps find the right objects in the right place, on real labelled photos.

Run ``python -m bench.quality`` (the full sweep, a few minutes on 2 CPU cores) or ``python -m bench.quality --quick``
(the defaults only). The scenes are the labelled photos of ``bench.quality_data``: each photo alone, seeded 2 x 2
mosaics and seeded 3 x 3 mosaics, where every tile's class and place are known. Per scene:

- recall: the fraction of object tiles whose accepted classes include a found class;
- precision: the fraction of found classes that are right somewhere in the scene (1 when nothing is found);
- localization: the fraction of found right classes with a box whose centre lies in a tile where that class is
  right (undefined, and left out of the mean, when no right class is found);
- placed: the fraction of object tiles that hold the centre of a box of one of their own accepted found classes.

Each set's numbers are means over its scenes; a setting's score is the mean of recall, precision and localization
over the three sets (how the defaults were chosen, see QUALITY.md). The CNN runs once per scene, backbone and
resolution (``core.prepare``); every kernel size, threshold and scale check then reuses it (``Prepared.analyze``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import torch

from bench.quality_data import PHOTOS, Scene, scene_sets
from core.analysis import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_KERNEL_SIZE,
    DEFAULT_RESOLUTION,
    DEFAULT_SCALE_CHECK,
    DEFAULT_THRESHOLD,
    get_model,
    prepare,
)
from core.registry import BACKBONES, DEFAULT_BACKBONE

__all__ = [
    "SceneScore",
    "SetScore",
    "Setting",
    "aggregate",
    "main",
    "read_csv",
    "report",
    "score_scene",
    "selection_score",
    "sweep",
    "write_csv",
]

OFFLINE_BACKBONES = tuple(name for name, entry in BACKBONES.items() if entry.offline)
KERNELS = (1, 3, 5)
THRESHOLDS = (0.5, 0.7, 0.85, 0.95)
BOX_THRESHOLDS = (0.3, 0.5, 0.7)
SCALE_CHECKS = (False, True)
RESOLUTIONS: tuple[int | str, ...] = (224, 320, 448, 672, "native")
SETS = ("single", "2x2", "3x3")
# The targets of issue 8, on 2 x 2 mosaics at the defaults.
TARGET = {"recall": 0.95, "precision": 0.90, "localization": 0.95}


class _Found(Protocol):
    index: int


class _Boxed(Protocol):
    index: int
    box: tuple[int, int, int, int]


class AnalysisLike(Protocol):
    """What scoring reads from an analysis: ``core.Analysis`` or any hand-made stand-in."""

    @property
    def classes(self) -> Sequence[_Found]: ...

    @property
    def boxes(self) -> Sequence[_Boxed]: ...


@dataclass(frozen=True)
class SceneScore:
    """The scores of one analysed scene (see the module docstring for each metric)."""

    scene: str
    objects: int
    found: int
    right: int
    recall: float
    precision: float
    localization: float  # NaN when no right class was found
    placed: float


@dataclass(frozen=True)
class Setting:
    """One point of the sweep."""

    backbone: str
    resolution: int | str
    kernel_size: int
    threshold: float
    box_threshold: float
    scale_check: bool

    def label(self) -> str:
        """A short name for tables."""
        return (
            f"{self.backbone} res {self.resolution} k {self.kernel_size} t {self.threshold:g} b {self.box_threshold:g}"
            f"{' checked' if self.scale_check else ''}"
        )


@dataclass(frozen=True)
class SetScore:
    """Mean scores over one set's scenes at one setting."""

    recall: float
    precision: float
    localization: float
    placed: float
    classes: float  # classes found per scene
    scenes: int

    @property
    def worst(self) -> float:
        """The lowest of recall, precision and localization: the number the targets are about."""
        return min(self.recall, self.precision, self.localization)

    def meets_target(self) -> bool:
        """Whether recall, precision and localization all reach issue 8's targets."""
        return all(getattr(self, name) >= bound for name, bound in TARGET.items())


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2


def score_scene(analysis: AnalysisLike, scene: Scene) -> SceneScore:
    """Score one analysis against its scene's ground truth.

    Args:
        analysis: the analysis of ``scene.image`` (its boxes in the scene's pixels).
        scene: the labelled scene.

    Returns:
        Recall, precision, localization and placed recall for this scene.
    """
    found = {c.index for c in analysis.classes}
    objects = scene.objects
    right = found & scene.accepted
    recall = sum(bool(tile.accepted & found) for tile in objects) / len(objects) if objects else math.nan
    precision = len(right) / len(found) if found else 1.0

    def placed_in(index: int) -> list[int]:  # the object tiles that hold a box centre of this class, and accept it
        centres = [_centre(b.box) for b in analysis.boxes if b.index == index]
        return [
            i for i, tile in enumerate(objects) if index in tile.accepted and any(tile.contains(*c) for c in centres)
        ]

    placed_tiles = {i for index in right for i in placed_in(index)}
    localized = sum(bool(placed_in(index)) for index in right)
    return SceneScore(
        scene=scene.name,
        objects=len(objects),
        found=len(found),
        right=len(right),
        recall=recall,
        precision=precision,
        localization=localized / len(right) if right else math.nan,
        placed=len(placed_tiles) / len(objects) if objects else math.nan,
    )


def _mean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def aggregate(scores: Sequence[SceneScore]) -> SetScore:
    """The mean of each metric over scenes; a scene where a metric is undefined (NaN) is left out of that mean."""
    return SetScore(
        recall=_mean(s.recall for s in scores),
        precision=_mean(s.precision for s in scores),
        localization=_mean(s.localization for s in scores),
        placed=_mean(s.placed for s in scores),
        classes=_mean(s.found for s in scores),
        scenes=len(scores),
    )


def sweep(
    sets: dict[str, list[Scene]],
    backbones: Sequence[str] = OFFLINE_BACKBONES,
    resolutions: Sequence[int | str] = RESOLUTIONS,
    kernels: Sequence[int] = KERNELS,
    thresholds: Sequence[float] = THRESHOLDS,
    box_thresholds: Sequence[float] = BOX_THRESHOLDS,
    scale_checks: Sequence[bool] = SCALE_CHECKS,
    progress: bool = True,
) -> dict[tuple[str, Setting], SetScore]:
    """Score every setting on every set.

    The CNN runs once per (scene, backbone, resolution); each kernel size's map is computed once and reused for
    every threshold.

    Returns:
        ``(set name, setting) -> SetScore``.
    """
    results: dict[tuple[str, Setting], SetScore] = {}
    for backbone in backbones:
        model = get_model(backbone)
        start = time.perf_counter()
        for resolution in resolutions:
            per_setting: dict[tuple[str, Setting], list[SceneScore]] = {}
            for set_name, scenes in sets.items():
                for scene in scenes:
                    prepared = prepare(scene.image, model, resolution, source=scene.name)
                    grid = itertools.product(kernels, thresholds, box_thresholds, scale_checks)
                    for k, t, b, check in grid:
                        setting = Setting(backbone, resolution, k, t, b, check)
                        analysis = prepared.analyze(k, t, b, scale_check=check)
                        per_setting.setdefault((set_name, setting), []).append(score_scene(analysis, scene))
            results.update({key: aggregate(scores) for key, scores in per_setting.items()})
        if progress:
            print(f"  {backbone}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return results


# -------------------------------------------------------------------------------------------------------------
# Report
# -------------------------------------------------------------------------------------------------------------
def _f(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _row(setting: Setting, scores: dict[str, SetScore], score: float) -> str:
    cells = [setting.backbone, str(setting.resolution), str(setting.kernel_size), f"{setting.threshold:g}"]
    cells += [f"{setting.box_threshold:g}", "yes" if setting.scale_check else "no"]
    for name in SETS:
        if name in scores:
            s = scores[name]
            cells += [_f(s.recall), _f(s.precision), _f(s.localization)]
    cells.append(f"{score:.3f}")
    return "| " + " | ".join(cells) + " |"


def _header(sets: Iterable[str]) -> list[str]:
    names = ["backbone", "res", "k", "t", "b", "check"]
    for name in sets:
        names += [f"{name} R", f"{name} P", f"{name} L"]
    names.append("score")
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def selection_score(scores: dict[str, SetScore]) -> float:
    """How the defaults were chosen: the mean of recall, precision and localization over every set, equally weighted.

    An undefined localization (nothing right found) counts as 0.
    """
    values = [v for s in scores.values() for v in (s.recall, s.precision, s.localization)]
    return sum(0.0 if math.isnan(v) else v for v in values) / len(values)


def target_key(scores: dict[str, SetScore]) -> tuple[float, float]:
    """Sort key for issue 8's targets: the worst of R/P/L on 2 x 2 (NaN as 0), then the selection score."""
    worst = scores["2x2"].worst if "2x2" in scores else math.nan
    return (0.0 if math.isnan(worst) else worst, selection_score(scores))


def report(
    results: dict[tuple[str, Setting], SetScore], defaults: Setting, command: str, seconds: float, top: int = 10
) -> str:
    """The Markdown tables of QUALITY.md: defaults, best and worst settings, each backbone's best, resolution, seed."""
    by_setting: dict[Setting, dict[str, SetScore]] = {}
    for (set_name, setting), score in results.items():
        by_setting.setdefault(setting, {})[set_name] = score
    sets = [name for name in SETS if any(name in s for s in by_setting.values())]
    ranked = sorted(by_setting, key=lambda s: selection_score(by_setting[s]), reverse=True)
    header = _header(sets)

    def table(settings: Iterable[Setting]) -> list[str]:
        return [*header, *(_row(s, by_setting[s], selection_score(by_setting[s])) for s in settings), ""]

    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}; {date.today().isoformat()}; {seconds:.0f} s in all.  ",
        f"Scenes: {', '.join(f'{name} {_count(results, name)}' for name in sets)}; {len(by_setting)} settings. "
        "R = recall, P = precision, L = localization (means over scenes); score = mean of R, P, L over the sets.",
        "",
    ]
    if defaults in by_setting:
        d = by_setting[defaults]
        extra = ", ".join(f"{name}: placed {_f(d[name].placed)}, {d[name].classes:.1f} classes/scene" for name in sets)
        lines += ["**At the defaults**", "", *table([defaults]), f"Also at the defaults — {extra}.", ""]
    lines += [f"**Best {top} by score** (how the defaults were chosen)", "", *table(ranked[:top])]
    by_target = sorted(by_setting, key=lambda s: target_key(by_setting[s]), reverse=True)
    lines += ["**Best 5 on 2x2 by the worst of R/P/L** (issue 8's targets)", "", *table(by_target[:5])]
    lines += ["**Worst 5 by score**", "", *table(ranked[-5:])]
    lines += ["**Each backbone's best setting by score**", ""]
    lines += table(next(s for s in ranked if s.backbone == b) for b in dict.fromkeys(s.backbone for s in ranked))
    lines += ["**Resolution and scale check, at the default backbone, kernel and thresholds**", ""]
    lines += table(
        s
        for s in by_setting
        if replace(s, resolution=defaults.resolution, scale_check=defaults.scale_check) == defaults
    )
    seed = [
        s for s in by_setting if (s.kernel_size, s.threshold, s.box_threshold, s.scale_check) == (3, 0.85, 0.5, False)
    ]
    lines += ["**The seed's settings** (kernel 3, threshold 0.85, box threshold 0.5, no scale check)", ""]
    lines += table(seed)
    return "\n".join(lines)


def _count(results: dict[tuple[str, Setting], SetScore], set_name: str) -> int:
    return next(score.scenes for (name, _), score in results.items() if name == set_name)


def write_csv(results: dict[tuple[str, Setting], SetScore], path: Path) -> None:
    """Every (set, setting) row of the sweep."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", *Setting.__dataclass_fields__, *SetScore.__dataclass_fields__])
        for (set_name, setting), score in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1].label())):
            writer.writerow([set_name, *asdict(setting).values(), *(_round(v) for v in asdict(score).values())])


def read_csv(path: Path) -> dict[tuple[str, Setting], SetScore]:
    """A sweep written by ``write_csv``, back as results (to re-render the tables without re-running the CNN)."""
    results = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            resolution = row["resolution"]
            setting = Setting(
                row["backbone"],
                resolution if resolution == "native" else int(resolution),
                int(row["kernel_size"]),
                float(row["threshold"]),
                float(row["box_threshold"]),
                row["scale_check"] == "True",
            )
            metrics = (float(row[name]) for name in ("recall", "precision", "localization", "placed", "classes"))
            results[row["set"], setting] = SetScore(*metrics, scenes=int(row["scenes"]))
    return results


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.quality``: run the sweep and print the Markdown tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="score the defaults only (about half a minute)")
    parser.add_argument("--backbones", nargs="+", default=list(OFFLINE_BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--seed", type=int, default=0, help="seed of the mosaics' tile selection (default 0)")
    parser.add_argument("--csv", type=Path, help="also write every (set, setting) row to this CSV file")
    parser.add_argument("--from-csv", type=Path, help="re-render the tables from a sweep's CSV (runs no network)")
    parser.add_argument("--report", type=Path, help="also write the Markdown tables to this file")
    parser.add_argument("--resolutions", nargs="+", help="resolutions to sweep (default 224 320 448 672 native)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    defaults = Setting(
        DEFAULT_BACKBONE,
        DEFAULT_RESOLUTION,
        DEFAULT_KERNEL_SIZE,
        DEFAULT_THRESHOLD,
        DEFAULT_BOX_THRESHOLD,
        DEFAULT_SCALE_CHECK,
    )
    resolutions = [r if r == "native" else int(r) for r in args.resolutions or RESOLUTIONS]
    start = time.perf_counter()
    sets = scene_sets(args.seed)
    print(f"{len(PHOTOS)} photos; " + ", ".join(f"{n}: {len(s)} scenes" for n, s in sets.items()), file=sys.stderr)
    if args.from_csv:
        results = read_csv(args.from_csv)
    elif args.quick:
        results = sweep(
            sets,
            [defaults.backbone],
            [defaults.resolution],
            [defaults.kernel_size],
            [defaults.threshold],
            [defaults.box_threshold],
            [defaults.scale_check],
        )
    else:
        results = sweep(sets, args.backbones, resolutions)
    seconds = time.perf_counter() - start
    command = "python -m bench.quality" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = report(results, defaults, command.strip(), seconds)
    print(text)
    if args.report:
        args.report.write_text(text)
    if args.csv:
        write_csv(results, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
