"""The ``classmap`` command line: analyse images, list backbones, serve the app.

Exit codes: 0 all good; 1 some image failed (the others are still done and reported); 2 bad arguments, or an
output (``--json``, ``--out``) that would write over an input or cannot be written, found before any analysis.
With ``--json -`` stdout carries JSON Lines and nothing else: logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from core.registry import BACKBONES, DEFAULT_BACKBONE
from core.results import Analysis
from core.settings import (
    GRANULARITIES,
    KERNEL_SIZES,
    MAX_MIN_CELLS,
    MAX_PART_RATIO,
    MAX_RESOLUTION,
    MAX_SCALES,
    MIN_RESOLUTION,
    PADDINGS,
    Settings,
)

__all__ = ["main"]


def _backbone(text: str) -> str:
    if text in BACKBONES or text.startswith("timm:"):  # a timm name is checked when the settings are built
        return text
    raise argparse.ArgumentTypeError(f"must be one of: {', '.join(BACKBONES)}, or timm:MODEL; got {text!r}")


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


def _integer(low: int, high: int | None = None):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound when None)."""
    allowed = f"an integer {low}..{high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classmap",
        description="See where in a photo an ImageNet classifier sees what: per-location class probabilities "
        "from one forward pass, with the classifier's head turned into a convolution.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{analyze,backbones,app}")

    analyze = commands.add_parser("analyze", help="analyse images: classes, boxes, pseudo-CAM overlays")
    analyze.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, GIF, ...)")
    defaults = Settings()
    analyze.add_argument(
        "--preset",
        choices=Settings.PRESETS,
        help="start from a named preset: 'seed' (the seed article's settings) or 'best' (the best measured); "
        "other options change it",
    )
    analyze.add_argument(
        "--backbone",
        type=_backbone,
        metavar="NAME",
        help=f"network to use (default {defaults.backbone}); one of: {', '.join(BACKBONES)}, or timm:MODEL "
        "(`classmap backbones --all` lists them)",
    )
    analyze.add_argument(
        "--kernel-size",
        type=int,
        choices=KERNEL_SIZES,
        help=f"averaging window on the feature map, in cells (default {defaults.kernel_size}; the seed used 3)",
    )
    analyze.add_argument(
        "--threshold",
        type=_probability,
        help=f"a class is found where it wins a cell above this probability (default {defaults.threshold}; "
        "the seed used 0.85)",
    )
    analyze.add_argument(
        "--box-threshold",
        type=_probability,
        help=f"boxes enclose cells where a found class wins above this (default {defaults.box_threshold})",
    )
    analyze.add_argument(
        "--scale-check",
        action=argparse.BooleanOptionalAction,
        help="keep a class only where the classifier, pooling over its own 224-px view, also picks it "
        f"(default {'on' if defaults.scale_check else 'off'}; --no-scale-check is the seed's rule)",
    )
    analyze.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        help="'class': the 1000 ImageNet classes (the seed's); 'group': classes summed within WordNet groups such "
        "as 'car' or 'wading bird'; 'adaptive': per map cell the most specific class or WordNet synset the network "
        f"is sure of, 'beagle' or else 'hound' or 'dog' (default {defaults.granularity})",
    )
    analyze.add_argument(
        "--scales",
        type=int,
        choices=range(1, MAX_SCALES + 1),
        metavar="N",
        help=f"how many image sizes the network sees, from --resolution up in steps of sqrt(2), maps averaged "
        f"(1..{MAX_SCALES}; default {defaults.scales}; the seed used 1)",
    )
    analyze.add_argument(
        "--min-cells",
        type=int,
        choices=range(1, MAX_MIN_CELLS + 1),
        metavar="N",
        help=f"a class or group is found only where it wins at least N map cells above the threshold "
        f"(1..{MAX_MIN_CELLS}; default {defaults.min_cells}; the seed's rule is 1)",
    )
    analyze.add_argument(
        "--part-ratio",
        type=int,
        choices=[0, *range(2, MAX_PART_RATIO + 1)],
        metavar="R",
        help=f"drop a found class or group that touches another R times its size: a part named beside its whole "
        f"(0 or 2..{MAX_PART_RATIO}; default {defaults.part_ratio}; 0 keeps all, the seed's rule)",
    )
    analyze.add_argument(
        "--resolution",
        type=_resolution,
        metavar="N|native",
        help=f"analysis short side in pixels (the smallest scale), or 'native' (default {defaults.resolution})",
    )
    analyze.add_argument(
        "--padding",
        choices=PADDINGS,
        help="'same' keeps the map aligned with the image (default); 'valid' is the seed's convolution",
    )
    analyze.add_argument(
        "--json",
        metavar="PATH|-",
        help="write JSON Lines (one object per image) to PATH or stdout; PATH may not be an input image",
    )
    analyze.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write <stem>.json, <stem>_boxes.png and <stem>_<label>.png per class into DIR; <stem> is the "
        "image's file name without its extension, or <stem>-2, <stem>-3... for a later image of the same name "
        "(a/photo.png, b/photo.png); an input image those names would overwrite is refused (exit 2), and a link in "
        "DIR is replaced, never followed",
    )
    analyze.add_argument(
        "--weights",
        default="default",
        metavar="PATH",
        help="a local checkpoint (safetensors or state dict) instead of the default weights",
    )
    for flag, low, default, meaning in (
        ("--batch-size", 1, 8, "most images per forward pass; images of equal analysis size are batched (default 8)"),
        ("--workers", 0, 0, "processes that decode images while the network runs (default 0: in this process)"),
    ):
        analyze.add_argument(flag, type=_integer(low), default=default, metavar="N", help=meaning)
    analyze.add_argument("--device", metavar="cpu|cuda", help="where the network runs (default: CUDA if any, else CPU)")
    analyze.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="'local' (default) or 'ray': the same analysis on Ray Data (pip install 'classmap-explorer[ray]'; "
        "a local Ray runtime, or the cluster in RAY_ADDRESS)",
    )

    backbones = commands.add_parser("backbones", help="list the backbones, offline or not, weights present or not")
    backbones.add_argument(
        "--all", action="store_true", help="also list every convertible timm model (use as --backbone timm:NAME)"
    )

    app = commands.add_parser("app", help="serve the interactive app")
    app.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
    )
    app.add_argument("--port", type=_integer(1, 65535), default=7860, help="port (default 7860)")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    return parser


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "class"


