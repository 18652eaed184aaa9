"""Maps -> classes and boxes (known answers on hand-made maps), re-analysis, and rendering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

import core
from core import render
from core.analysis import NUM_CLASSES, SCALE_WEIGHTS, _gathered_sums, analysis_size, channel_sums, hedged, pyramid
from core.hierarchy import MAX_GROUP_MEMBERS, vocabulary
from core.postprocess import find_boxes, find_classes, hedge_each_object, one_answer_per_object, parts_give_way
from core.registry import IMAGENET_CATEGORIES
from core.render import box_labels, box_view, label_position, overlay, overlays, upsample
from core.results import Analysis, FoundClass

CATS = vocabulary("class", IMAGENET_CATEGORIES)
SEED = core.Settings.preset("seed", backbone="efficientnet_lite0", resolution=300)
GROUPS = vocabulary("group", IMAGENET_CATEGORIES)
ADAPTIVE = vocabulary("adaptive", IMAGENET_CATEGORIES)
CAT, CUP = 281, 968
DOMESTIC_CAT = "n02121808"  # the five domestic cats


def found(*channels: int, vocab=CATS) -> list[FoundClass]:
    """Entries for ``channels``, as ``find_classes`` makes them (score and area do not matter to ``find_boxes``)."""
    return [FoundClass(vocab.index(c), vocab.labels[c], 1.0, vocab.members[c], vocab.wnids[c], c) for c in channels]


def _map(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, cols), 0.2, dtype=np.float32), np.zeros((rows, cols), dtype=np.int64)


def test_two_separated_blobs_of_one_class_give_two_boxes_with_exact_coordinates():
    prob, winner = _map(6, 8)
    prob[1:3, 1:3], winner[1:3, 1:3] = 0.9, 7  # rows 1-2, cols 1-2
    prob[4, 5:8], winner[4, 5:8] = 0.95, 7  # row 4, cols 5-7
    classes = find_classes(prob, winner, 0.85, CATS)
    assert [(c.index, c.score, c.area) for c in classes] == [(7, pytest.approx(0.95), 7 / 48)]
    boxes = find_boxes(prob, winner, found(7), 0.5, (0.0, 0.0, 80.0, 60.0), (80, 60))
    assert [(b.box, round(b.score, 2)) for b in boxes] == [((50, 40, 80, 50), 0.95), ((10, 10, 30, 30), 0.9)]


def test_diagonal_cells_are_one_region_8_connectivity():
    prob, winner = _map(4, 4)
    prob[[0, 1], [0, 1]], winner[[0, 1], [0, 1]] = 0.9, 3
    boxes = find_boxes(prob, winner, found(3), 0.5, (0, 0, 40, 40), (40, 40))
    assert [b.box for b in boxes] == [(0, 0, 20, 20)]


def test_touching_regions_of_two_classes_are_separate_boxes():
    prob, winner = _map(3, 8)
    prob[:, :] = 0.9
    winner[:, :4], winner[:, 4:] = 281, 967
    prob[1, 6] = 0.99
    classes = find_classes(prob, winner, 0.85, CATS)
    assert [(c.label, c.area) for c in classes] == [("espresso", 0.5), ("tabby", 0.5)]
    boxes = find_boxes(prob, winner, classes, 0.5, (0, 0, 160, 60), (160, 60))
    assert [(b.label, b.box) for b in boxes] == [("espresso", (80, 0, 160, 60)), ("tabby", (0, 0, 80, 60))]


def test_box_threshold_splits_a_region_and_boxes_map_through_the_extent():
    prob, winner = _map(1, 5)
    prob[0] = [0.9, 0.9, 0.4, 0.9, 0.9]
    winner[0] = 5
    # A "valid" map inset by one 10-px cell on each side of a 70 x 30 image.
    boxes = find_boxes(prob, winner, found(5), 0.5, (10.0, 10.0, 60.0, 20.0), (70, 30))
    assert sorted(b.box for b in boxes) == [(10, 10, 30, 20), (40, 10, 60, 20)]


def test_regions_a_gap_apart_can_share_a_box_and_small_regions_can_go_unboxed():
    prob, winner = _map(1, 8)
    prob[0] = [0.9, 0.9, 0.4, 0.9, 0.4, 0.4, 0.4, 0.9]  # regions of 2, 1 and 1 cells; gaps of 1 and 3 cells
    winner[0] = 5
    boxes = lambda **kw: sorted(b.box for b in find_boxes(prob, winner, found(5), 0.5, (0, 0, 80, 10), (80, 10), **kw))  # noqa: E731
    assert boxes() == [(0, 0, 20, 10), (30, 0, 40, 10), (70, 0, 80, 10)]  # the seed's rule
    assert boxes(join=1) == [(0, 0, 40, 10), (70, 0, 80, 10)]  # gaps up to 2 cells; the box ends at the cells
    assert boxes(join=2) == [(0, 0, 80, 10)]
    assert boxes(min_cells=2) == [(0, 0, 20, 10)]
    assert boxes(join=1, min_cells=2) == [(0, 0, 40, 10)]  # 3 cells, joined


def test_min_cells_drops_a_channel_won_in_fewer_cells_above_the_threshold():
    prob, winner = _map(4, 6)
    prob[0:2, 0:2], winner[0:2, 0:2] = 0.9, 281  # four cells
    prob[3, 5], winner[3, 5] = 0.99, 967  # one confident cell
    prob[3, 0:2], winner[3, 0:2] = [0.9, 0.6], 504  # two cells, one of them below the threshold
    assert [c.index for c in find_classes(prob, winner, 0.85, CATS)] == [967, 281, 504]
    assert [c.index for c in find_classes(prob, winner, 0.85, CATS, min_cells=2)] == [281]
    assert [c.index for c in find_classes(prob, winner, 0.5, CATS, min_cells=2)] == [281, 504]
    assert find_classes(prob, winner, 0.85, CATS, min_cells=5) == []


def test_nothing_above_threshold_is_an_empty_answer_not_an_error():
    prob, winner = _map(5, 5)
    assert find_classes(prob, winner, 0.85, CATS) == []
    assert find_boxes(prob, winner, [], 0.5, (0, 0, 50, 50), (50, 50)) == []


def test_a_1x1_map():
    prob = np.array([[0.99]], dtype=np.float32)
    winner = np.array([[42]])
    classes = find_classes(prob, winner, 0.85, CATS)
    assert [(c.index, c.area) for c in classes] == [(42, 1.0)]
    boxes = find_boxes(prob, winner, found(42), 0.5, (0, 0, 33, 17), (33, 17))
    assert [b.box for b in boxes] == [(0, 0, 33, 17)]


def test_analysis_size_rule():
    assert analysis_size(600, 400, 224) == ((224, 336), [])
    assert analysis_size(600, 400, "native") == ((400, 600), [])
    (h, w), notes = analysis_size(8000, 6000, "native")
    assert h * w <= 2048 * 2048 and "downscaled" in notes[0]
    (h, w), notes = analysis_size(8, 8, "native")
    assert (h, w) == (32, 32) and "enlarged" in notes[0]
    for bad in (0, 31, 100000, "big", 2.5, True):
        with pytest.raises(ValueError, match="resolution"):
            core.Settings(resolution=bad)


def test_analysis_pixels_reads_a_read_only_array_and_refuses_other_arrays():
    pixels = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    pixels.setflags(write=False)  # as np.asarray of a PIL image gives
    resized = core.analysis.analysis_pixels(pixels, (5, 6))
    assert resized.shape == (5, 6, 3) and resized.dtype == np.uint8
    assert np.array_equal(resized, core.analysis.analysis_pixels(Image.fromarray(pixels), (5, 6)))
    for bad in (pixels.astype(np.float32), pixels[..., 0], np.zeros((4, 4, 4), np.uint8)):
        with pytest.raises(ValueError, match="H x W x 3 uint8"):
            core.analysis.analysis_pixels(bad, (2, 2))


@pytest.fixture(scope="module")
def prepared(examples):
    """The seed's settings (classes, one scale) with Lite0 at 300 px: what the tests below reason about."""
    return core.prepare(examples / "cat_and_coffee.jpg", SEED)


