"""8. The app as a person uses it, timed in headless Chromium: first analysis, slider move, probe, webcam.

The app is launched on 127.0.0.1 and driven by Playwright in Debian's Chromium (as the browser test does). Each time
is from the user's action (a click, a slider value) to the answer on the page (the summary line, the probe panel,
a new live picture), so it includes Gradio's round trip, encoding and the browser's work.
"""

from __future__ import annotations

import re
import statistics
import time

import core
from bench.browser import chromium_path, click_to_probe, free_port, open_page
from bench.common import EXAMPLES as EXAMPLES_DIR
from bench.common import Config, model
from bench.report import Goal, Section, Table, ms

__all__ = ["run"]

INTRO = __doc__.split("\n\n", 1)[1].replace("\n", " ")
EXAMPLES = ["chelsea.png", "coffee.png", "cat_and_coffee.jpg", "rocket.jpg", "astronaut.jpg", "grace_hopper.jpg"]


def _summary_has(page, *parts: str, timeout: float = 120_000) -> None:
    page.wait_for_function(
        "parts => parts.every(p => (document.querySelector('#summary')?.innerText ?? '').includes(p))",
        arg=list(parts),
        timeout=timeout,
    )


def _first_analyses(page, names: list[str] = EXAMPLES) -> list[float]:
    seconds = []
    for name in names:
        start = time.perf_counter()
        page.locator(f"#examples img[src$='/{name}']").click()
        _summary_has(page, name, "network ran")
        seconds.append(time.perf_counter() - start)
    return seconds


def _slider_moves(page, values: list[str]) -> list[float]:
    seconds = []
    for value in values:
        start = time.perf_counter()
        page.locator("#threshold input[type=range]").fill(value)
        _summary_has(page, f"above {value}", "network output reused")
        seconds.append(time.perf_counter() - start)
    return seconds


def _probes(page, count: int) -> list[float]:
    return [click_to_probe(page, 0.3 + 0.1 * (i % 5), 0.5) for i in range(count)]


# Counts the live picture's new frames in the page itself: polling from Playwright would cost a round trip to the
# browser every few milliseconds, CPU the page and the server need on two cores.
_COUNT_FRAMES = """() => {
  window.__shown = [];
  let last = null;
  const root = document.querySelector('#live-boxes');
  new MutationObserver(() => {
    const img = root.querySelector('img');
    if (img && img.src && img.src !== last) { last = img.src; window.__shown.push(performance.now()); }
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def _start_webcam(page) -> None:
    page.get_by_role("tab", name="Webcam").click()
    page.evaluate(_COUNT_FRAMES)
    page.locator("#camera").get_by_text("Click to Access Webcam").click()
    page.locator("#camera").get_by_role("button", name=re.compile("capture|record", re.I)).click()
    page.wait_for_function("window.__shown.length > 0", timeout=120_000)


def _webcam_rate(page, seconds: float, warmup: float = 2.0) -> tuple[float, str]:
    """Frames shown per second over ``seconds``, after ``warmup`` seconds of the stream, and what the page says."""
    time.sleep(warmup + seconds)
    shown = [t / 1000 for t in page.evaluate("window.__shown")]
    window = [t for t in shown if shown[0] + warmup <= t <= shown[0] + warmup + seconds]
    said = re.search(r"\d+\.\d analysed frames/s", page.locator("#live-rate").inner_text())
    rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
    return rate, said.group(0) if said else "nothing"


def _analyses_after_the_camera(page, names: list[str]) -> tuple[list[float], float]:
    """First analyses on the Photo tab, reached from a streaming camera (leaving its tab stops it), and the frames
    shown meanwhile per second."""
    page.get_by_role("tab", name="Photo").click()
    before = page.evaluate("window.__shown.length")
    start = time.perf_counter()
    seconds = _first_analyses(page, names)
    elapsed = time.perf_counter() - start
    streamed = (page.evaluate("window.__shown.length") - before) / elapsed
    return seconds, streamed


def run(config: Config) -> Section:
    """Time the page in Chromium (needs Debian's chromium and Playwright)."""
    chromium = chromium_path()
    if chromium is None:
        return Section("explorer", "8. The app in Chromium", INTRO, (), (Goal("8. app", "-", "not measured", None),))
    from ui import handlers
    from ui.app import build_app, launch_options

    settings = core.Settings()
    m = model(settings.backbone, folded=True)  # the network the app runs (core.get_model's)
    app = build_app()
    _, url, _ = app.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options()
    )
    try:
        with open_page(url, chromium, height=1000) as page:
            firsts = _first_analyses(page)
            # The same photos again, the network run afresh: the baseline for the analyses after the camera, which
            # (unlike the very first ones) find the network's buffers for these sizes already made.
            handlers.PREPARED.clear()
            names = EXAMPLES[:3] if config.quick else EXAMPLES
            again = _first_analyses(page, names)
            moves = _slider_moves(page, ["0.30", "0.50", "0.35", "0.45", "0.60"][: 3 if config.quick else 5])
            probes = _probes(page, 3 if config.quick else 8)
            _start_webcam(page)
            fps, shown = _webcam_rate(page, 8 if config.quick else 20)
            handlers.PREPARED.clear()
            busy, streamed = _analyses_after_the_camera(page, names)
    finally:
        app.close()
    # The bare forwards the last photo's analysis runs (every scale), for the slider-move ratio.
    prepared = core.prepare(EXAMPLES_DIR / EXAMPLES[-1], settings, model=m)
    forward = []
    for _ in range(3):
        start = time.perf_counter()
        for h, w in prepared.scales:
            m.reference_logits(m.preprocess(prepared.picture.resize((w, h))))
        forward.append(time.perf_counter() - start)
    bare = min(forward)
    median = statistics.median
    table = Table(
        f"The app in Chromium, default settings ({settings.scales} scales, {settings.granularity}s), medians (ms)",
        ("action -> answer on the page", "time", "target"),
        (
            ("first analysis of an example photo (the six)", ms(1000 * median(firsts)), "<= 1500"),
            ("threshold slider move -> pictures redrawn", ms(1000 * median(moves)),
             f"<= 3x the bare forwards ({ms(3000 * bare)})"),
            ("click on the box view -> probe panel", ms(1000 * median(probes)), "<= 300"),
            ("webcam, analysed frames shown per second", f"{fps:.1f} /s (the page says: {shown})", ">= 10 /s"),
            ("first analysis of an example photo, the Photo tab reached from a streaming camera",
             f"{ms(1000 * median(busy))} ({median(busy) / median(again):.2f}x; {streamed:.1f} frames/s meanwhile)",
             f"<= 1.25x the camera unused ({ms(1000 * median(again))}, the same photos a second time)"),
        ),
    )  # fmt: skip
    goals = (
        Goal("8a. first analysis", "<= 1.5 s median", f"{median(firsts):.2f} s", median(firsts) <= 1.5),
        Goal("8b. slider move", "<= 3x bare forwards", f"{median(moves) / bare:.2f}x", median(moves) <= 3 * bare),
        Goal("8c. probe", "<= 300 ms", f"{1000 * median(probes):.0f} ms", median(probes) <= 0.3),
        Goal("8d. webcam", ">= 10 frames/s", f"{fps:.1f} frames/s", fps >= 10),
        Goal(
            "8e. photo tab after the camera",
            "<= 1.25x the camera unused",
            f"{median(busy) / median(again):.2f}x",
            median(busy) <= 1.25 * median(again),
        ),
    )
    return Section("explorer", "8. The app in Chromium", INTRO, (table,), goals)