# Output side of ``analyze``
# -------------------------------------------------------------------------------------------------------------
# Everything here runs before the first image is analysed, so a bad --json or --out costs nothing and destroys
# nothing: the checks are plan_outputs (no file is written or truncated) and open_json.


class OutputError(Exception):
    """An output option that cannot be honoured; the message names the option and the file."""


def plan_outputs(images: Sequence[str], json_path: str | None, out: Path | None, stderr: TextIO) -> dict[str, str]:
    """Check ``--json`` and ``--out`` against the inputs and the file system; name each input's ``--out`` files.

    Args:
        images: the IMAGE arguments, in order.
        json_path: ``--json`` (None, ``-`` or a path).
        out: ``--out`` (None or a folder).
        stderr: where a note on a renamed output goes.

    Returns:
        The stem of each input's files in ``out`` (``<stem>.json``, ``<stem>_boxes.png``, ``<stem>_<label>.png``):
        the file's own stem, or ``<stem>-2``, ``<stem>-3``... for a later input whose files would take the same
        names (see ``_unique_stems``). Empty without ``out``.

    Raises:
        OutputError: an output would write over an input image, or cannot be written.
    """
    real_inputs = {os.path.realpath(path): path for path in images}
    identities = {}  # (device, inode) of each input that exists: a hard link is the same file under another name
    for path in images:
        with contextlib.suppress(OSError):
            info = os.stat(path)  # stat, never open: an input may be a FIFO
            identities[(info.st_dev, info.st_ino)] = path
    json_file = json_path if json_path and json_path != "-" else None
    if json_file:
        _check_json_target(json_file, real_inputs, identities)
    stems = _unique_stems(images) if out is not None else {}
    if out is not None:  # first what needs no file system change, then the folder
        folded = {stem.casefold() for stem in stems.values()}
        real_out = os.path.realpath(out)
        for real, path in real_inputs.items():
            if os.path.dirname(real) == real_out and _is_output_name(os.path.basename(real), folded):
                raise OutputError(
                    f"--out {out}: would write over the input image {path} (its name is one the outputs take); "
                    "choose another folder"
                )
        real = os.path.realpath(json_file) if json_file else ""
        if json_file and os.path.dirname(real) == real_out and _is_output_name(os.path.basename(real), folded):
            raise OutputError(f"--json {json_file}: --out {out} writes a file of that name; choose another file")
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out}: is a file, not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=out).close()  # can files be created there? (nothing is left behind)
        except OSError as error:
            raise OutputError(f"--out {out}: cannot write in this folder ({error.strerror or error})") from None
    if json_file:
        _check_json_writable(json_file)
    for path, stem in stems.items():
        if stem != (Path(path).stem or "image"):
            print(f"classmap: --out: {path} writes {stem}.* (an earlier input's files take its own name)", file=stderr)
    return stems