def test_real_photo_finds_the_cat_and_the_coffee_where_they_are(prepared):
    analysis = prepared.analyze()
    found = {c.label for c in analysis.classes}
    assert "espresso" in found and found & {"tabby", "tiger cat", "Egyptian cat"}
    for box in analysis.boxes:
        centre = (box.box[0] + box.box[2]) / 2
        assert (centre > 451) == (box.label == "espresso"), box  # the cat is the left 451 px, the cup the right


@pytest.mark.parametrize(
    "settings",
    [dict(kernel_size=5, threshold=0.5), dict(kernel_size=1, threshold=0.9, box_threshold=0.7), dict(padding="valid")],
)
def test_reanalysis_from_cached_features_equals_a_fresh_analysis(prepared, examples, settings):
    again = prepared.analyze(**settings)
    fresh = core.analyze(examples / "cat_and_coffee.jpg", settings=SEED, **settings)
    assert again.to_dict() == fresh.to_dict()
    np.testing.assert_array_equal(again.max_prob, fresh.max_prob)


def test_maps_handed_out_are_read_only(prepared):
    analysis = prepared.analyze()
    with pytest.raises(ValueError):
        analysis.max_prob[0, 0] = 1.0
    with pytest.raises(ValueError):
        analysis.winner[0, 0] = 1


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(kernel_size=2), "kernel_size must be one of 1, 3, 5"),
        (dict(kernel_size=7), "kernel_size must be one of 1, 3, 5"),
        (dict(kernel_size=3.0), "kernel_size must be one of 1, 3, 5"),
        (dict(threshold=-1), "threshold must be a number between 0 and 1"),
        (dict(threshold=2), "threshold must be a number between 0 and 1"),
        (dict(threshold=float("nan")), "threshold must be a number between 0 and 1"),
        (dict(box_threshold="high"), "box_threshold must be a number"),
        (dict(padding="full"), "padding must be one of same, valid"),
        (dict(granularity="species"), "granularity must be one of class, group, adaptive"),
        (dict(part_ratio=1), "part_ratio must be 0 \\(off\\) or an integer from 2 to 20"),
        (dict(backbone="resnet50"), "these features are for backbone 'efficientnet_lite0'"),
        (dict(scales=2), "these features are for"),
    ],
)
def test_bad_settings_name_the_parameter_and_its_allowed_values(prepared, bad, match):
    with pytest.raises(ValueError, match=match):
        prepared.analyze(**bad)


