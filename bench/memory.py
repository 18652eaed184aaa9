"""4. Peak memory of analysing large uploads, each in a fresh process.

For each size a JPEG of that size (the test photo, upscaled) is written to a temporary folder; a fresh Python
process (``python -m bench.memory FILE RESOLUTION``) loads the default backbone, then does what ``classmap analyze
FILE --out DIR`` does: ``prepare`` on the file (decoding included) and ``analyze``, then draws the box view and one
overlay per found class at the photo's own size, one picture at a time (``core.cli._pictures``; not encoded as
PNG). The process's peak resident set size (its high-water mark, VmHWM: see ``_peak_bytes``) is read after loading
the model, after the analysis and after the drawing. ``native`` is the worst case: the photo as it is, which
``core.analysis`` scales down to ``MAX_ANALYSIS_PIXELS``; at ``448`` the short side is scaled to 448 px.

Memory by pixel format: the same photo saved in every pixel format the decoder takes (8-bit RGB, grey, bilevel,
palette, alpha, CMYK, 16-bit grey, 32-bit integer and float). ``decode`` is what ``core.images.load_image`` alone adds
to the peak of a fresh process that has imported ``core`` (``python -m bench.memory --decode-only FILE``), at the
largest size we decode (8000 x 8000, 64 MP) and at 8000 x 6000; ``whole`` is the peak of the full run above at
``native`` on the 8000 x 6000 file (decode first, then model, analysis and drawing).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import ROOT, Config, photo
from bench.report import Goal, Section, Table

__all__ = ["FORMATS", "child", "run"]

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
    parser.add_argument("resolution", nargs="?", default="native")
    parser.add_argument("--decode-only", action="store_true", help="only core.images.load_image, from a baseline")
    parser.add_argument("--decode-first", action="store_true", help="load_image once (measured) before the model")
    args = parser.parse_args(argv)
    import core  # torch, numpy, PIL: the baseline includes every import
    from core.analysis import prepare
    from core.cache import get_model
    from core.cli import _pictures  # the box view and the overlays, drawn as classmap analyze --out does
    from core.settings import Settings

    result: dict = {"baseline": _peak_bytes()}
    if args.decode_only or args.decode_first:
        image = core.load_image(args.file).image
        result.update(decoded=_peak_bytes(), mode=image.mode, size=list(image.size))
        del image
        if args.decode_only:
            print(json.dumps(result))
            return
    settings = Settings().replace(resolution=args.resolution if args.resolution == "native" else int(args.resolution))
    model = get_model(settings.backbone)
    result["loaded"] = _peak_bytes()
    prepared = prepare(args.file, settings, model=model)
    analysis = prepared.analyze(settings)
    result["analysed"] = _peak_bytes()
    drawn = 0
    for _name, picture in _pictures(analysis, prepared.picture):  # what --out draws: one picture at a time
        drawn += 1
        del picture
    result.update(drawn=_peak_bytes(), analysis_size=list(analysis.analysis_size), overlays=drawn - 1)
    print(json.dumps(result))


def _grey(width: int, height: int) -> np.ndarray:
    return np.asarray(photo(width, height).convert("L"))


def _with_alpha(image: Image.Image) -> Image.Image:
    image.putalpha(Image.linear_gradient("L").resize(image.size))  # transparent at the top, opaque at the bottom
    return image


# label -> (suffix, save options, the test photo in that format at width x height)
FORMATS: dict[str, tuple[str, dict, Callable[[int, int], Image.Image]]] = {
    "RGB JPEG": (".jpg", {"quality": 90}, lambda w, h: photo(w, h)),
    "grey PNG (L)": (".png", {}, lambda w, h: photo(w, h).convert("L")),
    "bilevel PNG (1)": (".png", {}, lambda w, h: photo(w, h).convert("1")),
    "palette PNG (P)": (".png", {}, lambda w, h: photo(w, h).convert("P", palette=Image.Palette.ADAPTIVE)),
    "RGBA PNG": (".png", {}, lambda w, h: _with_alpha(photo(w, h).convert("RGBA"))),
    "grey + alpha PNG (LA)": (".png", {}, lambda w, h: _with_alpha(photo(w, h).convert("LA"))),
    "CMYK JPEG": (".jpg", {"quality": 90}, lambda w, h: photo(w, h).convert("CMYK")),
    "16-bit grey PNG (I;16)": (".png", {}, lambda w, h: Image.fromarray(_grey(w, h).astype(np.uint16) * 257)),
    "32-bit integer TIFF (I)": (
        ".tiff",
        {"compression": "tiff_adobe_deflate"},
        lambda w, h: Image.fromarray(_grey(w, h).astype(np.int32) * 257),
    ),
    "float TIFF (F)": (
        ".tiff",
        {"compression": "tiff_adobe_deflate"},
        lambda w, h: Image.fromarray(_grey(w, h).astype(np.float32)),
    ),
}
# Decoded at the largest size we decode, as well as at the table's largest upload: the formats issue 15 measured.
DECODE_LARGEST = ("RGB JPEG", "16-bit grey PNG (I;16)", "float TIFF (F)")


def _measure(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed for {' '.join(args)}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
                r = _measure(str(path), resolution)
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
        format_table, format_goal = _formats(config, Path(folder))
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
        (table, format_table),
        (goal, format_goal),
        (
            "Memory by pixel format: each cell is one fresh child, `python -m bench.memory --decode-only FILE` "
            "(decode) or `python -m bench.memory --decode-first FILE native` (whole); this section alone: "
            "`.venv/bin/python -m bench --only memory --output FILE`.",
            "Before and after issue 15.3, measured once with these children on the same files, the code before "
            "in a copy of the tree (2026-11-27): decoding an 8000 x 8000 image raised the peak by 1.55 -> 0.42 GB "
            "(16-bit grey PNG), 1.67 -> 0.55 GB (float TIFF) and 0.48 -> 0.49 GB (RGB JPEG); the whole run at "
            "8000 x 6000 peaked at 2.39 -> 2.39 GB, 2.47 -> 2.34 GB and 2.33 -> 2.33 GB. The 16-bit and float "
            "images were scaled to 8 bits in float64 arrays of the whole image; now a strip of rows at a time, "
            "with the same 8-bit result (`tests/test_inputs.py` compares the two). The bilevel photo, where the "
            "network finds 5 classes, peaked at 2.62 GB when every overlay was held at once (0.18 GB each at "
            "8000 x 6000); `classmap analyze --out` now draws, saves and drops one at a time (2.35 GB). What is "
            "left is the analysis at native resolution (the network at 4.2 MP), the same for every format.",
        ),
    )


def _formats(config: Config, folder: Path) -> tuple[Table, Goal]:
    """Memory by pixel format: the decode alone at the largest sizes, and the whole run at the largest upload."""
    width, height = max(config.memory_sizes, key=lambda size: size[0] * size[1])
    side = 2048 if config.quick else 8000  # the largest square we decode: MAX_DECODE_PIXELS = 8000 x 8000
    kinds = DECODE_LARGEST if config.quick else tuple(FORMATS)
    rows, worst = [], None
    for kind in kinds:
        suffix, options, make = FORMATS[kind]
        square = None
        if kind in DECODE_LARGEST:
            path = folder / f"square{suffix}"
            make(side, side).save(path, **options)
            square = _measure("--decode-only", str(path))
            path.unlink()
        path = folder / f"upload{suffix}"
        make(width, height).save(path, **options)
        size_mb = path.stat().st_size / 1e6
        with Image.open(path) as opened:  # the header only: the mode the decoder sees
            mode = opened.mode
        decoded = _measure("--decode-only", str(path))
        whole = _measure("--decode-first", str(path), "native")
        path.unlink()
        peak = max(whole["decoded"], whole["analysed"], whole["drawn"])
        if worst is None or peak > worst[0]:
            worst = (peak, kind)
        rows.append(
            (
                kind,
                mode,
                f"{size_mb:.1f}",
                _gb(square["decoded"] - square["baseline"]) if square else "-",
                _gb(decoded["decoded"] - decoded["baseline"]),
                _gb(peak),
                str(whole["overlays"]),
            )
        )
    assert worst is not None
    table = Table(
        f"Memory by pixel format: peak RSS in GB (decode = what load_image adds to a fresh process's peak; whole = "
        f"the peak of decode, model load, analysis at native and drawing at full size, {width}x{height})",
        (
            "format",
            "mode",
            f"file MB ({width}x{height})",
            f"decode {side}x{side}",
            f"decode {width}x{height}",
            f"whole {width}x{height}",
            "overlays",
        ),
        tuple(rows),
    )
    goal = Goal(
        f"4b. peak memory, every pixel format ({width}x{height})",
        f"<= {LIMIT_GB} GB",
        f"worst {_gb(worst[0])} GB ({worst[1]})",
        worst[0] <= LIMIT_GB * 2**30,
        why="16-bit and float images are scaled to 8 bits a strip of rows at a time (core.images._to_rgb), and "
        "--out draws one overlay at a time (core.cli._pictures).",
    )
    return table, goal


if __name__ == "__main__":
    child()