def _check_json_target(json_path: str, real_inputs: dict[str, str], identities: dict[tuple[int, int], str]) -> None:
    """Refuse a ``--json`` file that is an input image (by its path, a link or a hard link) or a directory."""
    try:
        info = os.stat(json_path)
    except OSError:
        info = None
    same = real_inputs.get(os.path.realpath(json_path))
    if same is None and info is not None:
        same = identities.get((info.st_dev, info.st_ino))
    if same is not None:
        raise OutputError(f"--json {json_path}: is the input image {same}; writing there would destroy it")
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"--json {json_path}: is a directory, not a file")


def _check_json_writable(json_path: str) -> None:
    """Refuse a ``--json`` file that cannot be written, without creating or truncating it."""
    target = Path(json_path)
    try:
        info = os.stat(target)
    except OSError:
        folder = target.parent
        if not folder.is_dir():
            raise OutputError(f"--json {json_path}: the folder {folder} does not exist") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"--json {json_path}: cannot create a file in {folder} (permission denied)") from None
        return
    if stat.S_ISREG(info.st_mode):  # FIFOs and devices (/dev/stdout, /dev/null) are not probed: opening may block
        if not info.st_mode & 0o222:  # even root does not write over a file marked read-only (/proc/version)
            raise OutputError(f"--json {json_path}: the file is read-only")
        try:
            open(target, "a").close()  # opened to append: writable, and nothing in it is lost yet
        except OSError as error:
            raise OutputError(f"--json {json_path}: cannot be written ({error.strerror or error})") from None


def open_json(json_path: str | None, stdout: TextIO) -> TextIO | None:
    """The stream ``--json`` writes JSON Lines to: stdout for ``-``, the file (truncated) for a path, else None.

    Raises:
        OutputError: the file cannot be opened for writing.
    """
    if not json_path:
        return None
    if json_path == "-":
        return stdout
    try:
        return open(json_path, "w")  # the caller closes it, after every image
    except OSError as error:
        raise OutputError(f"--json {json_path}: cannot be written ({error.strerror or error})") from None


def _unique_stems(images: Sequence[str]) -> dict[str, str]:
    """The stem of each input's ``--out`` files, so that no two inputs write a file of the same name.

    An input keeps its file's stem unless an earlier input already uses it (``a/photo.png`` and ``b/photo.png``,
    or ``photo.png`` and ``photo.jpg``); then it is ``<stem>-2``, ``<stem>-3``..., the first number whose name no
    input uses. Names are compared ignoring case (as a case-insensitive file system would), and the same argument
    given twice is one input. A stem that is another stem plus ``_`` plus a prefix of overlay names (``photo`` and
    ``photo_sea``: ``sea_lion`` and ``lion`` are both classes) is renumbered the same way.
    """
    natural = {path: Path(path).stem or "image" for path in images}
    reserved = {stem.casefold() for stem in natural.values()}
    taken: set[str] = set()
    heads: dict[str, list[str]] = {}  # "photo" -> ["photo_sea", ...]: the taken stems that start with "photo_"
    stems: dict[str, str] = {}
    for path, base in natural.items():
        stem, number = base, 1
        while (
            stem.casefold() in taken
            or (number > 1 and stem.casefold() in reserved)
            or _overlaps(stem.casefold(), taken, heads)
        ):
            number += 1
            stem = f"{base}-{number}"
        folded = stem.casefold()
        taken.add(folded)
        for i, char in enumerate(folded):
            if char == "_":
                heads.setdefault(folded[:i], []).append(folded)
        stems[path] = stem
    return stems


def _overlaps(folded: str, taken: set[str], heads: dict[str, list[str]]) -> bool:
    """Whether a stem (casefolded) and a taken one could write a file of the same name.

    That is when one is the other plus ``_<A>``, where ``<A>_<B>`` and ``<B>`` are both names an overlay (or the box
    view) can take.
    """
    shorter = [folded[:i] for i, char in enumerate(folded) if char == "_" and folded[:i] in taken]
    longer = heads.get(folded, [])
    if not shorter and not longer:  # the usual case: no stem starts with another one plus "_"
        return False
    ambiguous = _ambiguous_prefixes()
    return any(folded[len(s) + 1 :] in ambiguous for s in shorter) or any(
        t[len(folded) + 1 :] in ambiguous for t in longer
    )


