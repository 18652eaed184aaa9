"""``classmap analyze`` on many files: folders, list files, batches, workers and the Ray engine give one record per
image, in input order, the same records whatever the engine; a broken file is reported and the rest go on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import core

pytestmark = pytest.mark.slow

CLASSMAP = str(Path(sys.executable).with_name("classmap"))
SETTINGS = ["--scales", "1", "--resolution", "224"]


def classmap(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLASSMAP, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folder(examples, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.jpg"):
        (out / name).write_bytes((examples / name).read_bytes())
    (out / "broken.jpg").write_bytes((examples / "grace_hopper.jpg").read_bytes()[:1500])
    (out / "notes.txt").write_text("not an image, and not picked up from a folder")
    return out


def records(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def one_by_one(folder) -> list[dict]:
    """The records of the five images, analysed one at a time (``core.analyze``)."""
    settings = core.Settings(scales=1, resolution=224)
    out = []
    for name in ("astronaut.jpg", "broken.jpg", "chelsea.png", "coffee.png", "rocket.jpg"):
        try:
            out.append(core.analyze(folder / name, settings=settings).to_dict())
        except core.ImageError as error:
            out.append({"image": {"source": name}, "error": str(error)})
    return out


def test_a_folder_is_its_images_in_name_order_batched(folder, one_by_one):
    result = classmap("analyze", str(folder), *SETTINGS, "--batch-size", "4", "--json", "-")
    assert result.returncode == 1, result.stderr  # the broken one
    got = records(result)
    assert [r["image"]["source"] for r in got] == [
        "astronaut.jpg",
        "broken.jpg",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
    ]
    assert "corrupt or truncated" in got[1]["error"] and "broken.jpg" in result.stderr
    for a, b in zip(got, one_by_one, strict=True):
        assert [c["label"] for c in a.get("classes", [])] == [c["label"] for c in b.get("classes", [])]
        assert [x["box"] for x in a.get("boxes", [])] == [x["box"] for x in b.get("boxes", [])]


def test_a_list_file_and_workers(folder, tmp_path, one_by_one):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{folder / 'rocket.jpg'}\n\n{folder / 'chelsea.png'}\n")
    result = classmap("analyze", f"@{listing}", *SETTINGS, "--workers", "2", "--json", "-")
    assert result.returncode == 0, result.stderr
    assert [r["image"]["source"] for r in records(result)] == ["rocket.jpg", "chelsea.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = classmap("analyze", str(empty))
    assert result.returncode == 2 and "holds no images" in result.stderr
    result = classmap("analyze", f"@{tmp_path / 'missing.txt'}")
    assert result.returncode == 2 and "cannot read the list file" in result.stderr
    for bad in (["--batch-size", "0"], ["--workers", "-1"], ["--engine", "spark"]):
        result = classmap("analyze", str(folder), *bad)
        assert result.returncode == 2 and bad[0] in result.stderr, bad


def test_the_ray_engine_gives_the_same_records(folder, one_by_one):
    pytest.importorskip("ray")
    result = classmap("analyze", str(folder), *SETTINGS, "--engine", "ray", "--batch-size", "2", "--json", "-")
    assert result.returncode == 1, result.stderr[-2000:]
    got = records(result)
    assert [r["image"]["source"] for r in got] == [r["image"]["source"] for r in one_by_one]
    for a, b in zip(got, one_by_one, strict=True):
        assert a.keys() == b.keys()
        assert [c["label"] for c in a.get("classes", [])] == [c["label"] for c in b.get("classes", [])]
        assert [x["box"] for x in a.get("boxes", [])] == [x["box"] for x in b.get("boxes", [])]
    result = classmap("analyze", str(folder), "--engine", "ray", "--out", "somewhere")
    assert result.returncode == 2 and "--out" in result.stderr
