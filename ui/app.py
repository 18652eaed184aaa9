"""The Gradio app: layout and wiring around ``ui.handlers``.

``build_app()`` builds the page; ``serve()`` launches it (``classmap app`` and ``python -m ui`` call it). The event
``analyze`` is the public API of CONTRACT.md: named inputs ``image`` (file), ``backbone``, ``kernel_size``,
``threshold`` (``box_threshold``, ``resolution``, ``padding``, ``scale_check`` optional), last output the analysis's
JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core.analysis import (
    BEST_MEASURED,
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_KERNEL_SIZE,
    DEFAULT_RESOLUTION,
    DEFAULT_SCALE_CHECK,
    DEFAULT_THRESHOLD,
)
from core.images import ImageError
from core.registry import DEFAULT_BACKBONE
from core.weights import WeightsError
from ui.components import EXAMPLES_DIR, CameraInput, PhotoInput
from ui.handlers import (
    RESOLUTION_CHOICES,
    WEBCAM_RESOLUTION,
    Session,
    analyze_photo,
    backbone_choices,
    friendly_error,
    webcam_frame,
    write_json,
)

__all__ = ["EXAMPLES_DIR", "build_app", "launch_options", "serve"]

EXAMPLES = ["chelsea.png", "coffee.png", "cat_and_coffee.jpg", "rocket.jpg", "astronaut.jpg", "grace_hopper.jpg"]
CSS_PATH = Path(__file__).resolve().parent / "style.css"
MAX_FILE_SIZE = "25mb"
# A session's cached network output is dropped after this long without a change (it is recomputed on demand).
SESSION_TTL_S = 2 * 3600
FAILURES = (ImageError, ValueError, WeightsError, OSError)  # as the CLI; ImageError is a ValueError

INTRO = """\
# Class Map Explorer
A classifier gives one answer per photo. Here it answers for **every patch**: **which class it sees where**."""

HOW_TO_READ = """\
### What am I looking at?
- **Heat maps (left):** one picture per class the network found. Bright yellow means the network is sure \
that patch shows the class; dark means another class wins there or nothing is sure. The colour scale is the \
same in every picture: probability 0 (black) to 1 (white).
- **Boxes (right):** a box around each region a found class wins, labelled with its highest probability.
- **Whole image, top 5:** what the unchanged classifier answers for the photo as a whole, for comparison.
- **Threshold:** a class is listed only if it wins some patch with at least this probability. Lower it to \
see less certain guesses; raise it to keep only the sure ones.
- **Kernel size:** how many neighbouring patches are averaged before deciding (1 = finest detail, \
5 = smoother, steadier maps).
- **Advanced:** *box threshold* is how sure a region must be to get a box; *resolution* is the size the photo \
is scaled to before the network sees it (bigger finds smaller things but takes longer); *padding* "same" keeps \
the map aligned with the photo's edges, "valid" is the original article's convolution; *scale check* keeps a \
class only where the classifier, looking at a photo-sized (224 px) window as it was trained to, agrees, which \
hides parts named as if they were whole objects.

