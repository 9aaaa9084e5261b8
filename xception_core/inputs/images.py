"""Image loading and validation (Pillow + NumPy only).

Everything a user can upload goes through :func:`load_image`, which returns a fully decoded RGB
``PIL.Image.Image`` or raises :class:`InvalidImageError` (a ``ValueError``) whose message says what
was received and what is allowed. `xception_core.inputs.preprocessing` turns it into the model's input.

Limits (module constants, checked explicitly so the module never changes global Pillow state):

* ``MAX_PIXELS`` (50 million) and ``MAX_SIDE`` (20,000 px) are checked on the size read from the
  file header *before* any pixel data is decoded, so decompression bombs cost no memory. A 48 MP
  phone photo (8000x6000) and a 20000x20 strip both pass; extreme aspect ratios are fine because
  preprocessing resizes the whole image.
* ``MAX_FILE_BYTES`` (100 MiB) bounds how much is read from a path, bytes or file object.
* ``ALLOWED_FORMATS``: only common raster formats are decoded. Exotic Pillow plugins (EPS, which
  runs Ghostscript, PSD, FITS, ...) are deliberately not reachable from user uploads.

Truncated files are rejected: this module relies on Pillow's default
``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (it never changes it), forces ``.load()`` and runs
``verify()`` on PNGs so a missing tail (checksums, ``IEND``) is caught too. Pillow's own
``Image.MAX_IMAGE_PIXELS`` guard stays as it is; when it fires first, its
``DecompressionBombError`` (or its warning, if warnings are turned into errors) is reported as an
``InvalidImageError`` like our own check.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageSource",
    "InvalidImageError",
    "display_copy",
    "load_image",
    "to_rgb",
]

DISPLAY_SIDE: int = 1024
"""Longest side of the copies of user images that go back to a page (overlays, previews)."""

MAX_PIXELS: int = 50_000_000
"""Largest accepted width * height, checked from the header before decoding (8000x6000 passes)."""

MAX_SIDE: int = 20_000
"""Largest accepted width or height in pixels (a 20000x20 panorama strip is accepted)."""

MIN_SIDE: int = 1
"""Smallest accepted width or height in pixels."""

MAX_FILE_BYTES: int = 100 * 1024 * 1024
"""Largest encoded file read from a path, bytes or a file object (100 MiB)."""

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
"""Pillow format names that :func:`load_image` decodes (JPEG includes MPO; AVIF if Pillow has it)."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | np.ndarray | Image.Image
"""Everything :func:`load_image` accepts."""

