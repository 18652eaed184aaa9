"""5. The webcam path's frame rate; 6. the app's latency through ``gradio_client``, as a real client sees it."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import core
from bench.browser import free_port
from bench.common import PHOTO, Config, model, photo
from bench.report import Goal, Section, Table, ms, times
from bench.timing import interleave, paired_ratio
from core.registry import DEFAULT_BACKBONE

__all__ = ["run_app", "run_webcam"]

WEBCAM_INTRO = """\
The app's streaming handler (`ui.handlers.webcam_frame`: `prepare` at the webcam resolution, `analyze`, box view) on
640 x 480 frames at default settings, each frame a little different so nothing is reused."""
APP_INTRO = """\
`ui.app.build_app()` launched on 127.0.0.1 and called through `gradio_client.Client` on its public `analyze` event
(a script's call: the network runs every time, nothing is kept), then the page's handler in process
(`ui.handlers.analyze_photo` with the app's cache): a first analysis and a threshold change on the same photo (the
network's output reused). The in-process handler is timed
the same way, so the HTTP and Gradio overhead shows."""
FPS_GOAL = 5.0
NEW_THRESHOLD = 0.5


def _webcam_handler() -> tuple[Callable[[np.ndarray], Any], int, str]:
    """The app's streaming handler at the default settings, its resolution, and its name."""
    from ui import handlers

    settings = core.Settings()
    return (
        lambda frame: handlers.webcam_frame(frame, settings),
        int(handlers.WEBCAM_RESOLUTION),
        "`ui.handlers.webcam_frame` (the app's streaming handler)",
    )


def run_webcam(config: Config) -> Section:
    handler, resolution, what = _webcam_handler()
    base = np.asarray(photo(640, 480)).astype(np.int16)
    rng = np.random.default_rng(0)
    frames = [np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    counter = iter(range(10**9))

    def next_frame() -> Any:
        return handler(frames[next(counter) % len(frames)])

    m = model(DEFAULT_BACKBONE, folded=True)  # the network the handler runs (core.get_model's)
    prepared = core.prepare(frames[0], core.Settings(resolution=resolution, scales=1), model=m)
    x = m.preprocess(prepared.picture.resize(prepared.analysis_size[::-1]))
    s = interleave({"frame": next_frame, "forward": lambda: m.reference_logits(x)}, config.webcam_frames, warmup=2)
    fps = 1.0 / s["frame"].median
    height, width = prepared.analysis_size
    table = Table(
        "Webcam frames, 640 x 480, default settings (ms, medians)",
        ("handler", "analysed at", "frame", "fps", "forward at that size", "frame / forward"),
        (
            (
                what,
                f"{width}x{height}",
                ms(s["frame"].ms),
                f"{fps:.1f}",
                ms(s["forward"].ms),
                times(paired_ratio(s["frame"], s["forward"])),
            ),
        ),
    )
    goal = Goal(
        "5. webcam frame rate", f">= {FPS_GOAL:.0f} fps", f"{fps:.1f} fps ({what.split(' ')[0]})", fps >= FPS_GOAL
    )
    return Section("webcam", "5. Webcam frame rate", WEBCAM_INTRO, (table,), (goal,))


def _not_measured(reason: str) -> Section:
    return Section(
        "app",
        "6. App latency through gradio_client",
        "not measured: " + reason,
        (),
        (Goal("6. app latency (first analysis vs threshold change)", "report", f"not measured: {reason}", None),),
    )


def run_app(config: Config) -> Section:
    try:
        app_module = importlib.import_module("ui.app")
        handlers = importlib.import_module("ui.handlers")
        from gradio_client import Client, handle_file

        build_app, launch_options = app_module.build_app, app_module.launch_options
    except (ImportError, AttributeError) as error:
        return _not_measured(f"app not available ({error})")

    path = str(PHOTO)
    model(DEFAULT_BACKBONE)  # loaded here, so no case below pays for it

    settings = core.Settings()

    def handler_first() -> tuple[Any, float]:
        cache = handlers.PreparedCache()  # a new photo for the page: nothing kept yet
        start = time.perf_counter()
        handlers.analyze_photo(path, settings, cache=cache)
        return cache, time.perf_counter() - start

    def handler_change(cache: Any) -> float:
        start = time.perf_counter()
        handlers.analyze_photo(path, settings.replace(threshold=NEW_THRESHOLD), cache=cache)
        return time.perf_counter() - start

    app = build_app()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        url = f"http://127.0.0.1:{port}/"
        Client(url, verbose=False).predict(image=handle_file(path), api_name="/analyze")  # warm-up
        handler_first()
        times_: dict[str, list[float]] = {"api_first": [], "api_change": [], "handler_first": [], "handler_change": []}
        for _ in range(config.app_repeats):
            client = Client(url, verbose=False)
            start = time.perf_counter()
            client.predict(image=handle_file(path), api_name="/analyze")
            times_["api_first"].append(time.perf_counter() - start)
            start = time.perf_counter()
            client.predict(image=handle_file(path), threshold=NEW_THRESHOLD, api_name="/analyze")
            times_["api_change"].append(time.perf_counter() - start)
            session, seconds = handler_first()
            times_["handler_first"].append(seconds)
            times_["handler_change"].append(handler_change(session))
    finally:
        app.close()
    med = {k: 1000.0 * float(np.median(v)) for k, v in times_.items()}
    table = Table(
        f"`analyze` on examples/{PHOTO.name}, default backbone and resolution (ms, medians of {config.app_repeats})",
        ("path", "first analysis (network runs)", f"threshold -> {NEW_THRESHOLD}", "second / first"),
        (
            (
                "gradio_client -> app (HTTP)",
                ms(med["api_first"]),
                ms(med["api_change"]),
                times(med["api_change"] / med["api_first"]),
            ),
            (
                "ui.handlers.analyze_photo (in process)",
                ms(med["handler_first"]),
                ms(med["handler_change"]),
                times(med["handler_change"] / med["handler_first"]),
            ),
        ),
    )
    goal = Goal(
        "6. app latency (first analysis vs threshold change)",
        "report",
        f"API: {ms(med['api_first'])} ms per call (the network runs each time); page handler: "
        f"{ms(med['handler_first'])} ms first, {ms(med['handler_change'])} ms after a threshold change",
        True,
        informative=True,
    )
    return Section("app", "6. App latency through gradio_client", APP_INTRO, (table,), (goal,))