Moving a slider does not run the network again: the app keeps its output and only redoes the last step."""

EMPTY_HINT = "Pick an example photo, or drop, paste or upload your own, on the left."

WEBCAM_HELP = f"""\
Point the camera at things and press **Record**. Each frame is analysed at {WEBCAM_RESOLUTION} px (short side) \
with the network and sliders chosen above; boxes show where a class wins above the box threshold."""


# ---------------------------------------------------------------------------------------------------------------
# Events: thin adapters from Gradio's values to ui.handlers and back
# ---------------------------------------------------------------------------------------------------------------
def analyze(
    image: str | None,
    backbone: str = DEFAULT_BACKBONE,
    kernel_size: float = DEFAULT_KERNEL_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    resolution: int | str = DEFAULT_RESOLUTION,
    padding: str = "same",
    scale_check: bool = DEFAULT_SCALE_CHECK,
    session: Session | None = None,
    progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way of asking for a progress bar
) -> tuple[Any, ...]:
    """Analyse an image: pseudo-CAM overlays, box view, classes found, top 5, and the JSON of CONTRACT.md (last).

    Args:
        image: the image file.
        backbone: the network (see ``classmap backbones``).
        kernel_size: 1, 3 or 5.
        threshold: a class is found where it wins a map cell above this probability.
        box_threshold: boxes enclose cells where a found class wins above this.
        resolution: analysis short side in pixels, or "native".
        padding: "same" or "valid".
        scale_check: keep a class only where the classifier, pooling over its own training view, also picks it.

    Returns:
        The session (kept by the page, not sent to API clients), the overlays as (picture, caption) pairs, the box
        view, found classes and top 5 as label -> score, the JSON file, a one-paragraph summary, and the JSON.
    """
    if image is None:
        return session, [], None, None, None, None, EMPTY_HINT, None
    try:
        view, session = analyze_photo(
            image,
            backbone,
            int(kernel_size),
            threshold,
            box_threshold,
            resolution,
            padding,
            bool(scale_check),
            session=session,
            on_progress=lambda fraction, message: progress(fraction, desc=message),
        )
    except FAILURES as error:
        message = friendly_error(error, backbone)
        raise gr.Error(message, title="Could not analyse this image", print_exception=False) from error
    return (
        session,
        list(view.overlays),
        view.boxes,
        view.found or None,
        view.top5,
        str(write_json(view.record)),
        view.summary,
        view.record,
    )


def show(
    image: str | None,
    backbone: str,
    kernel_size: float,
    threshold: float,
    box_threshold: float,
    resolution: int | str,
    padding: str,
    scale_check: bool,
    session: Session | None,
    selected: str | None,
    progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
) -> tuple[Any, ...]:
    """``analyze`` for the page: the gallery opens large on the class picked last (if still found), else the best."""
    outputs = analyze(
        image, backbone, kernel_size, threshold, box_threshold, resolution, padding, scale_check, session, progress
    )
    captions = [caption.rsplit(" (", 1)[0] for _, caption in outputs[1]]
    shown = captions.index(selected) if selected in captions else 0
    # gr.update, not gr.Gallery(...): a component built here would encode every picture once more.
    return (outputs[0], gr.update(value=outputs[1], selected_index=shown if captions else None), *outputs[2:])


def remember_selection(event: gr.SelectData) -> str | None:
    """The class of the heat map clicked in the gallery (its caption is "label (score)")."""
    caption = (event.value or {}).get("caption") or ""
    return caption.rsplit(" (", 1)[0] or None


def restore_backbone(session: Session | None) -> Any:
    """After a failed analysis, show the backbone whose results are still on the page."""
    return session.backbone if session is not None else gr.update()


def webcam(
    frame: Any,
    backbone: str,
    kernel_size: float,
    threshold: float,
    box_threshold: float,
    padding: str,
    scale_check: bool,
) -> tuple[Any, Any]:
    try:
        boxes, top5 = webcam_frame(
            frame, backbone, int(kernel_size), threshold, box_threshold, padding, scale_check=bool(scale_check)
        )
    except FAILURES as error:
        message = friendly_error(error, backbone)
        raise gr.Error(message, title="Could not analyse the camera frame", print_exception=False) from error
    return boxes, top5 or None


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
        session = gr.State(None, time_to_live=SESSION_TTL_S)
        selected = gr.State(None)  # the class whose heat map the viewer picked
        gr.Markdown(INTRO, elem_id="intro")

        with gr.Row(elem_id="settings", equal_height=True):
            backbone = gr.Dropdown(
                choices=backbone_choices(), value=DEFAULT_BACKBONE, label="Network", scale=3, elem_id="backbone"
            )
            kernel_size = gr.Slider(
                1,
                5,
                step=2,
                value=DEFAULT_KERNEL_SIZE,
                label="Kernel size",
                scale=2,
                min_width=250,
                elem_id="kernel-size",
            )
            threshold = gr.Slider(
                0, 1, step=0.01, value=DEFAULT_THRESHOLD, label="Threshold", scale=3, elem_id="threshold"
            )
        with (
            gr.Accordion("Advanced: box threshold, resolution, padding, scale check", open=False, elem_id="advanced"),
            gr.Row(equal_height=True),
        ):
            box_threshold = gr.Slider(
                0, 1, step=0.01, value=DEFAULT_BOX_THRESHOLD, label="Box threshold", elem_id="box-threshold"
            )
            resolution = gr.Dropdown(
                choices=RESOLUTION_CHOICES,
                value=DEFAULT_RESOLUTION,
                allow_custom_value=True,
                label="Analysis resolution (short side)",
                elem_id="resolution",
            )
            padding = gr.Radio(["same", "valid"], value="same", label="Padding", elem_id="padding")
            scale_check = gr.Checkbox(
                value=DEFAULT_SCALE_CHECK,
                label="Scale check",
                info="Keep a class only where the classifier's own 224 px view agrees",
                elem_id="scale-check",
            )
            preset = gr.Button(
                "Use the best-measured settings", size="sm", variant="secondary", elem_id="preset", scale=0
            )

        with gr.Tabs():
            with gr.Tab("Photo", id="photo-tab"):
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
                            label="Boxes", type="pil", interactive=False, height=420, format="jpeg", elem_id="boxes"
                        )
                with gr.Row(equal_height=True, elem_id="summary-row"):
                    summary = gr.Markdown(EMPTY_HINT, elem_id="summary")
                    download = gr.DownloadButton(
                        "Download JSON", size="md", variant="primary", scale=0, min_width=180, elem_id="download"
                    )
                with gr.Row(equal_height=False):
                    found = gr.Label(label="Classes found, best score", num_top_classes=8, elem_id="found")
                    top5 = gr.Label(label="Whole image, top 5", num_top_classes=5, show_heading=False, elem_id="top5")
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
                        elem_id="camera",
                    )
                    live = gr.Image(
                        label="Live boxes",
                        type="pil",
                        interactive=False,
                        height=400,
                        format="jpeg",
                        elem_id="live-boxes",
                    )
                    live_top = gr.Label(
                        label="Whole frame, top 5", num_top_classes=5, show_heading=False, elem_id="live-top5"
                    )

        photo_inputs = [
            image, backbone, kernel_size, threshold, box_threshold, resolution, padding, scale_check, session
        ]  # fmt: skip
        photo_outputs = [session, gallery, boxes, found, top5, download, summary, record]
        # The API of CONTRACT.md: the same function as the page, plain values out, no trigger on the page.
        gr.on([], analyze, photo_inputs, photo_outputs, api_name="analyze", concurrency_id="photo")
        # What needs the network again: a new image, network or resolution (progress covers the outputs) ...
        analysed = gr.on(
            [image.change, backbone.change, resolution.change],
            show,
            [*photo_inputs, selected],
            photo_outputs,
            api_visibility="private",
            concurrency_id="photo",
            trigger_mode="always_last",
        )
        # The preset QUALITY.md measured best (kernel 1, threshold 0.7, scale check): set the controls, then redraw.
        preset.click(
            lambda: (
                BEST_MEASURED["kernel_size"],
                BEST_MEASURED["threshold"],
                BEST_MEASURED["box_threshold"],
                BEST_MEASURED["scale_check"],
            ),
            None,
            [kernel_size, threshold, box_threshold, scale_check],
            api_visibility="private",
            queue=False,
        ).then(
            show,
            [*photo_inputs, selected],
            photo_outputs,
            api_visibility="private",
            concurrency_id="photo",
            show_progress="minimal",
        )
        # ... and what only re-runs the head: redrawn in place, the latest slider position wins.
        updated = gr.on(
            [kernel_size.input, threshold.input, box_threshold.input, padding.input, scale_check.input],
            show,
            [*photo_inputs, selected],
            photo_outputs,
            api_visibility="private",
            concurrency_id="photo",
            show_progress="minimal",
            trigger_mode="always_last",
        )
        gallery.select(remember_selection, None, selected, api_visibility="private", queue=False)
        # Each visit lists where the weights are now (a network downloaded since start-up says so).
        app.load(
            lambda: gr.update(choices=backbone_choices()),
            None,
            backbone,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        for event in (analysed, updated):
            event.failure(restore_backbone, session, backbone, api_visibility="private", queue=False)

        camera.stream(
            webcam,
            [camera, backbone, kernel_size, threshold, box_threshold, padding, scale_check],
            [live, live_top],
            stream_every=0.2,
            time_limit=300,
            concurrency_id="webcam",
            concurrency_limit=1,
            api_visibility="undocumented",
            show_progress="hidden",
        )
    # Two cores: one photo analysis and one webcam stream at a time; the rest wait their turn in the queue.
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch`` that every launch uses (the CLI, ``python -m ui``, the tests)."""
    return {
        "theme": _theme(),
        "css_paths": [CSS_PATH] if CSS_PATH.is_file() else None,
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "footer_links": ["api"],
        "state_session_capacity": 200,
    }


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Serve the app until interrupted (``classmap app``, ``python -m ui``). No public link unless ``share``."""
    build_app().launch(server_name=host, server_port=port, share=share, **launch_options())
