"""The real ``classmap`` console script on real photos: JSON per CONTRACT.md, files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.registry import BACKBONES, IMAGENET_CATEGORIES

CLASSMAP = str(Path(sys.executable).with_name("classmap"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLASSMAP, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def check_record(record: dict, source: str, width: int, height: int) -> None:
    """Every field of CONTRACT.md's JSON, with its type and its constraints."""
    assert set(record) >= {
        "image", "backbone", "kernel_size", "padding", "threshold", "box_threshold",
        "analysis_size", "map_size", "classes", "boxes", "top5",
    }  # fmt: skip
    assert record["image"] == {"source": source, "width": width, "height": height}
    assert record["backbone"] in BACKBONES
    assert record["kernel_size"] in (1, 3, 5) and record["padding"] in ("same", "valid")
    assert 0 <= record["threshold"] <= 1 and 0 <= record["box_threshold"] <= 1
    for key in ("analysis_size", "map_size"):
        assert isinstance(record[key], list) and len(record[key]) == 2
        assert all(isinstance(v, int) and v > 0 for v in record[key])
    ah, aw = record["analysis_size"]
    assert abs(ah / aw - height / width) < 0.02  # aspect ratio kept
    cells = record["map_size"][0] * record["map_size"][1]
    scores = [c["score"] for c in record["classes"]]
    assert scores == sorted(scores, reverse=True)
    for c in record["classes"]:
        assert set(c) == {"index", "label", "score", "area"}
        assert IMAGENET_CATEGORIES[c["index"]] == c["label"]
        assert record["threshold"] < c["score"] <= 1
        assert 0 < c["area"] <= 1 and abs(c["area"] * cells - round(c["area"] * cells)) < 1e-6
    found = {c["index"] for c in record["classes"]}
    for b in record["boxes"]:
        assert set(b) == {"index", "label", "score", "box"}
        assert b["index"] in found and IMAGENET_CATEGORIES[b["index"]] == b["label"]
        assert record["box_threshold"] < b["score"] <= 1
        x1, y1, x2, y2 = b["box"]
        assert all(isinstance(v, int) for v in b["box"])
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert len(record["top5"]) == 5
    probabilities = [t["probability"] for t in record["top5"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    for t in record["top5"]:
        assert set(t) == {"index", "label", "probability"} and IMAGENET_CATEGORIES[t["index"]] == t["label"]


@pytest.mark.slow
def test_json_lines_on_stdout_and_nothing_else(examples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((examples / "rocket.jpg").read_bytes()[:3000])  # a truncated JPEG
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    images = [examples / "cat_and_coffee.jpg", tmp_path / "missing.png", bad, text, examples / "chelsea.png"]
    result = run("analyze", *map(str, images), "--json", "-", "--resolution", "native")
    assert result.returncode == 1, result.stderr  # some images failed, the others are still done
    lines = result.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # stdout holds JSON Lines and nothing else
    assert [r["image"]["source"] for r in records] == [p.name for p in images]  # input order
    check_record(records[0], "cat_and_coffee.jpg", 901, 300)
    check_record(records[4], "chelsea.png", 451, 300)
    assert {c["label"] for c in records[0]["classes"]} >= {"espresso"}
    for record, reason in zip(records[1:4], ["no such file", "corrupt or truncated", "not an image"], strict=True):
        assert set(record) == {"image", "error"} and reason in record["error"]
        assert reason in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_out_writes_json_box_view_and_one_overlay_per_class(examples, tmp_path):
    out = tmp_path / "out"
    result = run("analyze", str(examples / "cat_and_coffee.jpg"), "--out", str(out), "--resolution", "native")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "cat_and_coffee.json").read_text())
    check_record(record, "cat_and_coffee.jpg", 901, 300)
    expected = {"cat_and_coffee.json", "cat_and_coffee_boxes.png"}
    expected |= {f"cat_and_coffee_{c['label'].replace(' ', '_')}.png" for c in record["classes"]}
    assert {p.name for p in out.iterdir()} == expected
    from PIL import Image

    for name in expected - {"cat_and_coffee.json"}:
        assert Image.open(out / name).size == (901, 300)
    assert "espresso" in result.stdout  # the human summary


@pytest.mark.parametrize(
    "args, named",
    [
        (["--kernel-size", "2"], "--kernel-size"),
        (["--kernel-size", "7"], "--kernel-size"),
        (["--threshold", "2"], "--threshold"),
        (["--threshold", "-1"], "--threshold"),
        (["--threshold", "nan"], "--threshold"),
        (["--box-threshold", "x"], "--box-threshold"),
        (["--backbone", "alexnet"], "--backbone"),
        (["--resolution", "0"], "--resolution"),
        (["--resolution", "100000"], "--resolution"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(examples, args, named):
    result = run("analyze", str(examples / "chelsea.png"), *args)
    assert result.returncode == 2
    assert named in result.stderr and result.stdout == ""


def test_bad_argument_messages_list_the_allowed_values(examples):
    assert "choose from 1, 3, 5" in run("analyze", "x.png", "--kernel-size", "2").stderr
    assert "squeezenet1_1" in run("analyze", "x.png", "--backbone", "alexnet").stderr
    assert "between 0 and 1" in run("analyze", "x.png", "--threshold", "2").stderr


def test_backbones_lists_every_name_offline_or_not():
    result = run("backbones")
    assert result.returncode == 0
    for name, backbone in BACKBONES.items():
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert ("offline" in line) == backbone.offline
    assert "embedded (" in result.stdout


def test_help_runs():
    result = run("--help")
    assert result.returncode == 0 and "analyze" in result.stdout and "backbones" in result.stdout
