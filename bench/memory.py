"""4. Peak memory of analysing large uploads, each in a fresh process.

For each size a JPEG of that size (the test photo, upscaled) is written to a temporary folder; a fresh Python
process (``python -m bench.memory FILE RESOLUTION``) loads the default backbone, then does what ``classmap analyze
FILE --out DIR`` does: ``core.analyze`` on the file (decoding included), then decodes it again and draws the box view
and one overlay per found class at the photo's own size. The process's peak resident set size (its high-water mark,
VmHWM: see ``_peak_bytes``) is read after loading the model, after the analysis and after the drawing. ``native`` is
the worst case: the photo as it is, which ``core.analysis`` scales down to ``MAX_ANALYSIS_PIXELS``; at the default
resolution the short side is scaled to 448 px.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, Config, photo
from bench.report import Goal, Section, Table

__all__ = ["child", "run"]

LIMIT_GB = 2.5
RESOLUTIONS = ("native", "448")


def _peak_bytes() -> int:
    """This process's peak resident set size, in bytes.

    Linux's VmHWM: the high-water mark of this process's own memory. ``ru_maxrss`` would be the same number but for
    one catch: it is preserved across ``execve``, and Python's ``subprocess`` starts children with ``vfork``, so a
    child's ``ru_maxrss`` starts at its parent's peak (the benchmark's, several GB). ``ru_maxrss`` is the fallback
    where there is no /proc.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def child(argv: list[str] | None = None) -> None:
    """The measured process: print one JSON line of peak RSS after each stage."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("file")
    parser.add_argument("resolution")
    args = parser.parse_args(argv)
    import core
    from core.analysis import get_model
    from core.render import box_view, overlays

    resolution = args.resolution if args.resolution == "native" else int(args.resolution)
    model = get_model()
    loaded = _peak_bytes()
    analysis = core.analyze(args.file, model, resolution=resolution)
    analysed = _peak_bytes()
    image = core.load_image(args.file).image
    pictures = overlays(analysis, image)
    box_view(analysis, image)
    drawn = _peak_bytes()
    print(
        json.dumps(
            {
                "loaded": loaded,
                "analysed": analysed,
                "drawn": drawn,
                "analysis_size": list(analysis.analysis_size),
                "overlays": len(pictures),
            }
        )
    )


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f}"


def run(config: Config) -> Section:
    rows, largest = [], None
    with tempfile.TemporaryDirectory(prefix="classmap-bench-") as folder:
        for width, height in config.memory_sizes:
            path = Path(folder) / f"photo_{width}x{height}.jpg"
            photo(width, height).save(path, quality=90)
            size_mb = path.stat().st_size / 1e6
            for resolution in RESOLUTIONS:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.memory", str(path), resolution],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"memory child failed for {path.name} {resolution}:\n{done.stderr[-2000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(
                    (
                        f"{width}x{height}",
                        f"{size_mb:.1f}",
                        resolution,
                        "x".join(map(str, reversed(r["analysis_size"]))),
                        _gb(r["loaded"]),
                        _gb(r["analysed"]),
                        _gb(r["drawn"]),
                        str(r["overlays"]),
                    )
                )
                peak = max(r["analysed"], r["drawn"])
                if (
                    largest is None
                    or width * height > largest[0]
                    or (width * height == largest[0] and peak > largest[1])
                ):
                    largest = (width * height, peak, f"{width}x{height}", r)
    table = Table(
        "Peak RSS in GB (VmHWM of a fresh process; each column includes the ones before it)",
        (
            "upload (JPEG)",
            "file MB",
            "resolution",
            "analysed at",
            "after model load",
            "after analysis",
            "after drawing at full size",
            "overlays",
        ),
        tuple(rows),
    )
    if largest is None:
        raise ValueError("no upload sizes to measure")
    _, peak, label, r = largest
    goal = Goal(
        "4. peak memory, largest upload",
        f"<= {LIMIT_GB} GB",
        f"{_gb(peak)} GB at {label} (analysis alone {_gb(r['analysed'])} GB)",
        peak <= LIMIT_GB * 2**30,
        why="the analysis size is capped (MAX_ANALYSIS_PIXELS), so only decoding and drawing grow with the upload.",
    )
    return Section(
        "memory",
        "4. Peak memory of large uploads",
        __doc__.split("\n\n", 1)[1].strip(),
        (table,),
        (goal,),
    )


if __name__ == "__main__":
    child()