_ACCEPTED_INPUTS = (
    "a file path (str or pathlib.Path), bytes, a binary file object, a NumPy array "
    "(HxW, HxWx1, HxWx2, HxWx3 or HxWx4; uint8, uint16, bool, or float in 0..1 or 0..255) "
    "or a PIL.Image.Image"
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_WHITE = (255, 255, 255, 255)

_log = logging.getLogger(__name__)


class InvalidImageError(ValueError):
    """An input that is not an acceptable image; the message names what was received and allowed."""


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def load_image(source: ImageSource, max_side: int | None = None, name: str | None = None) -> Image.Image:
    """Load, validate and normalise one image.

    Applies the EXIF orientation, keeps only the first frame of animations and multi-page files,
    scales 16-bit and float data to 8 bit, and composites transparency onto white.

    With `max_side`, encoded images come back no larger than `max_side` pixels a side: a JPEG is
    decoded at a reduced scale (1/2, 1/4 or 1/8 in the decoder, never below `max_side`), other
    formats are shrunk right after decoding, before any full-size copy is made. A server that
    only needs the model's input and a display copy thus never holds a 48 MP photo more than once.

    Args:
        source: A path (``str`` or ``os.PathLike``), encoded bytes (``bytes``, ``bytearray``,
            ``memoryview``), a binary file object, a NumPy array of shape ``(H, W)``,
            ``(H, W, 1)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8, uint16, bool, or
            float in 0..1 / 0..255, as Gradio passes them) or a ``PIL.Image.Image``.
        max_side: Longest side wanted from an encoded image (bytes, path or file object);
            None keeps the full size. Arrays and PIL images are never resized.
        name: How error messages name an encoded input ("the uploaded file, 27 bytes"); by
            default its kind and size ("bytes (27 bytes)") or its file name.

    Returns:
        A new, fully loaded ``PIL.Image.Image`` in mode ``"RGB"`` of size ``(W, H)`` with
        ``MIN_SIDE <= W, H <= MAX_SIDE`` and ``W * H <= MAX_PIXELS``.

    Raises:
        InvalidImageError: (a ``ValueError``) if the input is of an unsupported type, empty,
            not a supported image format, truncated or corrupt, too large, or has no pixels.
    """
    if isinstance(source, Image.Image):
        image = _from_pil(source)
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        image = _decode(data, name or f"bytes ({len(data):,} bytes)", max_side)
    elif isinstance(source, (str, os.PathLike)):
        data, description = _read_path(source)
        image = _decode(data, name or description, max_side)
    elif callable(getattr(source, "read", None)):
        data, description = _read_file_object(source)
        image = _decode(data, name or description, max_side)
    else:
        raise InvalidImageError(
            f"Unsupported image input of type {type(source).__module__}.{type(source).__qualname__}; "
            f"expected {_ACCEPTED_INPUTS}."
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB.

    Alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La`` and palette or colour-key
    ``transparency``) is composited onto white, the usual background for product photos and
    what a user sees in a browser. 16-bit modes (``I;16*``) are scaled by 255/65535; ``I`` and
    ``F`` data are read as 0..1 (``F`` only), 0..255 or 0..65535 depending on their maximum.
    ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``P``, ``1`` and ``L`` use Pillow's conversion.

    Args:
        image: Any PIL image (only the current frame is converted).

    Returns:
        A new ``"RGB"`` image of the same size; the input is never modified.

    Raises:
        InvalidImageError: if the mode cannot be converted or ``I``/``F`` data are out of range.
    """
    if not isinstance(image, Image.Image):
        raise InvalidImageError(f"to_rgb expects a PIL.Image.Image, got {type(image).__name__}.")
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255 instead of scaling.
        gray = _scale_to_uint8(np.asarray(image), what=f"a {mode} image", sixteen_bit=True)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(image), what=f"an {mode}-mode image")
        return Image.fromarray(gray).convert("RGB")
    try:
        # Premultiplied alpha has no direct conversion to RGBA; go through the straight-alpha mode.
        if mode == "La":
            image = image.convert("LA")
        elif mode == "RGBa":
            image = image.convert("RGBA")
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, _WHITE)
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode == "RGB":
            return image.copy()
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InvalidImageError(
            f"Cannot convert an image in Pillow mode {mode!r} to RGB ({exc}); supported modes: "
            "1, L, LA, La, P, PA, RGB, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV, I, I;16*, F."
        ) from exc


# ----------------------------------------------------------------------------------------------
# Reading encoded input
# ----------------------------------------------------------------------------------------------


def _read_path(source: str | os.PathLike) -> tuple[bytes, str]:
    """Read a file's bytes after checking that it exists and is not too large."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith(("http://", "https://", "ftp://", "data:")):
        raise InvalidImageError(f"Got the URL {text[:200]!r}; URLs are not fetched. Expected {_ACCEPTED_INPUTS}.")
    path = Path(text)
    description = f"file {path.name!r}"
    try:
        stat = path.stat()
    except (OSError, ValueError) as exc:  # missing file, permission, embedded NUL, name too long
        raise InvalidImageError(f"Cannot open image file {text[:300]!r}: {exc}.") from exc
    if not path.is_file():
        raise InvalidImageError(f"{text[:300]!r} is not a regular file; expected an image file.")
    if stat.st_size == 0:
        raise InvalidImageError(f"The {description} is empty (0 bytes); expected an image file.")
    if stat.st_size > MAX_FILE_BYTES:
        raise InvalidImageError(
            f"The {description} is {stat.st_size:,} bytes; at most {MAX_FILE_BYTES:,} bytes are allowed."
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {text[:300]!r}: {exc}.") from exc
    return data, description


def _read_file_object(source: Any) -> tuple[bytes, str]:
    """Read at most ``MAX_FILE_BYTES + 1`` bytes from a binary file object."""
    name = getattr(source, "name", None)
    description = f"file object {os.path.basename(name)!r}" if isinstance(name, str) else "file object"
    try:
        data = source.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # closed file, unreadable stream
        raise InvalidImageError(f"Cannot read from the {description}: {exc}.") from exc
    if isinstance(data, str):
        raise InvalidImageError(f"The {description} is open in text mode (read() returned str); open it with 'rb'.")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"read() of the {description} returned {type(data).__name__}; expected bytes.")
    return bytes(data), description


def _decode(data: bytes, description: str, max_side: int | None = None) -> Image.Image:
    """Decode encoded image bytes into a validated RGB image (no larger than `max_side`)."""
    if not data:
        raise InvalidImageError(f"Got empty input ({description}); expected an encoded image.")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(f"The input ({description}) is larger than the allowed {MAX_FILE_BYTES:,} bytes.")
    formats = _available_formats()
    allowed = ", ".join(formats)
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"The input ({description}) is not a recognised image; allowed formats: {allowed}."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(description, None) from exc
    except Exception as exc:  # Pillow plugins raise many types (SyntaxError, struct.error, ...)
        raise InvalidImageError(
            f"The input ({description}) is a corrupt or unsupported image ({exc}); allowed formats: {allowed}."
        ) from exc

    with image:
        image_format = image.format or "image"
        label = f"{description}, {image_format}"
        # Header-only check: nothing has been decoded yet, so a bomb costs no memory.
        _check_size(image.size, label)
        if max_side and image_format == "JPEG" and max(image.size) > max_side:
            # DCT scaling (1/2, 1/4, 1/8): the full size is never decoded. Asked for the fitted
            # size, the decoder picks the smallest scale whose long side is still ≥ max_side.
            width, height = image.size
            fit = max_side / max(width, height)
            image.draft(image.mode, (max(1, int(width * fit)), max(1, int(height * fit))))
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(label, image.size) from exc
        except Exception as exc:
            raise InvalidImageError(
                f"The {image_format} data ({description}) is truncated or corrupt ({exc}); "
                "expected a complete image file."
            ) from exc
        if image_format == "PNG":
            _verify_png(data, description)
        return _normalise(image, max_side)


def _verify_png(data: bytes, description: str) -> None:
    """Check PNG chunk checksums and the end marker, which ``load()`` alone does not require."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as check:
            check.verify()
    except Exception as exc:
        raise InvalidImageError(
            f"The PNG data ({description}) is truncated or corrupt ({exc}); expected a complete image file."
        ) from exc


def _available_formats() -> list[str]:
    """``ALLOWED_FORMATS`` that this Pillow build can open (AVIF support is optional)."""
    Image.init()
    return [name for name in ALLOWED_FORMATS if name in Image.OPEN]


# ----------------------------------------------------------------------------------------------
# In-memory input
# ----------------------------------------------------------------------------------------------


def _from_pil(source: Image.Image) -> Image.Image:
    """Validate and normalise an image the caller already has.

    Its pixels are never changed; it is loaded if lazy, and an animation is seeked to frame 0.
    """
    description = f"PIL image (mode {source.mode}, size {source.size[0]}x{source.size[1]})"
    _check_size(source.size, description)
    try:
        if source.tell() != 0:
            source.seek(0)  # contract: first frame of an animation or multi-page file
        source.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(description, source.size) from exc
    except Exception as exc:
        raise InvalidImageError(f"The {description} could not be decoded: it is truncated or corrupt ({exc}).") from exc
    return _normalise(source)


def _from_array(array: np.ndarray) -> Image.Image:
    """Build an RGB image from an ``(H, W)`` or ``(H, W, C)`` array as Gradio passes them."""
    description = f"NumPy array of shape {array.shape} and dtype {array.dtype}"
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        raise InvalidImageError(
            f"Got a {description}; it looks channels-first. Expected channels last: "
            "(H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4)."
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise InvalidImageError(
            f"Got a {description}; expected shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4)."
        )
    height, width = array.shape[:2]
    _check_size((width, height), description)
    is_uint16 = array.dtype.kind == "u" and array.dtype.itemsize == 2  # either byte order
    pixels = _scale_to_uint8(array, what=f"a {description}", sixteen_bit=is_uint16)
    # uint8 (H, W) / (H, W, 2|3|4) arrays map to L / LA / RGB / RGBA.
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return to_rgb(image)


def _scale_to_uint8(values: np.ndarray, what: str, sixteen_bit: bool = False) -> np.ndarray:
    """Map numeric pixel data to uint8.

    Rules: bool -> 0/255; uint8 unchanged; ``sixteen_bit`` (uint16 arrays, ``I;16`` images) ->
    ``round(v * 255 / 65535)``; other integers with max <= 255 unchanged, with max <= 65535 scaled
    as 16-bit; floats with max <= 1 scaled by 255, max <= 255 rounded, max <= 65535 scaled as
    16-bit. Negative, NaN, infinite or larger values are rejected: guessing a range for them
    would silently show the model a different picture than the user sees.
    """
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype == np.uint8:
        return values
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InvalidImageError(f"Got {what}; pixel data must be bool, integer or float, not {values.dtype}.")
    if values.size == 0:
        raise InvalidImageError(f"Got {what} with no pixels.")
    if sixteen_bit:
        return _sixteen_to_eight(values)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise InvalidImageError(f"Got {what} containing NaN or infinite values.")
    low, high = values.min(), values.max()
    if low < 0:
        raise InvalidImageError(
            f"Got {what} with negative values (min {low:g}); expected 0..1 or 0..255 "
            "(already-normalised [-1, 1] data cannot be used as an image)."
        )
    if np.issubdtype(values.dtype, np.floating) and high <= 1.0:
        return np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)
    if high <= 255:
        return np.rint(values).astype(np.uint8)
    if high <= 65535:
        return _sixteen_to_eight(values)
    raise InvalidImageError(f"Got {what} with values up to {high:g}; expected 0..1 (float), 0..255 or 0..65535.")


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 data to 0..255 with rounding (65535 -> 255, 257 -> 1)."""
    return np.rint(values.astype(np.float64) * (255.0 / 65535.0)).clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------


# EXIF orientation → the transpose that makes the image upright (as ImageOps.exif_transpose does).
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}
# Modes Pillow resizes with interpolation as they are; others are converted to RGB first.
_RESIZABLE_MODES = frozenset({"RGB", "RGBA", "RGBa", "L", "LA", "La", "RGBX"})


