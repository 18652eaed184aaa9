"""Many images at once: ``core.analyze_many`` gives what one image at a time gives, in input order, failures kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

import core
from core.batch import Failure

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(examples, tmp_path_factory) -> list[Path]:
    """Eight photos, six of one size (so they share batches) and two of others, and a broken file in the middle."""
    out = tmp_path_factory.mktemp("folder")
    paths = []
    for i, name in enumerate(["chelsea.png", "coffee.png", "cat_and_coffee.jpg", "rocket.jpg", "astronaut.jpg"]):
        image = Image.open(examples / name).convert("RGB")
        path = out / f"{i}_{name.split('.')[0]}.png"
        image.resize((400, 300)).save(path)
        paths.append(path)
    broken = out / "3_broken.jpg"
    broken.write_bytes((examples / "grace_hopper.jpg").read_bytes()[:1500])
    paths.insert(3, broken)
    paths.append(examples / "grace_hopper.jpg")
    paths.append(examples / "cat_and_coffee.jpg")
    mirrored = out / "mirrored.png"
    Image.open(examples / "coffee.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((400, 300)).save(mirrored)
    paths.append(mirrored)
    return paths


def same_record(batched: dict, single: dict) -> None:
    """Equal records; probabilities to float32 noise (a batched convolution may round differently)."""
    assert batched.keys() == single.keys()
    for key in batched:
        if key in ("classes", "boxes", "top5"):
            assert len(batched[key]) == len(single[key]), key
            for a, b in zip(batched[key], single[key], strict=True):
                for field in a:
                    if field in ("score", "area", "probability"):
                        assert math.isclose(a[field], b[field], rel_tol=1e-4, abs_tol=1e-5), (key, field)
                    else:
                        assert a[field] == b[field], (key, field)
        else:
            assert batched[key] == single[key], key


@pytest.mark.parametrize("settings", [core.Settings(scales=1), core.Settings(scales=2, granularity="group")])
def test_batches_give_what_single_images_give_in_input_order(folder, settings):
    results = list(core.analyze_many(folder, settings, batch_size=4))
    assert [r.to_dict()["image"]["source"] for r in results] == [p.name for p in folder]
    failure = results[3]
    assert isinstance(failure, Failure) and "corrupt or truncated" in failure.error
    assert failure.to_dict() == {"image": {"source": "3_broken.jpg"}, "error": failure.error}
    for path, result in zip(folder, results, strict=True):
        if path.name == "3_broken.jpg":
            continue
        same_record(result.to_dict(), core.analyze(path, settings=settings).to_dict())


def test_decoding_workers_change_nothing(folder):
    settings = core.Settings(scales=1)
    inline = [r.to_dict() for r in core.analyze_many(folder, settings, batch_size=3)]
    workers = [r.to_dict() for r in core.analyze_many(folder, settings, batch_size=3, workers=2)]
    assert workers == inline


def test_bad_arguments_are_refused_before_any_image_is_read(folder):
    for bad in (dict(batch_size=0), dict(batch_size=2.5), dict(workers=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            next(core.analyze_many(folder, **bad))
    with pytest.raises(ValueError, match="sources"):
        next(core.analyze_many(folder, sources=["a"]))
