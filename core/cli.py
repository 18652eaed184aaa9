"""The ``classmap`` command line: analyse images, list backbones, serve the app.

Exit codes: 0 all good; 1 some image failed (the others are still done and reported); 2 bad arguments.
With ``--json -`` stdout carries JSON Lines and nothing else: logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from core.analysis import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_KERNEL_SIZE,
    DEFAULT_RESOLUTION,
    DEFAULT_SCALE_CHECK,
    DEFAULT_THRESHOLD,
    KERNEL_SIZES,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    Analysis,
)
from core.registry import BACKBONES, DEFAULT_BACKBONE

__all__ = ["main"]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _resolution(text: str) -> int | str:
    if text == "native":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer short side ({MIN_RESOLUTION}..{MAX_RESOLUTION}) or 'native', got {text!r}"
        ) from None
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} or 'native', got {value}"
        )
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classmap",
        description="See where in a photo an ImageNet classifier sees what: per-location class probabilities "
        "from one forward pass, with the classifier's head turned into a convolution.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{analyze,backbones,app}")

    analyze = commands.add_parser("analyze", help="analyse images: classes, boxes, pseudo-CAM overlays")
    analyze.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, GIF, ...)")
    analyze.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        choices=list(BACKBONES),
        metavar="NAME",
        help=f"network to use (default {DEFAULT_BACKBONE}); one of: {', '.join(BACKBONES)}",
    )
    analyze.add_argument(
        "--kernel-size",
        type=int,
        default=DEFAULT_KERNEL_SIZE,
        choices=KERNEL_SIZES,
        help=f"averaging window on the feature map, in cells (default {DEFAULT_KERNEL_SIZE}; the seed used 3)",
    )
    analyze.add_argument(
        "--threshold",
        type=_probability,
        default=DEFAULT_THRESHOLD,
        help=f"a class is found where it wins a cell above this probability (default {DEFAULT_THRESHOLD}; "
        "the seed used 0.85)",
    )
    analyze.add_argument(
        "--box-threshold",
        type=_probability,
        default=DEFAULT_BOX_THRESHOLD,
        help=f"boxes enclose cells where a found class wins above this (default {DEFAULT_BOX_THRESHOLD})",
    )
    analyze.add_argument(
        "--scale-check",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_SCALE_CHECK,
        help="keep a class only where the classifier, pooling over its own 224-px view, also picks it "
        f"(default {'on' if DEFAULT_SCALE_CHECK else 'off'}; --no-scale-check is the seed's rule)",
    )
    analyze.add_argument(
        "--resolution",
        type=_resolution,
        default=DEFAULT_RESOLUTION,
        metavar="N|native",
        help=f"analysis short side in pixels, or 'native' (default {DEFAULT_RESOLUTION})",
    )
    analyze.add_argument(
        "--padding",
        choices=("same", "valid"),
        default="same",
        help="'same' keeps the map aligned with the image; 'valid' is the seed's convolution",
    )
    analyze.add_argument("--json", metavar="PATH|-", help="write JSON Lines (one object per image) to PATH or stdout")
    analyze.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write <stem>.json, <stem>_boxes.png and <stem>_<label>.png per class into DIR",
    )
    analyze.add_argument(
        "--weights",
        default="default",
        metavar="PATH",
        help="a local checkpoint (safetensors or state dict) instead of the default weights",
    )

    commands.add_parser("backbones", help="list the backbones, offline or not, weights present or not")

    app = commands.add_parser("app", help="serve the interactive app")
    app.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
    )
    app.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    return parser


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "class"


def _write_outputs(analysis: Analysis, image, out: Path) -> None:
    from core.render import box_view, overlays

    stem = Path(analysis.source).stem or "image"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(analysis.to_dict(), indent=2) + "\n")
    box_view(analysis, image).save(out / f"{stem}_boxes.png")
    used: set[str] = set()
    for item in overlays(analysis, image):
        name = _safe_name(item.label)
        if name in used:  # ImageNet has two "crane"s and two "maillot"s
            name = f"{name}_{item.index}"
        used.add(name)
        item.image.save(out / f"{stem}_{name}.png")


def _summary(analysis: Analysis) -> str:
    found = ", ".join(f"{c.label} ({c.score:.2f})" for c in analysis.classes) or "nothing above the threshold"
    top = ", ".join(f"{t.label} ({t.probability:.2f})" for t in analysis.top5[:3])
    lines = [f"{analysis.source}: {found}", f"  top-3 of the whole image: {top}"]
    lines += [f"  box {b.label} {b.score:.2f} at {list(b.box)}" for b in analysis.boxes]
    lines += [f"  note: {n}" for n in analysis.notices]
    return "\n".join(lines)


def _analyze(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from tqdm.auto import tqdm

    from core.analysis import analyze, get_model
    from core.images import ImageError
    from core.weights import WeightsError

    try:
        model = get_model(args.backbone, args.weights)
    except WeightsError as error:
        print(f"classmap: {error}", file=stderr)
        return 1

    sink: TextIO | None = None
    if args.json == "-":
        sink = stdout
    elif args.json:
        sink = open(args.json, "w")  # noqa: SIM115 - closed below, after every image
    failed = 0
    try:
        for path in tqdm(args.images, disable=len(args.images) <= 3, file=stderr, unit="image"):
            record: dict[str, Any]
            try:
                analysis = analyze(
                    path,
                    model,
                    args.kernel_size,
                    args.threshold,
                    args.box_threshold,
                    args.resolution,
                    args.padding,
                    source=Path(path).name,
                    scale_check=args.scale_check,
                )
                record = analysis.to_dict()
                if args.out:
                    from core.images import load_image

                    _write_outputs(analysis, load_image(path).image, args.out)
                if sink is None:
                    print(_summary(analysis), file=stdout)
            except (ImageError, ValueError, OSError) as error:
                failed += 1
                message = str(error)
                record = {"image": {"source": Path(path).name}, "error": message}
                print(f"classmap: {message}", file=stderr)
            if sink is not None:
                sink.write(json.dumps(record) + "\n")
                sink.flush()
    finally:
        if sink is not None and sink is not stdout:
            sink.close()
    return 1 if failed else 0


def _backbones(stdout: TextIO) -> int:
    from core.weights import weights_status

    width = max(map(len, BACKBONES))
    for name, backbone in BACKBONES.items():
        kind = "offline" if backbone.offline else "online "
        default = " (default)" if name == DEFAULT_BACKBONE else ""
        print(f"{name:<{width}}  {kind}  {weights_status(backbone)}{default}", file=stdout)
        print(f"{'':<{width}}  {backbone.summary}", file=stdout)
    return 0


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Entry point of the ``classmap`` console script; returns the exit code."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "analyze":
        return _analyze(args, stdout, stderr)
    if args.command == "backbones":
        return _backbones(stdout)
    from ui.app import serve

    serve(host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
