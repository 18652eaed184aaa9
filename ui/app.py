"""The Gradio app: layout and wiring around ``ui.handlers``.

``build_app()`` builds the page; ``serve()`` launches it (``classmap app`` and ``python -m ui`` call it). The public
events (docs/CONTRACT.md): ``analyze`` takes named inputs ``image`` (file), ``backbone``, ``kernel_size``,
``threshold`` (the other settings optional) and returns the analysis's JSON last; ``probe`` takes the image, the
settings and a point ``x``, ``y`` in image pixels and returns the map cell's top 5.

The event functions here are the only place where settings travel as flat parameters, because Gradio passes one
value per control: each turns them into one ``core.Settings`` with ``Settings.parse`` (which names a bad setting and
its allowed values) and calls a handler.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core.images import ImageError
from core.settings import KERNEL_SIZES, MAX_MIN_CELLS, MAX_PART_RATIO, MAX_SCALES, PADDINGS, Settings
from core.weights import WeightsError
from ui import handlers
from ui.components import (
    EXAMPLES_DIR,
    CameraInput,
    ClassMapImage,
    PhotoInput,
    SettingCheckbox,
    SettingDropdown,
    SettingRadio,
    SettingSlider,
)

__all__ = ["EXAMPLES_DIR", "build_app", "launch_options", "serve"]

EXAMPLES = ["chelsea.png", "coffee.png", "cat_and_coffee.jpg", "rocket.jpg", "astronaut.jpg", "grace_hopper.jpg"]
CSS_PATH = Path(__file__).resolve().parent / "style.css"
MAX_FILE_SIZE = "25mb"
FAILURES = (ImageError, ValueError, WeightsError, OSError)  # as the CLI; ImageError is a ValueError
# The webcam: how often the browser sends a frame (s), and the size it captures (smaller frames cost less to encode,
# send and decode; they are analysed at ui.handlers.WEBCAM_RESOLUTION anyway). Measured in Chromium: see BENCHMARKS.md.
WEBCAM_STREAM_EVERY = 0.05  # 0.1 s: 9.3 frames/s shown, 0.05 s: 9.6 (bench.explorer)
WEBCAM_CONSTRAINTS = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}
RATE_WINDOW = 20  # frames the shown frame rate is averaged over
# Run in the browser when the Photo tab is chosen: the camera's own Stop button is pressed if it is streaming. A
# hidden stream still costs the browser ~0.4 of a core here (capture, encoding), which slowed the photo tab's
# analysis 1.4-1.7x (BENCHMARKS.md, 8).
STOP_CAMERA_JS = """() => {
  const button = document.querySelector('#camera button.capture-button');
  if (button && /stop/i.test(button.innerText)) button.click();
}"""
DEFAULTS = Settings()

INTRO = """\
# Class Map Explorer
A classifier gives one answer per photo. Here it answers for **every patch**: **which class it sees where**."""

GRANULARITY_INFO = (
    "Classes: ImageNet's 1000. Groups: fixed families such as 'car' or 'terrier'. "
    "Adaptive: as specific as the network is sure of: 'beagle', else 'hound' or 'dog'."
)

HOW_TO_READ = """\
### What am I looking at?
- **Heat maps:** one picture per class (or group) the network found. Bright yellow means the network is sure \
that patch shows it; dark means something else wins there or nothing is sure. The colour scale is the same in \
every picture: probability 0 (black) to 1 (white).
- **Boxes:** a box around each region a found class wins, labelled with its highest probability. **Click** \
anywhere on it to see what the network sees in that patch (its top 5, under the pictures).
- **Class map:** every patch in the colour of the class (or group) that wins it, where it wins above the box \
threshold; hover over the legend or the picture for names.
- **Whole image, top 5:** what the unchanged classifier answers for the whole photo shown at its own input \
size (224 px), as any classification demo would: for comparison.
- **Threshold:** a class is listed only if it wins some patch with at least this probability. Lower it to \
see less certain guesses; raise it to keep only the sure ones.
- **Kernel size:** how many neighbouring patches are averaged before deciding (1 = finest detail, \
5 = smoother, steadier maps).
- **What to name:** *classes* are ImageNet's 1000; *groups* add up related classes (all cars, all terriers), \
so the network's certainty about *what kind of thing* it sees is not split between look-alike classes; \
*adaptive* names each patch as precisely as the network is sure of: "beagle" where it is sure of the breed, \
"hound" or "dog" where it is not.
- **Advanced:** *box threshold* is how sure a region must be to get a box; *resolution* is the size the photo \
is scaled to before the network sees it; *scales* lets the network also look at larger copies of the photo \
(finds smaller things, takes longer); *smallest region* hides a class that wins only a lone patch (more often a \
part or a texture than an object); *parts give way* drops a class that touches another one many times its \
size (a cap on a uniform, a bridle on a horse; 0 keeps them all); *padding* "same" keeps the map aligned with \
the photo's edges, "valid" is the original article's convolution; *scale check* keeps a class only where the \
classifier, looking at a photo-sized (224 px) window as it was trained to, agrees.

