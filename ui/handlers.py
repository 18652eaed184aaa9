"""What the app does, as plain functions: paths, PIL images and ``Settings`` in, frozen dataclasses out.

Nothing here imports gradio or touches a tensor, so every handler can be called and tested directly. The expensive
step, the network, runs in ``core.prepare``; its result is kept in ``PREPARED``, one cache for every session, bounded in
memory and evicting the least recently used, so that a slider move only re-runs ``Prepared.analyze`` (the converted
head, thresholds, boxes) and the drawing. What a page keeps per session is only a key into that cache.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.analysis import Prepared, prepare
from core.cache import get_model, intra_op_threads
from core.images import ImageError
from core.registry import BACKBONES, get_backbone
from core.render import box_view, class_map_layers, overlays
from core.results import Analysis, FoundClass
from core.settings import Settings
from core.weights import WeightsError, weights_status

__all__ = [
    "COMPUTE",
    "DISPLAY_MAX_SIDE",
    "MAX_OVERLAYS",
    "PREPARED",
    "RESOLUTION_CHOICES",
    "WEBCAM_RESOLUTION",
    "WEBCAM_THREADS",
    "ComputeLock",
    "PhotoView",
    "PreparedCache",
    "ProbeView",
    "analyze_photo",
    "backbone_choices",
    "backbone_label",
    "friendly_error",
    "probe_photo",
    "warm_up",
    "webcam_frame",
    "write_json",
]

# Short side the webcam frames are analysed at (one scale): a 320 x 240 frame becomes 192 x 256, a 6 x 8 map with the
# default backbone. Measured in Chromium with the fake camera on 2 cores (`python -m bench --only explorer`): 8.7
# frames/s shown at 224 px, 9.6 at 192 (BENCHMARKS.md).
WEBCAM_RESOLUTION = 192
# Intra-op threads for a camera frame's network run: half the cores. A 256 x 192 frame gains little from more, and
# the browser showing the stream (on the same machine when the app runs locally) and the server's I/O need cores
# too. On 2 cores, in Chromium: 1 thread 11.9 frames/s shown, 2 threads 10.3 (means of 6 interleaved 12-s runs).
WEBCAM_THREADS = max(1, (os.cpu_count() or 2) // 2)
# Pictures are drawn (and photos kept) at most this many pixels on their long side: a 12-megapixel photo would
# otherwise cost ~0.5 s per overlay on every slider move, for detail no screen shows. The JSON keeps original pixels.
DISPLAY_MAX_SIDE = 1280
# Heat maps drawn per update: the best ones. A low threshold can find hundreds of classes, and each picture costs
# time on every slider move; the JSON and the class list keep them all.
MAX_OVERLAYS = 12
# How opaque the class map's colours are over the photo (the photo stays readable under them).
CLASS_MAP_ALPHA = 0.55
# Memory the cache of prepared images may use, for every session together (features and screen-sized photos).
CACHE_BUDGET_BYTES = int(float(os.environ.get("CLASSMAP_CACHE_MB", "1024")) * 2**20)
RESOLUTION_CHOICES: list[tuple[str, int | str]] = [
    *((f"{size} px{' (default)' if size == Settings().resolution else ''}", size)
      for size in sorted({224, 320, 448, 640, 896, Settings().resolution})),
    ("native (the photo as it is)", "native"),
]  # fmt: skip

# timm models the network dropdown offers besides the registered ones (any other convertible name can be typed).
TIMM_SUGGESTIONS = ("timm:resnet50.a1_in1k", "timm:convnext_tiny.in12k_ft_in1k", "timm:efficientnet_b3.ra2_in1k")
ProgressCallback = Callable[[float, str], None]


class ComputeLock:
    """One network computation at a time in this process, photos before camera frames.

    Each computation already uses every core (intra-op threads); a photo analysis and a webcam frame computed side
    by side fight over them and both run several times slower. A camera frame waits while a photo computation
    runs or waits: a person who clicked on the photo tab is waiting for that answer, while a skipped frame is
    replaced by the next one. Loading a network (perhaps downloading it) and the drawing stay outside.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._photos_waiting = 0

    @contextlib.contextmanager
    def photo(self) -> Iterator[None]:
        """Hold the lock for a photo's computation (before any waiting camera frame)."""
        with self._changed:
            self._photos_waiting += 1
            try:
                self._changed.wait_for(lambda: not self._busy)
            finally:
                self._photos_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def frame(self) -> Iterator[None]:
        """Hold the lock for a camera frame's computation, once no photo computation runs or waits."""
        with self._changed:
            self._changed.wait_for(lambda: not self._busy and not self._photos_waiting)
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()


