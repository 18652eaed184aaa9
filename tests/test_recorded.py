"""Behaviour kept: the JSON of the six examples, recorded before the code was restructured, comes out the same.

``tests/data/recorded_v1.jsonl`` was written by the code of the first version (commit 3f5871d) for three offline
backbones, the six examples and four head settings each (72 records). Every field that version wrote must come out
equal (scores to float32 noise: the network code may change underneath, the arithmetic may not); the fields added
since (``members``, ``wnid``, ``granularity``, ``scales``) must say what a class-level, single-scale analysis is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import core
from core.hierarchy import class_wnids

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


@pytest.fixture(scope="module")
def prepared():
    cache = {}

    def get(backbone: str, resolution: int, name: str) -> core.Prepared:
        key = (backbone, resolution, name)
        if key not in cache:
            settings = core.Settings.preset("seed", backbone=backbone, resolution=resolution)
            cache[key] = core.prepare(Path(__file__).resolve().parents[1] / "examples" / name, settings)
        return cache[key]

    return get


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
