"""What users and the open internet send: every kind of file gives a result or one clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import core
import core.images
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
    result = core.analyze(path, settings=core.Settings.preset("seed", resolution="native"))
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


# Paths that are not regular files (issue 15.7)
# ---------------------------------------------------------------------------------------------------------------


def _load_within(seconds: float, path) -> BaseException | None:
    """``load_image(path)`` in a daemon thread: the error it raised, or a failure if it is still running (blocked
    on a FIFO, reading /dev/zero for ever)."""
    outcome: list[BaseException | None] = []

    def target():
        try:
            load_image(path)
            outcome.append(None)
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"load_image({path}) still running after {seconds} s: it opened or read something it must not")
    return outcome[0]


def test_a_directory_is_refused_as_a_directory(tmp_path):
    folder = tmp_path / "holiday"
    folder.mkdir()
    error = _load_within(30, folder)
    assert isinstance(error, ImageError) and str(error) == "holiday: is a directory, not an image file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    error = _load_within(30, fifo)  # opening it for reading would block until something writes
    assert isinstance(error, ImageError) and "pipe.png: is not a regular file" in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_without_reading_it():
    error = _load_within(30, "/dev/zero")  # endless zeros: reading it would never end
    assert isinstance(error, ImageError) and "zero: is not a regular file" in str(error)


def test_a_link_to_a_photo_is_read_and_a_dangling_link_is_missing(tmp_path, photo):
    real = _save(tmp_path / "real.png", photo.resize((40, 30)))
    (tmp_path / "link.png").symlink_to(real)
    assert load_image(tmp_path / "link.png").image.size == (40, 30)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"dangling\.png: no such file"):
        load_image(tmp_path / "dangling.png")


# 16-bit and float images, converted a strip of rows at a time (issue 15.3)
# ---------------------------------------------------------------------------------------------------------------


def _whole_image_rgb(pil: Image.Image) -> np.ndarray:
    """The conversion as it was before strips: the whole image in float64 at once (core/images.py, issue 14)."""
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(pil, dtype=np.float64)
        peak = 65535.0 if pil.mode.startswith("I;16") or array.max() > 255 else 255.0
        pil = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if pil.mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(pil.convert("RGB"))


def _deep(mode: str, values: np.ndarray) -> Image.Image:
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    image = Image.frombytes(mode, values.shape[::-1], np.ascontiguousarray(values.astype(dtype)).tobytes())
    assert image.mode == mode
    return image


_RNG = np.random.default_rng(15)
DEEP = {
    # mode, values: the "peak" rule scales I and F by 65535 when any value is above 255, else by 255
    "I;16 full range": ("I;16", _RNG.integers(0, 65536, (37, 23))),
    "I;16 small values": ("I;16", _RNG.integers(0, 256, (37, 23))),
    "I;16B full range": ("I;16B", _RNG.integers(0, 65536, (37, 23))),
    "I 8-bit range": ("I", _RNG.integers(0, 256, (37, 23))),
    "I 16-bit range": ("I", _RNG.integers(0, 65536, (37, 23))),
    "I negative and over 65535": ("I", _RNG.integers(-70000, 140000, (37, 23))),
    "F 0..255": ("F", _RNG.uniform(0, 255, (37, 23))),
    "F 0..1": ("F", _RNG.uniform(0, 1, (37, 23))),
    "F over 255": ("F", _RNG.uniform(-10, 70000, (37, 23))),
    "F halves": ("F", np.arange(37 * 23).reshape(37, 23) / 2.0 % 300),  # rounding at .5 exactly
    "F infinities": ("F", np.select([_RNG.random((37, 23)) < 0.1, _RNG.random((37, 23)) < 0.1], [np.inf, -np.inf], 99)),
}


@pytest.mark.parametrize("strip_pixels", [None, 23, 23 * 5, 40])  # None: as shipped; else 1, 5 or 1 row a strip
@pytest.mark.parametrize("case", list(DEEP))
def test_deep_images_convert_exactly_as_the_whole_image_formula(monkeypatch, case, strip_pixels):
    mode, values = DEEP[case]
    if strip_pixels is not None:
        monkeypatch.setattr(core.images, "_STRIP_PIXELS", strip_pixels, raising=False)
    image = _deep(mode, values)
    rgb = np.asarray(load_image(image).image)
    assert rgb.dtype == np.uint8 and rgb.shape == (37, 23, 3)
    np.testing.assert_array_equal(rgb, _whole_image_rgb(image))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_the_peak_rule_looks_at_every_strip(monkeypatch, mode):
    """One value above 255 in the last strip scales the whole image by 65535, the first strips included."""
    values = np.full((30, 10), 200.0)
    values[-1, -1] = 300
    monkeypatch.setattr(core.images, "_STRIP_PIXELS", 10, raising=False)  # a strip per row
    rgb = np.asarray(load_image(_deep(mode, values)).image)
    np.testing.assert_array_equal(rgb, _whole_image_rgb(_deep(mode, values)))
    assert rgb[0, 0, 0] == 1  # 200 / 65535 * 255 + 0.5, not 200


@pytest.mark.parametrize(
    "make",
    [
        lambda photo: photo.convert("L"),
        lambda photo: photo.convert("1"),
        lambda photo: photo.convert("CMYK"),
        lambda photo: photo.convert("LA"),
        lambda photo: _with_alpha(photo),
        lambda photo: _with_alpha(photo).convert("P", palette=Image.Palette.ADAPTIVE),
        lambda photo: _transparent_palette(photo),
    ],
    ids=["L", "1", "CMYK", "LA", "RGBA", "P", "P with transparency"],
)
def test_every_mode_converts_the_same_in_strips(monkeypatch, photo, make):
    image = make(photo.resize((61, 47)))
    expected = _whole_image_rgb(image)
    monkeypatch.setattr(core.images, "_STRIP_PIXELS", 61 * 3, raising=False)  # strips of 3 rows
    np.testing.assert_array_equal(np.asarray(load_image(image).image), expected)


def _with_alpha(photo: Image.Image) -> Image.Image:
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return rgba


def _transparent_palette(photo: Image.Image) -> Image.Image:
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = bytes([0, 128] + [255] * 14)
    return palette


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_deep_files_decode_exactly_as_the_whole_image_formula(tmp_path, monkeypatch, suffix):
    values = np.linspace(0, 65535, 90 * 70).reshape(90, 70)
    image = _deep("I;16", values) if suffix == ".png" else _deep("F", values)
    path = tmp_path / f"deep{suffix}"
    image.save(path)
    monkeypatch.setattr(core.images, "_STRIP_PIXELS", 70 * 4, raising=False)
    with Image.open(path) as reread:
        expected = _whole_image_rgb(reread)
    np.testing.assert_array_equal(np.asarray(load_image(path).image), expected)


# Peak memory of decoding, in a fresh process
# ---------------------------------------------------------------------------------------------------------------

_DECODE_PEAK = """
import json, resource, sys