def _shrink(image: Image.Image, side: int) -> Image.Image:
    """A new image whose longest side is `side` (box-reduced by an integer factor, then bilinear)."""
    width, height = image.size
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _normalise(image: Image.Image, max_side: int | None = None) -> Image.Image:
    """Apply the EXIF orientation of a loaded image and convert it to a new RGB image, shrunk to
    `max_side` first when it is larger (so the full-size pixels are never copied)."""
    orientation = 1
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not reject an otherwise valid photo
        _log.debug("Ignoring unreadable EXIF orientation: %s", exc)
    if max_side and max(image.size) > max_side and image.mode in _RESIZABLE_MODES:
        image = _shrink(image, max_side)
    # Transposing copies even when there is nothing to do; only do it when needed.
    if orientation in _ORIENTATIONS:
        image = image.transpose(_ORIENTATIONS[orientation])
    image = to_rgb(image)
    if max_side and max(image.size) > max_side:  # modes that had to become RGB first
        image = _shrink(image, max_side)
    return image


def _check_size(size: tuple[int, int], description: str) -> None:
    """Reject images with no pixels, a side above ``MAX_SIDE`` or more than ``MAX_PIXELS``."""
    width, height = size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImageError(
            f"The image ({description}) is {width}x{height} pixels; each side must be at least {MIN_SIDE} px."
        )
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InvalidImageError(
            f"The image ({description}) is {width}x{height} pixels; each side may be at most {MAX_SIDE:,} px."
        )
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(description, size)


def _too_many_pixels(description: str, size: tuple[int, int] | None) -> InvalidImageError:
    got = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return InvalidImageError(
        f"The image ({description}) has {got}; at most {MAX_PIXELS:,} pixels are allowed (possible decompression bomb)."
    )


def display_copy(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """An RGB copy no larger than `side` pixels a side: what a page shows of a user's image
    (a 48 MP photo is never drawn on at full size, and never copied at full size either)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb.size) <= side:
        return rgb.copy() if rgb is image else rgb
    return _shrink(rgb, side)
