"""The labelled photos of the map-quality evaluation, and the scenes built from them.

Every photo is real and freely licensed, and none is downloaded: five are in ``examples/`` (see
``examples/LICENSES.md``), three ship inside installed packages (scikit-image's sample data, scikit-learn's sample
images), and they are read where they lie. Each photo shows one object whose ImageNet-1k class is known; ``accepted``
lists the class indices that count as right for it (the class and the siblings that name the same thing, chosen from
what the photo shows, not from what the networks answer; explained in QUALITY.md).

A scene is a square mosaic of ``grid x grid`` tiles (1 x 1 is the photo alone). Each tile is a square crop of one
photo, resized to ``TILE_SIZE``, so every tile's class and place are known. The tiles of a mosaic are drawn with a
seeded shuffle: the same seed gives the same scenes on every machine.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = [
    "BLANK",
    "PHOTOS",
    "TILE_SIZE",
    "Photo",
    "Scene",
    "Tile",
    "mosaic",
    "mosaics",
    "photo_path",
    "scene_sets",
    "single",
]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Side of one tile in pixels: a 2 x 2 mosaic is 512 px, a 3 x 3 one 768 px, neither of them a resolution the sweep
# also names, so "native" is a setting of its own.
TILE_SIZE = 256
# The grey of a tile that shows nothing (3 x 3 mosaics hold 8 photos and one such tile): any class found there is a
# false positive.
BLANK_GREY = (128, 128, 128)


@dataclass(frozen=True)
class Photo:
    """One labelled photo.

    Attributes:
        name: short name used in scene names and tables.
        location: ``"examples/<file>"`` in this repository, or ``"<package>:<path inside the package>"``.
        accepted: the ImageNet-1k class indices that count as finding this photo's object.
        crop: square crop ``(x1, y1, x2, y2)`` in the photo's pixels that holds the object; None: the centred square.
        licence: where the photo comes from and under which terms.
    """

    name: str
    location: str
    accepted: frozenset[int]
    crop: tuple[int, int, int, int] | None
    licence: str


# Cat breeds: ImageNet's five domestic cats (281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat)
# are all hyponyms of WordNet's "domestic cat"; Chelsea is a tabby, but telling the breeds apart is not our test.
CATS = frozenset({281, 282, 283, 284, 285})
PHOTOS: tuple[Photo, ...] = (
    Photo("cat", "examples/chelsea.png", CATS, None, "CC0, Stefan van der Walt (scikit-image)"),
    Photo(
        "coffee",
        "examples/coffee.png",
        frozenset({967, 968, 504}),  # espresso, cup, coffee mug: the drink and what holds it
        None,
        "CC0, Rachel Michetti (scikit-image)",
    ),
    Photo(
        "uniform",
        "examples/grace_hopper.jpg",
        frozenset({652, 834, 457}),  # military uniform, suit, bow tie: what Rear Admiral Hopper wears
        None,
        "public domain, U.S. Navy (matplotlib)",
    ),
    Photo(
        "rocket",
        "examples/rocket.jpg",
        frozenset({657, 744}),  # missile, projectile/missile: ImageNet's rockets (there is no "rocket" class)
        (107, 0, 534, 427),  # the square around the Falcon 9 on its pad
        "public domain, SpaceX (scikit-image)",
    ),
    Photo(
        "shuttle",
        "examples/astronaut.jpg",
        frozenset({812}),  # space shuttle: the model behind Eileen Collins, cropped from her portrait
        (300, 20, 512, 232),
        "public domain, NASA (scikit-image)",
    ),
    Photo(
        "tripod",
        "skimage:data/camera.png",
        frozenset({872, 759, 732}),  # tripod, reflex camera, Polaroid camera: the cameraman's camera on its tripod
        None,
        "CC0, Lav Varshney (scikit-image sample data)",
    ),
    Photo(
        "motorbike",
        "skimage:data/motorcycle_left.png",
        # moped, motor scooter: ImageNet-1k has no "motorcycle"; these are its motorbikes (WordNet: moped is a
        # motorbike, motor scooter its sibling under motor vehicle)
        frozenset({665, 670}),
        (155, 0, 655, 500),  # the Yamaha, its wheels' outer edges just cut
        "Middlebury 2014 stereo benchmark, Scharstein et al. (scikit-image sample data)",
    ),
    Photo(
        "palace",
        "sklearn:datasets/images/china.jpg",
        # palace, stupa, monastery: the Tower of Buddhist Incense in Beijing's Summer Palace, a Buddhist temple
        # tower in an imperial palace (ImageNet-1k has no "pagoda"; its stupa images are largely pagodas)
        frozenset({698, 832, 663}),
        (0, 0, 427, 427),  # the tower, left of the lake
        "CC BY 2.0, danielbuechele on Flickr (scikit-learn sample image)",
    ),
)
PHOTOS_BY_NAME = {photo.name: photo for photo in PHOTOS}
# The tile with no object (3 x 3 mosaics).
BLANK = "blank"


@dataclass(frozen=True)
class Tile:
    """One tile of a scene: which photo, where (mosaic pixels, x2/y2 exclusive), and the classes that count there."""

    name: str
    rect: tuple[int, int, int, int]
    accepted: frozenset[int]

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x, y) lies in this tile."""
        x1, y1, x2, y2 = self.rect
        return x1 <= x < x2 and y1 <= y < y2


