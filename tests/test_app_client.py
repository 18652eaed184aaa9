"""The real app, served on 127.0.0.1 and called as any client would: ``gradio_client`` and the ``/analyze`` API."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import core
import core.registry
from core.cache import clear_model_cache
from core.model import ClassMapModel
from core.settings import MAX_PART_RATIO

pytestmark = [pytest.mark.app, pytest.mark.slow]

CLASSMAP = str(Path(sys.executable).with_name("classmap"))
DEFAULTS = core.Settings()


@pytest.fixture(scope="module")
def url(app_url) -> str:
    return app_url


@pytest.fixture
def cnn_calls(monkeypatch) -> list[int]:
    """One entry per run of a network's trunk (the app runs in this process, on its own threads).

    The backbone these tests use is loaded first: loading folds its BatchNorms, which runs the trunk on a small example.
    """
    core.get_model("efficientnet_lite0")
    calls: list[int] = []
    original = ClassMapModel.features

    def counting(self, x, *args, **kwargs):
        calls.append(1)
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(ClassMapModel, "features", counting)
    return calls


def analyze(client: Client, path: Path, **settings) -> tuple:
    settings = {"backbone": "efficientnet_lite0", "kernel_size": 3, "threshold": 0.85, **settings}
    return client.predict(image=handle_file(str(path)), **settings, api_name="/analyze")


def test_the_api_is_analyze_with_named_inputs(url):
    api = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
    endpoint = api["named_endpoints"]["/analyze"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names[:4] == ["image", "backbone", "kernel_size", "threshold"]
    optional = {"box_threshold", "resolution", "padding", "scale_check", "granularity", "scales", "min_cells",
                "part_ratio"}  # fmt: skip
    assert set(names[4:]) == optional
    assert names[-1] == "part_ratio"  # the newest last: callers passing settings by position keep working
    probe = api["named_endpoints"]["/probe"]
    assert [p["parameter_name"] for p in probe["parameters"]] == ["image", "x", "y", *names[1:]]
    assert all(p["parameter_has_default"] for p in endpoint["parameters"][1:])
    assert endpoint["returns"][-1]["component"] == "Json"


def test_the_json_is_the_clis_for_the_same_images(url, examples):
    # The real console script, in its own process, on two photos with the settings analyze() sends.
    photos = [examples / "cat_and_coffee.jpg", examples / "grace_hopper.jpg"]
    command = [CLASSMAP, "analyze", *map(str, photos), "--backbone", "efficientnet_lite0", "--kernel-size", "3",
               "--threshold", "0.85", "--json", "-"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cli = [json.loads(line) for line in result.stdout.splitlines()]

    client = Client(url, verbose=False)
    for photo, expected in zip(photos, cli, strict=True):
        outputs = analyze(client, photo)
        assert outputs[-1] == expected
        assert outputs[-1]["image"]["source"] == photo.name


def test_the_json_equals_core_analyze_for_other_settings(url, examples):
    settings = {"kernel_size": 5, "threshold": 0.4, "box_threshold": 0.3, "resolution": 448, "padding": "valid",
                "scale_check": not DEFAULTS.scale_check, "scales": 1, "granularity": "group",
                "min_cells": 3}  # fmt: skip
    path = examples / "astronaut.jpg"
    outputs = analyze(Client(url, verbose=False), path, backbone="efficientnet_lite1", **settings)
    expected = core.analyze(path, "efficientnet_lite1", **settings, source="astronaut.jpg").to_dict()
    assert outputs[-1] == expected

    gallery, boxes, class_map, found, top5, download, summary, record = outputs
    assert [item["caption"] for item in gallery] == [f"{c['label']} ({c['score']:.2f})" for c in record["classes"]]
    assert Path(boxes).is_file() and Path(download).name == "astronaut.classmap.json"
    assert json.loads(Path(download).read_text()) == record
    assert {a["label"] for a in class_map["value"]["annotations"]} >= {b["label"] for b in record["boxes"]}
    assert len(top5["confidences"]) == 5  # the classifier at its own 224 px, not the JSON's top5
    assert found["label"] == record["classes"][0]["label"]
    assert "efficientnet_lite1" in summary


def test_api_calls_are_stateless_and_the_probe_reads_the_cell_under_a_point(url, examples, cnn_calls):
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    path = examples / "cat_and_coffee.jpg"
    start = time.perf_counter()
    first = analyze(alice, path, threshold=0.5, scales=1, granularity="class")
    first_s = time.perf_counter() - start
    assert len(cnn_calls) == 1 and "network ran" in first[-2]
    moved = analyze(alice, path, threshold=0.6, scales=1, granularity="class")  # nothing kept: the network runs again
    assert len(cnn_calls) == 2 and moved[-1]["threshold"] == 0.6
    analyze(bob, examples / "coffee.png", scales=1)  # another client, another photo, its own answer

    box = next(b for b in first[-1]["boxes"] if b["label"] == "espresso")
    x, y = (box["box"][0] + box["box"][2]) / 2, (box["box"][1] + box["box"][3]) / 2
    settings = {
        "backbone": "efficientnet_lite0",
        "kernel_size": 3,
        "threshold": 0.5,
        "scales": 1,
        "granularity": "class",
    }
    start = time.perf_counter()
    _, marked, answer = alice.predict(image=handle_file(str(path)), x=x, y=y, **settings, api_name="/probe")
    probe_s = time.perf_counter() - start
    assert answer["top"][0]["label"] == "espresso" and len(answer["top"]) == 5
    assert answer["cell"][0] <= x < answer["cell"][2] and Path(marked).is_file()
    runs = len(cnn_calls)
    alice.predict(image=handle_file(str(path)), x=10, y=10, **settings, api_name="/probe")
    assert len(cnn_calls) == runs  # the second probe of a photo answers from the kept maps
    print(f"\nthrough gradio_client: first analysis {first_s:.2f} s, first probe {probe_s:.2f} s")


def test_adaptive_answers_and_parts_give_way_through_the_api(url, examples, monkeypatch):
    seen: list[core.Settings] = []  # what reaches core: the app runs in this process
    analyze_settings = core.Prepared.analyze

    def recording(self, settings=None, **changes):
        seen.append(settings)
        return analyze_settings(self, settings, **changes)

    monkeypatch.setattr(core.Prepared, "analyze", recording)
    client = Client(url, verbose=False)
    path = examples / "cat_and_coffee.jpg"
    settings = {"threshold": 0.5, "scales": 1, "granularity": "adaptive"}
    kept = analyze(client, path, **settings, part_ratio=0)[-1]
    assert seen[-1].granularity == "adaptive" and seen[-1].part_ratio == 0
    expected = core.analyze(path, "efficientnet_lite0", kernel_size=3, **settings, part_ratio=0, source=path.name)
    assert kept == expected.to_dict() and kept["granularity"] == "adaptive"
    # Each answer is a class (its index, itself as member) or a WordNet synset (no index, 2 or more classes).
    assert all({"index", "label", "members", "wnid"} <= entry.keys() for entry in kept["classes"] + kept["boxes"])
    # (Without the parts rule the cat's small fringes survive: "domestic cat" and, beside it, "cat".)
    singles = [c for c in kept["classes"] if c["index"] is not None]
    synsets = [c for c in kept["classes"] if c["index"] is None]
    assert synsets and all(c["members"] == [c["index"]] for c in singles)
    assert all(len(c["members"]) >= 2 and c["wnid"].startswith("n") for c in synsets)

    # Parts give way: a slider's float is taken, and fewer answers are left, as core leaves them.
    parted = analyze(client, path, **settings, part_ratio=2.0)[-1]
    assert seen[-1].part_ratio == 2 and type(seen[-1].part_ratio) is int
    expected = core.analyze(path, "efficientnet_lite0", kernel_size=3, **settings, part_ratio=2, source=path.name)
    assert parted == expected.to_dict()
    assert len(parted["classes"]) > 0 and parted["classes"] != kept["classes"]
    assert any(c["index"] is not None and c["members"] == [c["index"]] for c in parted["classes"])  # espresso
    assert parted["part_ratio"] == 2 and kept["part_ratio"] == 0  # in the JSON
    analyze(client, path, **settings)
    assert seen[-1].part_ratio == DEFAULTS.part_ratio  # left out: the default

    # The probe of a cell in a synset's (smallest) box: the cell's own answer first, a synset or a class of the
    # box's lineage (the box is the object's answer), then the cell's classes.
    box = min(
        (b for b in kept["boxes"] if b["index"] is None),
        key=lambda b: (b["box"][2] - b["box"][0]) * (b["box"][3] - b["box"][1]),
    )
    x, y = (box["box"][0] + box["box"][2]) / 2, (box["box"][1] + box["box"][3]) / 2
    probe = {"backbone": "efficientnet_lite0", "kernel_size": 3, **settings, "part_ratio": 0}
    _, _, answer = client.predict(image=handle_file(str(path)), x=x, y=y, **probe, api_name="/probe")
    first, *rest = answer["top"]
    assert set(first["members"]) <= set(box["members"]) and first["wnid"].startswith("n")
    assert rest and all(entry["index"] is not None for entry in rest)

    # A ratio the settings refuse: the setting named with its allowed values, and the app keeps serving.
    for value in (1, MAX_PART_RATIO + 1, 2.5):
        with pytest.raises(AppError, match=rf"part_ratio must be 0 \(off\) or an integer from 2 to {MAX_PART_RATIO}"):
            analyze(client, path, **settings, part_ratio=value)
    with pytest.raises(AppError, match=r"part_ratio must be .*, got 1(?!\d)"):
        client.predict(image=handle_file(str(path)), x=x, y=y, **{**probe, "part_ratio": 1}, api_name="/probe")
    with pytest.raises(AppError, match="granularity must be one of class, group, adaptive"):
        analyze(client, path, granularity="breed")
    assert analyze(client, path, **settings, part_ratio=2)[-1] == parted


def test_a_file_that_is_not_an_image_gets_our_message_and_the_app_keeps_serving(url, tmp_path, examples):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match=r"notes\.txt: not an image file we can read"):
        analyze(client, notes)
    with pytest.raises(AppError, match="kernel_size must be one of 1, 3, 5"):
        analyze(client, examples / "coffee.png", kernel_size=4)
    with pytest.raises(AppError, match="x and y must be numbers"):
        client.predict(image=handle_file(str(examples / "coffee.png")), x="left", y=3, api_name="/probe")
    assert analyze(client, examples / "coffee.png")[-1]["image"]["source"] == "coffee.png"


@pytest.fixture
def weights_server(monkeypatch, tmp_path) -> Iterator[str]:
    """mobilenet_v3_large's weights (random, same shapes) served slowly from 127.0.0.1, into an empty cache."""
    name = "mobilenet_v3_large"
    buffer = io.BytesIO()
    torch.save(core.registry.BACKBONES[name].build().state_dict(), buffer)
    data = buffer.getvalue()
    file_name = f"{name}-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # the hash prefix core checks

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), 1 << 20):
                self.wfile.write(data[start : start + (1 << 20)])
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{file_name}"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(
        core.registry.BACKBONES,
        name,
        dataclasses.replace(core.registry.BACKBONES[name], weights=core.registry.TorchvisionWeights(url)),
    )
    clear_model_cache()
    try:
        yield name
    finally:
        server.shutdown()
        clear_model_cache()  # no random-weight network left for other tests


@pytest.mark.network
def test_a_first_use_download_reports_its_progress(url, weights_server, examples):
    job = Client(url, verbose=False).submit(
        image=handle_file(str(examples / "coffee.png")),
        backbone=weights_server,
        kernel_size=3,
        threshold=0.85,
        api_name="/analyze",
    )
    seen = []
    while not job.done():
        seen += [(p.desc, p.unit, p.index, p.length) for p in job.status().progress_data or []]
        time.sleep(0.02)
    assert job.result()[-1]["backbone"] == weights_server
    # The page's progress bar follows the download, in bytes (the message before it may pass between polls).
    downloads = [(index, length) for _, unit, index, length in seen if unit == "B"]
    assert downloads, f"no download progress among {seen[:5]}"
    assert all(0 <= index <= length for index, length in downloads)
