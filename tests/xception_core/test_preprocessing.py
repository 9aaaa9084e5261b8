"""Tests for xception_core.inputs.images: every input kind, odd modes, bad and hostile files.

All images are made in memory with Pillow and are tiny, except a 20000x20 strip (1.2 MB).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from xception_core.inputs import images as preprocessing
from xception_core.inputs.images import (
    MAX_PIXELS,
    MAX_SIDE,
    InvalidImageError,
    display_copy,
    load_image,
    to_rgb,
)
from xception_core.inputs.preprocessing import (KERAS_LOAD_IMG, RESIZE_FILTERS, Preprocessing, preprocess, preprocess_batch,
                                               scale, to_pixels)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient(width: int = 16, height: int = 12) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 image with distinct pixels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (1-bit) but whose data is a single tiny IDAT.

    Nothing big is ever allocated here: only the header is patched (with a valid CRC), so a loader
    that checks the header before decoding rejects it without touching any pixel memory.
    """
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def pixel(x: np.ndarray, row: int, col: int) -> tuple[int, int, int]:
    """Back from [-1, 1] to 0..255 for one pixel of a preprocessed array."""
    return tuple(round(float(v)) for v in (x[row, col] + 1.0) * 127.5)


# ---------------------------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------------------------


def test_global_pillow_state_is_left_alone():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3


def test_limits_are_consistent():
    assert MAX_SIDE >= 20_000
    assert MAX_PIXELS >= 48_000_000  # an 8000x6000 phone photo is accepted
    assert issubclass(InvalidImageError, ValueError)


# ---------------------------------------------------------------------------------------------
# Every accepted input kind gives the same RGB image
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def reference() -> np.ndarray:
    return gradient()


@pytest.fixture()
def png_bytes(reference) -> bytes:
    return encode(Image.fromarray(reference), "PNG")


def test_path_str_and_pathlib(tmp_path, png_bytes, reference):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes)
    for source in (str(path), path):
        image = load_image(source)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), reference)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, io.BytesIO])
def test_bytes_like_and_file_object(png_bytes, reference, wrap):
    np.testing.assert_array_equal(np.asarray(load_image(wrap(png_bytes))), reference)


def test_open_binary_file(tmp_path, png_bytes, reference):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(np.asarray(load_image(handle)), reference)


def test_pil_image_is_copied_not_modified(reference):
    source = Image.fromarray(reference)
    image = load_image(source)
    assert image is not source
    np.testing.assert_array_equal(np.asarray(image), reference)
    image.putpixel((0, 0), (1, 2, 3))
    assert source.getpixel((0, 0)) == tuple(reference[0, 0])


def test_lazily_opened_pil_image_is_loaded(png_bytes, reference):
    source = Image.open(io.BytesIO(png_bytes))
    np.testing.assert_array_equal(np.asarray(load_image(source)), reference)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda a: a, None),  # HxWx3 uint8
        (lambda a: a.astype(np.float32) / 255.0, None),  # float 0..1
        (lambda a: a.astype(np.float64), None),  # float 0..255
        (lambda a: a.astype(np.uint16) * 257, None),  # 16-bit
        (lambda a: a.astype(np.int64), None),  # wider ints holding 0..255
        (lambda a: np.ascontiguousarray(a[:, ::-1])[:, ::-1], None),  # non-contiguous view
    ],
)
def test_numpy_rgb_arrays(reference, make, expected):
    array = make(reference)
    before = array.copy()
    np.testing.assert_array_equal(np.asarray(load_image(array)), reference)
    np.testing.assert_array_equal(array, before)  # input untouched


def test_numpy_big_endian_uint16_is_sixteen_bit():
    data = np.array([[0, 257, 65535]], dtype=">u2")
    np.testing.assert_array_equal(np.asarray(load_image(data))[0, :, 0], [0, 1, 255])


def test_numpy_gray_2d_and_single_channel():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for array in (gray, gray[..., None]):
        out = np.asarray(load_image(array))
        assert out.shape == (3, 4, 3)
        np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))


def test_numpy_bool_mask():
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(np.asarray(load_image(mask))[0], [WHITE, (0, 0, 0)])


