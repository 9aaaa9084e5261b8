"""Class names for the model heads, and turning scores into ranked predictions (pure Python/NumPy).

Label files are bundled in ``assets/`` (see ``assets/LABELS.md`` for their origin); nothing is
downloaded. Each file is a JSON list ``[{"index": 0, "name": "tench", ...}, ...]`` in model
output order: ImageNet-1k in the standard Keras order (synsets sorted, index 0 = ``n01440764``
tench, 281 = ``n02123045`` tabby cat, 999 = ``n15075141`` toilet paper) and Kitchenware-6 as
``cup, fork, glass, knife, plate, spoon``. Names are unique within a file, so they can key a dict
(as Gradio's ``gr.Label`` does).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xception_core.io.assets import assets_dir

__all__ = ["LABEL_SETS", "load_labels", "load_synsets", "top_k"]

LABEL_SETS: dict[str, tuple[str, int]] = {
    "imagenet1k": ("imagenet1k_labels.json", 1000),
    "kitchenware6": ("kitchenware6_labels.json", 6),
}
"""Label set name -> (file in the assets folder, number of classes)."""


def load_labels(name: str, folder: Path | None = None) -> tuple[str, ...]:
    """Return the class names of a label set, in model output order.

    Args:
        name: ``"imagenet1k"`` or ``"kitchenware6"``.
        folder: Assets folder (default: the repository's).

    Returns:
        A tuple of ``num_classes`` unique names (1000 or 6); cached per assets folder.

    Raises:
        ValueError: for an unknown name, or a malformed label file.
        FileNotFoundError: if the label file is missing.
    """
    return tuple(record["name"] for record in _records(name, folder))


def load_synsets(folder: Path | None = None) -> tuple[str, ...]:
    """Return the 1000 ImageNet-1k WordNet ids (``"n01440764"``, ...) in model output order.

    Raises:
        ValueError: if the label file lacks a ``synset`` for some class.
    """
    synsets = tuple(record.get("synset") for record in _records("imagenet1k", folder))
    bad = [i for i, synset in enumerate(synsets) if not isinstance(synset, str) or not synset]
    if bad:
        raise ValueError(f"The imagenet1k label file has no synset for class indices {bad[:10]}.")
    return synsets  # type: ignore[return-value]


def top_k(probabilities: Any, labels: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """Pick the ``k`` highest-scoring classes.

    Args:
        probabilities: 1-D array-like of shape ``(num_classes,)`` (one image; pass ``probs[0]``
            for a batch of one). Scores are ranked as given; no softmax is applied.
        labels: ``num_classes`` class names, e.g. from :func:`load_labels`.
        k: How many to return, ``1 <= k <= num_classes``.

    Returns:
        ``[(label, score), ...]`` sorted by score, highest first; equal scores keep class order.

    Raises:
        ValueError: if ``probabilities`` is not 1-D, not numeric, contains NaN, or its length
            differs from ``len(labels)``, or ``k`` is out of range.
    """
    try:
        scores = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"probabilities must be a 1-D array of numbers; got {type(probabilities).__name__}.") from exc
    if scores.ndim != 1:
        hint = " (for a batch of one, pass probabilities[0])" if scores.ndim == 2 and scores.shape[0] == 1 else ""
        raise ValueError(f"probabilities must be 1-D of shape (num_classes,); got shape {scores.shape}{hint}.")
    if len(scores) != len(labels):
        raise ValueError(f"Got {len(scores)} probabilities for {len(labels)} labels; the lengths must match.")
    if np.isnan(scores).any():
        raise ValueError("probabilities contain NaN; cannot rank them.")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(scores):
        raise ValueError(f"k must be an int from 1 to {len(scores)}; got {k!r}.")
    # A stable sort of the negated scores puts the highest first and keeps ties in class order.
    order = np.argsort(-scores, kind="stable")[: int(k)]
    return [(labels[i], float(scores[i])) for i in order]


def _records(name: str, folder: Path | None = None) -> tuple[dict[str, Any], ...]:
    """Validated records of a label set from the current assets folder."""
    if not isinstance(name, str) or name not in LABEL_SETS:
        allowed = ", ".join(repr(n) for n in LABEL_SETS)
        raise ValueError(f"Unknown label set {name!r}; allowed: {allowed}.")
    filename, count = LABEL_SETS[name]
    # Keyed by path, so another assets folder is read on its own.
    return _read_label_file(str(assets_dir(folder) / filename), count)


@functools.lru_cache(maxsize=8)
def _read_label_file(path: str, count: int) -> tuple[dict[str, Any], ...]:
    """Read and check one label file: ``count`` records, ``index`` == position, unique names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Label file {path!r} is missing (assets folder: see XCEPTION_ASSETS_DIR).") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"Label file {path!r} is not valid JSON: {exc}.") from exc
    if not isinstance(data, list) or len(data) != count:
        got = f"{len(data)} entries" if isinstance(data, list) else type(data).__name__
        raise ValueError(f"Label file {path!r} must be a list of {count} entries; got {got}.")
    seen: set[str] = set()
    for position, record in enumerate(data):
        if (
            not isinstance(record, dict)
            or record.get("index") != position
            or not isinstance(record.get("name"), str)
            or not record["name"].strip()
        ):
            raise ValueError(
                f"Label file {path!r}: entry {position} must be an object with index {position} "
                f"and a non-empty name; got {record!r}."
            )
        if record["name"] in seen:
            raise ValueError(f"Label file {path!r}: name {record['name']!r} appears twice.")
        seen.add(record["name"])
    return tuple(data)