Moving a slider does not run the network again: the app keeps its output and only redoes the last step."""

EMPTY_HINT = "Pick an example photo, or drop, paste or upload your own, on the left."

WEBCAM_HELP = f"""\
Point the camera at things and press **Record**. Each frame is analysed at {handlers.WEBCAM_RESOLUTION} px \
(short side), one scale, with the network and sliders chosen above; boxes show where a class wins above the box \
threshold. Leaving this tab stops the camera."""


# ---------------------------------------------------------------------------------------------------------------
# Events: thin adapters from Gradio's values to ui.handlers and back
# ---------------------------------------------------------------------------------------------------------------
SETTING_NAMES = frozenset(field.name for field in dataclasses.fields(Settings))
# The settings' controls in the order the page's events pass them (the API events name them one by one).
CONTROLS = (
    "backbone",
    "kernel_size",
    "threshold",
    "box_threshold",
    "resolution",
    "padding",
    "scale_check",
    "granularity",
    "scales",
    "min_cells",
    "part_ratio",
)


PAGE_OUTPUTS = 10  # what ``show`` returns: the photo tab's pictures, labels, summary, JSON and kept state


def settings_from(arguments: dict[str, Any]) -> Settings:
    """``Settings.parse`` of an event's setting arguments (its other arguments are left out).

    Each event function calls it with its ``locals()`` first thing: Gradio passes one value per control, and this
    is where they become one ``Settings``.

    Raises:
        gradio.Error: a setting that is not allowed, named with its allowed values (on the page, or to the client).
    """
    try:
        return Settings.parse(**{name: value for name, value in arguments.items() if name in SETTING_NAMES})
    except (TypeError, ValueError) as error:
        raise gr.Error(str(error), title="Not a valid setting", print_exception=False) from error


def _failed(error: Exception, backbone: Any, title: str) -> gr.Error:
    return gr.Error(
        handlers.friendly_error(error, backbone if isinstance(backbone, str) else None),
        title=title,
        print_exception=False,
    )


def analyze(
    image: str | None,
    backbone: str = DEFAULTS.backbone,
    kernel_size: float = DEFAULTS.kernel_size,
    threshold: float = DEFAULTS.threshold,
    box_threshold: float = DEFAULTS.box_threshold,
    resolution: int | str = DEFAULTS.resolution,
    padding: str = DEFAULTS.padding,
    scale_check: bool = DEFAULTS.scale_check,
    granularity: str = DEFAULTS.granularity,
    scales: float = DEFAULTS.scales,
    min_cells: float = DEFAULTS.min_cells,
    part_ratio: float = DEFAULTS.part_ratio,
    progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way of asking for a progress bar
) -> tuple[Any, ...]:
    """Analyse an image: pseudo-CAM overlays, box view, what was found, top 5, and the JSON (last).

    The API keeps nothing after the call (no slider follows a script's call).

    Args:
        image: the image file.
        backbone: the network (see ``classmap backbones``).
        kernel_size: 1, 3 or 5.
        threshold: a class is found where it wins a map cell above this probability.
        box_threshold: boxes enclose cells where a found class wins above this.
        resolution: analysis short side in pixels (the smallest scale), or "native".
        padding: "same" or "valid".
        scale_check: keep a class only where the classifier, pooling over its own training view, also picks it.
        granularity: "class" (ImageNet's 1000 classes), "group" (fixed WordNet groups such as "car") or
            "adaptive" (per map cell, the most specific class or WordNet synset whose probability passes
            ``threshold``: "beagle" where the network is sure of the breed, "hound" or "dog" where it is not).
        scales: how many image sizes the network sees (1..4).
        min_cells: a class or group is found only where it wins at least this many map cells (1..16).
        part_ratio: a found class or group that touches another one at least this many times its size (in cells
            above ``threshold``) is a part of it and is dropped (a cap on a uniform); 0 keeps all, else 2..20.
        progress: Gradio's progress bar (not an input).

    Returns:
        The overlays as (picture, caption) pairs, the box view, the class map of everything (photo and one mask per
        class or group), found and the classifier's own top 5 as label -> score, the JSON file, a one-paragraph
        summary, and the JSON.
    """
    settings = settings_from(locals())
    if image is None:
        return [], None, None, None, None, None, EMPTY_HINT, None
    try:
        view = handlers.analyze_photo(
            image, settings, cache=None, on_progress=lambda fraction, message: progress(fraction, desc=message)
        )
    except FAILURES as error:
        raise _failed(error, backbone, "Could not analyse this image") from error
    return (
        list(view.overlays),
        view.boxes,
        gr.update(value=view.class_map, color_map=view.class_colors),
        view.found or None,
        view.top5,
        str(handlers.write_json(view.record)),
        view.summary,
        view.record,
    )


def show(
    image: str | None,
    *values: Any,
    progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
) -> tuple[Any, ...]:
    """The page's analysis: the network's output is kept for the sliders; the gallery stays on the picked class.

    ``values`` are the controls' values in ``CONTROLS`` order, then the channel picked last in the gallery.
    """
    *controls, selected = values
    settings = settings_from(dict(zip(CONTROLS, controls, strict=True)))
    if image is None:
        empty = gr.update(value=[], selected_index=None)
        return empty, None, None, None, None, None, EMPTY_HINT, None, (), gr.update()
    try:
        view = handlers.analyze_photo(
            image, settings, on_progress=lambda fraction, message: progress(fraction, desc=message)
        )
    except FAILURES as error:
        raise _failed(error, settings.backbone, "Could not analyse this image") from error
    shown = view.channels.index(selected) if selected in view.channels else 0
    return (
        # gr.update, not gr.Gallery(...): a component built here would encode every picture once more.
        gr.update(value=list(view.overlays), selected_index=shown if view.channels else None),
        view.boxes,
        gr.update(value=view.class_map, color_map=view.class_colors),
        view.found or None,
        view.top5,
        str(handlers.write_json(view.record)),
        view.summary,
        view.record,
        view.channels,
        settings.backbone,
    )


def show_parts(
    image: str | None,
    *values: Any,
    progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
) -> tuple[Any, ...]:
    """A move of the "Parts give way" slider: as ``show``, but 1 (not allowed) leaves the page as it is.

    Dragging up from 0 passes 1 on the way: no error shows then. Released there, ``check_part_ratio`` says why.
    """
    if values[CONTROLS.index("part_ratio")] == 1:
        return tuple(gr.skip() for _ in range(PAGE_OUTPUTS))
    return show(image, *values, progress=progress)


def check_part_ratio(part_ratio: Any) -> None:
    """The "Parts give way" slider let go: a value the settings refuse (1) gets its message."""
    settings_from({"part_ratio": part_ratio})


def probe(
    image: str | None,
    x: float,
    y: float,
    backbone: str = DEFAULTS.backbone,
    kernel_size: float = DEFAULTS.kernel_size,
    threshold: float = DEFAULTS.threshold,
    box_threshold: float = DEFAULTS.box_threshold,
    resolution: int | str = DEFAULTS.resolution,
    padding: str = DEFAULTS.padding,
    scale_check: bool = DEFAULTS.scale_check,
    granularity: str = DEFAULTS.granularity,
    scales: float = DEFAULTS.scales,
    min_cells: float = DEFAULTS.min_cells,
    part_ratio: float = DEFAULTS.part_ratio,
) -> tuple[Any, ...]:
    """What the network sees at one point: the top 5 classes (or groups) of the map cell under (x, y).

    At granularity "adaptive": the cell's answer (a class or a synset, when one passes ``threshold``) first, then
    its most probable classes.

    Args:
        image: the image file.
        x: the point's horizontal position, in the image's own pixels (0 at the left).
        y: its vertical position (0 at the top).
        backbone: as for ``analyze`` (and so are the settings below).
        kernel_size: as for ``analyze``.
        threshold: as for ``analyze``.
        box_threshold: as for ``analyze``.
        resolution: as for ``analyze``.
        padding: as for ``analyze``.
        scale_check: as for ``analyze``.
        granularity: as for ``analyze``.
        scales: as for ``analyze``.
        min_cells: as for ``analyze``.
        part_ratio: as for ``analyze``.

    Returns:
        The cell's top 5 as label -> probability, the box view with the cell marked, and the answer as JSON (last).
    """
    settings = settings_from(locals())
    try:
        point = (float(x), float(y))
    except (TypeError, ValueError):
        raise gr.Error("x and y must be numbers (pixels of the image)", print_exception=False) from None
    try:
        view = handlers.probe_photo(image, settings, *point)
    except FAILURES as error:
        raise _failed(error, backbone, "Could not probe this point") from error
    return view.top, view.marked, view.to_dict()


def probe_click(
    image: str | None,
    backbone: str,
    kernel_size: float,
    threshold: float,
    box_threshold: float,
    resolution: int | str,
    padding: str,
    scale_check: bool,
    granularity: str,
    scales: float,
    min_cells: float,
    part_ratio: float,
    event: gr.SelectData,
) -> tuple[Any, ...]:
    """A click on the box view: probe the map cell under it (the picture is drawn at screen size)."""
    settings = settings_from(locals())
    if image is None or not event.index:
        return gr.update(), gr.update()
    try:
        view = handlers.probe_photo(image, settings, *event.index, on_picture=True)
    except FAILURES as error:
        raise _failed(error, backbone, "Could not probe this point") from error
    return view.top, view.marked


def remember_selection(channels: tuple[int, ...], event: gr.SelectData) -> int | None:
    """The channel (class index or group) of the heat map clicked in the gallery."""
    index = event.index if isinstance(event.index, int) else None
    return channels[index] if channels and index is not None and 0 <= index < len(channels) else None


def preset(name: str) -> tuple[Any, ...]:
    """The controls' values of a named preset (``Settings.preset``)."""
    settings = Settings.preset(name)
    return (
        settings.kernel_size,
        settings.threshold,
        settings.box_threshold,
        settings.scale_check,
        settings.granularity,
        settings.scales,
        settings.padding,
        settings.min_cells,
        settings.part_ratio,
    )


def webcam(
    frame: Any,
    backbone: str,
    kernel_size: float,
    threshold: float,
    box_threshold: float,
    padding: str,
    scale_check: bool,
    granularity: str,
    min_cells: float,
    part_ratio: float,
    frame_times: tuple[float, ...] = (),
) -> tuple[Any, ...]:
    """One camera frame: the box view, the frame's top 5, and the frames answered per second lately."""
    settings = settings_from(locals())
    try:
        boxes, top5 = handlers.webcam_frame(frame, settings)
    except FAILURES as error:
        raise _failed(error, backbone, "Could not analyse the camera frame") from error
    frame_times = (*frame_times[-(RATE_WINDOW - 1) :], time.monotonic())
    span = frame_times[-1] - frame_times[0]
    if span <= 0:
        rate = "measuring the frame rate…"
    elif len(frame_times) == 2 or int(frame_times[-1]) != int(frame_times[-2]):  # then once a second: each update
        rate = f"**{(len(frame_times) - 1) / span:.1f}** analysed frames/s"  # re-renders Markdown in the browser
    else:
        rate = gr.skip()
    return boxes, top5 or None, rate, frame_times


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------
def _theme() -> gr.themes.Base:
    # System fonts only: the default theme's web fonts would be fetched from the internet.
    return gr.themes.Soft(
        primary_hue="orange",
        secondary_hue="amber",
        neutral_hue="slate",
        text_size="lg",
        font=("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "DejaVu Sans", "sans-serif"),
        font_mono=("ui-monospace", "DejaVu Sans Mono", "monospace"),
    )


def build_app() -> gr.Blocks:
    """The whole page: settings above, a Photo tab and a Webcam tab."""
    with gr.Blocks(title="Class Map Explorer", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        selected = gr.State(None)  # the channel whose heat map the viewer picked
        channels = gr.State(())  # the channel of each heat map shown
        gr.Markdown(INTRO, elem_id="intro")

        with gr.Row(elem_id="settings", equal_height=True):
            backbone = SettingDropdown(
                choices=handlers.backbone_choices(),
                value=DEFAULTS.backbone,
                allow_custom_value=True,  # any timm:<model> typed in
                label="Network",
                info="or type timm:<model>",
                scale=3,
                elem_id="backbone",
            )
            kernel_size = SettingSlider(
                min(KERNEL_SIZES),
                max(KERNEL_SIZES),
                step=2,
                value=DEFAULTS.kernel_size,
                label="Kernel size",
                scale=2,
                min_width=220,
                elem_id="kernel-size",
            )
            threshold = SettingSlider(
                0, 1, step=0.01, value=DEFAULTS.threshold, label="Threshold", scale=3, elem_id="threshold"
            )
            granularity = SettingRadio(
                [("Classes", "class"), ("Groups", "group"), ("Adaptive", "adaptive")],
                value=DEFAULTS.granularity,
                label="What to name",
                info=GRANULARITY_INFO,
                scale=3,
                elem_id="granularity",
            )
        with gr.Accordion(
            "Advanced: box threshold, resolution, scales, smallest region, parts give way, padding, scale check",
            open=False,
        ):
            with gr.Row(equal_height=True, elem_id="advanced"):
                box_threshold = SettingSlider(
                    0, 1, step=0.01, value=DEFAULTS.box_threshold, label="Box threshold", elem_id="box-threshold"
                )
                resolution = SettingDropdown(
                    choices=handlers.RESOLUTION_CHOICES,
                    value=DEFAULTS.resolution,
                    allow_custom_value=True,
                    label="Analysis resolution (short side)",
                    elem_id="resolution",
                )
                scales = SettingSlider(
                    1,
                    MAX_SCALES,
                    step=1,
                    value=DEFAULTS.scales,
                    label="Scales",
                    info="Also look at larger copies of the photo (√2 apart, at most twice its own size)",
                    elem_id="scales",
                )
                min_cells = SettingSlider(
                    1,
                    MAX_MIN_CELLS,
                    step=1,
                    value=DEFAULTS.min_cells,
                    label="Smallest region",
                    info="Name a class only where it wins at least this many map patches (1: any single patch)",
                    elem_id="min-cells",
                )
                part_ratio = SettingSlider(
                    0,
                    MAX_PART_RATIO,
                    step=1,
                    value=DEFAULTS.part_ratio,
                    label="Parts give way",
                    info="Drop a class that touches one this many times its size (0: keep all; 1 is not allowed)",
                    elem_id="part-ratio",
                )
                padding = SettingRadio(list(PADDINGS), value=DEFAULTS.padding, label="Padding", elem_id="padding")
                scale_check = SettingCheckbox(
                    value=DEFAULTS.scale_check,
                    label="Scale check",
                    info="Keep a class only where the classifier's own 224 px view agrees",
                    elem_id="scale-check",
                )
            with gr.Row():
                seed_preset = gr.Button("The seed article's settings", size="sm", elem_id="preset-seed")
                best_preset = gr.Button("The best-measured settings", size="sm", elem_id="preset-best")

        with gr.Tabs():
            with gr.Tab("Photo", id="photo-tab") as photo_tab:
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=260):
                        image = PhotoInput(
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            label="Photo",
                            height=220,
                            elem_id="photo",
                        )
                        examples = [EXAMPLES_DIR / name for name in EXAMPLES if (EXAMPLES_DIR / name).is_file()]
                        if examples:
                            gr.Examples(
                                [[str(path)] for path in examples],
                                inputs=[image],
                                label="Or pick one",
                                examples_per_page=len(examples),
                                elem_id="examples",
                            )
                    with gr.Column(scale=3, min_width=300):
                        gallery = gr.Gallery(
                            label="Heat map per class found",
                            columns=4,
                            format="jpeg",  # encoded on every slider move: ~40x faster than webp, ~200x than png
                            height=420,
                            preview=True,
                            object_fit="contain",
                            interactive=False,
                            elem_id="overlays",
                        )
                    with gr.Column(scale=3, min_width=300):
                        boxes = gr.Image(
                            label="Boxes (click a point to probe it)",
                            alt_text="The photo with a labelled box around each region a class or group wins",
                            type="pil",
                            interactive=False,
                            height=420,
                            format="jpeg",
                            elem_id="boxes",
                        )
                with gr.Row(equal_height=True, elem_id="summary-row"):
                    summary = gr.Markdown(EMPTY_HINT, elem_id="summary")
                    download = gr.DownloadButton(
                        "Download JSON", size="md", variant="primary", scale=0, min_width=180, elem_id="download"
                    )
                with gr.Row(equal_height=False):
                    class_map = ClassMapImage(
                        label="Class map: every patch in the colour of what wins it (hover for names)",
                        format="jpeg",
                        height=420,
                        scale=3,
                        elem_id="class-map",
                    )
                    with gr.Column(scale=2, min_width=260):
                        probed = gr.Label(
                            label="Probe: the clicked patch, top 5",
                            num_top_classes=5,
                            show_heading=False,
                            elem_id="probe",
                        )
                        found = gr.Label(label="Found, best score", num_top_classes=8, elem_id="found")
                        top5 = gr.Label(
                            label="Whole image, top 5: the unchanged classifier at its own 224 px",
                            num_top_classes=5,
                            show_heading=False,
                            elem_id="top5",
                        )
                with gr.Accordion("The analysis as JSON (what the API returns)", open=False):
                    record = gr.JSON(label="JSON", elem_id="json")
                gr.Markdown(HOW_TO_READ, elem_id="how-to-read")

            with gr.Tab("Webcam", id="webcam-tab"):
                gr.Markdown(WEBCAM_HELP)
                with gr.Row():
                    camera = CameraInput(
                        sources=["webcam"],
                        streaming=True,
                        type="numpy",
                        label="Camera",
                        height=400,
                        webcam_options=gr.WebcamOptions(mirror=True, constraints=WEBCAM_CONSTRAINTS),
                        elem_id="camera",
                    )
                    live = gr.Image(
                        label="Live boxes",
                        alt_text="The latest camera frame with a labelled box around each region a class or group wins",
                        type="pil",
                        interactive=False,
                        height=400,
                        format="jpeg",
                        elem_id="live-boxes",
                    )
                    with gr.Column(min_width=220):
                        live_rate = gr.Markdown("", elem_id="live-rate")
                        live_top = gr.Label(
                            label="Whole frame, top 5", num_top_classes=5, show_heading=False, elem_id="live-top5"
                        )
                frame_times = gr.State(())

        controls = [
            backbone,
            kernel_size,
            threshold,
            box_threshold,
            resolution,
            padding,
            scale_check,
            granularity,
            scales,
            min_cells,
            part_ratio,
        ]
        shown_backbone = gr.State(DEFAULTS.backbone)
        page_outputs = [gallery, boxes, class_map, found, top5, download, summary, record, channels, shown_backbone]
        assert len(page_outputs) == PAGE_OUTPUTS
        # The API of docs/CONTRACT.md: the page's analysis with plain values out, no trigger on the page.
        gr.on(
            [],
            analyze,
            [image, *controls],
            [gallery, boxes, class_map, found, top5, download, summary, record],
            api_name="analyze",
            concurrency_id="photo",
        )
        x, y = gr.Number(visible=False), gr.Number(visible=False)
        gr.on([], probe, [image, x, y, *controls], [probed, boxes, record], api_name="probe", concurrency_id="photo")
        # What needs the network again: a new image, network, resolution or number of scales ...
        analysed = gr.on(
            [image.change, backbone.change, resolution.change, scales.release],
            show,
            [image, *controls, selected],
            page_outputs,
            api_visibility="private",
            concurrency_id="photo",
            trigger_mode="always_last",
        )
        # ... and what only re-runs the head: redrawn in place, the latest slider position wins.
        updated = gr.on(
            [
                kernel_size.input,
                threshold.input,
                box_threshold.input,
                padding.input,
                scale_check.input,
                granularity.input,
                min_cells.input,
            ],
            show,
            [image, *controls, selected],
            page_outputs,
            api_visibility="private",
            concurrency_id="photo",
            show_progress="minimal",
            trigger_mode="always_last",
        )
        # "Parts give way" as the others, except that 1, which every drag up from 0 passes, is not allowed: passed
        # over while moving, and a message if the slider is let go there.
        parted = part_ratio.input(
            show_parts,
            [image, *controls, selected],
            page_outputs,
            api_visibility="private",
            concurrency_id="photo",
            show_progress="minimal",
            trigger_mode="always_last",
        )
        part_ratio.release(  # queued: an error of an event outside the queue shows no message on the page
            check_part_ratio, part_ratio, None, api_visibility="private", concurrency_limit=None, show_progress="hidden"
        )
        preset_controls = [
            kernel_size,
            threshold,
            box_threshold,
            scale_check,
            granularity,
            scales,
            padding,
            min_cells,
            part_ratio,
        ]
        for button, name in ((seed_preset, "seed"), (best_preset, "best")):
            button.click(
                lambda name=name: preset(name), None, preset_controls, api_visibility="private", queue=False
            ).then(
                show,
                [image, *controls, selected],
                page_outputs,
                api_visibility="private",
                concurrency_id="photo",
                show_progress="minimal",
            )
        gallery.select(remember_selection, channels, selected, api_visibility="private", queue=False)
        boxes.select(probe_click, [image, *controls], [probed, boxes], api_visibility="private", concurrency_id="photo")
        # Each visit lists where the weights are now (a network downloaded since start-up says so).
        app.load(
            lambda: gr.update(choices=handlers.backbone_choices()),
            None,
            backbone,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        # After a failed analysis, show the backbone whose results are still on the page.
        for event in (analysed, updated, parted):
            event.failure(lambda name: name, shown_backbone, backbone, api_visibility="private", queue=False)

        # Leaving the Webcam tab stops the camera (its light goes off), which leaves the cores to the photo tab.
        photo_tab.select(None, js=STOP_CAMERA_JS, api_visibility="private", queue=False)
        camera.stream(
            webcam,
            [
                camera,
                backbone,
                kernel_size,
                threshold,
                box_threshold,
                padding,
                scale_check,
                granularity,
                min_cells,
                part_ratio,
                frame_times,
            ],
            [live, live_top, live_rate, frame_times],
            stream_every=WEBCAM_STREAM_EVERY,
            time_limit=300,
            concurrency_id="webcam",
            concurrency_limit=1,
            api_visibility="undocumented",
            show_progress="hidden",
        )
    # Two cores: one photo analysis and one webcam stream at a time; the rest wait their turn in the queue.
    app.queue(default_concurrency_limit=1, max_size=64)
    # The process's first analysis costs ~1 s more than the next ones (the groups, the network's first run, fonts):
    # paid here in the background, while the server starts and the first page loads.
    threading.Thread(target=handlers.warm_up, name="warm-up", daemon=True).start()
    return app


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch`` that every launch uses (the CLI, ``python -m ui``, the tests)."""
    return {
        "theme": _theme(),
        "css_paths": [CSS_PATH] if CSS_PATH.is_file() else None,
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "footer_links": ["api"],
    }


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Serve the app until interrupted (``classmap app``, ``python -m ui``). No public link unless ``share``."""
    build_app().launch(server_name=host, server_port=port, share=share, **launch_options())
