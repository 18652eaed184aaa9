"""Class Map Explorer's web app (Gradio): layout and wiring around plain handler functions.

- ``ui.handlers``  what the app does, as plain functions (no gradio): analyse a photo with a per-session cache of
  the network's output, analyse a webcam frame, write the JSON;
- ``ui.app``       the page (``build_app``) and ``serve`` (``classmap app``, ``python -m ui``).

Nothing here runs a network itself: ``core`` does, ``ui`` shows what comes back.
"""
