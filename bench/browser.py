"""The app served on 127.0.0.1 and opened in headless Chromium (Debian's, driven by Playwright).

Shared by the page tests, the benchmarks and the command that makes the README's pictures."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium_path", "click_to_probe", "free_port", "open_page"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine's closed network refuses Chromium's own connections
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",  # a moving test pattern as the webcam
    "--use-fake-ui-for-media-stream",  # and no permission prompt for it
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    path = shutil.which("chromium")
    return path or (CHROMIUM if os.path.exists(CHROMIUM) else None)


@contextlib.contextmanager
def open_page(
    url: str, executable: str, *, width: int = 1280, height: int = 900, timeout_ms: int = 60_000
) -> Iterator[Any]:
    """A Playwright page on ``url`` in headless Chromium, recording requests that would leave this machine.

    ``page.outside`` lists such requests; ``page.errors`` the uncaught errors of the page's scripts.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height}, permissions=["camera"])
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.outside = []
        page.errors = []
        page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else page.outside.append(r.url))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("#photo")
        try:
            yield page
        finally:
            browser.close()


def click_to_probe(page: Any, fx: float, fy: float, attempts: int = 5) -> float:
    """Click the box view at (fx, fy) of its size and wait for the probe's answer; seconds from the click.

    A click that lands while the picture is still being replaced (Gradio's loading overlay lies over it) reaches
    no one, as it would for a person: wait for the overlay to go, and click again if no answer comes.
    """
    import time

    for _ in range(attempts):
        page.wait_for_function("() => !document.querySelector('#boxes .wrap:not(.hide)')")
        before = page.locator("#boxes img").get_attribute("src")
        # The page is sometimes scrolled down after an analysis (by Gradio, about 1 run in 4 under test): bring the
        # picture on screen, as a person would, so that the click lands on it.
        page.locator("#boxes img").scroll_into_view_if_needed()
        box = page.locator("#boxes img").bounding_box()
        start = time.perf_counter()
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        try:
            page.wait_for_function(
                "before => (document.querySelector('#probe')?.innerText ?? '').includes('%')"
                " && document.querySelector('#boxes img')?.getAttribute('src') !== before",
                arg=before,
                timeout=10_000,
            )
            return time.perf_counter() - start
        except Exception as error:  # Playwright's TimeoutError: click again
            if type(error).__name__ != "TimeoutError":
                raise
    raise TimeoutError(f"no probe answer after {attempts} clicks")
