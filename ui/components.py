"""The one component of our own: ``gr.Image`` that leaves decoding to core.

Gradio writes a ``.pyi`` stub next to the module of every component class it sees defined (for editors' event
autocompletion); a template like this one adds no events, so that stub would only be a stray copy of this file in
the source tree. The hook is switched off while the class is created.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import gradio.component_meta as _component_meta
from gradio.data_classes import ImageData

__all__ = ["PhotoInput"]

_write_stub = _component_meta.create_or_modify_pyi
_component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
try:

    class PhotoInput(gr.Image):
        """``gr.Image`` that hands the uploaded file's path to our code without opening it.

        ``gr.Image`` opens uploads with PIL before the event runs, so a file that is not an image would fail there,
        with PIL's words. Core's ``load_image`` reads the path instead: EXIF orientation, modes, size limits, and
        our message when it is not an image. Same front end as ``gr.Image`` (a template component).
        """

        is_template = True

        def preprocess(self, payload: ImageData | None) -> Any:
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return payload.path
            return super().preprocess(payload)

finally:
    _component_meta.create_or_modify_pyi = _write_stub
