"""Where the bundled assets live (labels, example images) and what the examples are.

Assets ship with the repository in ``<repo root>/assets``; nothing is downloaded at run time.
Every function takes another folder with the same layout (`Settings.assets_dir`,
XCEPTION_ASSETS_DIR) in place of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExampleImage", "assets_dir", "example_images"]

_DEFAULT_ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
_EXAMPLES_INDEX = Path("examples") / "examples.json"
_EXAMPLE_KEYS = ("file", "title", "source", "license")


@dataclass(frozen=True)
class ExampleImage:
    """One bundled example photo.

    Attributes:
        path: Absolute path of the image file.
        title: Short caption for the UI.
        source: Where the photo comes from (URL or package), for attribution.
        license: Its license, e.g. ``"CC0 1.0"`` or ``"Public domain"``.
    """

    path: Path
    title: str
    source: str
    license: str


def assets_dir(folder: Path | None = None) -> Path:
    """Return the assets folder: `folder` if given, else ``<repo root>/assets``; an absolute path.

    Raises:
        FileNotFoundError: if the folder does not exist.
    """
    resolved = Path(folder).expanduser().resolve() if folder else _DEFAULT_ASSETS_DIR
    if not resolved.is_dir():
        origin = "XCEPTION_ASSETS_DIR" if folder else "the default location"
        raise FileNotFoundError(f"Assets folder {resolved.name!r} (from {origin}) does not exist.")
    return resolved


def example_images(folder: Path | None = None) -> list[ExampleImage]:
    """List the example photos described in ``assets/examples/examples.json`` (of `folder`).

    Returns:
        A new list of :class:`ExampleImage`, in the file's order.

    Raises:
        FileNotFoundError: if the index or a listed image is missing.
        ValueError: if the index is malformed (not a list of objects with non-empty string
            ``file``, ``title``, ``source`` and ``license``; ``file`` must be a plain file name).
    """
    index = assets_dir(folder) / _EXAMPLES_INDEX
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Example index {str(index)!r} is missing.") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"Example index {str(index)!r} is not valid JSON: {exc}.") from exc
    if not isinstance(entries, list):
        # ValueError, not TypeError: this is malformed data in a file, not a bad argument.
        raise ValueError(  # noqa: TRY004
            f"Example index {str(index)!r} must hold a JSON list, got {type(entries).__name__}."
        )

    examples: list[ExampleImage] = []
    for position, entry in enumerate(entries):
        where = f"entry {position} of {str(index)!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object with keys {_EXAMPLE_KEYS}.")  # noqa: TRY004
        for key in _EXAMPLE_KEYS:
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where} needs a non-empty string {key!r}; got {value!r}.")
        name = entry["file"]
        # Only plain names inside examples/: the index must not point anywhere else on disk.
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{where}: 'file' must be a plain file name, got {name!r}.")
        path = index.parent / name
        if not path.is_file():
            raise FileNotFoundError(f"{where} lists {name!r}, but {str(path)!r} does not exist.")
        examples.append(ExampleImage(path=path, title=entry["title"], source=entry["source"], license=entry["license"]))
    return examples
