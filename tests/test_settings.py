"""``core.Settings``: one validated value for every analysis setting, its presets, and the outside values it takes."""

from __future__ import annotations

import dataclasses

import pytest

from core import Settings


def test_defaults_and_presets() -> None:
    seed = Settings.preset("seed")
    assert (seed.kernel_size, seed.threshold, seed.box_threshold, seed.scales, seed.granularity) == (
        3,
        0.85,
        0.5,
        1,
        "class",
    )
    assert not seed.scale_check and seed.min_cells == 1  # the seed names a class from any single cell
    assert seed.part_ratio == 0  # ...and keeps every part
    assert Settings().min_cells == 2
    assert Settings.preset("best") != seed
    assert Settings.preset("seed", threshold=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="preset must be one of seed, best"):
        Settings.preset("fast")


def test_settings_are_frozen_and_compare_by_value() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.threshold = 0.5  # type: ignore[misc]
    assert Settings(kernel_size=3) == Settings(kernel_size=3) and hash(Settings()) == hash(Settings())
    changed = settings.replace(threshold=0.61)
    assert changed.threshold == 0.61 and settings.threshold == Settings().threshold != 0.61


def test_network_key_holds_what_runs_the_network_again() -> None:
    base = Settings()
    for change in (
        dict(threshold=0.5),
        dict(kernel_size=1),
        dict(granularity="class"),
        dict(min_cells=1),
        dict(part_ratio=3),
    ):
        assert base.replace(**change).network_key == base.network_key, change
    for change in (dict(resolution=448), dict(scales=2), dict(backbone="efficientnet_lite0")):
        assert base.replace(**change).network_key != base.network_key, change


@pytest.mark.parametrize(
    "values, expected",
    [
        (dict(kernel_size="5"), dict(kernel_size=5)),
        (dict(kernel_size=1.0), dict(kernel_size=1)),
        (dict(threshold="0.5"), dict(threshold=0.5)),
        (dict(resolution="448"), dict(resolution=448)),
        (dict(resolution="448 px"), dict(resolution=448)),
        (dict(resolution=" Native "), dict(resolution="native")),
        (dict(scale_check="false"), dict(scale_check=False)),
        (dict(scale_check="true"), dict(scale_check=True)),
        (dict(scale_check=1), dict(scale_check=True)),
        (dict(scales=2.0, granularity="group"), dict(scales=2, granularity="group")),
        (dict(threshold=None), dict()),
        (dict(min_cells="3"), dict(min_cells=3)),
        (dict(part_ratio=6.0, granularity="adaptive"), dict(part_ratio=6, granularity="adaptive")),
        (dict(part_ratio="0"), dict(part_ratio=0)),
    ],
)
def test_parse_converts_what_is_unambiguous(values, expected) -> None:
    assert Settings.parse(**values) == Settings().replace(**expected)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(kernel_size="abc"), "kernel_size must be one of 1, 3, 5, got 'abc'"),
        (dict(kernel_size=[3]), "kernel_size must be one of 1, 3, 5, got [3]"),
        (dict(kernel_size=3.9), "kernel_size must be one of 1, 3, 5, got 3.9"),
        (dict(kernel_size=True), "kernel_size must be one of 1, 3, 5, got True"),
        (dict(threshold=float("nan")), "threshold must be a number between 0 and 1, got nan"),
        (dict(threshold="high"), "threshold must be a number between 0 and 1, got 'high'"),
        (dict(scale_check="maybe"), "scale_check must be true or false, got 'maybe'"),
        (dict(granularity="species"), "granularity must be one of class, group, adaptive"),
        (dict(part_ratio=1), "part_ratio must be 0 (off) or an integer from 2 to 20, got 1"),
        (dict(part_ratio=21), "part_ratio must be 0 (off) or an integer from 2 to 20"),
        (dict(part_ratio=6.5), "part_ratio must be 0 (off) or an integer from 2 to 20, got 6.5"),
        (dict(scales=0), "scales must be an integer from 1 to 4"),
        (dict(min_cells=0), "min_cells must be an integer from 1 to 16"),
        (dict(min_cells=2.5), "min_cells must be an integer from 1 to 16, got 2.5"),
        (dict(scales=2, padding="valid"), "scales above 1 need padding 'same'"),
        (dict(resolution="big"), "resolution must be an integer short side"),
        (dict(backbone="nonet"), "unknown backbone"),
    ],
)
def test_parse_refuses_the_rest_naming_the_setting(values, message) -> None:
    with pytest.raises(ValueError) as raised:
        Settings.parse(**values)
    assert message in str(raised.value)


def test_echoed_values_are_cut() -> None:
    with pytest.raises(ValueError) as raised:
        Settings.parse(kernel_size="x" * 20_000_000)
    assert len(str(raised.value)) < 120
    with pytest.raises(ValueError) as raised:
        Settings.parse(backbone="y" * 1_000_000)
    assert len(str(raised.value)) < 200


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown setting 'colour'"):
        Settings.parse(colour="red")
