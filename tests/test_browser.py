"""The page in a real browser: headless Chromium (Debian's) driven by Playwright, as a presenter would use it."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from bench.browser import click_to_probe, open_page
from core import Settings
from core.settings import GRANULARITIES

pytestmark = [pytest.mark.browser, pytest.mark.app, pytest.mark.slow]

DEFAULTS = Settings()


@pytest.fixture
def page(chromium, app_url):
    pytest.importorskip("playwright.sync_api")
    with open_page(app_url, chromium) as page:
        yield page


def wait_for_summary(page, *parts: str) -> str:
    """Wait until the line under the pictures says all of ``parts``; return it."""
    page.wait_for_function(
        "parts => parts.every(p => (document.querySelector('#summary')?.innerText ?? '').includes(p))",
        arg=list(parts),
    )
    return page.locator("#summary").inner_text()


def heat_map_captions(page) -> list[str]:
    """Captions of the heat maps in the gallery (its thumbnails carry them as titles)."""
    page.wait_for_selector("#overlays img")
    thumbnails = page.locator("#overlays .thumbnails img")
    if thumbnails.count():
        return [thumbnails.nth(i).get_attribute("title") for i in range(thumbnails.count())]
    return [page.locator("#overlays .caption").inner_text()]


def test_a_presenters_tour(page, tmp_path, examples):
    # An example photo: heat maps and boxes appear.
    page.locator("#examples img[src$='/cat_and_coffee.jpg']").click()
    summary = wait_for_summary(page, "cat_and_coffee.jpg", DEFAULTS.backbone, "network ran")
    assert f"above {DEFAULTS.threshold:.2f}" in summary
    found = heat_map_captions(page)  # "espresso (1.00)", "Egyptian cat (0.99)": best first
    assert len(found) >= 2, found
    assert page.locator("#boxes img").count() == 1
    assert "labelled box" in (page.locator("#boxes img").get_attribute("alt") or "")  # for screen readers
    assert found[0].rsplit(" (", 1)[0] in page.locator("#found").inner_text()
    # The heat maps' panel shows its title as the other panels do, not blurred under the large preview.
    title = page.locator("#overlays > label")
    title.scroll_into_view_if_needed()
    assert "Heat map per class found" in title.inner_text()
    pixels = np.asarray(Image.open(io.BytesIO(title.screenshot())).convert("L"), dtype=float)
    assert pixels.max() - pixels.min() > 60, pixels.max() - pixels.min()  # crisp text on its badge: 3 when blurred
    assert "%" in page.locator("#top5").inner_text()

    # Point and ask: a click on the box view shows that patch's top 5, from the kept maps, and marks the cell.
    # The class map of everything: the photo under coloured cells, a legend naming what wins them.
    legend = page.locator("#class-map .legend-item")
    legend.first.wait_for()
    assert legend.count() >= 2, legend.count()
    # The whole-image answer is the unchanged classifier's, at its own input size, and says so.
    assert "224" in page.locator("#top5").inner_text() and "%" in page.locator("#top5").inner_text()

    probe_ms = 1000 * click_to_probe(page, 0.8, 0.4)  # the cup, right of the cat; the cell gets marked
    print(f"\nprobe: {probe_ms:.0f} ms from the click to the answer on the page")

    # What to name: classes, the map summed within WordNet groups, or adaptive (per patch the most specific class
    # or synset the network is sure of: here both), no network run; and back.
    said = {
        "class": ("Classes", r"(\d+ class(es)?|no class) "),
        "group": ("Groups", r"(\d+ groups?|no group) "),
        "adaptive": ("Adaptive", r"\d+ class(es)? and \d+ groups? "),  # the cat and the cup: both
    }
    for granularity in [*(g for g in GRANULARITIES if g != DEFAULTS.granularity), DEFAULTS.granularity]:
        label, pattern = said[granularity]
        page.locator("#granularity").get_by_text(label, exact=True).click()
        page.wait_for_function(
            "pattern => new RegExp(pattern).test(document.querySelector('#summary')?.innerText ?? '')", arg=pattern
        )

    # The seed article's settings (classes, one scale, threshold 0.85), one click away under Advanced.
    page.get_by_role("button", name=re.compile("^Advanced: box threshold")).click()
    page.locator("#preset-seed").click()
    wait_for_summary(page, "above 0.85", "network ran", "at 961×320 →")  # one scale now: the network runs again

    # Lower the threshold: more heat maps, from the same network output.
    page.locator("#threshold input[type=range]").fill("0.5")
    wait_for_summary(page, "above 0.50", "network output reused")
    first = heat_map_captions(page)
    assert len(first) >= 3, first  # espresso, Egyptian cat, tiger cat

    # Raise it just above the least sure heat map: that one goes.
    higher = f"{min(float(caption.rsplit('(', 1)[1].rstrip(')')) for caption in first) + 0.01:.2f}"
    page.locator("#threshold input[type=range]").fill(higher)
    wait_for_summary(page, f"above {higher}", "network output reused")
    fewer = heat_map_captions(page)
    assert 0 < len(fewer) < len(first) and fewer == first[: len(fewer)]

    # Parts give way: the tiger cat's patches touch the Egyptian cat's, more than twice as many: it goes. Dragging
    # up from 0 passes 1, which is not allowed: passed over while moving, a message if let go there.
    page.locator("#threshold input[type=range]").fill("0.5")
    wait_for_summary(page, "above 0.50", "network output reused")
    before = heat_map_captions(page)
    parts = page.locator("#part-ratio input[type=range]")
    parts.fill("1")  # input events only, as while dragging
    time.sleep(1.0)
    assert page.get_by_text("part_ratio must be").count() == 0 and heat_map_captions(page) == before
    page.locator("#part-ratio input[type=number]").fill("1")
    page.locator("#part-ratio input[type=number]").blur()  # let go at 1
    page.get_by_text(re.compile(r"part_ratio must be 0 \(off\) or an integer from 2")).first.wait_for()
    count = "n => document.querySelectorAll('#overlays .thumbnails img').length === n"
    parts.fill("2")
    page.wait_for_function(count, arg=len(before) - 1)
    assert heat_map_captions(page) == [c for c in before if not c.startswith("tiger cat")], before
    parts.fill("0")
    page.wait_for_function(count, arg=len(before))
    assert heat_map_captions(page) == before

    # Another offline network: it runs again, and the page says which one it is.
    other = "efficientnet_lite1" if DEFAULTS.backbone != "efficientnet_lite1" else "efficientnet_lite0"
    page.locator("#backbone input").click()
    page.get_by_role("option", name=re.compile(f"^{other} ")).click()
    wait_for_summary(page, other, "network ran", "above 0.50")
    assert heat_map_captions(page) != before

    # A file that claims to be a JPEG but is not one: our message, and the page keeps working.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((examples / "grace_hopper.jpg").read_bytes()[:1500])
    page.locator("#photo input[type=file]").set_input_files(str(broken))
    page.get_by_text(re.compile(r"broken\.jpg: the image data is corrupt or truncated")).first.wait_for()
    page.locator("#examples img[src$='/coffee.png']").click()
    wait_for_summary(page, "coffee.png", other)

    # What the browser refuses before uploading still reads plainly: too large (our 25 MB limit), not an image.
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (26 * 1024 * 1024))
    page.locator("#photo input[type=file]").set_input_files(str(huge))
    page.get_by_text(re.compile(r"exceed the maximum allowed size of 25")).first.wait_for()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.locator("#photo input[type=file]").set_input_files(str(notes))
    page.get_by_text(re.compile(r"Invalid file type: notes\.txt")).first.wait_for()

    # The webcam tab with Chromium's fake camera: the live box view keeps changing.
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#camera").get_by_text("Click to Access Webcam").click()
    page.locator("#camera").get_by_role("button", name=re.compile("capture|record", re.I)).click()
    frames: set[str] = set()
    deadline = time.monotonic() + 40
    while len(frames) < 3 and time.monotonic() < deadline:
        if page.locator("#live-boxes img").count():
            frames.add(page.locator("#live-boxes img").first.get_attribute("src") or "")
        time.sleep(0.1)
    assert len(frames - {""}) >= 3, f"the live box view showed {len(frames)} frames in 40 s"
    assert page.locator("#live-top5").inner_text().strip()
    page.get_by_text(re.compile(r"\d+\.\d analysed frames/s")).wait_for(timeout=10_000)  # the rate it keeps

    # Leaving the Webcam tab stops the camera (the cores go to the photo tab); back on it, Record starts it again.
    live_src = "document.querySelector('#live-boxes img')?.getAttribute('src')"
    page.get_by_role("tab", name="Photo").click()
    time.sleep(1.0)
    hidden = page.evaluate(live_src)
    time.sleep(2.0)
    assert page.evaluate(live_src) == hidden
    page.get_by_role("tab", name="Webcam").click()
    record = page.locator("#camera").get_by_role("button", name=re.compile("capture|record", re.I))
    assert "stop" not in record.inner_text().lower()
    record.click()
    page.wait_for_function(f"{live_src} !== {json.dumps(hidden)}", timeout=30_000)

    assert page.outside == [], "the page must work with no internet"
    assert page.errors == []
