"""``python -m bench``: run the benchmarks, print each table as it is measured, write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import ROOT, Config
from bench.report import Goal, Section, markdown, text
from bench.timing import load_average, machine

__all__ = ["SUITES", "main"]

# name -> (module, function); imported only when run, so a missing optional library fails one suite, not all.
SUITES: dict[str, tuple[str, str]] = {
    "conversion": ("bench.conversion", "run"),
    "e2e": ("bench.pipeline", "run_e2e"),
    "scales": ("bench.pipeline", "run_scales"),
    "slider": ("bench.pipeline", "run_slider"),
    "peers": ("bench.peers", "run"),
    "memory": ("bench.memory", "run"),
    "webcam": ("bench.live", "run_webcam"),
    "app": ("bench.live", "run_app"),
    "folder": ("bench.folder", "run"),
    "explorer": ("bench.explorer", "run"),
}
DEFAULT_OUTPUT = ROOT / "BENCHMARKS.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time Class Map Explorer against a bare forward pass, GradCAM and CAM; write BENCHMARKS.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the default backbone only, small sizes, 2 rounds (about a minute); writes no file unless "
        "--output is given",
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks ({', '.join(SUITES)}); writes no file unless --output is given",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help=f"where to write the report (full run default: {DEFAULT_OUTPUT.name})",
    )
    return parser


def _failed(key: str, error: BaseException) -> Section:
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return Section(key, f"{key}: failed", f"This benchmark failed: `{reason}`", (), (Goal(key, "-", "failed", None),))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.only:
        selected = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in selected if name not in SUITES]
        if unknown:
            _parser().error(f"--only: unknown benchmark {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    else:
        selected = list(SUITES)
    output = args.output or (DEFAULT_OUTPUT if not (args.quick or args.only) else None)
    config = Config.make(args.quick)
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    command = " ".join([str(python), "-m", "bench", *argv])
    info = machine()
    print(f"{command}\n" + "\n".join(f"{k}: {v}" for k, v in info.describe()) + "\n", flush=True)

    start = time.perf_counter()
    sections = []
    for key in selected:
        module, function = SUITES[key]
        began = time.perf_counter()
        print(f"-- running {key} ...", flush=True)
        try:
            run: Callable[[Config], Section] = getattr(importlib.import_module(module), function)
            section = run(config)
        except Exception as error:  # one failed benchmark must not lose the others' numbers
            traceback.print_exc()
            section = _failed(key, error)
        sections.append(section)
        print(text(section) + f"({time.perf_counter() - began:.0f} s)\n", flush=True)
    seconds = time.perf_counter() - start

    print("== Goals ==")
    for section in sections:
        for goal in section.goals:
            print(f"{goal.verdict:>12}  {goal.name}: {goal.result} (target {goal.target})")
    print(f"\ntotal {seconds / 60:.1f} min")
    if output is not None:
        output.write_text(markdown(info, command, sections, seconds, load_average()), encoding="utf-8")
        print(f"wrote {output}")
    return 0