def test_numpy_rgba_and_gray_alpha_composite_on_white():
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    out = np.asarray(load_image(rgba))[0]
    assert tuple(out[0]) == RED
    assert tuple(out[1]) == WHITE
    assert all(abs(int(v) - 127) <= 1 for v in out[2])  # 50 % black over white
    la = np.array([[[0, 0], [0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(la))[0], [WHITE, (0, 0, 0)])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((8, 8, 5), np.uint8), "expected shape"),
        (np.zeros((2, 2, 2, 3), np.uint8), "expected shape"),
        (np.zeros(5, np.uint8), "expected shape"),
        (np.full((2, 2, 3), np.nan, np.float32), "NaN"),
        (np.full((2, 2, 3), -0.5), "negative"),
        (np.full((2, 2), 70000, np.int32), "values up to"),
        (np.zeros((2, 2, 3), dtype=object), "must be bool, integer or float"),
        (np.zeros((0, 4, 3), np.uint8), "at least 1 px"),
    ],
)
def test_bad_numpy_arrays(array, message):
    with pytest.raises(ValueError, match=message):
        load_image(array)


# ---------------------------------------------------------------------------------------------
# Pillow modes and formats
# ---------------------------------------------------------------------------------------------


def test_cmyk_in_memory_and_as_jpeg():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta + yellow = red
    assert load_image(cmyk).getpixel((4, 4)) == RED
    decoded = load_image(encode(cmyk, "JPEG", quality=95)).getpixel((4, 4))
    assert all(abs(a - b) <= 8 for a, b in zip(decoded, RED, strict=True))


def test_sixteen_bit_png_is_scaled_not_clipped():
    data = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(data)
    assert image.mode == "I;16"
    out = np.asarray(load_image(encode(image, "PNG")))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 1, 128, 255])


def test_i_and_f_modes():
    i_sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert i_sixteen.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(i_sixteen))[0, :, 0], [0, 255])
    i_eight = Image.fromarray(np.array([[0, 200]], dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(to_rgb(i_eight))[0, :, 0], [0, 200])
    f_unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f_unit.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb(f_unit))[0, :, 0], [0, 128, 255])
    with pytest.raises(ValueError, match="negative"):
        to_rgb(Image.fromarray(np.array([[-5.0, 1.0]], dtype=np.float32)))


def test_palette_with_transparency_png_and_gif():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putpixel((0, 0), 0)  # red, made transparent below
    palette_image.putpixel((1, 0), 1)  # blue
    for fmt in ("PNG", "GIF"):
        out = load_image(encode(palette_image, fmt, transparency=0))
        assert out.getpixel((0, 0)) == WHITE, fmt
        assert out.getpixel((1, 0)) == BLUE, fmt


def test_rgba_png_fully_transparent_pixel_becomes_one_after_preprocess():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    x = preprocess(encode(rgba, "PNG"), 4)
    np.testing.assert_array_equal(x[3, 3], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(x[0, 0], [1.0, -1.0, -1.0])


def test_la_png_composited_on_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    out = load_image(encode(la, "PNG"))
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == (0, 0, 0)


def frames() -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]


