"""Our components: ``gr.Image`` for photos and for the camera, each reading only files the app may read; the class map.

Gradio checks a file argument against its upload folder only when the payload carries its ``meta`` marker; an API
call that sends ``{"path": "/etc/some.png"}`` without it reaches a component's ``preprocess`` unchecked, and
``gr.Image`` would open that server file and send the picture back. Both components here accept a path only inside
Gradio's upload folder (where uploads land) or the shipped examples, and refuse anything else with one message that
says nothing about the path (whether it exists, what it is).

Gradio writes a ``.pyi`` stub next to the module of every component class it sees defined (for editors' event
autocompletion); a template like these adds no events, so that stub would only be a stray copy of this file in the
source tree. The hook is switched off while the classes are created.

``ClassMapImage`` is ``gr.AnnotatedImage`` with a faster encoding of the masks it is given on every analysis and
slider move (see its docstring).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.component_meta as _component_meta
import numpy as np
from gradio import processing_utils, utils
from gradio.components.annotated_image import AnnotatedImageData, Annotation
from gradio.data_classes import FileData, ImageData
from gradio.utils import get_upload_folder
from PIL import Image

__all__ = [
    "EXAMPLES_DIR",
    "REFUSED",
    "CameraInput",
    "ClassMapImage",
    "PhotoInput",
    "SettingCheckbox",
    "SettingDropdown",
    "SettingRadio",
    "SettingSlider",
    "readable_upload",
]

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
REFUSED = "This file was not uploaded to the app: upload the image (or pick an example) and try again."


def readable_upload(path: str | os.PathLike) -> bool:
    """True when ``path`` (links resolved) lies in Gradio's upload folder or in the shipped examples."""
    real = Path(os.path.realpath(path))
    for folder in (get_upload_folder(), EXAMPLES_DIR):
        try:
            real.relative_to(os.path.realpath(folder))
            return True
        except ValueError:
            continue
    return False


def _one_level(mask: Any, shape: tuple[int, ...]) -> float | None:
    """The one value a mask of ``shape`` takes outside its zeros (0.0 if all zero), or None if it is not such a mask."""
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        return None
    level = float(mask.max()) if mask.size else 0.0
    if not 0.0 <= level <= 1.0 or not ((mask == 0) | (mask == level)).all():
        return None
    return level


def _hex_to_rgb(value: str) -> list[int]:
    # gr.AnnotatedImage's reading of a colour: "#rrggbb" (or "#rgb" as single hex digits)
    value = value.lstrip("#")
    step = len(value) // 3
    return [int(value[i : i + step], 16) for i in range(0, len(value), step)]


def _checked(payload: ImageData | None) -> ImageData | None:
    if payload is None or (payload.url or "").startswith("data:"):
        return payload  # nothing, or the picture itself inline: no file is read
    if not payload.path or not readable_upload(payload.path):
        raise gr.Error(REFUSED, title="Not an uploaded file", print_exception=False)
    return payload


_write_stub = _component_meta.create_or_modify_pyi
_component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
try:

    class PhotoInput(gr.Image):
        """``gr.Image`` that hands an uploaded file's path to our code without opening it.

        ``gr.Image`` opens uploads with PIL before the event runs, so a file that is not an image would fail there,
        with PIL's words. Core's ``load_image`` reads the path instead: EXIF orientation, modes, size limits, and
        our message when it is not an image. Same front end as ``gr.Image`` (a template component).
        """

        is_template = True

        def preprocess(self, payload: ImageData | None) -> Any:
            """The uploaded file's path (or a decoded inline picture), only for files the app may read.

            Raises:
                gradio.Error: a path outside the upload folder and the examples.
            """
            payload = _checked(payload)
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return payload.path
            return super().preprocess(payload)

    class CameraInput(gr.Image):
        """``gr.Image`` for webcam frames: as Gradio's, but a file path must be an upload (a template component)."""

        is_template = True

        def preprocess(self, payload: ImageData | None) -> Any:
            """The frame as ``gr.Image`` decodes it, only for inline pictures and uploaded files.

            Raises:
                gradio.Error: a path outside the upload folder and the examples.
            """
            return super().preprocess(_checked(payload))

    class ClassMapImage(gr.AnnotatedImage):
        """``gr.AnnotatedImage`` that sends a mask of one colour and one opacity as a two-colour PNG.

        Gradio turns each mask into a float64 RGBA picture at the photo's size and saves it as an RGBA PNG: ~13 ms
        a mask at 901 x 300 px, ~100 ms for a class map's seven to ten, on every analysis and slider move. The class
        map's masks are one class's cells at one opacity, so each is sent as a 1-byte-per-pixel palette PNG instead
        (transparent, and the label's colour at that opacity: ~1.7 ms, a sixth of the bytes) that decodes to the
        same RGBA pixels as Gradio's. Anything else (boxes, graded masks, a file path as the picture) goes through
        Gradio's own ``postprocess``. Same front end (a template component).
        """

        is_template = True

        def postprocess(self, value: Any) -> AnnotatedImageData | None:
            """The picture and its masks as files, as ``gr.AnnotatedImage`` makes them (same decoded pixels)."""
            if value is None:
                return None
            picture, annotations = value
            if isinstance(picture, Image.Image):
                shape = (picture.height, picture.width)
            elif isinstance(picture, np.ndarray):
                shape = picture.shape[:2]
            else:
                return super().postprocess(value)
            levels = [_one_level(mask, shape) for mask, _ in annotations]
            if any(level is None for level in levels):
                return super().postprocess(value)
            data = super().postprocess((picture, []))  # the picture, encoded as Gradio does
            colors = self.color_map or {}
            for (mask, label), level in zip(annotations, levels, strict=True):
                # Gradio's colour: the label's hex colour, else red; its opacity: mask x 255, truncated to a byte
                rgb = _hex_to_rgb(colors[label]) if label in colors else [255, 0, 0]
                on = np.ascontiguousarray(mask > 0, dtype=np.uint8)
                png = Image.frombuffer("P", (shape[1], shape[0]), on, "raw", "P", 0, 1)
                png.putpalette([0, 0, 0, *rgb], "RGB")
                png.info["transparency"] = bytes([0, int(np.uint8(level * 255))])
                path = processing_utils.save_pil_to_cache(png, cache_dir=self.GRADIO_CACHE, format="png")
                data.annotations.append(Annotation(image=FileData(path=str(utils.abspath(path))), label=label))
            return data

    # A setting's control hands the event the value exactly as sent. Gradio's own checks fail on an API value of the
    # wrong type without a message ("abc" for a slider), round 3.9 to a step, or echo a 20 MB string back whole;
    # ``core.Settings.parse`` checks every setting instead, naming it and its allowed values, and cuts its echoes.
    # (Template components: the front end is the base class's, found through ``__base__``, so the base comes first.)

    def _as_sent(self: gr.components.Component, payload: Any) -> Any:
        """The value as sent; ``Settings.parse`` validates it."""
        return payload

    # SettingSlider, SettingDropdown, SettingRadio, SettingCheckbox: Gradio's controls, values checked by Settings.
    SettingSlider, SettingDropdown, SettingRadio, SettingCheckbox = (
        type(
            f"Setting{base.__name__}",
            (base,),
            {
                "__module__": __name__,
                "is_template": True,
                "preprocess": _as_sent,
                "__doc__": f"``gr.{base.__name__}`` whose value ``Settings.parse`` checks (a template component).",
            },
        )
        for base in (gr.Slider, gr.Dropdown, gr.Radio, gr.Checkbox)
    )

finally:
    _component_meta.create_or_modify_pyi = _write_stub
