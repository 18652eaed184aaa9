"""The map-quality evaluation: its metrics on hand-made analyses, its scenes, and one real mosaic at the defaults."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import core
from bench.quality import Setting, aggregate, score_scene, sweep
from bench.quality_data import BLANK, PHOTOS, Scene, Tile, mosaic, mosaics, photo_path
from core.analysis import find_classes, scale_checked
from core.registry import IMAGENET_CATEGORIES

CAT, ESPRESSO, CUP, BANANA = 281, 967, 968, 954
CATEGORIES = list(IMAGENET_CATEGORIES)


def _scene() -> Scene:
    """A 200 x 200 2 x 2 scene: cat top left, coffee top right, nothing bottom left, cat again bottom right."""
    cats, coffee = frozenset({CAT, 282}), frozenset({ESPRESSO, CUP})
    tiles = (
        Tile("cat", (0, 0, 100, 100), cats),
        Tile("coffee", (100, 0, 200, 100), coffee),
        Tile(BLANK, (0, 100, 100, 200), frozenset()),
        Tile("cat", (100, 100, 200, 200), cats),
    )
    return Scene("synthetic", Image.new("RGB", (200, 200)), tiles)


def _analysis(classes: list[int], boxes: list[tuple[int, tuple[int, int, int, int]]]) -> SimpleNamespace:
    return SimpleNamespace(
        classes=[SimpleNamespace(index=i) for i in classes],
        boxes=[SimpleNamespace(index=i, box=box) for i, box in boxes],
    )


def test_a_perfect_analysis_scores_one_everywhere():
    analysis = _analysis([CAT, ESPRESSO], [(CAT, (10, 10, 90, 90)), (ESPRESSO, (110, 0, 190, 100))])
    score = score_scene(analysis, _scene())
    assert (score.recall, score.precision, score.localization) == (1.0, 1.0, 1.0)
    # The cat is right in two tiles but has a box in only one of them.
    assert score.placed == pytest.approx(2 / 3)


def test_a_wrong_class_and_a_misplaced_box_count_against_precision_and_localization():
    # The espresso's only box is centred in the blank tile; banana is in no tile's accepted set.
    analysis = _analysis(
        [CAT, ESPRESSO, BANANA],
        [(CAT, (100, 100, 200, 200)), (ESPRESSO, (0, 120, 60, 180)), (BANANA, (0, 0, 10, 10))],
    )
    score = score_scene(analysis, _scene())
    assert score.recall == 1.0
    assert score.precision == pytest.approx(2 / 3)
    assert score.localization == pytest.approx(1 / 2)
    assert score.placed == pytest.approx(1 / 3)  # the bottom-right cat tile only
    assert (score.found, score.right, score.objects) == (3, 2, 3)


def test_a_sibling_counts_and_a_box_centre_on_a_tile_edge_belongs_to_the_tile_after_it():
    # The cup is in the coffee tile's accepted set; its box (50..150) is centred at x = 100, the coffee tile's edge.
    score = score_scene(_analysis([CUP], [(CUP, (50, 20, 150, 80))]), _scene())
    assert (score.recall, score.precision, score.localization) == (pytest.approx(1 / 3), 1.0, 1.0)


def test_a_right_class_without_a_box_is_not_localized():
    score = score_scene(_analysis([CAT], []), _scene())
    assert (score.recall, score.localization, score.placed) == (pytest.approx(2 / 3), 0.0, 0.0)


def test_finding_nothing_has_full_precision_no_recall_and_no_localization():
    score = score_scene(_analysis([], []), _scene())
    assert (score.recall, score.precision) == (0.0, 1.0)
    assert math.isnan(score.localization)


def test_aggregate_leaves_undefined_localization_out_of_the_mean():
    scene = _scene()
    scores = [
        score_scene(_analysis([], []), scene),
        score_scene(_analysis([CAT], [(CAT, (0, 0, 100, 100))]), scene),
        score_scene(_analysis([CAT], [(CAT, (100, 0, 200, 100))]), scene),
    ]
    total = aggregate(scores)
    assert total.localization == pytest.approx(0.5)  # (1 + 0) / 2: the first scene found nothing to place
    assert total.recall == pytest.approx((0 + 2 / 3 + 2 / 3) / 3)
    assert (total.classes, total.scenes) == (pytest.approx(2 / 3), 3)


def test_every_photo_is_available_offline_and_labelled():
    for photo in PHOTOS:
        assert photo_path(photo).is_file()
        assert photo.accepted and all(0 <= i < 1000 for i in photo.accepted)


def test_mosaics_are_seeded_distinct_and_tiled_exactly():
    first, again = mosaics(2, 4, seed=3), mosaics(2, 4, seed=3)
    assert [s.name for s in first] == [s.name for s in again]
    assert [s.name for s in first] != [s.name for s in mosaics(2, 4, seed=4)]
    for scene in first:
        names = [tile.name for tile in scene.tiles]
        assert len(set(names)) == 4 and scene.image.size == (512, 512)
    # 8 photos over two 2 x 2 mosaics: each exactly once.
    assert sorted(t.name for s in first[:2] for t in s.tiles) == sorted(p.name for p in PHOTOS)
    three = mosaics(3, 1, seed=0, blanks=1)[0]
    assert [t.rect for t in three.tiles][4] == (256, 256, 512, 512)
    assert sum(t.name == BLANK for t in three.tiles) == 1 and len(three.objects) == 8


def test_the_scale_check_drops_a_part_that_loses_to_the_whole_at_the_classifiers_view():
    # Fine map: a moped (665) over most of the map, a disc brake (535) in one corner, a cat (281) alone at the right.
    prob = np.full((4, 6), 0.9, dtype=np.float32)
    winner = np.full((4, 6), 665)
    winner[2:4, 0:2], winner[:, 5] = 535, 281
    classes = find_classes(prob, winner, 0.85, CATEGORIES)
    view = np.full((4, 6), 665)  # pooled over the classifier's view, the moped wins the brake's cells too
    view[:, 5] = 281
    kept = scale_checked(classes, prob, winner, view, 0.5)
    assert {c.index for c in classes} == {665, 535, 281}
    assert [c.index for c in kept] == [c.index for c in classes if c.index != 535]  # order and scores unchanged


@pytest.fixture(scope="module")
def cat_and_coffee() -> tuple[Scene, core.Prepared]:
    scene = mosaic(["cat", BLANK, BLANK, "coffee"], 2)
    return scene, core.prepare(scene.image, source=scene.name)


def test_a_real_mosaic_at_the_defaults_finds_both_classes_in_their_tiles(cat_and_coffee):
    scene, prepared = cat_and_coffee
    analysis = prepared.analyze()
    score = score_scene(analysis, scene)
    assert (score.recall, score.localization, score.placed) == (1.0, 1.0, 1.0), analysis.classes
    assert score.precision == 1.0, analysis.classes
    assert analysis.to_dict() == core.analyze(scene.image, source=scene.name).to_dict()


def test_the_seed_rule_is_still_there_and_the_scale_check_only_removes_classes(cat_and_coffee):
    _, prepared = cat_and_coffee
    for padding in ("same", "valid"):
        seed = prepared.analyze(3, 0.85, 0.5, padding, scale_check=False)
        checked = prepared.analyze(3, 0.85, 0.5, padding, scale_check=True)
        assert seed.classes == tuple(find_classes(seed.max_prob, seed.winner, 0.85, CATEGORIES))
        assert set(checked.classes) <= set(seed.classes)
        assert (seed.to_dict()["scale_check"], checked.to_dict()["scale_check"]) == (False, True)


def test_the_sweep_scores_every_setting_of_a_small_grid():
    scenes = {"2x2": [mosaic(["cat", "coffee", "uniform", "palace"], 2)]}
    results = sweep(scenes, ["efficientnet_lite0"], ["native"], [1, 3], [0.85], [0.5], [False, True], progress=False)
    settings = {Setting("efficientnet_lite0", "native", k, 0.85, 0.5, check) for k in (1, 3) for check in (False, True)}
    assert set(results) == {("2x2", setting) for setting in settings}
    assert all(0.0 <= s.recall <= 1.0 and s.scenes == 1 for s in results.values())
    # The scale check only ever removes classes.
    for k in (1, 3):
        seed, checked = (
            results["2x2", Setting("efficientnet_lite0", "native", k, 0.85, 0.5, c)] for c in (False, True)
        )
        assert checked.classes <= seed.classes
