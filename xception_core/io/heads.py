"""Files of a taught head: the head alone (a small `.npz`: weights, bias, class names and what it
sits on) and the whole taught model (`.keras`: Xception's base and the head, which
`build_xception(weights=path)` and `XCEPTION_WEIGHTS=path` load back).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xception_core.files import write_atomically
from xception_core.runtime.transfer import SoftmaxHead

if TYPE_CHECKING:
    from xception_core.model import LoadedModel

__all__ = ["HeadFile", "load_head", "save_head", "save_taught_model", "taught_labels"]

HEAD_FORMAT = 1
LABELS_MEMBER = "xception_labels.json"  # class names inside a taught .keras (Keras ignores the member)


@dataclass(frozen=True)
class HeadFile:
    """A head read back from `save_head`'s file.

    Attributes:
        head: The softmax head on raw pooled features.
        class_names: K names, in the head's column order.
        block: Block whose pooled output the head takes (e.g. 'block14').
        input_size: Image side the features were computed at.
        base: Description of the Xception weights the features came from.
    """

    head: SoftmaxHead
    class_names: tuple[str, ...]
    block: str
    input_size: int
    base: str


def save_head(path: str | os.PathLike, head: SoftmaxHead, class_names: tuple[str, ...] | list[str], *, block: str,
              input_size: int, base: str) -> Path:
    """Writes the head as an uncompressed `.npz` (no pickled objects: `np.load` reads it with
    `allow_pickle=False`). Arrays: weights (D, K), bias (K,), class_names (K,) str, block, base,
    input_size, format."""
    if len(class_names) != head.classes:
        raise ValueError(f"{len(class_names)} class names for a head of {head.classes} classes")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, weights=head.weights, bias=head.bias, class_names=np.array(list(class_names), dtype=str),
                     block=np.array(block), base=np.array(base), input_size=np.array(int(input_size)),
                     format=np.array(HEAD_FORMAT))

    return write_atomically(path, write)


def load_head(path: str | os.PathLike) -> HeadFile:
    """Reads a `save_head` file.

    Raises:
        ValueError: Not such a file, or one from an unknown format version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in ("format", "weights", "bias", "class_names", "block", "input_size", "base")}
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{Path(path).name!r} is not a head file: {exc}") from None
    if int(fields["format"]) != HEAD_FORMAT:
        raise ValueError(f"head file format {int(fields['format'])}, expected {HEAD_FORMAT}")
    head = SoftmaxHead(fields["weights"].astype(np.float32), fields["bias"].astype(np.float32))
    return HeadFile(head, tuple(str(n) for n in fields["class_names"]), str(fields["block"]),
                    int(fields["input_size"]), str(fields["base"]))


def save_taught_model(path: str | os.PathLike, loaded: LoadedModel, head: SoftmaxHead,
                      class_names: tuple[str, ...] | list[str] | None = None) -> Path:
    """Writes Xception (the weights of `loaded`) with `head` on its pooled exit-flow features as a
    `.keras` file (~90 MB: the base's weights are most of it), with the class names beside the
    model (`taught_labels` reads them back). `path` must end in `.keras` (what Keras and
    `load_model` read)."""
    if Path(path).suffix != ".keras":
        raise ValueError(f"a taught model is a .keras file; got {Path(path).name!r}")
    if class_names is not None and len(class_names) != head.classes:
        raise ValueError(f"{len(class_names)} class names for a head of {head.classes} classes")
    from xception_core.runtime.extractor import transfer_model  # Keras: only when a .keras file is asked for

    model = transfer_model(loaded, head.weights, head.bias)

    def write(tmp: Path) -> None:
        model.save(str(tmp))  # the temporary name ends in .keras too, as Keras insists
        if class_names is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(LABELS_MEMBER, json.dumps(list(class_names), ensure_ascii=False))

    return write_atomically(path, write)


def taught_labels(path: str | os.PathLike, classes: int) -> tuple[str, ...] | None:
    """The class names `save_taught_model` stored in a `.keras` file, or None when the file has
    none (any other model) or they do not fit a classifier of `classes` classes."""
    try:
        with zipfile.ZipFile(path) as archive:
            if LABELS_MEMBER not in archive.namelist() or archive.getinfo(LABELS_MEMBER).file_size > 1_000_000:
                return None
            names = json.loads(archive.read(LABELS_MEMBER).decode("utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) for n in names):
        return None
    return tuple(n[:100] for n in names)