@dataclass(frozen=True)
class Scene:
    """A labelled image: the pixels and the tiles that say what is where."""

    name: str
    image: Image.Image
    tiles: tuple[Tile, ...]

    @property
    def objects(self) -> tuple[Tile, ...]:
        """The tiles that show an object (all but blank ones)."""
        return tuple(tile for tile in self.tiles if tile.accepted)

    @property
    def accepted(self) -> frozenset[int]:
        """Every class that is right somewhere in the scene."""
        return frozenset().union(*(tile.accepted for tile in self.tiles))


def photo_path(photo: Photo) -> Path:
    """Where a photo lies on this machine.

    Raises:
        FileNotFoundError: the photo's package is not installed, or the file is missing; the message says which.
    """
    if photo.location.startswith("examples/"):
        path = ROOT / photo.location
    else:
        package, inside = photo.location.split(":", 1)
        spec = importlib.util.find_spec(package)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"photo {photo.name!r} ships with the Python package {package!r}, which is not installed "
                f"(pip install -e '.[test,bench]')"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise FileNotFoundError(f"photo {photo.name!r} not found at {path}")
    return path


def tile_image(photo: Photo, size: int | None = TILE_SIZE) -> Image.Image:
    """A photo's square crop, resized to ``size`` x ``size`` (RGB); ``size=None`` keeps the crop's own pixels."""
    with Image.open(photo_path(photo)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    if photo.crop is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        crop = (left, top, left + side, top + side)
    else:
        crop = photo.crop
    square = image.crop(crop)
    return square if size is None else square.resize((size, size), Image.Resampling.LANCZOS)


def single(name: str) -> Scene:
    """One photo alone: its square crop at the photo's own pixel size (212 to 512 px), one tile."""
    photo = PHOTOS_BY_NAME[name]
    image = tile_image(photo, None)
    return Scene(name, image, (Tile(name, (0, 0, *image.size), photo.accepted),))


def mosaic(names: list[str], grid: int, size: int = TILE_SIZE, name: str | None = None) -> Scene:
    """A ``grid x grid`` mosaic of the named photos (``BLANK`` for an empty grey tile), row by row.

    Raises:
        ValueError: not ``grid * grid`` names, or an unknown photo name.
    """
    if len(names) != grid * grid:
        raise ValueError(f"a {grid} x {grid} mosaic needs {grid * grid} tiles, got {len(names)}")
    canvas = Image.new("RGB", (grid * size, grid * size), BLANK_GREY)
    tiles = []
    for position, tile_name in enumerate(names):
        row, col = divmod(position, grid)
        rect = (col * size, row * size, (col + 1) * size, (row + 1) * size)
        if tile_name == BLANK:
            tiles.append(Tile(BLANK, rect, frozenset()))
            continue
        if tile_name not in PHOTOS_BY_NAME:
            raise ValueError(f"unknown photo {tile_name!r}; choose from {', '.join(PHOTOS_BY_NAME)} or {BLANK!r}")
        photo = PHOTOS_BY_NAME[tile_name]
        canvas.paste(tile_image(photo, size), rect[:2])
        tiles.append(Tile(photo.name, rect, photo.accepted))
    return Scene(name or f"{grid}x{grid}:" + "+".join(names), canvas, tuple(tiles))


def mosaics(grid: int, count: int, seed: int = 0, blanks: int = 0) -> list[Scene]:
    """``count`` seeded ``grid x grid`` mosaics with no photo twice in one mosaic.

    The photos are dealt from seeded shuffles of the whole set, so each photo appears about equally often and in
    varied places; ``blanks`` grey tiles join each mosaic when there are fewer photos than tiles.

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
        scenes.append(mosaic(names, grid))
    return scenes


def scene_sets(seed: int = 0, count_2x2: int = 8, count_3x3: int = 4) -> dict[str, list[Scene]]:
    """The evaluation's three sets: each photo alone (its own size), 2 x 2 and 3 x 3 mosaics (8 photos, 1 blank)."""
    return {
        "single": [single(photo.name) for photo in PHOTOS],
        "2x2": mosaics(2, count_2x2, seed),
        "3x3": mosaics(3, count_3x3, seed, blanks=9 - len(PHOTOS)),
    }