def _synthetic(image_size=(60, 80), extent=(0.0, 0.0, 80.0, 60.0)) -> Analysis:
    prob, winner = _map(6, 8)
    prob[0:2, 0:2], winner[0:2, 0:2] = 1.0, 7
    return Analysis(
        source="synthetic", image_size=image_size, settings=core.Settings(), analysis_size=image_size,
        scales=(image_size,), map_size=(6, 8),
        classes=tuple(find_classes(prob, winner, 0.85, CATS)),
        boxes=tuple(find_boxes(prob, winner, found(7), 0.5, extent, image_size[::-1])),
        top5=(), max_prob=prob, winner=winner, extent=extent, vocabulary=CATS,
    )  # fmt: skip


def test_overlay_has_the_image_size_heat_where_the_class_is_and_none_where_it_is_not():
    analysis = _synthetic()
    photo = Image.new("RGB", (80, 60), (100, 150, 200))
    [item] = overlays(analysis, photo)
    assert item.image.size == photo.size and item.caption == f"{CATS.labels[7]} (1.00)"
    pixels = np.asarray(item.image).astype(int)
    assert pixels[8, 8, 0] == 178  # hot at p = 1: full red (255) blended at 0.5 over the photo's 100
    cold = np.rint(np.array([100, 150, 200]) * 0.5 + np.array(colormaps["hot"](0.0)[:3]) * 255 * 0.5)
    np.testing.assert_array_equal(pixels[45:, 50:], np.broadcast_to(cold, (15, 30, 3)))  # far away: no heat


def test_upsampling_keeps_the_map_aligned_with_its_extent():
    heat = np.zeros((3, 3), dtype=np.float32)
    heat[1, 1] = 1.0
    full = upsample(heat, (30.0, 20.0, 90.0, 50.0), (120, 70))  # cells of 20 x 10 px starting at (30, 20)
    y, x = np.unravel_index(full.argmax(), full.shape)
    assert (x, y) in {(59, 34), (60, 34), (59, 35), (60, 35)}  # centre of the middle cell: (60, 35)
    assert full[:, :29].max() == 0 and full[:19, :].max() == 0 and full[:, 91:].max() == 0


def test_overlay_works_for_any_aspect_ratio():
    for size in [(300, 20), (20, 300), (1, 1)]:
        image = Image.new("RGB", size)
        out = overlay(image, np.ones((2, 3), dtype=np.float32), (0.0, 0.0, float(size[0]), float(size[1])))
        assert out.size == size


def test_box_view_draws_each_box_in_its_class_colour_inside_the_image():
    analysis = _synthetic()
    photo = Image.new("RGB", (80, 60), (255, 255, 255))
    view = box_view(analysis, photo)
    assert view.size == photo.size
    pixels = np.asarray(view)
    tab_blue = (31, 119, 180)
    assert tuple(pixels[19, 10]) == tab_blue  # the bottom edge of the 20 x 20 box
    assert tuple(pixels[59, 79]) == (255, 255, 255)  # nothing drawn far away


