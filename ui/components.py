"""Our two components: ``gr.Image`` for photos and for the camera, each reading only files the app may read.

Gradio checks a file argument against its upload folder only when the payload carries its ``meta`` marker; an API
call that sends ``{"path": "/etc/some.png"}`` without it reaches a component's ``preprocess`` unchecked, and
``gr.Image`` would open that server file and send the picture back. Both components here accept a path only inside
Gradio's upload folder (where uploads land) or the shipped examples, and refuse anything else with one message that
says nothing about the path (whether it exists, what it is).

Gradio writes a ``.pyi`` stub next to the module of every component class it sees defined (for editors' event
autocompletion); a template like these adds no events, so that stub would only be a stray copy of this file in the
source tree. The hook is switched off while the classes are created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.component_meta as _component_meta
from gradio.data_classes import ImageData
from gradio.utils import get_upload_folder

__all__ = ["EXAMPLES_DIR", "REFUSED", "CameraInput", "PhotoInput", "readable_upload"]

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

finally:
    _component_meta.create_or_modify_pyi = _write_stub