COMPUTE = ComputeLock()


# -------------------------------------------------------------------------------------------------------------
# Choices shown on the page
# -------------------------------------------------------------------------------------------------------------
def backbone_label(name: str) -> str:
    """``name`` and where its weights are: "offline", "downloaded" or "downloads on first use"."""
    backbone = get_backbone(name)
    status = weights_status(backbone)
    if backbone.offline:
        where = "offline" if status.available else "offline package missing"
    elif status.available:
        where = "downloaded"
    else:
        where = str(status)  # "downloads on first use"
    return f"{name} · {where}"


def backbone_choices() -> list[tuple[str, str]]:
    """(label, name) for every registered backbone (offline ones first), then a few timm models to try.

    The page's dropdown also takes any other ``timm:<model>`` typed in (``classmap backbones --all`` lists them).
    """
    return [(backbone_label(name), name) for name in (*BACKBONES, *TIMM_SUGGESTIONS)]


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
# The cache of prepared images, shared by every session
# -------------------------------------------------------------------------------------------------------------
def _bytes_of(prepared: Prepared) -> int:
    width, height = prepared.picture.size
    return prepared.feature_bytes() + width * height * 3


class PreparedCache:
    """Prepared images by (file content, network settings), least recently used evicted beyond a memory budget.

    A key holds the SHA-256 of the file's bytes, so a session can only ever reach features of a picture it sent
    itself; sessions that send the same picture share them. Each entry is counted as its features plus its
    screen-sized photo (``prepare(..., picture_side=DISPLAY_MAX_SIDE)``: no full-size photo is ever kept).
    """

    def __init__(self, budget_bytes: int = CACHE_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._entries: collections.OrderedDict[tuple[Any, ...], tuple[Prepared, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Prepared | None:
        """The prepared image for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[Any, ...], prepared: Prepared) -> None:
        """Keep ``prepared``; evict the least recently used entries until the budget holds (the newest stays)."""
        size = _bytes_of(prepared)
        with self._lock:
            self._entries[key] = (prepared, size)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.used_bytes > self.budget_bytes:
                self._entries.popitem(last=False)

    @property
    def used_bytes(self) -> int:
        """Memory the kept entries hold."""
        return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


PREPARED = PreparedCache()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def _release_memory() -> None:
    """Give the network's freed working memory back to the system (glibc keeps it in per-thread pools otherwise).

    Every Gradio worker thread gets its own allocator arena; a four-scale analysis frees a few hundred MB of
    activations into the arena of whichever thread ran it, so after 20 concurrent clients the server held 1.6 GB
    more than before, all of it free. ``malloc_trim`` returns it; it costs a few milliseconds after a network run.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by the file's stat too: a path that is rewritten gets hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _content_key(path: str) -> str | None:
    try:
        stat = os.stat(path)
        return _digest(path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return None  # core's load_image says what is wrong with it


# -------------------------------------------------------------------------------------------------------------
# Photo
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoView:
    """Everything the page shows for one analysed photo.

    Attributes:
        analysis: the analysis (original-pixel boxes; the pictures are drawn at screen size from it).
        overlays: (pseudo-CAM picture, "label (score)") pairs, best first, at most ``MAX_OVERLAYS``.
        channels: the map channel (class index, group or synset number) of each overlay, for keeping a selection.
        boxes: the photo with every box drawn and labelled.
        class_map: the class map of everything, as ``gr.AnnotatedImage`` takes it: (photo, [(mask, label), ...]),
            each mask the cells a class or group wins above the box threshold (0.55 where it wins: see-through).
        class_colors: label -> "#rrggbb" for the class map's legend (the box view's colours).
        found: found class or group -> score, best first.
        top5: the unmodified classifier's top 5 for the whole photo at its own input size (224 px) -> probability.
        record: ``analysis.to_dict()``, the JSON of docs/CONTRACT.md.
        summary: one Markdown paragraph: what was analysed, how, and what came out.
        network_ran: False when the features came from the cache (a slider move).
        seconds: time this call took.
    """

    analysis: Analysis = field(repr=False)
    overlays: tuple[tuple[Image.Image, str], ...]
    channels: tuple[int, ...]
    boxes: Image.Image
    class_map: tuple[Image.Image, list[tuple[np.ndarray, str]]] = field(repr=False)
    class_colors: dict[str, str]
    found: dict[str, float]
    top5: dict[str, float]
    record: dict[str, Any]
    summary: str
    network_ran: bool
    seconds: float


def _unique_labels(pairs: list[tuple[int, str, float]]) -> dict[str, float]:
    # A dict keyed by label would merge two entries of the same name (ImageNet's two "crane"s, say).
    labels = [label for _, label, _ in pairs]
    return {(label if labels.count(label) == 1 else f"{label} #{key}"): float(value) for key, label, value in pairs}


def _plural(count: int, kind: str) -> str:
    return f"**{count}** {kind}{'' if count == 1 else 'es' if kind == 'class' else 's'}"


def _counted(classes: tuple[FoundClass, ...], granularity: str) -> str:
    """How many were found, in Markdown: "**3** classes", "**2** groups", at "adaptive" "**2** classes and **1** group".

    An adaptive answer is a class (it has an index) or a WordNet synset such as "hound" (a group of classes).
    """
    if granularity == "group":
        return _plural(len(classes), "group")
    if granularity == "class":
        return _plural(len(classes), "class")
    single = sum(entry.index is not None for entry in classes)  # a synset ("hound", "dog") has no class index
    parts = [_plural(n, kind) for n, kind in ((single, "class"), (len(classes) - single, "group")) if n]
    return " and ".join(parts)


def _summary(analysis: Analysis, network_seconds: float | None, seconds: float) -> str:
    height, width = analysis.image_size
    mh, mw = analysis.map_size
    settings = analysis.settings
    if analysis.classes:
        count = len(analysis.classes)
        found = f"{_counted(analysis.classes, settings.granularity)} above {settings.threshold:.2f}"
        if settings.scale_check:
            found += ", scale-checked"
        if count > MAX_OVERLAYS:
            found += f" (heat maps of the best {MAX_OVERLAYS})"
    else:
        kind = {"class": "class", "group": "group"}.get(settings.granularity, "class or group")
        found = (
            f"**no {kind}** wins any part of the photo above {settings.threshold:.2f}: "
            f"lower the threshold, or try another network"
        )
    sizes = " + ".join(f"{w}×{h}" for h, w in analysis.scales)
    timing = (
        f"network ran in {network_seconds:.1f} s"
        if network_seconds is not None
        else f"redrawn in {seconds * 1000:.0f} ms, network output reused"
    )
    lines = [
        f"{found} · `{analysis.source}` {width}×{height} · **{settings.backbone}** at {sizes} → {mw}×{mh} map "
        f"· {timing}"
    ]
    lines += [f"⚠️ {notice}" for notice in analysis.notices]
    return "\n\n".join(lines)


def prepared_photo(
    image: str | os.PathLike | None,
    settings: Settings,
    *,
    cache: PreparedCache | None = PREPARED,
    on_progress: ProgressCallback | None = None,
) -> tuple[Prepared, float | None]:
    """The photo after the network, from ``cache`` when it holds it; and the seconds the network took (None: cached).

    Raises:
        core.images.ImageError: no image, not an image, unreadable, or too large.
        core.weights.WeightsError: the backbone's weights are missing and could not be downloaded.
    """
    if image is None:
        raise ImageError("no image: upload a photo, paste one, or pick an example")
    path = os.fspath(image)
    content = _content_key(path)
    key = (content, settings.network_key)
    if content is not None and cache is not None and (prepared := cache.get(key)) is not None:
        return prepared, None
    start = time.perf_counter()
    if on_progress is not None:
        status = weights_status(get_backbone(settings.backbone)) if settings.backbone in BACKBONES else None
        first = " (downloading its weights first)" if status is not None and status.will_download else ""
        on_progress(0.0, f"Running {settings.backbone} on the photo{first}…")
    model = get_model(settings.backbone)  # loaded, or downloaded, outside the lock: the others keep computing
    with COMPUTE.photo():
        prepared = prepare(path, settings, model=model, source=Path(path).name, picture_side=DISPLAY_MAX_SIDE)
    if content is not None and cache is not None:
        cache.put(key, prepared)
    return prepared, time.perf_counter() - start


def warm_up(settings: Settings | None = None) -> bool:
    """Pay, before the first visitor does, what a process's first analysis costs on top of the network (~1 s here).

    Loads ``settings.backbone`` if its weights are on this machine (never a download), builds the WordNet groups,
    and analyses and draws a small grey picture once (the network's first run, the fonts, the colour maps).

    Returns:
        Whether it ran (False: the weights would have to be downloaded first).
    """
    settings = settings if settings is not None else Settings()
    backbone = get_backbone(settings.backbone)
    if not (backbone.offline and weights_status(backbone).available):
        return False
    model = get_model(settings.backbone)
    grey = Image.new("RGB", (96, 64), (128, 128, 128))
    everything = settings.replace(threshold=0.0, min_cells=1)  # every cell "found": every drawing step runs
    with COMPUTE.photo():
        prepared = prepare(grey, everything, model=model, source="warm-up")
        analysis = prepared.analyze(everything)
        prepared.classifier_top5()
    overlays(analysis, prepared.picture, limit=1)
    class_map_layers(analysis, prepared.picture.size)
    box_view(analysis, prepared.picture)
    return True


def analyze_photo(
    image: str | os.PathLike | None,
    settings: Settings,
    *,
    cache: PreparedCache | None = PREPARED,
    on_progress: ProgressCallback | None = None,
) -> PhotoView:
    """Analyse a photo file, reusing the cached network output when only head settings changed.

    Args:
        image: path of the image file; core decodes it (EXIF orientation, modes, size limits).
        settings: every analysis setting.
        cache: where prepared photos are kept between calls (None: keep nothing, as for API calls).
        on_progress: called as ``on_progress(fraction, message)`` before slow steps.

    Returns:
        What to show.

    Raises:
        core.images.ImageError: no image, not an image, unreadable, or too large.
        core.weights.WeightsError: the backbone's weights are missing and could not be downloaded.
    """
    start = time.perf_counter()
    prepared, network_seconds = prepared_photo(image, settings, cache=cache, on_progress=on_progress)
    with COMPUTE.photo():
        analysis = prepared.analyze(settings)
        whole = prepared.classifier_top5()
    if network_seconds is not None:
        _release_memory()
    drawn = overlays(analysis, prepared.picture, limit=MAX_OVERLAYS)
    layers = class_map_layers(analysis, prepared.picture.size)
    seconds = time.perf_counter() - start
    return PhotoView(
        analysis=analysis,
        overlays=tuple((item.image, item.caption) for item in drawn),
        channels=tuple(item.channel for item in drawn),
        boxes=box_view(analysis, prepared.picture),
        class_map=(prepared.picture, [(layer.mask * CLASS_MAP_ALPHA, layer.label) for layer in layers]),
        class_colors={layer.label: "#{:02x}{:02x}{:02x}".format(*layer.color) for layer in layers},
        found=_unique_labels([(c.channel, c.label, c.score) for c in analysis.classes]),
        top5=_unique_labels([(t.index, t.label, t.probability) for t in whole]),
        record=analysis.to_dict(),
        summary=_summary(analysis, network_seconds, seconds),
        network_ran=network_seconds is not None,
        seconds=seconds,
    )


# -------------------------------------------------------------------------------------------------------------
# Probe: what the network sees in one map cell
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeView:
    """The map cell under a point: its top classes (or groups), and the photo with the cell marked.

    Attributes:
        x, y: the point, in original image pixels.
        cell: the cell's rectangle (x0, y0, x1, y1) in original image pixels.
        top: label -> probability, most probable first.
        entries: the same as plain JSON values (index, label, probability, members, wnid).
        marked: the screen-sized box view with the cell outlined.
        seconds: time this call took.
    """

    x: float
    y: float
    cell: tuple[float, float, float, float]
    top: dict[str, float]
    entries: tuple[dict[str, Any], ...]
    marked: Image.Image = field(repr=False)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what the ``probe`` API returns)."""
        return {"x": self.x, "y": self.y, "cell": list(self.cell), "top": list(self.entries)}


def probe_photo(
    image: str | os.PathLike | None,
    settings: Settings,
    x: float,
    y: float,
    *,
    on_picture: bool = False,
    cache: PreparedCache | None = PREPARED,
) -> ProbeView:
    """The top 5 classes (or groups, following ``settings.granularity``) of the map cell under (x, y).

    At granularity "adaptive": the cell's answer (a class, or a synset such as "hound", when one passes the
    threshold) first, then its most probable classes.

    Args:
        image: path of the image file.
        settings: every analysis setting (the map is the one these settings give).
        x: a point's horizontal position, in original image pixels (``on_picture``: in the screen-sized picture's).
        y: its vertical position.
        on_picture: the point was clicked on a picture drawn at screen size.
        cache: prepared photos (a cached photo answers without running the network).

    Returns:
        The cell's answer and the photo with the cell marked.

    Raises:
        ValueError: a point outside the map; ImageError, WeightsError as ``analyze_photo``.
    """
    start = time.perf_counter()
    prepared, _ = prepared_photo(image, settings, cache=cache)
    height, width = prepared.image_size
    sx, sy = prepared.picture.width / width, prepared.picture.height / height
    if on_picture:
        x, y = (x + 0.5) / sx, (y + 0.5) / sy  # the centre of the clicked screen pixel
    with COMPUTE.photo():
        entries = prepared.probe(x, y, settings)
        cell = prepared.cell_box(x, y, settings)
        analysis = prepared.analyze(settings)
    picture = box_view(analysis, prepared.picture)
    line = max(2, round(max(picture.size) / 200))
    ImageDraw.Draw(picture).rectangle(
        (cell[0] * sx, cell[1] * sy, cell[2] * sx - 1, cell[3] * sy - 1), outline=(0, 200, 255), width=line
    )
    return ProbeView(
        x=float(x),
        y=float(y),
        cell=cell,
        top=_unique_labels([(i, e.label, e.probability) for i, e in enumerate(entries)]),
        entries=tuple(e.to_dict() for e in entries),
        marked=picture,
        seconds=time.perf_counter() - start,
    )


# -------------------------------------------------------------------------------------------------------------
# Files handed to the browser
# -------------------------------------------------------------------------------------------------------------
@functools.cache
def _json_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="classmap-json-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the folder goes with the process
    return folder


def write_json(record: dict[str, Any], directory: str | os.PathLike | None = None) -> Path:
    """Write an analysis's JSON to ``<directory>/<content hash>/<stem>.classmap.json`` and return the path.

    The same analysis always lands in the same file, so a long demo of slider moves does not pile up copies.
    ``directory`` defaults to one temporary folder per process, removed when the process exits.
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
    frame: np.ndarray | Image.Image | None, settings: Settings
) -> tuple[Image.Image | None, dict[str, float]]:
    """One camera frame: the box view and the whole frame's top 5, at ``WEBCAM_RESOLUTION``, one scale.

    Raises:
        core.images.ImageError, core.weights.WeightsError: as ``analyze_photo``.
    """
    if frame is None:
        return None, {}
    settings = settings.replace(resolution=WEBCAM_RESOLUTION, scales=1)
    model = get_model(settings.backbone)
    with COMPUTE.frame(), intra_op_threads(WEBCAM_THREADS):  # inside the lock: the thread count is process-wide
        prepared = prepare(frame, settings, model=model, source="webcam")
        analysis = prepared.analyze(settings)
    return box_view(analysis, prepared.picture), _unique_labels(
        [(t.index, t.label, t.probability) for t in analysis.top5]
    )
