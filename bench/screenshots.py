"""The README's pictures of the app, made in headless Chromium: ``./dev screenshot`` (``python -m bench.screenshots``).

Launches the app on 127.0.0.1, opens it as a presenter would, and writes ``docs/screenshot.png`` (the page after an
example photo) and ``docs/probe.png`` (the class map and the probe's answer after a click on the box view). Tests
never write these files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.browser import chromium_path, click_to_probe, free_port, open_page

__all__ = ["main"]

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv: list[str] | None = None) -> int:
    """Write the README's screenshots; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for the pictures (default {DOCS})")
    args = parser.parse_args(argv)
    chromium = chromium_path()
    if chromium is None:
        print("screenshots: Debian chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    from ui.app import build_app, launch_options

    app = build_app()
    _, url, _ = app.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with open_page(url, chromium, height=1000) as page:
            page.locator("#examples img[src$='/cat_and_coffee.jpg']").click()
            page.wait_for_function("() => (document.querySelector('#summary')?.innerText ?? '').includes('network')")
            time.sleep(1.0)  # let the pictures finish painting
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(args.out / "screenshot.png"))
            click_to_probe(page, 0.8, 0.4)  # the cup
            time.sleep(0.5)
            page.evaluate("document.querySelector('#summary-row').scrollIntoView()")
            time.sleep(0.3)
            page.screenshot(path=str(args.out / "probe.png"), full_page=False)
    finally:
        app.close()
    print(f"screenshots: wrote {args.out / 'screenshot.png'} and {args.out / 'probe.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
