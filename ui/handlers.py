"""What the app does, as plain functions: paths, PIL images and dicts in, frozen dataclasses out.

Nothing here imports gradio, so every handler can be called (and tested) directly. The expensive step, the CNN, runs
in ``core.analysis.prepare``; its result is kept in a per-session ``Session`` so that a slider move only re-runs
``Prepared.analyze`` (the converted head, thresholds, boxes) and the drawing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.analysis import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_KERNEL_SIZE,
    DEFAULT_RESOLUTION,
    DEFAULT_SCALE_CHECK,
    DEFAULT_THRESHOLD,
    Analysis,
    Prepared,
    check_settings,
    get_model,
    prepare,
)
from core.images import ImageError
from core.registry import BACKBONES, DEFAULT_BACKBONE
from core.render import box_view, overlays
from core.weights import WeightsError, weights_status

__all__ = [
    "DISPLAY_MAX_SIDE",
    "MAX_OVERLAYS",
    "RESOLUTION_CHOICES",
    "WEBCAM_RESOLUTION",
    "PhotoView",
    "Session",
    "analyze_photo",
    "backbone_choices",
    "backbone_label",
    "friendly_error",
    "parse_resolution",
    "webcam_frame",
    "write_json",
]

# Short side the webcam frames are analysed at: a 640 x 480 frame becomes 224 x 299, a 7 x 10 map with the
# default backbone, fast enough for several frames a second on two CPU cores.
WEBCAM_RESOLUTION = 224
# Pictures are drawn at most this many pixels on their long side: a 12-megapixel photo would otherwise cost
# ~0.5 s per overlay on every slider move, for detail no screen shows. The JSON keeps original-pixel boxes.
DISPLAY_MAX_SIDE = 1280
# Heat maps drawn per update: the best ones. A low threshold can find hundreds of classes, and each picture costs
# time on every slider move; the JSON and the class list keep them all.
MAX_OVERLAYS = 12
RESOLUTION_CHOICES: list[tuple[str, int | str]] = [
    *((f"{size} px{' (default)' if size == DEFAULT_RESOLUTION else ''}", size)
      for size in sorted({224, 320, 448, 640, 896, DEFAULT_RESOLUTION})),
    ("native (the photo as it is)", "native"),
]  # fmt: skip

ProgressCallback = Callable[[float, str], None]

# One network computation at a time in this process. Each already uses every core (intra-op threads); a photo
# analysis and a webcam frame computed side by side on two cores fight over them and both run several times slower.
# Loading a network (perhaps downloading it) and the drawing stay outside.
_COMPUTE = threading.Lock()


# -------------------------------------------------------------------------------------------------------------
# Choices shown on the page
# -------------------------------------------------------------------------------------------------------------
def backbone_label(name: str) -> str:
    """``name`` and where its weights are: "offline", "downloaded" or "downloads on first use"."""
    backbone = BACKBONES[name]
    status = weights_status(backbone)
    if backbone.offline:
        where = "offline" if status.startswith("embedded (") else "offline package missing"
    elif status.startswith("cached"):
        where = "downloaded"
    else:
        where = status  # "downloads on first use"
    return f"{name} · {where}"


def backbone_choices() -> list[tuple[str, str]]:
    """(label, name) for every registered backbone, offline ones first (the registry's order)."""
    return [(backbone_label(name), name) for name in BACKBONES]


def parse_resolution(value: int | float | str | None) -> int | str:
    """The resolution a dropdown or an API call hands us: an int short side, a numeric string, or "native".

    Raises:
        ValueError: anything else (core checks the range).
    """
    if value is None or value == "":
        return DEFAULT_RESOLUTION
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "native":
            return "native"
        text = text.removesuffix("px").strip()
        if text.isdigit():
            return int(text)
        raise ValueError(f"resolution must be a short side in pixels (such as 448) or 'native', got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # an int, or something core will refuse with its own message


def friendly_error(error: Exception, backbone: str | None = None) -> str:
    """The message a person sees for a failed analysis: core's own words, after what to do for missing weights."""
    if isinstance(error, WeightsError):
        offline = ", ".join(name for name, entry in BACKBONES.items() if entry.offline)
        entry = BACKBONES.get(backbone or "")
        if entry is not None and entry.offline:
            lead = f"{backbone}'s weights come in a Python package that is not installed here."
        else:
            lead = f"{backbone or 'This network'} needs weights from the internet, and they could not be downloaded."
        return f"{lead} The offline networks work without internet: {offline}.\n\nDetails: {error}"
    return str(error)


# -------------------------------------------------------------------------------------------------------------
# Photo
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    """One browser session's network output, reused while only the head settings change.

    The features depend on the file, the backbone and the analysis resolution; kernel size, thresholds and padding
    only change the head. The file is known by its path, size and modification time, and by a hash of its bytes
    (an API client that uploads the same file again gets a fresh copy with a new modification time).
    """

    file: tuple[str, int, int]  # path, size, modification time (ns)
    digest: str  # SHA-256 of the file's bytes
    resolution: int | str
    prepared: Prepared = dataclasses.field(repr=False)
    cnn_seconds: float = 0.0

    @property
    def backbone(self) -> str:
        return self.prepared.model.name

    def matches(self, file: tuple[str, int, int], backbone: str, resolution: int | str) -> bool:
        """True when these features are the ones ``file`` with ``backbone`` at ``resolution`` would give."""
        if backbone != self.backbone or resolution != self.resolution:
            return False
        if file == self.file:
            return True
        # Same name and size but touched since: the same picture if the bytes are the same.
        same_name = Path(file[0]).name == Path(self.file[0]).name
        return same_name and file[1] == self.file[1] and _digest(file[0]) == self.digest


def _file_stat(path: str) -> tuple[str, int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, -1, -1)  # core's load_image says what is wrong with it
    return (path, stat.st_size, stat.st_mtime_ns)


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


@dataclass(frozen=True)
class PhotoView:
    """Everything the page shows for one analysed photo."""

    analysis: Analysis = dataclasses.field(repr=False)
    overlays: tuple[tuple[Image.Image, str], ...]  # (pseudo-CAM picture, "label (score)"), best first, at most 12
    boxes: Image.Image  # the photo with every box drawn and labelled
    found: dict[str, float]  # found class -> score, best first
    top5: dict[str, float]  # the unmodified classifier's top 5 -> probability
    record: dict[str, Any]  # analysis.to_dict(): CONTRACT.md's JSON
    summary: str  # one Markdown paragraph: what was analysed, how, and what came out
    cnn_ran: bool  # False when the features came from the session (a slider move)
    seconds: float  # time this call took


def _unique_labels(pairs: list[tuple[int, str, float]]) -> dict[str, float]:
    # ImageNet has two "crane"s and two "maillot"s: a dict keyed by label would merge them.
    labels = [label for _, label, _ in pairs]
    return {(label if labels.count(label) == 1 else f"{label} #{index}"): float(value) for index, label, value in pairs}


def _display_scale(analysis: Analysis, image: Image.Image) -> tuple[Analysis, Image.Image]:
    """The analysis and image scaled so the long side is at most ``DISPLAY_MAX_SIDE`` (for drawing only)."""
    width, height = image.size
    scale = DISPLAY_MAX_SIDE / max(width, height)
    if scale >= 1.0:
        return analysis, image
    small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    sx, sy = small.width / width, small.height / height
    x0, y0, x1, y1 = analysis.extent
    boxes = tuple(
        dataclasses.replace(b, box=tuple(round(v * s) for v, s in zip(b.box, (sx, sy, sx, sy), strict=True)))
        for b in analysis.boxes
    )
    scaled = dataclasses.replace(
        analysis, extent=(x0 * sx, y0 * sy, x1 * sx, y1 * sy), boxes=boxes, image_size=(small.height, small.width)
    )
    return scaled, small


def _summary(analysis: Analysis, cnn_seconds: float, seconds: float, cnn_ran: bool) -> str:
    height, width = analysis.image_size
    ah, aw = analysis.analysis_size
    mh, mw = analysis.map_size
    if analysis.classes:
        count = len(analysis.classes)
        found = f"**{count}** class{'es' if count > 1 else ''} above {analysis.threshold:.2f}"
        if analysis.scale_check:
            found += ", scale-checked"
        if count > MAX_OVERLAYS:
            found += f" (heat maps of the best {MAX_OVERLAYS})"
    else:
        found = (
            f"**no class** wins any part of the photo above {analysis.threshold:.2f}: "
            f"lower the threshold, or try another network"
        )
    if cnn_ran:
        timing = f"network ran in {cnn_seconds:.1f} s"
    else:
        timing = f"redrawn in {seconds * 1000:.0f} ms, network output reused"
    lines = [
        f"{found} · `{analysis.source}` {width}×{height} · **{analysis.backbone}** at {aw}×{ah} → {mw}×{mh} map "
        f"· {timing}"
    ]
    lines += [f"⚠️ {notice}" for notice in analysis.notices]
    return "\n\n".join(lines)


def analyze_photo(
    image: str | os.PathLike | None,
    backbone: str = DEFAULT_BACKBONE,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    resolution: int | str = DEFAULT_RESOLUTION,
    padding: str = "same",
    scale_check: bool = DEFAULT_SCALE_CHECK,
    *,
    session: Session | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[PhotoView, Session]:
    """Analyse a photo file, reusing the session's CNN features when only head settings changed.

    Args:
        image: path of the image file; core decodes it (EXIF orientation, modes, size limits).
        backbone, kernel_size, threshold, box_threshold, resolution, padding, scale_check: as ``core.analyze``.
        session: the previous call's session, or None.
        on_progress: called as ``on_progress(fraction, message)`` before slow steps.

    Returns:
        What to show, and the session to keep for the next call.

    Raises:
        core.images.ImageError: not an image, unreadable, or too large.
        ValueError: a setting out of range or an unknown backbone (message names the setting).
        core.weights.WeightsError: the backbone's weights are missing and could not be downloaded.
    """
    start = time.perf_counter()
    if image is None:
        raise ImageError("no image: upload a photo, paste one, or pick an example")
    path = os.fspath(image)
    resolution = parse_resolution(resolution)
    check_settings(kernel_size, threshold, box_threshold, padding)  # before the network runs, as core.analyze
    file = _file_stat(path)
    if session is None or not session.matches(file, backbone, resolution):
        if on_progress is not None:
            status = weights_status(BACKBONES[backbone]) if backbone in BACKBONES else ""
            first = " (downloading its weights first)" if status == "downloads on first use" else ""
            on_progress(0.0, f"Running {backbone} on the photo{first}…")
        model = get_model(backbone)  # loaded, or downloaded, outside the lock: the others keep computing meanwhile
        with _COMPUTE:
            prepared = prepare(path, model, resolution, source=Path(path).name)
        session = Session(file, _digest(path), resolution, prepared, time.perf_counter() - start)
        cnn_ran = True
    else:
        cnn_ran = False
    with _COMPUTE:
        analysis = session.prepared.analyze(kernel_size, threshold, box_threshold, padding, scale_check)  # type: ignore[arg-type]

    shown, picture = _display_scale(analysis, session.prepared.image)
    pictures = tuple((item.image, item.caption) for item in overlays(shown, picture, limit=MAX_OVERLAYS))
    boxes = box_view(shown, picture)
    found = _unique_labels([(c.index, c.label, c.score) for c in analysis.classes])
    top5 = _unique_labels([(t.index, t.label, t.probability) for t in analysis.top5])
    seconds = time.perf_counter() - start
    view = PhotoView(
        analysis=analysis,
        overlays=pictures,
        boxes=boxes,
        found=found,
        top5=top5,
        record=analysis.to_dict(),
        summary=_summary(analysis, session.cnn_seconds, seconds, cnn_ran),
        cnn_ran=cnn_ran,
        seconds=seconds,
    )
    return view, session


@functools.cache
def _json_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="classmap-json-"))


def write_json(record: dict[str, Any], directory: str | os.PathLike | None = None) -> Path:
    """Write an analysis's JSON to ``<directory>/<content hash>/<stem>.classmap.json`` and return the path.

    The same analysis always lands in the same file, so a long demo of slider moves does not pile up copies.
    ``directory`` defaults to one temporary folder per process.
    """
    directory = _json_dir() if directory is None else directory
    text = json.dumps(record, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    stem = Path(str(record.get("image", {}).get("source", "image"))).stem or "image"
    path = Path(directory) / digest / f"{stem}.classmap.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


# -------------------------------------------------------------------------------------------------------------
# Webcam
# -------------------------------------------------------------------------------------------------------------
def webcam_frame(
    frame: np.ndarray | Image.Image | None,
    backbone: str = DEFAULT_BACKBONE,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    padding: str = "same",
    resolution: int | str = WEBCAM_RESOLUTION,
    scale_check: bool = DEFAULT_SCALE_CHECK,
) -> tuple[Image.Image | None, dict[str, float]]:
    """One camera frame: the box view and the whole frame's top 5, at a small analysis size for speed.

    Raises:
        core.images.ImageError, ValueError, core.weights.WeightsError: as ``analyze_photo``.
    """
    if frame is None:
        return None, {}
    model = get_model(backbone)
    with _COMPUTE:
        prepared = prepare(frame, model, resolution, source="webcam")
        analysis = prepared.analyze(kernel_size, threshold, box_threshold, padding, scale_check)  # type: ignore[arg-type]
    return box_view(analysis, prepared.image), _unique_labels(
        [(t.index, t.label, t.probability) for t in analysis.top5]
    )
