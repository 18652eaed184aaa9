"""The real ``classmap`` console script on real photos: JSON per CONTRACT.md, files, exit codes."""

from __future__ import annotations

import json
import os
import re
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
        assert set(c) == {"index", "label", "score", "area", "members", "wnid"}
        check_class(c)
        assert record["threshold"] < c["score"] <= 1
        assert 0 < c["area"] <= 1 and abs(c["area"] * cells - round(c["area"] * cells)) < 1e-6
    found = {c["label"] for c in record["classes"]}
    for b in record["boxes"]:
        assert set(b) == {"index", "label", "score", "box", "members", "wnid"}
        assert b["label"] in found
        check_class(b)
        assert record["box_threshold"] < b["score"] <= 1
        x1, y1, x2, y2 = b["box"]
        assert all(isinstance(v, int) for v in b["box"])
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert len(record["top5"]) == 5
    probabilities = [t["probability"] for t in record["top5"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    for t in record["top5"]:
        assert set(t) == {"index", "label", "probability"} and IMAGENET_CATEGORIES[t["index"]] == t["label"]


def check_class(entry: dict) -> None:
    """A class (its index, ``members == [index]``) or a group (index null, several members); a WordNet id."""
    assert re.fullmatch(r"n\d{8}", entry["wnid"])
    if entry["index"] is None:
        assert len(entry["members"]) > 1 and all(0 <= m < 1000 for m in entry["members"])
    else:
        assert IMAGENET_CATEGORIES[entry["index"]] == entry["label"] and entry["members"] == [entry["index"]]


@pytest.mark.slow
def test_json_lines_on_stdout_and_nothing_else(examples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((examples / "rocket.jpg").read_bytes()[:3000])  # a truncated JPEG
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    images = [examples / "cat_and_coffee.jpg", tmp_path / "missing.png", bad, text, examples / "chelsea.png"]
    result = run("analyze", *map(str, images), "--json", "-", "--resolution", "native", "--preset", "seed")
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
    result = run(
        "analyze", str(examples / "cat_and_coffee.jpg"), "--out", str(out), "--resolution", "native", "--preset", "seed"
    )
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


def test_adaptive_granularity_and_the_parts_rule_from_the_command_line(examples):
    args = ["--granularity", "adaptive", "--part-ratio", "4", "--threshold", "0.4", "--scales", "1"]
    result = run("analyze", str(examples / "cat_and_coffee.jpg"), "--json", "-", *args)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["granularity"] == "adaptive" and record["part_ratio"] == 4 and record["threshold"] == 0.4
    assert record["classes"] and {c["label"] for c in record["classes"]} >= {"espresso"}
    for entry in record["classes"] + record["boxes"]:
        check_class(entry)


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
        (["--part-ratio", "1"], "--part-ratio"),
        (["--granularity", "species"], "--granularity"),
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


# Outputs never destroy inputs, and say which option is wrong (issue 15.4, 15.5)
# ---------------------------------------------------------------------------------------------------------------


def _small_copy(source: Path, target: Path, width: int) -> Path:
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").resize((width, round(width * image.height / image.width))).save(target)
    return target


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_naming(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("how", ["the same path", "a symbolic link to it", "a hard link to it"])
def test_json_over_an_input_is_refused_before_any_analysis(examples, tmp_path, how):
    photo = _small_copy(examples / "chelsea.png", tmp_path / "x.png", 96)
    target = {"the same path": photo, "a symbolic link to it": tmp_path / "y.json", "a hard link to it": tmp_path / "z"}
    target = target[how]
    if how == "a symbolic link to it":
        target.symlink_to(photo)
    elif how == "a hard link to it":
        os.link(photo, target)
    before = _tree(tmp_path)
    result = run("analyze", str(photo), "--json", str(target))
    _one_line_naming(result, "--json", str(target), str(photo))
    assert _tree(tmp_path) == before  # the photo is whole, nothing was written


@pytest.mark.parametrize("clobbered", ["x_boxes.png", "x.json", "x_tabby.png"])
def test_out_over_an_input_is_refused_before_any_analysis(examples, tmp_path, clobbered):
    folder = tmp_path / "d"
    photo = _small_copy(examples / "chelsea.png", folder / "x.png", 96)
    other = folder / clobbered
    other.write_bytes(photo.read_bytes())  # an image (or anything) whose name x's outputs would take
    before = _tree(tmp_path)
    result = run("analyze", str(photo), str(other), "--out", str(folder))
    _one_line_naming(result, "--out", str(other))
    assert _tree(tmp_path) == before


def test_json_inside_out_with_an_output_name_is_refused(examples, tmp_path):
    photo = _small_copy(examples / "chelsea.png", tmp_path / "x.png", 96)
    result = run("analyze", str(photo), "--out", str(tmp_path / "o"), "--json", str(tmp_path / "o" / "x.json"))
    _one_line_naming(result, "--json", "--out", "x.json")
    assert not (tmp_path / "o").exists()


JSON_UNWRITABLE = {
    "missing folder": (lambda tmp: tmp / "no" / "such" / "r.jsonl", "does not exist"),
    "a directory": (lambda tmp: tmp, "is a directory"),
    "/proc/version": (lambda tmp: Path("/proc/version"), "read-only"),
    "a read-only file": (lambda tmp: _read_only(tmp / "old.jsonl"), "read-only"),
}


def _read_only(path: Path) -> Path:
    path.write_text("{}\n")
    path.chmod(0o444)
    return path


@pytest.mark.parametrize("case", list(JSON_UNWRITABLE))
def test_json_that_cannot_be_written_is_one_line_and_exit_2(examples, tmp_path, case):
    where, reason = JSON_UNWRITABLE[case]
    target = where(tmp_path)
    if not target.parent.exists() and case == "/proc/version":
        pytest.skip("no /proc")
    before = target.read_bytes() if target.is_file() else None
    result = run("analyze", str(_small_copy(examples / "chelsea.png", tmp_path / "x.png", 96)), "--json", str(target))
    _one_line_naming(result, "--json", str(target), reason)
    if before is not None:
        assert target.read_bytes() == before


@pytest.mark.parametrize("case", ["an existing file", "a folder under a file"])
def test_out_that_cannot_be_a_folder_is_one_line_and_exit_2(examples, tmp_path, case):
    photo = _small_copy(examples / "chelsea.png", tmp_path / "x.png", 96)
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if case == "an existing file" else tmp_path / "taken" / "sub"
    result = run("analyze", str(photo), "--out", str(out))
    _one_line_naming(result, "--out", str(out), "is a file" if case == "an existing file" else "cannot write")
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.slow
def test_same_names_in_different_folders_get_their_own_outputs(examples, tmp_path):
    first = _small_copy(examples / "chelsea.png", tmp_path / "a" / "photo.png", 240)
    second = _small_copy(examples / "cat_and_coffee.jpg", tmp_path / "b" / "photo.png", 360)
    third = _small_copy(examples / "chelsea.png", tmp_path / "photo.jpg", 120)  # the same stem, another extension
    out = tmp_path / "o"
    result = run("analyze", str(first), str(second), str(third), "--out", str(out))
    assert result.returncode == 0, result.stderr
    widths = {
        stem: json.loads((out / f"{stem}.json").read_text())["image"]["width"]
        for stem in ("photo", "photo-2", "photo-3")
    }
    assert widths == {"photo": 240, "photo-2": 360, "photo-3": 120}
    from PIL import Image

    for stem, width in widths.items():
        pictures = list(out.glob(f"{stem}_*.png"))
        assert out / f"{stem}_boxes.png" in pictures
        for picture in pictures:  # no picture of one image among another's
            assert Image.open(picture).width == width, picture.name
    assert "photo-2" in result.stderr and "photo-3" in result.stderr  # says which input got which name


@pytest.mark.slow
def test_a_link_inside_out_is_replaced_never_followed(examples, tmp_path):
    photo = _small_copy(examples / "chelsea.png", tmp_path / "x.png", 200)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.json").write_text("precious\n")
    (outside / "keep.png").write_text("precious too\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / "x.json").symlink_to(outside / "keep.json")
    (out / "x_boxes.png").symlink_to(outside / "keep.png")
    result = run("analyze", str(photo), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (outside / "keep.json").read_text() == "precious\n"
    assert (outside / "keep.png").read_text() == "precious too\n"
    assert not (out / "x.json").is_symlink() and json.loads((out / "x.json").read_text())["image"]["width"] == 200
    assert not (out / "x_boxes.png").is_symlink()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


# A FIFO or a device as an image (issue 15.7); a directory is the API's case (tests/test_inputs.py): the CLI reads
# a folder argument as the images in it
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_a_fifo_and_a_device_are_each_named_for_what_they_are(examples, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it would block the CLI until something writes to it
    photo = _small_copy(examples / "chelsea.png", tmp_path / "x.png", 160)
    result = run("analyze", str(fifo), "/dev/zero", str(photo), "--json", "-")
    assert result.returncode == 1, result.stderr  # some images failed, the others were analysed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"]["source"] for r in records] == ["pipe.png", "zero", "x.png"]
    assert "pipe.png: is not a regular file" in records[0]["error"]
    assert "zero: is not a regular file" in records[1]["error"]
    assert "error" not in records[2] and records[2]["image"]["width"] == 160
    assert "no such file" not in result.stderr and "Traceback" not in result.stderr
