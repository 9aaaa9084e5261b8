"""Teach's training: a softmax head on the exit-flow features, a cross-validated head and a 2-D
map on every offered block, and a new photo through the taught head with its activation map."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from demo.services import UserError
from demo.services.teach.records import BlockResult, Photo, TaughtPrediction, TeachLimits, Trained
from demo.store import ServedModel
from xception_core.inputs.images import display_copy
from xception_core.io.visualize import overlay
from xception_core.runtime.extractor import FINAL_BLOCK, TRANSFER_BLOCKS, FeatureExtractor
from xception_core.runtime.transfer import (
    LOO_MAX_PHOTOS,
    class_activation_map,
    cross_validate,
    fit_softmax_head,
    pca_2d,
)

CAM_ALPHA = 0.5


def train(classes: Sequence[tuple[str, Sequence[Photo]]], served: ServedModel, limits: TeachLimits) -> Trained:
    """Fits the head on the exit-flow features of `classes` ([(name, photos)]),
    cross-validates a head on every offered block, and picks the best of them (`best_block`).

    Raises:
        UserError: Fewer than 2 classes, or a class with too few photos.
    """
    if len(classes) < 2:
        raise UserError("Teach at least 2 classes: add photos under two different names.")
    few = [name for name, photos in classes if len(photos) < limits.min_photos_per_class]
    if few:
        raise UserError(f"Each class needs at least {limits.min_photos_per_class} photos; add more to: "
                        + ", ".join(f"“{n}”" for n in few) + ".")
    photos = tuple(p for _, ps in classes for p in ps)
    labels = np.array([k for k, (_, ps) in enumerate(classes) for _ in ps], np.int64)
    names = tuple(name for name, _ in classes)
    start = time.perf_counter()
    final = np.stack([p.pooled[FINAL_BLOCK] for p in photos])
    head = fit_softmax_head(final, labels, len(names))
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    blocks: dict[str, BlockResult] = {}
    for block in TRANSFER_BLOCKS:
        x = final if block == FINAL_BLOCK else np.stack([p.pooled[block] for p in photos])
        # Under leave-one-out every fold starts from the whole set's fit on the same block, one
        # photo away from its optimum: the same optimum, a third sooner (bench/README.md,
        # "Teach"). A k-fold fold is a fifth of the photos away: that extra fit does not pay.
        init = head if block == FINAL_BLOCK else (
            fit_softmax_head(x, labels, len(names)) if len(labels) <= LOO_MAX_PHOTOS else None)
        cv = cross_validate(x, labels, len(names), init=init)
        blocks[block] = BlockResult(block, int(x.shape[1]), cv, pca_2d(x))
    cv_seconds = time.perf_counter() - start
    return Trained(names, head, labels, photos, blocks, fit_seconds, cv_seconds, served.key, served.title,
                   best_block(blocks))


def best_block(blocks: dict[str, BlockResult]) -> str:
    """The block whose head classified the most photos right under cross-validation; among equal
    accuracies, the one surer of the right answers (lower cross-validated log-loss), then the
    deeper. Picked by the same cross-validation that reports it (a little optimistic: see
    bench/README.md, "Teach")."""
    order = list(blocks)
    return min(order, key=lambda b: (-blocks[b].cv.accuracy, blocks[b].cv.log_loss, -order.index(b)))


def classify_taught(trained: Trained, extractor: FeatureExtractor, x: np.ndarray, image: Image.Image,
                    k: int = 5) -> TaughtPrediction:
    """A new photo through the taught head: top-k and the top class's activation map.

    Args:
        x: (S, S, 3) the photo preprocessed as the served weights want it (`ServedModel.preprocess`).
        image: The photo itself, for the picture.
    """
    out = extractor(x[None])
    probabilities = trained.head.probabilities(out.pooled[FINAL_BLOCK])[0]
    order = np.argsort(-probabilities)[: min(k, len(trained.class_names))]
    display = display_copy(image)
    cam = class_activation_map(out.feature_map[0], trained.head, int(order[0]))
    return TaughtPrediction([(trained.class_names[i], float(probabilities[i])) for i in order], display,
                            overlay(display, cam, alpha=CAM_ALPHA))