def test_animated_gif_gives_first_frame():
    first, *rest = frames()
    data = encode(first, "GIF", save_all=True, append_images=rest, duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED


def test_animated_webp_gives_first_frame():
    first, *rest = frames()
    data = encode(first, "WEBP", save_all=True, append_images=rest, duration=50, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED


def test_pil_animation_seeked_elsewhere_gives_first_frame():
    first, *rest = frames()
    animation = Image.open(io.BytesIO(encode(first, "GIF", save_all=True, append_images=rest)))
    animation.seek(2)
    assert load_image(animation).getpixel((4, 4)) == RED


def test_multipage_tiff_gives_first_page():
    first, *rest = frames()
    assert load_image(encode(first, "TIFF", save_all=True, append_images=rest)).getpixel((4, 4)) == RED


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 = rotate 90 deg
    # clockwise to display, so the displayed image is 20x40 with red on top.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(encode(Image.new("RGB", (30, 10)), "JPEG", exif=exif))
    assert out.size == ((10, 30) if orientation >= 5 else (30, 10))


def test_malformed_exif_does_not_reject_the_photo():
    data = encode(Image.new("RGB", (10, 6), RED), "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_image(data).size == (10, 6)


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_to_rgb_handles_every_pillow_mode(mode):
    source = Image.new(mode, (3, 2))
    out = to_rgb(source)
    assert out.mode == "RGB" and out.size == (3, 2)
    assert out is not source and source.mode == mode


def test_to_rgb_rejects_non_images():
    with pytest.raises(ValueError, match="PIL.Image.Image"):
        to_rgb(np.zeros((2, 2, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


def test_one_by_one_image():
    x = preprocess(Image.new("RGB", (1, 1), (255, 0, 0)), 299)
    assert x.shape == (299, 299, 3)
    np.testing.assert_allclose(x[..., 0], 1.0)
    np.testing.assert_allclose(x[..., 1:], -1.0)


def test_extreme_aspect_ratio_strip_is_accepted_and_resized():
    strip = np.zeros((20, 20_000, 3), np.uint8)
    strip[:, :10_000] = 255
    x = preprocess(encode(Image.fromarray(strip), "PNG"), 299)
    assert x.shape == (299, 299, 3) and x.dtype == np.float32
    assert x[150, 10].min() == 1.0 and x[150, 290].max() == -1.0  # whole strip kept, no crop


@pytest.mark.parametrize("size", [(MAX_SIDE + 1, 1), (1, MAX_SIDE + 1)])
def test_side_above_limit_is_rejected_before_decoding(size):
    with pytest.raises(ValueError, match=f"at most {MAX_SIDE:,} px"):
        load_image(png_claiming_size(*size))


def test_zero_sized_pil_image_is_rejected():
    with pytest.raises(ValueError, match="at least 1 px"):
        load_image(Image.new("RGB", (0, 5)))


# ---------------------------------------------------------------------------------------------
# Decompression bombs
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def decoding_forbidden(monkeypatch):
    """Fail the test if any PNG pixel data would be decoded."""

    def refuse(self):  # pragma: no cover - only runs if the size check is missing
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)


@pytest.mark.parametrize("size", [(30_000, 30_000), (8_000, 7_000), (20_000, 20_000)])
def test_bomb_rejected_from_header_without_decoding(size, decoding_forbidden):
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(png_claiming_size(*size))


def test_bomb_rejected_even_without_pillows_own_limit(monkeypatch, decoding_forbidden):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ValueError, match=f"{MAX_PIXELS:,} pixels are allowed"):
        load_image(png_claiming_size(20_000, 20_000))


def test_pillow_bomb_warning_as_error_is_reported_as_value_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20x20 = 400 > 2*100: Pillow raises
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(encode(Image.new("RGB", (20, 20)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 > 300: Pillow only warns
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match="decompression bomb"):
            load_image(data)


def test_bomb_inside_pil_image_input():
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(Image.new("1", (10_000, 5_001)))


# ---------------------------------------------------------------------------------------------
# Bad, empty, truncated and foreign input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -20, -12])
def test_truncated_files_are_rejected(fmt, keep):
    data = encode(Image.fromarray(gradient(64, 48)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    cut = int(len(data) * keep) if keep > 0 else len(data) + keep
    with pytest.raises(ValueError, match="truncated|corrupt|not a recognised image"):
        load_image(data[:cut])


def test_corrupt_png_checksum_is_rejected():
    data = bytearray(encode(Image.fromarray(gradient(64, 48)), "PNG"))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_image(bytes(data))


@pytest.mark.parametrize("source", [b"", bytearray(), io.BytesIO(b"")])
def test_empty_input(source):
    with pytest.raises(ValueError, match="empty"):
        load_image(source)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(path)


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am not a picture\n" * 10)
    with pytest.raises(ValueError, match="not a recognised image.*JPEG, PNG"):
        load_image(path)


def test_formats_outside_the_allowlist_are_rejected():
    ppm = encode(Image.new("RGB", (4, 4)), "PPM")
    assert Image.open(io.BytesIO(ppm)).format == "PPM"  # Pillow itself could open it
    with pytest.raises(ValueError, match="not a recognised image"):
        load_image(ppm)


def test_missing_path_directory_and_url(tmp_path):
    with pytest.raises(ValueError, match="Cannot open image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="URLs are not fetched"):
        load_image("https://example.com/cat.jpg")


def test_text_mode_file_object(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    with path.open("r") as handle, pytest.raises(ValueError, match="text mode"):
        load_image(handle)


@pytest.mark.parametrize("source", [None, 42, 1.5, {"path": "x.png"}, ["a.png"]])
def test_unsupported_types_name_what_is_allowed(source):
    with pytest.raises(ValueError, match="Unsupported image input of type .*expected a file path"):
        load_image(source)


def test_oversized_file_is_rejected_without_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocessing, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.fromarray(gradient(64, 48)), "PNG"))
    with pytest.raises(ValueError, match="at most 100 bytes"):
        load_image(path)
    with pytest.raises(ValueError, match="larger than the allowed 100 bytes"):
        load_image(path.read_bytes())


# ---------------------------------------------------------------------------------------------
# preprocess / preprocess_batch
# ---------------------------------------------------------------------------------------------


def test_preprocess_dtype_shape_range_and_formula(reference):
    x = preprocess(reference, reference.shape[:2])  # same size: no resampling
    assert x.dtype == np.float32 and x.shape == (12, 16, 3)
    expected = reference.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    np.testing.assert_array_equal(x, expected)
    assert x.min() >= -1.0 and x.max() <= 1.0


@pytest.mark.parametrize("resize", ["nearest", "bilinear", "bicubic"])
def test_preprocess_resizes_the_whole_image_with_the_filter_named(reference, resize):
    x = preprocess(reference, 299, resize)
    assert x.shape == (299, 299, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    expected = np.asarray(Image.fromarray(reference).resize((299, 299), RESIZE_FILTERS[resize]), np.float32)
    np.testing.assert_array_equal(x, expected / np.float32(127.5) - np.float32(1.0))
    np.testing.assert_array_equal(Preprocessing(resize)(reference, 299), x)


def test_the_default_filter_is_keras_load_imgs_and_an_unknown_one_is_refused(reference):
    import inspect

    load_img = pytest.importorskip("keras.src.utils.image_utils").load_img
    assert inspect.signature(load_img).parameters["interpolation"].default == KERAS_LOAD_IMG.resize
    np.testing.assert_array_equal(preprocess(reference, 299), preprocess(reference, 299, "nearest"))
    with pytest.raises(ValueError, match="resize must be one of"):
        preprocess(reference, 299, "sinc")
    with pytest.raises(ValueError, match="resize must be one of"):
        Preprocessing("sinc")


def test_scale_and_to_pixels_are_inverse(reference):
    np.testing.assert_array_equal(to_pixels(scale(reference)), reference)
    np.testing.assert_array_equal(scale(reference), reference.astype(np.float32) / np.float32(127.5) - np.float32(1))


def test_preprocess_size_is_height_width():
    x = preprocess(Image.new("RGB", (40, 20)), (10, 30))
    assert x.shape == (10, 30, 3)
    assert preprocess(Image.new("RGB", (5, 5)), np.int64(7)).shape == (7, 7, 3)


@pytest.mark.parametrize("size", [0, -1, True, 2.5, "299", (1, 2, 3), (10, 0), (10, None), MAX_SIDE + 1])
def test_preprocess_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        preprocess(Image.new("RGB", (4, 4)), size)


def test_preprocess_extremes_map_to_minus_one_and_one():
    assert preprocess(Image.new("RGB", (3, 3), (0, 0, 0)), 3).min() == -1.0
    assert preprocess(Image.new("RGB", (3, 3), WHITE), 3).max() == 1.0
    assert pixel(preprocess(Image.new("RGB", (3, 3), (10, 128, 250)), 3), 1, 1) == (10, 128, 250)


def test_preprocess_batch_mixed_inputs(reference, png_bytes):
    batch = preprocess_batch([reference, png_bytes, Image.fromarray(reference)], 32)
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], batch[1])
    np.testing.assert_array_equal(batch[0], batch[2])
    np.testing.assert_array_equal(batch[0], preprocess(reference, 32))


def test_preprocess_batch_from_array():
    stack = np.stack([gradient(), 255 - gradient()])
    batch = preprocess_batch(stack, (6, 8))
    assert batch.shape == (2, 6, 8, 3)
    assert preprocess_batch(stack[..., 0], 5).shape == (2, 5, 5, 3)  # (N, H, W) gray


def test_preprocess_batch_errors_name_the_bad_image(reference):
    with pytest.raises(ValueError, match="Image 1 of the batch: .*not a recognised image"):
        preprocess_batch([reference, b"garbage"], 8)
    with pytest.raises(ValueError, match="empty batch"):
        preprocess_batch([], 8)
    with pytest.raises(ValueError, match="list or tuple of images"):
        preprocess_batch("photo.png", 8)
    with pytest.raises(ValueError, match="list or tuple of images"):
        preprocess_batch(Image.new("RGB", (2, 2)), 8)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        preprocess_batch(np.zeros((2, 2), np.uint8), 8)


def test_display_copy_bounds_the_longest_side():
    big = Image.new("L", (4000, 1000), 128)
    copy = display_copy(big)
    assert copy.size == (1024, 256) and copy.mode == "RGB" and big.size == (4000, 1000)
    small = Image.new("RGB", (300, 200))
    assert display_copy(small).size == (300, 200) and display_copy(small) is not small
