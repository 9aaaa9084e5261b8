"""Xception's input from an image: resized, RGB, float32 in [-1, 1] (Keras "tf" mode:
``x / 127.5 - 1``). Decoding and validation are `xception_core.inputs.images.load_image`'s."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from xception_core.inputs.images import MAX_SIDE, MIN_SIDE, ImageSource, InvalidImageError, load_image

__all__ = ["preprocess", "preprocess_batch"]


def preprocess(image: ImageSource, size: int | tuple[int, int]) -> np.ndarray:
    """Turn one image into Xception's input: resized, RGB, float32 in ``[-1, 1]``.

    The whole image is resized with Pillow's bicubic filter (antialiased when shrinking; no crop,
    so the aspect ratio is not kept) and scaled like ``keras.applications.xception.preprocess_input``
    (``x / 127.5 - 1``).

    Args:
        image: Anything :func:`load_image` accepts.
        size: Output side ``S`` for ``(S, S)``, or ``(height, width)``.

    Returns:
        ``np.ndarray`` of dtype float32 and shape ``(H, W, 3)``, values in ``[-1, 1]``.

    Raises:
        InvalidImageError: (a ``ValueError``) for a bad image or a bad ``size``.
    """
    height, width = _parse_size(size)
    rgb = load_image(image)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
    x = np.asarray(rgb, dtype=np.float32)
    # Same two float32 operations as Keras's "tf" mode, so results match it bit for bit.
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


def preprocess_batch(images: Sequence[ImageSource] | np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Preprocess several images into one batch.

    Args:
        images: A non-empty sequence of inputs :func:`load_image` accepts, or a NumPy array of
            shape ``(N, H, W)`` or ``(N, H, W, C)`` holding ``N`` images.
        size: Output side ``S`` for ``(S, S)``, or ``(height, width)``.

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
            batch[index] = preprocess(item, (height, width))
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