@functools.cache
def _ambiguous_prefixes() -> frozenset[str]:
    """Every ``A`` (casefolded) such that ``<A>_<B>`` and ``<B>`` are both names an overlay or the box view takes."""
    from core.hierarchy import vocabulary
    from core.registry import IMAGENET_CATEGORIES

    names = {"boxes"}
    for granularity in GRANULARITIES:
        safe = [_safe_name(label).casefold() for label in vocabulary(granularity, tuple(IMAGENET_CATEGORIES)).labels]
        names.update(safe)
        twice = {name for name in safe if safe.count(name) > 1}  # _write_outputs adds the channel to these
        names.update(f"{name}_{channel}" for channel, name in enumerate(safe) if name in twice)
    return frozenset(name[: -len(tail) - 1] for name in names for tail in names if name.endswith("_" + tail))


def _is_output_name(name: str, stems: set[str]) -> bool:
    """Whether a file called ``name`` may be written in ``--out`` for one of ``stems`` (casefolded).

    That is ``<stem>.json`` or ``<stem>_<anything>.png``: the overlays' names depend on the classes found, so any
    ``_<...>.png`` counts.
    """
    folded = name.casefold()
    if folded.endswith(".json"):
        return folded[: -len(".json")] in stems
    if folded.endswith(".png"):
        return any(char == "_" and folded[:i] in stems for i, char in enumerate(folded))
    return False


