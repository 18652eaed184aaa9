"""The app's handlers as plain functions: what a page shows, when the network runs, and what errors say."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio.data_classes import ImageData
from PIL import Image

import core
import ui.app as app_module
import ui.handlers as handlers
from core import Settings
from core.images import ImageError
from core.model import ClassMapModel
from core.registry import BACKBONES, DEFAULT_BACKBONE
from core.results import FoundClass
from core.settings import GRANULARITIES, MAX_PART_RATIO
from core.weights import WeightsError
from ui.components import EXAMPLES_DIR, ClassMapImage, PhotoInput
from ui.handlers import (
    DISPLAY_MAX_SIDE,
    MAX_OVERLAYS,
    RESOLUTION_CHOICES,
    TIMM_SUGGESTIONS,
    WEBCAM_RESOLUTION,
    PreparedCache,
    analyze_photo,
    backbone_choices,
    friendly_error,
    probe_photo,
    webcam_frame,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = [name for name, entry in BACKBONES.items() if entry.offline]
DEFAULTS = Settings()


@pytest.fixture
def cnn_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the inputs every ``ClassMapModel.features`` call (the network's trunk) receives.

    The default model is loaded first: loading folds its BatchNorms, which runs the trunk on a small example.
    """
    core.get_model(DEFAULTS.backbone)
    calls: list[tuple[int, ...]] = []
    original = ClassMapModel.features

    def counting(self, x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(ClassMapModel, "features", counting)
    return calls


@pytest.fixture
def cache() -> PreparedCache:
    """A cache of prepared photos of this test's own."""
    return PreparedCache()


# ---------------------------------------------------------------------------------------------------------------
# Photo
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_example_photo_shows_what_core_finds(examples, cache):
    path = examples / "astronaut.jpg"
    view = analyze_photo(str(path), DEFAULTS.replace(threshold=0.5), cache=cache)

    expected = core.analyze(path, threshold=0.5, source="astronaut.jpg")
    assert view.record == expected.to_dict()
    assert view.record["image"]["source"] == "astronaut.jpg" and view.network_ran
    assert [caption for _, caption in view.overlays] == [f"{c.label} ({c.score:.2f})" for c in expected.classes]
    assert view.channels == tuple(c.channel for c in expected.classes)
    assert all(picture.size == (512, 512) for picture, _ in view.overlays)
    assert view.boxes.size == (512, 512) and view.boxes.mode == "RGB"
    assert list(view.found) == [c.label for c in expected.classes]
    whole = core.prepare(path, DEFAULTS).classifier_top5()  # the classifier at its own 224 x 224, not the JSON's
    assert list(view.top5.values()) == [t.probability for t in whole] and view.top5 != {}
    assert "astronaut.jpg" in view.summary and DEFAULT_BACKBONE in view.summary
    # The boxes picture is core's box view: it differs from the photo exactly where boxes are drawn.
    drawn = np.any(np.asarray(view.boxes) != np.asarray(Image.open(path).convert("RGB")), axis=2)
    assert drawn.any() and len(view.analysis.boxes) > 0


@pytest.mark.slow
def test_slider_moves_reuse_the_network_output(examples, cnn_calls, cache):
    path = str(examples / "chelsea.png")
    view = analyze_photo(path, DEFAULTS, cache=cache)
    runs = len(view.analysis.scales)  # one trunk run per scale
    assert len(cnn_calls) == runs and view.network_ran

    # Kernel size, thresholds, padding, granularity, smallest region and parts only change the head: the trunk
    # does not run again.
    changes = [
        {"threshold": 0.3},
        {"kernel_size": 1},
        {"kernel_size": 5, "box_threshold": 0.2},
        {"scale_check": not DEFAULTS.scale_check},
        {"granularity": "class"},
        {"granularity": "group"},
        {"granularity": "adaptive"},
        {"min_cells": 1},
        {"part_ratio": 2 if DEFAULTS.part_ratio != 2 else 0},
    ]
    for change in changes:
        settings = DEFAULTS.replace(**change)
        view = analyze_photo(path, settings, cache=cache)
        assert not view.network_ran
        assert view.record == core.analyze(path, settings=settings, source="chelsea.png").to_dict()
    assert len(cnn_calls) == runs * (1 + len(changes))  # one per core.analyze above, none for the app

    # A new resolution, number of scales or network needs new features.
    view = analyze_photo(path, DEFAULTS.replace(resolution=224, scales=1), cache=cache)
    assert view.network_ran and view.record["analysis_size"][0] == 224
    other = next(name for name in OFFLINE if name != DEFAULT_BACKBONE)
    view = analyze_photo(path, DEFAULTS.replace(backbone=other, resolution=224, scales=1), cache=cache)
    assert view.network_ran and view.record["backbone"] == other


@pytest.mark.slow
def test_a_new_image_runs_the_network_and_the_same_bytes_do_not(examples, tmp_path, cnn_calls, cache):
    settings = DEFAULTS.replace(scales=1)
    analyze_photo(str(examples / "chelsea.png"), settings, cache=cache)
    view = analyze_photo(str(examples / "coffee.png"), settings, cache=cache)
    assert view.network_ran and view.record["image"]["source"] == "coffee.png" and len(cnn_calls) == 2

    # An API client uploading the same file again gets a fresh copy (new path or modification time).
    copy = tmp_path / "again" / "coffee.png"
    copy.parent.mkdir()
    shutil.copyfile(examples / "coffee.png", copy)
    view = analyze_photo(str(copy), settings.replace(threshold=0.4), cache=cache)
    assert not view.network_ran and len(cnn_calls) == 2 and view.record["image"]["source"] == "coffee.png"

    # Same name and size, other bytes: a different picture.
    pixels = np.asarray(Image.open(copy)).copy()
    pixels[:50] = 255 - pixels[:50]
    Image.fromarray(pixels).save(copy)
    view = analyze_photo(str(copy), settings, cache=cache)
    assert view.network_ran and len(cnn_calls) == 3


@pytest.mark.slow
def test_the_cache_keeps_screen_sized_photos_within_its_budget(examples, tmp_path):
    settings = DEFAULTS.replace(scales=1, resolution=224)
    big = tmp_path / "big.png"
    Image.open(examples / "coffee.png").convert("RGB").resize((3000, 2000)).save(big)
    one = PreparedCache()
    analyze_photo(str(big), settings, cache=one)
    [(prepared, size)] = one._entries.values()
    assert max(prepared.picture.size) == DISPLAY_MAX_SIDE  # never the 6-megapixel photo
    assert size == one.used_bytes < 10 * 2**20

    small = PreparedCache(budget_bytes=0)
    analyze_photo(str(examples / "coffee.png"), settings, cache=small)
    small.budget_bytes = int(2.5 * small.used_bytes)  # room for two photos of that size
    for name in ("chelsea.png", "astronaut.jpg", "rocket.jpg"):
        analyze_photo(str(examples / name), settings, cache=small)
        assert small.used_bytes <= small.budget_bytes
    assert len(small) == 2  # the least recently used went first
    view = analyze_photo(str(examples / "rocket.jpg"), settings, cache=small)
    assert not view.network_ran  # the newest stays


@pytest.mark.slow
def test_api_calls_keep_nothing(examples, cnn_calls):
    from ui.handlers import PREPARED

    PREPARED.clear()
    app_module.analyze(str(examples / "coffee.png"), scales=1)
    assert len(PREPARED) == 0 and len(cnn_calls) == 1


@pytest.mark.slow
def test_large_photos_are_drawn_at_screen_size_with_boxes_in_original_pixels(tmp_path, cache):
    big = tmp_path / "big.png"
    Image.open(ROOT / "examples" / "coffee.png").convert("RGB").resize((3000, 2000)).save(big)
    view = analyze_photo(str(big), DEFAULTS.replace(threshold=0.5, scales=1), cache=cache)

    assert view.record["image"] == {"source": "big.png", "width": 3000, "height": 2000}
    assert max(view.boxes.size) == DISPLAY_MAX_SIDE
    assert all(max(picture.size) == DISPLAY_MAX_SIDE for picture, _ in view.overlays)
    assert view.record["boxes"] and max(b["box"][2] for b in view.record["boxes"]) > DISPLAY_MAX_SIDE / 2
    assert view.analysis.boxes[0].box == tuple(view.record["boxes"][0]["box"])  # the result was not edited


@pytest.mark.slow
def test_the_gallery_shows_at_most_the_best_overlays(examples, cache):
    settings = DEFAULTS.replace(threshold=0.0, kernel_size=1, scale_check=False, granularity="class")
    view = analyze_photo(str(examples / "astronaut.jpg"), settings, cache=cache)
    assert len(view.record["classes"]) > MAX_OVERLAYS
    assert len(view.overlays) == MAX_OVERLAYS and len(view.found) == len(view.record["classes"])
    assert f"best {MAX_OVERLAYS}" in view.summary


@pytest.mark.slow
def test_the_probe_answers_from_the_cached_maps(examples, cnn_calls, cache):
    path = str(examples / "cat_and_coffee.jpg")
    settings = Settings.preset("seed", threshold=0.5)  # ImageNet's classes: the cup's cell says "espresso"
    view = analyze_photo(path, settings, cache=cache)
    runs = len(cnn_calls)
    cup = next(b for b in view.analysis.boxes if "espresso" in b.label or b.label in ("cup", "coffee mug", "beverage"))
    x, y = (cup.box[0] + cup.box[2]) / 2, (cup.box[1] + cup.box[3]) / 2
    probe = probe_photo(path, settings, x, y, cache=cache)
    assert len(cnn_calls) == runs  # no network run
    assert next(iter(probe.top)) == cup.label and len(probe.top) == 5
    assert probe.cell[0] <= x < probe.cell[2] and probe.cell[1] <= y < probe.cell[3]
    assert probe.marked.size == view.boxes.size
    record = probe.to_dict()
    assert record["top"][0]["label"] == cup.label and "members" in record["top"][0]
    with pytest.raises(ValueError, match="outside"):
        probe_photo(path, settings, -1, 5, cache=cache)


@pytest.mark.slow
def test_adaptive_names_classes_and_synsets_and_parts_give_way(examples, cnn_calls, cache):
    path = str(examples / "cat_and_coffee.jpg")
    settings = DEFAULTS.replace(granularity="adaptive", threshold=0.5, scales=1, part_ratio=0, min_cells=1)
    view = analyze_photo(path, settings, cache=cache)
    assert view.record == core.analyze(path, settings=settings, source="cat_and_coffee.jpg").to_dict()
    assert view.record["granularity"] == "adaptive"
    # An answer is a class ("espresso": its index, itself as member) or a synset ("dog", at the cat's edge: 2+).
    classes = view.record["classes"]
    singles = [c for c in classes if c["index"] is not None]
    synsets = [c for c in classes if c["index"] is None]
    assert singles and synsets, [c["label"] for c in classes]
    assert all(c["members"] == [c["index"]] and c["wnid"] for c in singles)
    assert all(len(c["members"]) >= 2 and c["wnid"].startswith("n") for c in synsets)
    count = rf"\*\*{len(singles)}\*\* class(es)? and \*\*{len(synsets)}\*\* groups? above 0\.50"
    assert re.search(count, view.summary), view.summary

    # The probe of a cell a synset wins (the object's answer): the cell's own answer first, of that synset's
    # lineage (the synset or a class under it), then the cell's most probable classes.
    analysis = view.analysis
    rows, cols = analysis.map_size
    synset = next(c.channel for c in analysis.classes if c.index is None)
    row, col = map(int, np.argwhere((analysis.winner == synset) & (analysis.max_prob > 0.5))[0])
    x0, y0, x1, y1 = analysis.extent
    x, y = x0 + (col + 0.5) * (x1 - x0) / cols, y0 + (row + 0.5) * (y1 - y0) / rows
    runs = len(cnn_calls)
    answer = probe_photo(path, settings, x, y, cache=cache).to_dict()["top"]
    assert set(answer[0]["members"]) <= set(analysis.vocabulary.members[synset])
    assert answer[0]["probability"] > 0.5 and all(entry["index"] is not None for entry in answer[1:])

    # Parts give way: other answers (the "dog" at the cat's edge gives way to the cat), from the same network output.
    parted = analyze_photo(path, settings.replace(part_ratio=2), cache=cache)
    assert not parted.network_ran and len(cnn_calls) == runs and parted.record["part_ratio"] == 2
    labels = [c["label"] for c in parted.record["classes"]]
    assert labels and labels != [c["label"] for c in classes]

    nothing = analyze_photo(path, settings.replace(threshold=1.0), cache=cache)
    assert nothing.record["classes"] == [] and "**no class or group** wins" in nothing.summary


def test_the_summary_counts_classes_and_groups():
    def found(*indices):
        return tuple(FoundClass(i, "x", 0.9, (i,) if i is not None else (1, 2), "n0", channel=0) for i in indices)

    assert handlers._counted(found(1), "class") == "**1** class"
    assert handlers._counted(found(1, 2), "class") == "**2** classes"
    assert handlers._counted(found(None), "group") == "**1** group"
    assert handlers._counted(found(None, None, None), "group") == "**3** groups"
    assert handlers._counted(found(3, None, 4), "adaptive") == "**2** classes and **1** group"
    assert handlers._counted(found(None, None), "adaptive") == "**2** groups"
    assert handlers._counted(found(7), "adaptive") == "**1** class"


# ---------------------------------------------------------------------------------------------------------------
# Errors: our words, on the page
# ---------------------------------------------------------------------------------------------------------------
def test_a_file_that_is_not_an_image_gets_our_message(tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not a picture")
    with pytest.raises(ImageError, match=r"notes\.png: not an image file we can read"):
        analyze_photo(str(notes), DEFAULTS)
    with pytest.raises(gr.Error, match=r"notes\.png: not an image file we can read") as raised:
        app_module.analyze(str(notes))
    assert raised.value.title == "Could not analyse this image"


def test_empty_and_missing_files_get_our_message(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match=r"empty\.jpg: the file is empty"):
        app_module.analyze(str(empty))
    with pytest.raises(gr.Error, match=r"gone\.jpg: no such file"):
        app_module.analyze(str(tmp_path / "gone.jpg"))


@pytest.mark.slow
def test_a_corrupt_image_gets_our_message(tmp_path, examples):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((examples / "grace_hopper.jpg").read_bytes()[:2000])
    with pytest.raises(gr.Error, match=r"broken\.jpg: the image data is corrupt or truncated"):
        app_module.analyze(str(broken))


@pytest.mark.slow
def test_bad_settings_name_the_setting(examples):
    path = str(examples / "coffee.png")
    with pytest.raises(gr.Error, match="kernel_size must be one of 1, 3, 5"):
        app_module.analyze(path, kernel_size=4)
    with pytest.raises(gr.Error, match="resolution must be"):
        app_module.analyze(path, resolution="huge")
    with pytest.raises(gr.Error, match="unknown backbone 'alexnet'"):
        app_module.analyze(path, backbone="alexnet")
    with pytest.raises(gr.Error, match=r"kernel_size must be one of 1, 3, 5, got 3\.9"):
        app_module.analyze(path, kernel_size=3.9)
    with pytest.raises(gr.Error, match="scale_check must be true or false, got 'perhaps'"):
        app_module.analyze(path, scale_check="perhaps")
    with pytest.raises(gr.Error, match="granularity must be one of class, group, adaptive, got 'species'"):
        app_module.analyze(path, granularity="species")
    one = rf"part_ratio must be 0 \(off\) or an integer from 2 to {MAX_PART_RATIO}, got 1(?!\d)"
    with pytest.raises(gr.Error, match=one):
        app_module.analyze(path, part_ratio=1)
    with pytest.raises(gr.Error, match=r"part_ratio must be .*, got 2\.5"):
        app_module.probe(path, 10, 10, part_ratio=2.5)
    with pytest.raises(gr.Error, match=r"part_ratio must be .*, got 21") as raised:
        app_module.analyze(path, part_ratio=MAX_PART_RATIO + 1)
    assert raised.value.title == "Not a valid setting"


def test_missing_weights_say_what_to_do(monkeypatch, tmp_path, examples):
    def offline(*args, **kwargs):
        raise WeightsError("weights for 'resnet50' are not cached at /x/resnet50.pth and the download failed")

    monkeypatch.setattr("ui.handlers.get_model", offline)
    with pytest.raises(gr.Error) as raised:
        app_module.analyze(str(examples / "coffee.png"), backbone="resnet50")
    message = raised.value.message
    assert message.startswith("resnet50 needs weights from the internet")
    assert "weights for 'resnet50' are not cached" in message
    assert all(name in message for name in OFFLINE) and "without internet" in message
    assert friendly_error(ValueError("plain")) == "plain"
    package = friendly_error(WeightsError("embedded package NOT installed"), OFFLINE[0])
    assert package.startswith(f"{OFFLINE[0]}'s weights come in a Python package that is not installed")


def test_the_photo_input_hands_our_code_the_path_without_opening_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the upload folder
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    component = PhotoInput(type="filepath", image_mode=None)
    assert component.preprocess(ImageData(path=str(notes), orig_name="notes.txt")) == str(notes)
    example = str(EXAMPLES_DIR / "coffee.png")
    assert component.preprocess(ImageData(path=example, orig_name="coffee.png")) == example
    assert component.preprocess(None) is None
    assert component.get_block_name() == "image"  # the front end is gr.Image's
    with pytest.raises(gr.Error, match="not uploaded"):
        component.preprocess(ImageData(path=str(ROOT / "README.md"), orig_name="README.md"))


def _decoded(data) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    picture = np.asarray(Image.open(data.image.path).convert("RGB"))
    return picture, [(a.label, np.asarray(Image.open(a.image.path).convert("RGBA"))) for a in data.annotations]


def test_the_class_map_sends_the_pixels_gradio_would(examples, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    view = analyze_photo(str(examples / "cat_and_coffee.jpg"), DEFAULTS, cache=cache)
    picture, layers = view.class_map
    assert len(layers) >= 3
    ours = ClassMapImage(format="jpeg", color_map=view.class_colors)
    gradios = gr.AnnotatedImage(format="jpeg", color_map=view.class_colors)
    assert ours.get_block_name() == "annotatedimage"  # the front end is gr.AnnotatedImage's
    sent, expected = ours.postprocess(view.class_map), gradios.postprocess(view.class_map)
    assert all(Image.open(a.image.path).mode == "P" for a in sent.annotations)  # the two-colour encoding was used
    (mine, my_masks), (theirs, their_masks) = _decoded(sent), _decoded(expected)
    assert np.array_equal(mine, theirs) and [label for label, _ in my_masks] == [label for label, _ in their_masks]
    for (label, mask), (_, reference) in zip(my_masks, their_masks, strict=True):
        assert np.array_equal(mask, reference), label
        assert mask[..., 3].any(), label
    # A label without a colour (red), an empty mask, a mask of opacity 1, and a graded mask or a box, which only
    # Gradio's own encoding takes: every case decodes to Gradio's pixels
    cells = layers[0][0] > 0
    for masks in (
        [
            (cells * 0.55, "no colour"),
            (np.zeros(cells.shape), "empty"),
            (cells.astype(float), "opaque"),
            (cells * 0.999, "nearly opaque"),
        ],
        [(cells * 0.55, "graded"), (np.linspace(0, 1, cells.size).reshape(cells.shape), "ramp")],
        [(cells * 0.55, "cells"), ((10, 20, 120, 90), "box")],
    ):
        sent = ours.postprocess((picture, masks))
        expected = gradios.postprocess((picture, masks))
        (mine, my_masks), (theirs, their_masks) = _decoded(sent), _decoded(expected)
        assert np.array_equal(mine, theirs)
        for (label, mask), (_, reference) in zip(my_masks, their_masks, strict=True):
            assert np.array_equal(mask, reference), label
    assert ours.postprocess(None) is None


def test_no_image_clears_the_page():
    gallery, boxes, class_map, found, top5, download, summary, record = app_module.analyze(None)
    assert gallery == [] and summary == app_module.EMPTY_HINT
    assert boxes is None and class_map is None and found is None and top5 is None and download is None
    assert record is None


# ---------------------------------------------------------------------------------------------------------------
# Webcam
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_webcam_frame_gives_boxes_and_top_classes(examples):
    frame = np.asarray(Image.open(examples / "coffee.png").convert("RGB").resize((640, 480)))
    threads = torch.get_num_threads()
    seen = []
    features = ClassMapModel.features

    def counting(self, x):
        seen.append(torch.get_num_threads())
        return features(self, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClassMapModel, "features", counting)
        boxes, top5 = webcam_frame(frame, DEFAULTS)
    # The frame's network ran on WEBCAM_THREADS (half the cores), and the process's setting is back.
    assert seen == [handlers.WEBCAM_THREADS] and torch.get_num_threads() == threads
    assert max(1, (os.cpu_count() or 2) // 2) == handlers.WEBCAM_THREADS
    assert boxes.size == (640, 480)
    assert len(top5) == 5 and next(iter(top5)) == "espresso"
    torch.set_num_threads(handlers.WEBCAM_THREADS)  # the same reduction order, so the same floats
    try:
        expected = core.analyze(frame, resolution=WEBCAM_RESOLUTION, scales=1, source="webcam")
    finally:
        torch.set_num_threads(threads)
    assert list(top5.values()) == [t.probability for t in expected.top5]
    assert webcam_frame(None, DEFAULTS) == (None, {})


def test_warm_up_runs_the_offline_network_once_and_never_downloads(cnn_calls, monkeypatch):
    assert handlers.warm_up() is True
    assert len(cnn_calls) == 1  # a 96 x 64 picture: one scale, the next would enlarge it more than 2x

    def no_download(*args, **kwargs):
        raise AssertionError("warm_up must not load a network whose weights are not on this machine")

    monkeypatch.setattr("ui.handlers.get_model", no_download)
    downloading = next(name for name, entry in BACKBONES.items() if not entry.offline)
    assert handlers.warm_up(DEFAULTS.replace(backbone=downloading)) is False


def test_a_photo_waiting_for_the_network_goes_before_camera_frames():
    lock = handlers.ComputeLock()
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock.photo():
            holding.set()
            release.wait(10)
            order.append("first photo")

    def take(kind: str) -> None:
        with getattr(lock, kind)():
            order.append(kind)

    first = threading.Thread(target=hold)
    first.start()
    holding.wait(10)
    frame = threading.Thread(target=take, args=("frame",))
    frame.start()  # queued first...
    time.sleep(0.2)
    photo = threading.Thread(target=take, args=("photo",))
    photo.start()  # ...but a photo waiting goes before it
    time.sleep(0.2)
    assert order == []
    release.set()
    for thread in (first, frame, photo):
        thread.join(10)
    assert order == ["first photo", "photo", "frame"]
    with lock.frame():  # and nothing is left held
        pass


# ---------------------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------------------
def test_backbone_choices_list_offline_networks_first_and_say_where_weights_are():
    choices = backbone_choices()
    assert [name for _, name in choices] == [*BACKBONES, *TIMM_SUGGESTIONS]
    assert all(name.startswith("timm:") for name in TIMM_SUGGESTIONS)
    labels = dict((name, label) for label, name in choices)
    assert all(labels[name].endswith("· offline") for name in OFFLINE)
    online = [name for name in [*BACKBONES, *TIMM_SUGGESTIONS] if name not in OFFLINE]
    assert all(re.search(r"· (downloads on first use|downloaded)$", labels[name]) for name in online)


def test_resolution_choices_name_the_default_once():
    values = [value for _, value in RESOLUTION_CHOICES]
    assert len(values) == len(set(values)) and values[-1] == "native" and DEFAULTS.resolution in values
    assert [label for label, _ in RESOLUTION_CHOICES if "default" in label] == [f"{DEFAULTS.resolution} px (default)"]


def test_write_json_is_the_record_and_reuses_its_file(tmp_path):
    record = {"image": {"source": "photo.jpeg", "width": 2, "height": 1}, "classes": []}
    first = write_json(record, tmp_path)
    assert first.name == "photo.classmap.json" and json.loads(first.read_text()) == record
    assert write_json(dict(record), tmp_path) == first
    assert write_json({**record, "classes": [1]}, tmp_path) != first


def test_ui_never_imports_torch():
    for path in (ROOT / "ui").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import torch|from torch)", text, re.MULTILINE), path


def test_python_m_ui_help_is_instant_and_names_host_and_port():
    result = subprocess.run(
        [sys.executable, "-m", "ui", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0 and "--host" in result.stdout and "--port" in result.stdout
    assert "127.0.0.1" in result.stdout


@pytest.mark.app
def test_the_page_offers_the_contract_api_and_the_controls_asked_for():
    app = app_module.build_app()
    endpoint = app.get_api_info()["named_endpoints"]["/analyze"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names[:4] == ["image", "backbone", "kernel_size", "threshold"]
    # In the order they were added: a script passing them by position keeps working.
    optional = ["box_threshold", "resolution", "padding", "scale_check", "granularity", "scales", "min_cells",
                "part_ratio"]  # fmt: skip
    assert names[4:] == optional
    required = [p["parameter_name"] for p in endpoint["parameters"] if not p["parameter_has_default"]]
    assert required == ["image"]
    assert endpoint["returns"][-1]["component"] == "Json"
    probe = app.get_api_info()["named_endpoints"]["/probe"]
    assert [p["parameter_name"] for p in probe["parameters"]] == ["image", "x", "y", *names[1:]]
    assert probe["returns"][-1]["component"] == "Json"
    assert sorted(app.get_api_info()["named_endpoints"]) == ["/analyze", "/probe"]  # the rest is private

    sliders = {block.elem_id: block for block in app.blocks.values() if isinstance(block, gr.Slider)}
    kernel = sliders["kernel-size"]
    assert (kernel.minimum, kernel.maximum, kernel.step, kernel.value) == (1, 5, 2, DEFAULTS.kernel_size)
    threshold = sliders["threshold"]
    assert (threshold.minimum, threshold.maximum, threshold.value) == (0, 1, DEFAULTS.threshold)
    assert sliders["box-threshold"].value == DEFAULTS.box_threshold
    assert sliders["scales"].value == DEFAULTS.scales
    parts = sliders["part-ratio"]
    assert (parts.minimum, parts.maximum, parts.step, parts.value) == (0, MAX_PART_RATIO, 1, DEFAULTS.part_ratio)
    assert parts.label == "Parts give way" and "0: keep all" in parts.info
    elem_ids = {block.elem_id: block for block in app.blocks.values()}
    assert {"probe", "granularity", "preset-seed", "preset-best"} <= set(elem_ids)
    granularity = elem_ids["granularity"]
    assert [value for _, value in granularity.choices] == list(GRANULARITIES)
    assert granularity.value == DEFAULTS.granularity and "groups" not in granularity.label.lower()
    assert all(label in granularity.info for label in ("Classes", "Groups", "Adaptive"))
    accordions = [block.label for block in app.blocks.values() if isinstance(block, gr.Accordion)]
    assert any(label.startswith("Advanced:") and "parts give way" in label for label in accordions)

    # Every head setting redraws the page when moved; "Parts give way" passes over 1 (which is not allowed) while
    # dragging, and says why if let go there.
    redraws = [fn for fn in app.fns.values() if fn.fn in (app_module.show, app_module.show_parts)]
    triggers = {(app.blocks[block_id].elem_id, event) for fn in redraws for block_id, event in fn.targets
                if block_id is not None}  # fmt: skip
    head = ["kernel-size", "threshold", "box-threshold", "padding", "scale-check", "granularity", "min-cells"]
    assert {(elem_id, "input") for elem_id in [*head, "part-ratio"]} <= triggers
    check = next(fn for fn in app.fns.values() if fn.fn is app_module.check_part_ratio)
    assert [(app.blocks[block_id].elem_id, event) for block_id, event in check.targets] == [("part-ratio", "release")]
    at_one = {**{name: getattr(DEFAULTS, name) for name in app_module.CONTROLS}, "part_ratio": 1}
    assert list(at_one) == list(app_module.CONTROLS)
    skipped = app_module.show_parts(str(EXAMPLES_DIR / "coffee.png"), *at_one.values(), None)
    assert skipped == tuple(gr.skip() for _ in range(app_module.PAGE_OUTPUTS))  # nothing runs, nothing changes
    with pytest.raises(gr.Error, match="part_ratio must be 0"):
        app_module.check_part_ratio(1.0)
    app_module.check_part_ratio(float(MAX_PART_RATIO))

    # The presets set every head control, "Parts give way" included.
    def trigger_ids(fn):
        return [getattr(app.blocks.get(block_id), "elem_id", None) for block_id, _ in fn.targets]

    presets = [fn for fn in app.fns.values() if trigger_ids(fn) == ["preset-seed"]]
    controls = [block.elem_id for block in presets[0].outputs]
    assert len(presets) == 1 and {"min-cells", "part-ratio", "granularity"} <= set(controls)
    for name in Settings.PRESETS:
        values = dict(zip(controls, app_module.preset(name), strict=True))
        settings = Settings.preset(name)
        assert values["part-ratio"] == settings.part_ratio and values["min-cells"] == settings.min_cells
        assert values["granularity"] == settings.granularity and values["kernel-size"] == settings.kernel_size
    options = app_module.launch_options()
    assert options["max_file_size"] == "25mb" and options["allowed_paths"] == [str(app_module.EXAMPLES_DIR)]