def peak():  # VmHWM: ru_maxrss would start at the parent's peak (subprocess starts children with vfork)
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


from core.images import load_image

baseline = peak()
image = load_image(sys.argv[1]).image
print(json.dumps({"baseline": baseline, "peak": peak(), "size": image.size, "mode": image.mode}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["16-bit grey PNG", "float TIFF"])
def test_decoding_a_deep_8000x8000_image_stays_well_under_a_gigabyte(tmp_path, kind):
    """8000 x 8000 is the largest image we decode (64 MP). Its 8-bit RGB picture is 0.25 GB (Pillow keeps 4 bytes a
    pixel); the 16-bit source 0.13 GB, the float one 0.26 GB. Converting the whole image in float64 at once cost
    1.55 GB (PNG) and 1.67 GB (TIFF) above the baseline; a strip at a time, 0.42 and 0.56 GB."""
    ramp = np.linspace(0, 65535, 8000).astype(np.uint16)
    values = np.broadcast_to(ramp, (8000, 8000))
    if kind == "16-bit grey PNG":
        path = tmp_path / "deep.png"
        Image.fromarray(np.ascontiguousarray(values)).save(path, compress_level=1)
        assert Image.open(path).mode == "I;16"
    else:
        path = tmp_path / "deep.tiff"
        Image.fromarray(values.astype(np.float32)).save(path, compression="tiff_adobe_deflate")
        assert Image.open(path).mode == "F"
    del values
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_PEAK, str(path)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["size"] == [8000, 8000] and result["mode"] == "RGB"
    rise = (result["peak"] - result["baseline"]) / 2**30
    assert rise < 1.0, f"decoding raised the peak RSS by {rise:.2f} GB"
