"""What an attacker can send the app's HTTP API: raw requests, as curl would send them, not only gradio_client."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest

from ui.components import REFUSED

pytestmark = [pytest.mark.app, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def call(url: str, api: str, data: list) -> tuple[str, object]:
    """POST ``data`` to ``/gradio_api/call/<api>`` and read the event stream: ("complete" | "error", payload)."""
    request = urllib.request.Request(
        f"{url}gradio_api/call/{api}",
        data=json.dumps({"data": data}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as response:
        text = response.read().decode()
    event, payload = "", None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ").strip()
        elif line.startswith("data: "):
            payload = json.loads(line.removeprefix("data: "))
    return event, payload


@pytest.fixture(scope="module")
def outside_image() -> Path:
    """A real image outside the upload folder, the examples and the working directory (a 'server file')."""
    folder = Path(tempfile.mkdtemp(prefix="classmap-secret-"))
    path = folder / "secret.png"
    shutil.copy(ROOT / "examples" / "chelsea.png", path)
    return path


def analyze_args(file: dict, **changes) -> list:
    """The ``analyze`` event's inputs, in order: image, backbone, kernel_size, threshold, box_threshold, resolution,
    padding, scale_check, granularity, scales, min_cells, part_ratio."""
    values = {
        "backbone": "efficientnet_lite2",
        "kernel_size": 3,
        "threshold": 0.85,
        "box_threshold": 0.5,
        "resolution": 320,
        "padding": "same",
        "scale_check": False,
        "granularity": "class",
        "scales": 1,
        "min_cells": 1,
        "part_ratio": 0,
    }
    values.update(changes)
    return [file, *values.values()]


@pytest.mark.parametrize("kind", ["absolute", "relative", "missing", "not an image", "link out"])
def test_api_refuses_server_files_with_one_message(app_url, outside_image, kind, tmp_path) -> None:
    target = {
        "absolute": str(outside_image),
        "relative": "examples/../examples/../README.md",  # relative to the server's working directory
        "missing": str(outside_image.with_name("nothing-here.png")),
        "not an image": str(ROOT / "pyproject.toml"),
        "link out": "",
    }[kind]
    if kind == "link out":  # a link placed in the examples folder would be resolved, and refused, the same way
        link = tmp_path / "link.png"
        link.symlink_to(outside_image)
        target = str(link)
    event, payload = call(app_url, "analyze", analyze_args({"path": target}))
    assert event == "error"
    text = json.dumps(payload)
    assert "not uploaded" in text and REFUSED.split(":")[0] in text
    # one message whatever the path: nothing about whether it exists or what it holds
    assert target not in text and "exist" not in text and "image file" not in text


def test_api_refuses_server_files_with_meta_too(app_url, outside_image) -> None:
    file = {"path": str(outside_image), "meta": {"_type": "gradio.FileData"}}
    event, payload = call(app_url, "analyze", analyze_args(file))
    assert event == "error"  # Gradio's own upload-folder check, before ours
    assert "classes" not in json.dumps(payload)


def test_webcam_endpoint_refuses_server_files(app_url, outside_image) -> None:
    event, payload = call(
        app_url,
        "webcam",
        [{"path": str(outside_image)}, "efficientnet_lite2", 3, 0.85, 0.5, "same", False, "class", 1, 0],
    )
    assert event == "error"
    assert "not uploaded" in json.dumps(payload)


def test_uploaded_files_are_still_analysed(app_url) -> None:
    from gradio_client import Client, handle_file

    record = Client(app_url, verbose=False).predict(
        image=handle_file(str(ROOT / "examples" / "chelsea.png")),
        backbone="efficientnet_lite2",
        kernel_size=3,
        threshold=0.5,
        api_name="/analyze",
    )[-1]
    assert record["image"]["source"] == "chelsea.png"
    assert record["classes"]


@pytest.fixture(scope="module")
def uploaded(app_url) -> dict:
    """An example photo uploaded through the HTTP API, as a client sends it afterwards."""
    boundary = "classmapboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="coffee.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + (ROOT / "examples" / "coffee.png").read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{app_url}gradio_api/upload", data=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        [path] = json.load(response)
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "coffee.png"}


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(kernel_size="abc"), "kernel_size must be one of 1, 3, 5, got 'abc'"),
        (dict(kernel_size=[3]), "kernel_size must be one of 1, 3, 5, got [3]"),
        (dict(kernel_size=3.9), "kernel_size must be one of 1, 3, 5, got 3.9"),
        (dict(threshold="abc"), "threshold must be a number between 0 and 1, got 'abc'"),
        (dict(threshold=[0.5]), "threshold must be a number between 0 and 1, got [0.5]"),
        (dict(box_threshold=2), "box_threshold must be a number between 0 and 1, got 2"),
        (dict(scale_check="perhaps"), "scale_check must be true or false, got 'perhaps'"),
        (dict(scales=9), "scales must be an integer from 1 to 4, got 9"),
        (dict(padding="full"), "padding must be one of same, valid, got 'full'"),
        (dict(backbone=["resnet50"]), "backbone must be a name, got ['resnet50']"),
        (dict(resolution="huge"), "resolution must be an integer short side"),
    ],
)
def test_api_values_of_the_wrong_type_name_the_argument(app_url, uploaded, changes, message) -> None:
    event, payload = call(app_url, "analyze", analyze_args(uploaded, **changes))
    assert event == "error"
    assert message in json.dumps(payload).replace('\\"', '"'), payload


def test_api_strings_for_booleans_mean_what_they_say(app_url, uploaded) -> None:
    event, payload = call(app_url, "analyze", analyze_args(uploaded, scale_check="false"))
    assert event == "complete" and payload[-1]["scale_check"] is False
    event, payload = call(app_url, "analyze", analyze_args(uploaded, kernel_size=5.0, threshold="0.5"))
    assert event == "complete" and payload[-1]["kernel_size"] == 5 and payload[-1]["threshold"] == 0.5


def test_api_echoes_are_cut(app_url, uploaded) -> None:
    huge = "x" * 20_000_000
    event, payload = call(app_url, "analyze", analyze_args(uploaded, kernel_size=huge))
    assert event == "error" and len(json.dumps(payload)) < 1000
    event, payload = call(app_url, "analyze", analyze_args(uploaded, backbone=huge))
    assert event == "error" and len(json.dumps(payload)) < 1000
