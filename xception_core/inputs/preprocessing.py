"""Xception's input from an image, as a set of weights was trained on it: the whole image
resized (no crop) with the weights' own filter (`Preprocessing.resize`), RGB, float32 in [-1, 1]
(Keras "tf" mode: ``x / 127.5 - 1``). The one copy of that arithmetic (`scale`, and `to_pixels`
back); decoding and validation are `xception_core.inputs.images.load_image`'s."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xception_core.inputs.images import MAX_SIDE, MIN_SIDE, ImageSource, InvalidImageError, load_image

__all__ = ["KERAS_LOAD_IMG", "RESIZE_FILTERS", "Preprocessing", "preprocess", "preprocess_batch", "scale",
           "to_pixels"]

# Pillow's filters by the names `keras.utils.load_img(interpolation=...)` gives them.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
DEFAULT_RESIZE = "nearest"  # `keras.utils.load_img`'s default interpolation


@dataclass(frozen=True)
class Preprocessing:
    """How a set of weights wants its images (a preset carries its own: `Preset.preprocessing`).

    Attributes:
        resize: The filter that resizes the whole image to the input side, by its
            `keras.utils.load_img` name ('nearest', 'bilinear', 'bicubic', ...), applied as
            `load_img` applies it (one Pillow `resize`, no crop).
    """

    resize: str = DEFAULT_RESIZE

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_FILTERS:
            raise ValueError(f"resize must be one of {list(RESIZE_FILTERS)}, got {self.resize!r}")

    def __call__(self, image: ImageSource, size: int | tuple[int, int]) -> np.ndarray:
        """`preprocess(image, size, self.resize)`: (H, W, 3) float32 in [-1, 1]."""
        return preprocess(image, size, self.resize)

    def describe(self) -> str:
        """The record a translation keeps of it (`xception_core.runtime.translated`)."""
        return f"resize {self.resize} to input_size, RGB, x / 127.5 - 1"


# What `keras.utils.load_img(path, target_size=...)` and `xception.preprocess_input` do together.
KERAS_LOAD_IMG = Preprocessing(DEFAULT_RESIZE)


def scale(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB pixels → float32 in [-1, 1], as ``keras.applications.xception.preprocess_input``."""
    x = np.asarray(pixels, dtype=np.float32).copy()
    # Same two float32 operations as Keras's "tf" mode, so results match it bit for bit.
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


def to_pixels(x: np.ndarray) -> np.ndarray:
    """The inverse of `scale`: float32 in [-1, 1] → the uint8 pixels it was scaled from (exact)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def preprocess(image: ImageSource, size: int | tuple[int, int], resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Turn one image into Xception's input: resized, RGB, float32 in ``[-1, 1]``.

    The whole image is resized with the Pillow filter `resize` names (no crop, so the aspect
    ratio is not kept), as ``keras.utils.load_img(..., target_size, interpolation=resize)`` does,
    and scaled like ``keras.applications.xception.preprocess_input`` (`scale`). Pass the weights'
    own filter (`Preprocessing`); the default is `load_img`'s.

    Args:
        image: Anything :func:`load_image` accepts.
        size: Output side ``S`` for ``(S, S)``, or ``(height, width)``.
        resize: A `RESIZE_FILTERS` name.

    Returns:
        ``np.ndarray`` of dtype float32 and shape ``(H, W, 3)``, values in ``[-1, 1]``.

    Raises:
        InvalidImageError: (a ``ValueError``) for a bad image or a bad ``size``.
    """
    height, width = _parse_size(size)
    if resize not in RESIZE_FILTERS:
        raise InvalidImageError(f"resize must be one of {list(RESIZE_FILTERS)}, got {resize!r}.")
    rgb = load_image(image)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), resample=RESIZE_FILTERS[resize])
    return scale(np.asarray(rgb))


def preprocess_batch(images: Sequence[ImageSource] | np.ndarray, size: int | tuple[int, int],
                     resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Preprocess several images into one batch.

    Args:
        images: A non-empty sequence of inputs :func:`load_image` accepts, or a NumPy array of
            shape ``(N, H, W)`` or ``(N, H, W, C)`` holding ``N`` images.
        size: Output side ``S`` for ``(S, S)``, or ``(height, width)``.
        resize: A `RESIZE_FILTERS` name (the weights' own, as for `preprocess`).

    Returns:
        ``np.ndarray`` of dtype float32 and shape ``(N, H, W, 3)``, values in ``[-1, 1]``.

    Raises:
        InvalidImageError: (a ``ValueError``) if ``images`` is empty or not a sequence, or for the
            first bad image (its index is named in the message).
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise InvalidImageError(
                f"A batch array must have shape (N, H, W) or (N, H, W, C); got shape {images.shape}."
            )
    elif isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)) or not isinstance(
        images, Sequence
    ):
        raise InvalidImageError(
            f"preprocess_batch expects a list or tuple of images (or an (N, H, W[, C]) array), "
            f"got {type(images).__name__}; use preprocess() for a single image."
        )
    height, width = _parse_size(size)
    if len(images) == 0:
        raise InvalidImageError("preprocess_batch got an empty batch; pass at least one image.")
    batch = np.empty((len(images), height, width, 3), dtype=np.float32)
    for index, item in enumerate(images):
        try:
            batch[index] = preprocess(item, (height, width), resize)
        except InvalidImageError as exc:
            raise InvalidImageError(f"Image {index} of the batch: {exc}") from exc
    return batch


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``(height, width)`` from an int or a ``(height, width)`` pair."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)):
        pair = (int(size), int(size))
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in size)
    ):
        pair = (int(size[0]), int(size[1]))
    else:
        raise InvalidImageError(f"size must be an int or a (height, width) pair of ints, got {size!r}.")
    if not all(MIN_SIDE <= s <= MAX_SIDE for s in pair):
        raise InvalidImageError(f"size sides must be between {MIN_SIDE} and {MAX_SIDE:,}, got {size!r}.")
    return pair