def _shared(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The area two (x1, y1, x2, y2) rectangles share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_a_label_sits_above_its_box_unless_that_covers_an_earlier_label():
    image = (900, 300)
    assert label_position((100, 60, 230, 180), (120, 20), image, []) == (100, 40)  # above, at the box's left
    assert label_position((100, 0, 230, 180), (120, 20), image, []) == (100, 0)  # no room above: inside the top
    # cat_and_coffee.jpg at the defaults: a small box whose label, above it, ran into the label before it.
    placed = [(83, 40, 280, 60)]
    x, y = label_position((209, 40, 231, 60), (190, 20), image, placed)
    assert all(_shared((x, y, x + 190, y + 20), b) == 0 for b in placed)
    assert 0 <= x <= 900 - 190 and 0 <= y <= 300 - 20
    # Nowhere free (the picture is all labels): the least covered place, still inside the picture.
    full = [(0, 0, 900, 300)]
    x, y = label_position((10, 10, 50, 50), (120, 20), image, full)
    assert 0 <= x <= 780 and 0 <= y <= 280


def test_box_view_labels_do_not_cover_each_other(examples):
    # cat_and_coffee.jpg at the defaults: four boxes on the cat, two of whose labels used to overlap.
    photo = Image.open(examples / "cat_and_coffee.jpg").convert("RGB")
    analysis = core.analyze(photo)
    labels = box_labels(analysis, photo.size)
    assert len(labels) == len(analysis.boxes) >= 4
    for i, (_, a) in enumerate(labels):
        assert 0 <= a[0] < a[2] <= photo.width and 0 <= a[1] < a[3] <= photo.height
        for _, b in labels[:i]:
            assert _shared(a, b) == 0
    view = np.asarray(box_view(analysis, photo))
    colors = render.class_colors(analysis)
    for box, (_, (x1, y1, _, _)) in zip(analysis.boxes, labels, strict=True):
        assert tuple(view[y1, x1]) == colors[box.channel]  # each label's corner is filled in its class's colour


def test_renderers_draw_at_the_pictures_size_and_leave_the_analysis_alone():
    analysis = _synthetic(image_size=(600, 800), extent=(0.0, 0.0, 800.0, 600.0))
    before = analysis.to_dict()
    small = Image.new("RGB", (80, 60), (255, 255, 255))  # the photo drawn at a tenth of its size
    pixels = np.asarray(box_view(analysis, small))
    assert tuple(pixels[19, 10]) == (31, 119, 180)  # the box (0, 0, 200, 200) drawn at (0, 0, 20, 20)
    [item] = overlays(analysis, small)
    assert item.image.size == (80, 60) and np.asarray(item.image)[5, 5, 0] > np.asarray(item.image)[50, 70, 0]
    assert analysis.to_dict() == before and analysis.boxes[0].box == (0, 0, 200, 200)


def test_a_group_is_found_where_its_members_together_are_sure_and_no_single_member_is():
    car = GROUPS.labels.index("car")
    members = GROUPS.members[car]
    probs = np.zeros((1000, 2, 2), dtype=np.float32)
    probs[0] = 1.0  # elsewhere: tench, sure
    probs[:, 0, 0] = 0.0
    for m in members[:4]:  # four kinds of car share the top-left cell: none above 0.25
        probs[m, 0, 0] = 0.24
    probs[0, 0, 0] = 0.04
    grouped = np.zeros((len(GROUPS), 2, 2), dtype=np.float32)
    np.add.at(grouped, GROUPS.sums[0], probs[GROUPS.sums[1]])
    classes = find_classes(probs.max(0), probs.argmax(0), 0.85, CATS)
    assert [c.label for c in classes] == ["tench"]  # at class level the cars are lost
    groups = find_classes(grouped.max(0), grouped.argmax(0), 0.85, GROUPS)
    car_entry = next(g for g in groups if g.label == "car")
    assert car_entry.index is None and car_entry.wnid == "n02958343" and set(members) >= {609, 511, 656, 436}
    assert car_entry.score == pytest.approx(0.96) and car_entry.area == 0.25


def test_group_maps_are_the_sums_of_their_members_maps(prepared):
    classes = prepared.maps(prepared.settings.replace(granularity="class"))
    groups = prepared.maps(prepared.settings.replace(granularity="group"))
    expected = np.zeros_like(groups.probabilities)
    channels, members = groups.vocabulary.sums
    np.add.at(expected, channels, classes.probabilities[members])
    np.testing.assert_allclose(groups.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(groups.probabilities.sum(axis=0), 1.0, atol=1e-5)
    analysis = prepared.analyze(granularity="group", threshold=0.5)
    assert analysis.classes and all(c.index is None or c.members == (c.index,) for c in analysis.classes)
    assert {"domestic cat"} <= {c.label for c in analysis.classes}
    record = analysis.to_dict()
    assert record["granularity"] == "group" and all("members" in b and "wnid" in b for b in record["boxes"])


def test_several_scales_are_fused_on_the_finest_grid(examples):
    settings = core.Settings(backbone="efficientnet_lite0", resolution=224, scales=3)
    prepared = core.prepare(examples / "cat_and_coffee.jpg", settings)
    assert [h for h, _ in prepared.scales] == [224, 317, 448]
    fused = prepared.maps()
    assert fused.shape == fused.answer(0.5)[0].shape == prepared.features[-1].shape[-2:]  # the largest scale's grid
    assert fused.vocabulary.granularity == "adaptive"  # the default: the classes, then the synsets over them
    np.testing.assert_allclose(fused.probabilities[:1000].sum(axis=0), 1.0, atol=1e-5)  # a mean of distributions
    single = core.prepare(examples / "cat_and_coffee.jpg", settings.replace(scales=1))
    assert single.scales == prepared.scales[:1]
    record = prepared.analyze().to_dict()
    assert record["scales"] == [list(s) for s in prepared.scales] and record["analysis_size"] == [448, 1345]
    with pytest.raises(ValueError, match="padding 'same'"):
        settings.replace(padding="valid")


def test_the_pyramid_does_not_enlarge_a_small_image_more_than_twice():
    four = core.Settings(scales=4)
    sizes, notices = pyramid(640, 640, four)
    assert [h for h, _ in sizes] == [320, 453, 640, 905] and notices == []
    sizes, notices = pyramid(451, 300, four)  # 640 px would enlarge the 300-px photo 2.1x
    assert sizes == ((320, 481), (453, 681)) and notices == [
        "the image is small (300 px): 2 of 4 scales were run, the others would enlarge it more than 2x"
    ]
    sizes, _ = pyramid(600, 400, four.replace(resolution="native"))  # 1x, 1.41x, 2x
    assert [h for h, _ in sizes] == [400, 566, 800]
    sizes, notices = pyramid(40, 40, four)  # the first scale always runs, however small the image
    assert sizes == ((320, 320),) and "1 of 4 scales" in notices[0]


def test_the_fused_map_is_the_scales_maps_weighted_larger_first(examples):
    prepared = core.prepare(
        examples / "cat_and_coffee.jpg", core.Settings(backbone="efficientnet_lite0", resolution=224, scales=3)
    )
    fused = prepared.maps().probabilities
    expected = torch.zeros(fused.shape)
    for weight, size, features in zip(SCALE_WEIGHTS, prepared.scales, prepared.features, strict=False):
        alone = dataclasses.replace(
            prepared, settings=prepared.settings.replace(scales=1), scales=(size,), features=(features,)
        )
        probabilities = torch.from_numpy(np.array(alone.maps().probabilities))[None]
        expected += weight * F.interpolate(probabilities, size=fused.shape[-2:], mode="bilinear")[0]
    assert len(prepared.scales) == 3 and SCALE_WEIGHTS[:3] == (1.0, 1.0, 2.0)
    np.testing.assert_allclose(fused, expected / 4.0, atol=1e-6)


def test_the_probe_reads_the_cell_under_a_point(prepared):
    analysis = prepared.analyze(threshold=0.5)
    espresso = next(b for b in analysis.boxes if b.label == "espresso")
    x, y = (espresso.box[0] + espresso.box[2]) / 2, (espresso.box[1] + espresso.box[3]) / 2
    top = prepared.probe(x, y, prepared.settings.replace(threshold=0.5))
    assert len(top) == 5 and top[0].label == "espresso" and top[0].probability > 0.5
    assert [t.probability for t in top] == sorted((t.probability for t in top), reverse=True)
    x0, y0, x1, y1 = prepared.cell_box(x, y)
    assert x0 <= x < x1 and y0 <= y < y1
    with pytest.raises(ValueError, match="outside"):
        prepared.probe(-5, 10)


# -------------------------------------------------------------------------------------------------------------
# Adaptive granularity (Hedging Your Bets) and parts giving way to their whole
# -------------------------------------------------------------------------------------------------------------
def _cells(*cells: dict[int, float]) -> torch.Tensor:
    """A 1000 x 1 x len(cells) class map; each cell's missing mass spread over the classes not named."""
    probabilities = torch.zeros((1000, 1, len(cells)), dtype=torch.float64)
    for col, named in enumerate(cells):
        rest = [c for c in range(1000) if c not in named]
        probabilities[rest, 0, col] = (1.0 - sum(named.values())) / len(rest)
        for c, p in named.items():
            probabilities[c, 0, col] = p
    return probabilities


def test_the_adaptive_vocabulary_is_the_classes_then_the_synsets_most_specific_first():
    assert ADAPTIVE.labels[:1000] == CATS.labels and ADAPTIVE.members[:1000] == CATS.members
    sizes = ADAPTIVE.sizes[1000:]
    assert len(ADAPTIVE) > 1100 and list(sizes) == sorted(sizes) and sizes[0] >= 2 and sizes[-1] <= MAX_GROUP_MEMBERS
    assert len(set(ADAPTIVE.labels[1000:])) == len(ADAPTIVE) - 1000  # unique, and none is a class name
    assert not set(ADAPTIVE.labels[1000:]) & set(CATS.labels)
    dog = ADAPTIVE.labels.index("dog")
    assert ADAPTIVE.index(dog) is None and ADAPTIVE.index(CAT) == CAT and ADAPTIVE.wnids[dog] == "n02084071"
    assert ADAPTIVE.members[dog] == tuple(sorted(ADAPTIVE.members[dog])) and 118 <= len(ADAPTIVE.members[dog]) <= 130


@pytest.mark.parametrize("vocab", [GROUPS, ADAPTIVE], ids=["group", "adaptive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_sums_add_each_channels_members_one_by_one_to_the_last_bit(vocab, dtype):
    probs = torch.rand(2, 1000, 5, 7, generator=torch.Generator().manual_seed(0), dtype=dtype).softmax(dim=1)
    probs = probs.contiguous(memory_format=torch.channels_last)  # the layout the maps may come in
    summed = channel_sums(probs, vocab)
    assert summed.shape == (2, len(vocab), 5, 7) and summed.dtype == dtype
    assert torch.equal(_gathered_sums(probs, vocab), summed)  # the way other devices sum, here on the CPU
    for channel, members in enumerate(vocab.members):
        expected = probs[:, members[0]].clone()
        for member in members[1:]:
            expected += probs[:, member]
        assert torch.equal(summed[:, channel], expected), vocab.labels[channel]


def test_hedging_answers_the_most_specific_node_that_is_sure_enough():
    # a sure cat; two cats at 0.4 each (no class passes 0.5, the five domestic cats do); a cat at 0.3 and a cup at
    # 0.3 (nothing of at most 129 classes holds both: the most probable class, below the threshold)
    probs = channel_sums(_cells({CAT: 0.9}, {CAT: 0.4, 282: 0.4}, {CAT: 0.3, CUP: 0.3})[None], ADAPTIVE)[0]
    max_prob, winner = hedged(probs, torch.from_numpy(ADAPTIVE.sizes), 0.5)
    assert winner[0, 0] == CAT and max_prob[0, 0] == pytest.approx(0.9)
    assert ADAPTIVE.wnids[winner[0, 1]] == DOMESTIC_CAT and max_prob[0, 1] == pytest.approx(0.8, abs=1e-3)
    assert winner[0, 2] in (CAT, CUP) and max_prob[0, 2] == pytest.approx(0.3)
    # a node's probability is the sum of its classes'; threshold 0 answers the most probable class everywhere
    node = int(winner[0, 1])
    assert max_prob[0, 1] == pytest.approx(
        float(_cells({CAT: 0.4, 282: 0.4})[list(ADAPTIVE.members[node]), 0, 0].sum())
    )
    assert hedged(probs, torch.from_numpy(ADAPTIVE.sizes), 0.0)[1].tolist() == [[CAT, CAT, CAT]]
    # ...and a threshold nothing reaches answers the most probable class, never found
    top, at_top = hedged(probs, torch.from_numpy(ADAPTIVE.sizes), 0.999)
    assert at_top[0, 0] == CAT and (top < 0.999).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hedging_prefers_fewer_classes_then_the_more_probable_then_the_first_and_leaves_the_map_alone(dtype):
    # Random adaptive maps, some rounded to quarters so that sizes and probabilities tie, against the rule read
    # cell by cell: a class above the threshold wins; else, among the synsets above it, the fewest classes, then the
    # highest probability, then the lowest index; else the most probable class.
    generator = torch.Generator().manual_seed(0)
    sizes = torch.from_numpy(ADAPTIVE.sizes)
    for trial in range(6):
        classes = torch.rand(1000, 4, 5, generator=generator, dtype=dtype) ** 8
        classes = channel_sums((classes / classes.sum(dim=0))[None], ADAPTIVE)[0]
        probs = torch.round(classes * 4) / 4 if trial % 2 else classes
        kept = probs.clone()
        for threshold in (0.0, 0.3, 0.6):
            max_prob, winner = hedged(probs, sizes, threshold)
            assert torch.equal(probs, kept)
            for r, c in np.ndindex(4, 5):
                cell = probs[:, r, c].tolist()
                best = max(range(NUM_CLASSES), key=lambda i: (cell[i], -i))
                passing = [i for i in range(NUM_CLASSES, len(cell)) if cell[i] > threshold]
                if cell[best] <= threshold and passing:
                    best = min(passing, key=lambda i: (ADAPTIVE.sizes[i], -cell[i], i))
                assert (winner[r, c], max_prob[r, c]) == (best, cell[best]), (trial, threshold, r, c)
    # Two synsets of one size (63 classes) three float32 steps apart: the more probable, though a float32 key
    # (0.5 p - 63, spaced 4e-6 there) would tie them and answer the first
    same = [i for i in range(NUM_CLASSES, len(ADAPTIVE)) if ADAPTIVE.sizes[i] == 63]
    probs = torch.zeros(len(ADAPTIVE), 1, 1, dtype=dtype)
    probs[same[0]], probs[same[1]] = 0.7, float(np.float32(0.7) + 3 * np.spacing(np.float32(0.7)))
    assert hedged(probs, sizes, 0.6)[1].item() == same[1]


def test_an_adaptive_analysis_answers_a_class_where_sure_and_a_synset_where_not(prepared):
    settings = prepared.settings.replace(granularity="adaptive", threshold=0.5)
    analysis = prepared.analyze(settings)
    record = analysis.to_dict()
    assert record["granularity"] == "adaptive" and record["classes"]
    for entry in record["classes"]:
        one_class = len(entry["members"]) == 1
        assert entry["index"] == (entry["members"][0] if one_class else None) and entry["wnid"].startswith("n")
    assert any(967 in c.members for c in analysis.classes)  # espresso, or a synset over it ("food")
    # the map's answer depends on the threshold: higher, the same cells answer broader nodes (never narrower)
    low, high = (prepared.maps(settings).answer(t) for t in (0.3, 0.9))
    sizes = ADAPTIVE.sizes
    sure = high[0] > 0.9
    assert (sizes[high[1][sure]] >= sizes[low[1][sure]]).all() and (sizes[high[1]] > 1).any()
    # the probe: the cell's own answer first (the object's box may carry a broader one), then its classes
    box = analysis.boxes[0]
    x, y = (box.box[0] + box.box[2]) / 2, (box.box[1] + box.box[3]) / 2
    top = prepared.probe(x, y, settings)
    assert set(top[0].members) <= set(box.members) and all(len(t.members) == 1 for t in top[1:])
    assert [t.probability for t in top[1:]] == sorted((t.probability for t in top[1:]), reverse=True)


def test_a_part_gives_way_to_a_much_larger_whole_it_touches_but_not_to_one_apart():
    winner = np.zeros((4, 8), dtype=np.int64)
    winner[:, :3] = 1  # the whole: 12 cells
    winner[0, 3] = 2  # a part touching it: 1 cell
    winner[3, 7] = 3  # a thing apart: 1 cell
    winner[3, 3] = 4  # a part touching it diagonally (8-connected), but at 0.4: not found there
    max_prob = np.full((4, 8), 0.9, dtype=np.float32)
    max_prob[winner == 0] = 0.1
    max_prob[3, 3] = 0.4
    entries = found(1, 2, 3)
    assert [e.channel for e in parts_give_way(entries, max_prob, winner, 0.5, 6)] == [1, 3]
    assert [e.channel for e in parts_give_way(entries, max_prob, winner, 0.5, 13)] == [1, 2, 3]
    assert [e.channel for e in parts_give_way(found(1, 3), max_prob, winner, 0.5, 2)] == [1, 3]


def test_the_parts_rule_runs_in_the_analysis(prepared):
    every = prepared.analyze(threshold=0.3, min_cells=1)
    kept = prepared.analyze(threshold=0.3, min_cells=1, part_ratio=2)
    assert {c.label for c in kept.classes} < {c.label for c in every.classes}
    assert {b.label for b in kept.boxes} == {c.label for c in kept.classes}
    assert kept.to_dict()["part_ratio"] == 2 and every.to_dict()["part_ratio"] == 0


def test_answers_of_one_lineage_that_touch_become_the_broadest_over_all_their_cells():
    egyptian, domestic = CAT + 4, ADAPTIVE.wnids.index(DOMESTIC_CAT)  # 285 Egyptian cat, and the five cats
    winner = np.zeros((3, 8), dtype=np.int64)
    winner[:, :2], winner[:, 2:4] = egyptian, domestic  # one cat: sure of the breed on the left only
    winner[:, 6:] = CUP  # a cup beside it: not of its lineage
    max_prob = np.where(winner > 0, 0.8, 0.1).astype(np.float32)
    broader = np.full((3, 8), 0.95, dtype=np.float32)  # the five cats' probability: at least the Egyptian cat's
    entries = find_classes(max_prob, winner, 0.5, ADAPTIVE)
    kept, new_prob, new_winner = one_answer_per_object(entries, max_prob, winner, 0.5, lambda channel: broader)
    assert [c.channel for c in kept] == [domestic, CUP] and kept[0].area == 12 / 24
    assert kept[0].score == pytest.approx(0.95) and (new_winner[:, :4] == domestic).all()
    assert (new_prob[:, :2] == broader[:, :2]).all() and (new_prob[:, 2:4] == max_prob[:, 2:4]).all()
    assert (winner[:, :2] == egyptian).all() and not new_winner.flags.writeable  # the inputs are left alone
    boxes = find_boxes(new_prob, new_winner, kept, 0.5, (0, 0, 80, 30), (80, 30))
    assert sorted(b.box for b in boxes) == [(0, 0, 40, 30), (60, 0, 80, 30)]  # one box for the cat
    # apart, they stay two answers; classes that do not nest are never merged
    apart = winner.copy()
    apart[:, 2] = 0
    entries = find_classes(max_prob, apart, 0.5, ADAPTIVE)
    assert one_answer_per_object(entries, max_prob, apart, 0.5, lambda channel: broader)[0] == entries


def _adaptive_map(classes: np.ndarray) -> np.ndarray:
    """Class probabilities (1000 x rows x cols) summed into the adaptive vocabulary, as core sums them."""
    return channel_sums(torch.from_numpy(classes)[None], ADAPTIVE)[0].numpy()


def test_each_object_is_named_by_the_most_specific_channel_its_mean_probability_passes():
    classes = np.zeros((1000, 1, 4), dtype=np.float32)
    classes[285] = [0.6, 0.6, 0.3, 0.3]  # Egyptian cat: sure on the left half only
    classes[281] = [0.2, 0.2, 0.3, 0.0]  # tabby
    classes[207] = [0.1, 0.1, 0.1, 0.4]  # golden retriever: at the right edge, "domestic animal" at best
    probs = _adaptive_map(classes)
    animal, cat = ADAPTIVE.labels.index("domestic animal"), ADAPTIVE.wnids.index(DOMESTIC_CAT)
    winner, max_prob = np.full((1, 4), animal), probs[animal].copy()  # one object, answered by its broadest
    entry = find_classes(max_prob, winner, 0.5, ADAPTIVE)

    named, new_prob, new_winner = hedge_each_object(entry, max_prob, winner, 0.5, ADAPTIVE, probs)
    assert [c.label for c in named] == ["domestic cat"]  # mean 0.625: the five cats; Egyptian cat's 0.45 fails
    assert new_winner.tolist() == [[cat] * 4] and np.allclose(new_prob, probs[cat])
    assert named[0].area == 0.75 and named[0].score == pytest.approx(0.8)  # the unsure cell no longer counts
    assert not new_winner.flags.writeable and (winner == animal).all()  # the inputs are left alone
    assert [c.label for c in hedge_each_object(entry, max_prob, winner, 0.4, ADAPTIVE, probs)[0]] == ["Egyptian cat"]
    assert hedge_each_object(entry, max_prob, winner, 0.7, ADAPTIVE, probs)[0] == entry  # nothing narrower is sure
    # classes and groups have nothing narrower: left as they are
    cells = found(1, 2, 3)
    cell_prob, cell_winner = _map(3, 3)
    assert hedge_each_object(cells, cell_prob, cell_winner, 0.5, CATS, classes)[0] is cells


@pytest.mark.slow
def test_a_photo_of_a_cat_is_a_domestic_cat_not_a_domestic_animal(examples):
    analysis = core.analyze(examples / "chelsea.png")
    assert [c.label for c in analysis.classes] == ["domestic cat"]
    assert {b.label for b in analysis.boxes} == {"domestic cat"}