def _replace_file(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file in ``--out`` as a new file, then rename it over ``target``.

    A link already at ``target`` (symbolic or hard) is replaced as a name in the folder, never written through:
    ``os.replace`` renames over the link itself, so nothing outside the folder is touched, whatever a link points
    at, and a reader never sees half a file. (Opening with ``O_NOFOLLOW`` would refuse such a link instead, and
    leave a re-run stuck on it; a fresh output is what the user asked for.) The temporary file is created with
    ``O_EXCL`` under a random name, so it is never an existing file or link either, and with the usual permissions.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            descriptor = os.open(temporary, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _pictures(analysis: Analysis, image) -> Iterator[tuple[str, Any]]:
    """The box view, then one overlay per found class, each with its file name's tail, drawn one at a time.

    ``render.overlays`` draws every class at once; here each is drawn alone (the same pixels) and dropped once
    saved, so an 8000 x 6000 photo holds one 0.2 GB overlay at a time, whatever the number of classes found.
    """
    from core.render import box_view, overlays

    yield "boxes", box_view(analysis, image)
    used: set[str] = set()
    for found in analysis.classes:
        (item,) = overlays(dataclasses.replace(analysis, classes=(found,)), image)  # this class's overlay alone
        name = _safe_name(item.label)
        if name in used:  # two labels with the same safe name
            name = f"{name}_{item.channel}"
        used.add(name)
        picture = item.image
        del item
        yield name, picture
        del picture  # before the next one is drawn


def _write_outputs(analysis: Analysis, image, out: Path, stem: str | None = None) -> None:
    """Write ``<stem>.json``, ``<stem>_boxes.png`` and ``<stem>_<label>.png`` per found class into ``out``."""
    stem = stem or Path(analysis.source).stem or "image"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(analysis.to_dict(), indent=2) + "\n"
    _replace_file(out / f"{stem}.json", lambda file: file.write(text.encode()))
    for name, picture in _pictures(analysis, image):
        _replace_file(out / f"{stem}_{name}.png", lambda file, picture=picture: picture.save(file, format="PNG"))
        del picture  # before the next one is drawn


def _summary(analysis: Analysis) -> str:
    found = ", ".join(f"{c.label} ({c.score:.2f})" for c in analysis.classes) or "nothing above the threshold"
    top = ", ".join(f"{t.label} ({t.probability:.2f})" for t in analysis.top5[:3])
    lines = [f"{analysis.source}: {found}", f"  top-3 of the whole image: {top}"]
    lines += [f"  box {b.label} {b.score:.2f} at {list(b.box)}" for b in analysis.boxes]
    lines += [f"  note: {n}" for n in analysis.notices]
    return "\n".join(lines)


SETTING_OPTIONS = (
    "backbone",
    "resolution",
    "kernel_size",
    "threshold",
    "box_threshold",
    "padding",
    "scale_check",
    "granularity",
    "scales",
    "min_cells",
    "part_ratio",
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The analysis settings the options ask for: the preset (or the defaults), with every given option on top.

    Raises:
        ValueError: a combination that is not allowed (e.g. several scales with padding 'valid').
    """
    base = Settings.preset(args.preset) if args.preset else Settings()
    changes = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name) is not None}
    return base.replace(**changes) if changes else base


# Image files ``classmap analyze DIR`` picks up in a folder (its own files, not its subfolders').
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def expand_inputs(arguments: Sequence[str]) -> list[str]:
    """The image files the IMAGE arguments name: files as given, a folder's images (sorted), a list file's lines.

    ``@list.txt`` holds one path per line (blank lines and lines starting with ``#`` skipped), relative to the
    working directory. A path that does not exist is kept: its analysis reports it, as for any unreadable image.

    Raises:
        OutputError: a list file that cannot be read, or a folder with no images (names the argument).
    """
    paths: list[str] = []
    for argument in arguments:
        if argument.startswith("@") and len(argument) > 1:
            try:
                lines = Path(argument[1:]).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise OutputError(f"IMAGE {argument}: cannot read the list file ({error})") from error
            paths += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        elif os.path.isdir(argument):
            found = sorted(str(p) for p in Path(argument).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OutputError(f"IMAGE {argument}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        else:
            paths.append(argument)
    return paths


def _analyze(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from tqdm.auto import tqdm

    from core.batch import Failure, analyze_many
    from core.cache import get_model
    from core.images import ImageError, load_image
    from core.model import load_backbone
    from core.weights import WeightsError

    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"classmap analyze: error: {error}", file=stderr)
        return 2
    if args.engine == "ray" and args.out:
        print("classmap analyze: error: argument --out: not with --engine ray (use --json)", file=stderr)
        return 2
    try:
        images = expand_inputs(args.images)
        stems = plan_outputs(images, args.json, args.out, stderr)  # before any analysis: see OutputError
    except OutputError as error:
        print(f"classmap: {error}", file=stderr)
        return 2
    if args.engine == "ray":
        from core.ray_engine import run

        results: Any = (_Record(r) for r in run(images, settings, batch_size=args.batch_size, device=args.device))
    else:
        try:
            if args.device is None:
                model = get_model(settings.backbone, args.weights)
            else:
                model = load_backbone(settings.backbone, args.weights, device=args.device, fold_batchnorms=True)
        except WeightsError as error:
            print(f"classmap: {error}", file=stderr)
            return 1
        results = analyze_many(
            images,
            settings,
            backbone=model,
            batch_size=args.batch_size,
            workers=args.workers,
            sources=[Path(path).name for path in images],
        )
    try:
        sink = open_json(args.json, stdout)  # closed below, after every image
    except OutputError as error:
        print(f"classmap: {error}", file=stderr)
        return 2
    failed = 0
    try:
        progress = tqdm(
            zip(images, results, strict=True), total=len(images), disable=len(images) <= 3, file=stderr, unit="image"
        )
        for path, result in progress:
            record = result.to_dict()
            if isinstance(result, Failure) or "error" in record:
                failed += 1
                print(f"classmap: {record['error']}", file=stderr)
            else:
                if args.out:
                    try:
                        # Decoded again here, in full: the batch keeps only the network's small copies.
                        _write_outputs(result, load_image(path).image, args.out, stems[path])
                    except (OSError, ImageError) as error:
                        failed += 1
                        print(f"classmap: {path}: could not write its pictures ({error})", file=stderr)
                if sink is None:
                    print(_summary(result) if isinstance(result, Analysis) else json.dumps(record), file=stdout)
            if sink is not None:
                sink.write(json.dumps(record) + "\n")
                sink.flush()
    finally:
        if sink is not None and sink is not stdout:
            sink.close()
    return 1 if failed else 0


class _Record:
    """A JSON record from another engine, answering ``to_dict`` like an analysis or a failure."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def to_dict(self) -> dict[str, Any]:
        return self.record


def _backbones(stdout: TextIO, everything: bool = False) -> int:
    from core.weights import weights_status

    width = max(map(len, BACKBONES))
    for name, backbone in BACKBONES.items():
        kind = "offline" if backbone.offline else "online "
        default = " (default)" if name == DEFAULT_BACKBONE else ""
        print(f"{name:<{width}}  {kind}  {weights_status(backbone)}{default}", file=stdout)
        print(f"{'':<{width}}  {backbone.summary}", file=stdout)
    if everything:
        from core.registry import list_timm_backbones

        names = list_timm_backbones()
        print(f"\n{len(names)} convertible timm models (weights from the Hugging Face hub on first use):", file=stdout)
        print("\n".join(names), file=stdout)
    return 0


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Entry point of the ``classmap`` console script; returns the exit code."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "analyze":
        return _analyze(args, stdout, stderr)
    if args.command == "backbones":
        return _backbones(stdout, args.all)
    from ui.app import serve

    serve(host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
