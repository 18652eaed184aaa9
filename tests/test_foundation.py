"""The project as a user meets it: the packages import, the console script is installed, the docs hold."""

from __future__ import annotations

from pathlib import Path

import tomllib

import core

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_of_the_contract_is_there():
    for name in ("list_backbones", "load_backbone", "ClassMapModel", "analyze", "Analysis"):
        assert hasattr(core, name), name


def test_declared_markers_and_the_readme_test_command():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "--strict-markers" in config["tool"]["pytest"]["ini_options"]["addopts"]
    readme = (ROOT / "README.md").read_text()
    assert "./dev test" in readme and "./dev app" in readme
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()


def test_example_photos_have_licences():
    licences = (ROOT / "examples" / "LICENSES.md").read_text()
    for photo in (ROOT / "examples").iterdir():
        if photo.suffix in (".png", ".jpg"):
            assert f"`{photo.name}`" in licences, photo.name
