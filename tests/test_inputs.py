"""What users and the open internet send: every kind of file gives a result or one clear message."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import core
from core.images import ImageError, load_image

RES = 96  # small analysis size: these tests are about input handling, not about maps


def _save(path, image: Image.Image, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def photo(examples) -> Image.Image:
    return Image.open(examples / "cat_and_coffee.jpg").convert("RGB")


REFUSED = {
    "zero-byte.jpg": (lambda p, photo: p.write_bytes(b""), "empty (0 bytes)"),
    "truncated.jpg": (
        lambda p, photo: p.write_bytes(_jpeg_bytes(photo)[:2500]),
        "corrupt or truncated",
    ),
    "text.jpg": (lambda p, photo: p.write_text("hello, this is text"), "not an image file"),
    "page.html": (lambda p, photo: p.write_text("<!doctype html><html><body>hi</body></html>"), "not an image file"),
    "doc.pdf": (
        lambda p, photo: p.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"),
        "not an image file",
    ),
    "bomb.png": (
        lambda p, photo: _save(p, Image.new("1", (20000, 20000)), optimize=True),
        "decompression bomb",
    ),
}


def _jpeg_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_files_are_refused_with_one_clear_message(tmp_path, photo, name):
    make, message = REFUSED[name]
    path = tmp_path / name
    make(path, photo)
    with pytest.raises(ImageError, match=re.escape(message)) as info:
        core.analyze(path, resolution=RES)
    assert name in str(info.value)  # the message says which file


def test_the_bomb_file_is_small_and_refused_before_decoding(tmp_path):
    path = _save(tmp_path / "bomb.png", Image.new("1", (20000, 20000)), optimize=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match=r"20000 x 20000|megapixels"):
        load_image(path)


def test_missing_file():
    with pytest.raises(ImageError, match="no such file"):
        core.analyze("/nonexistent/photo.jpg", resolution=RES)


ACCEPTED = {
    "tiny-1x1.png": lambda photo: (Image.new("RGB", (1, 1), (200, 10, 10)), {}),
    "tiny-8x8.png": lambda photo: (photo.resize((8, 8)), {}),
    "tiny-31x31.png": lambda photo: (photo.resize((31, 31)), {}),
    "gray.png": lambda photo: (photo.convert("L"), {}),
    "rgba.png": lambda photo: (photo.convert("RGBA"), {}),
    "la.png": lambda photo: (photo.convert("LA"), {}),
    "palette.png": lambda photo: (photo.convert("P", palette=Image.Palette.ADAPTIVE), {}),
    "cmyk.jpg": lambda photo: (photo.convert("CMYK"), {"quality": 90}),
    "photo.webp": lambda photo: (photo, {"quality": 90}),
    "photo.bmp": lambda photo: (photo, {}),
    "photo.tiff": lambda photo: (photo, {}),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_every_common_kind_of_image_is_analysed(tmp_path, photo, name):
    image, kwargs = ACCEPTED[name](photo)
    path = _save(tmp_path / name, image, **kwargs)
    result = core.analyze(path, resolution=RES)
    assert (result.image_size[1], result.image_size[0]) == image.size
    assert len(result.top5) == 5


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path).image)
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255
    assert core.analyze(path, resolution=RES).image_size == (64, 64)


def test_transparency_is_composited_over_white(tmp_path):
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    path = _save(tmp_path / "clear.png", clear)
    assert np.asarray(load_image(path).image).min() == 255


def test_exif_rotated_jpeg_is_analysed_upright_with_boxes_in_the_upright_frame(tmp_path, photo):
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=92, exif=exif.tobytes())
    result = core.analyze(path, resolution="native")
    assert result.image_size == (300, 901)
    espresso = [b for b in result.boxes if b.label == "espresso"]
    assert espresso and all((b.box[0] + b.box[2]) / 2 > 451 for b in espresso)  # the cup is on the right


def test_animated_gif_uses_the_first_frame_and_says_so(tmp_path, photo):
    frames = [photo.resize((120, 40)), Image.new("RGB", (120, 40), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = core.analyze(path, resolution=RES)
    assert any("first one is analysed" in note for note in result.notices)
    assert "notices" in result.to_dict()


@pytest.mark.slow
def test_a_very_large_photo_is_downscaled_with_a_notice_and_boxes_stay_in_original_pixels(tmp_path, photo):
    big = photo.resize((8000, 2664), Image.Resampling.BILINEAR)
    path = _save(tmp_path / "big.jpg", big, quality=85)
    result = core.analyze(path, resolution="native")
    assert result.image_size == (2664, 8000)
    assert result.analysis_size[0] * result.analysis_size[1] <= 2048 * 2048
    assert any("downscaled" in note for note in result.notices)
    assert all(0 <= b.box[0] < b.box[2] <= 8000 and 0 <= b.box[1] < b.box[3] <= 2664 for b in result.boxes)


def test_arrays_and_bytes_are_inputs_too(photo):
    array = np.asarray(photo)
    a = core.analyze(array, resolution=RES, source="arr")
    b = core.analyze(_jpeg_bytes(photo), resolution=RES, source="bytes")
    assert a.source == "arr" and b.source == "bytes"
    with pytest.raises(ImageError, match="uint8"):
        load_image(array.astype(np.float32))
    with pytest.raises(ImageError, match="expected an image"):
        load_image(12345)
