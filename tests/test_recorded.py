"""Behaviour kept: the JSON of the six examples, recorded before the code was restructured, comes out the same.

``tests/data/recorded_v1.jsonl`` was written by the code of the first version (commit 3f5871d) for three offline
backbones, the six examples and four head settings each (72 records). Every field that version wrote must come out
equal (scores to float32 noise: the network code may change underneath, the arithmetic may not); the fields added
since (``members``, ``wnid``, ``granularity``, ``scales``) must say what a class-level, single-scale analysis is.

One step changed on purpose since: resizing to the analysis size (``core.analysis.analysis_pixels``) is computed by
torch instead of Pillow, 2-3x faster, within two grey levels of Pillow's (``test_resizing_is_pillows_bilinear_filter``
below). A pixel one grey level off can tip a map cell across a threshold, so here the first version's resizing is
put back in, and everything after it must still be the first version's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core
import core.analysis
from core.hierarchy import class_wnids

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

DATA = Path(__file__).resolve().parent / "data" / "recorded_v1.jsonl"
RECORDS = [json.loads(line) for line in DATA.read_text().splitlines()]
FLOATS = {"score", "area", "probability"}


def same(old, new, path: str = "") -> None:
    if isinstance(old, dict):
        for key, value in old.items():
            assert key in new, f"{path}.{key} is missing"
            same(value, new[key], f"{path}.{key}")
    elif isinstance(old, list):
        assert len(old) == len(new), f"{path}: {len(old)} entries recorded, {len(new)} now"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(old, float) and path.rsplit(".", 1)[-1] in FLOATS:
        assert math.isclose(old, new, rel_tol=1e-4, abs_tol=1e-6), f"{path}: {old} recorded, {new} now"
    else:
        assert old == new, f"{path}: {old!r} recorded, {new!r} now"


def pillow_resize(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The first version's resizing: Pillow's bilinear filter (height, width), with its reducing gap."""
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if size != (image.height, image.width):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(image, dtype=np.uint8, order="C")


@pytest.fixture(scope="module")
def prepared():
    cache = {}

    def get(backbone: str, resolution: int, name: str) -> core.Prepared:
        key = (backbone, resolution, name)
        if key not in cache:
            settings = core.Settings.preset("seed", backbone=backbone, resolution=resolution)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(core.analysis, "analysis_pixels", pillow_resize)
                cache[key] = core.prepare(EXAMPLES / name, settings)
        return cache[key]

    return get


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.[jp][pn]g")))
def test_resizing_is_pillows_bilinear_filter(name) -> None:
    # The pyramid's sizes of each example (up to 2x larger) and the classifier's 224 x 224 view (up to 4x
    # smaller): at most two grey levels from Pillow's exact filter (no reducing gap, which approximates large
    # reductions by a box filter first), on under 6% of the values (coffee.png at 480 x 320: 2 levels, 4.9%; the
    # other sizes under 1%: rounding between the two filter passes).
    image = core.load_image(EXAMPLES / name).image
    sizes = [*core.analysis.pyramid(image.width, image.height, core.Settings())[0], (224, 224)]
    for size in sizes:
        ours = core.analysis.analysis_pixels(image, size)
        pillow = np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        # prepare converts the photo once and resizes the array: the same pixels
        assert np.array_equal(core.analysis.analysis_pixels(core.analysis.image_array(image), size), ours)
        assert ours.shape == (*size, 3) and ours.dtype == np.uint8 and ours.flags.c_contiguous
        difference = np.abs(ours.astype(np.int16) - pillow)
        assert difference.max() <= 2 and (difference > 0).mean() < 0.06, (size, difference.max())


@pytest.mark.parametrize(
    "record", RECORDS, ids=lambda r: f"{r['settings']['backbone']}-{r['record']['image']['source']}"
)
def test_recorded_json_is_unchanged(prepared, record) -> None:
    settings = core.Settings.preset("seed", **record["settings"])
    old = record["record"]
    new = prepared(settings.backbone, settings.resolution, old["image"]["source"]).analyze(settings).to_dict()
    same(old, new)
    assert new["granularity"] == "class" and len(new["scales"]) == 1 and new["scales"][0] == new["analysis_size"]
    assert new["min_cells"] == 1  # the seed names a class from any single cell
    for entry in new["classes"] + new["boxes"]:
        assert entry["members"] == [entry["index"]] and entry["wnid"] == class_wnids()[entry["index"]]
