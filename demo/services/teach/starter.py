"""Teach's ready-made photos, as `xception_core.weights.presets.STARTER_PRESET` declares them
(`Preset.samples`): a labelled starter set from its shipped photos plus the bundled examples, and
the photos held out of it to try a taught head on. Read from the local cache of the preset's
package only: nothing is downloaded for them."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from xception_core.io.assets import example_images
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_samples
from xception_core.weights.presets import PRESETS, STARTER_PRESET, SampleUses


@dataclass(frozen=True)
class StarterSet:
    """Photos by class, in the order the classes are taught.

    Attributes:
        classes: Class → [(name to show, photo file)].
        missing: What could not be included, in words (the package's photos when its wheel is
            not in this server's cache).
    """

    classes: OrderedDict[str, list[tuple[str, Path]]]
    missing: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(len(photos) for photos in self.classes.values())


def _uses() -> SampleUses:
    uses = PRESETS[STARTER_PRESET].samples
    if uses is None:
        raise ValueError(f"preset {STARTER_PRESET!r} declares no sample uses")
    return uses


def starter_set(settings: Settings) -> StarterSet:
    """The starter photos: the package's (e.g. cup, plate, and knife/fork/spoon as 'cutlery'),
    then the bundled examples (each by its declared class, the others as one 'other' class)."""
    uses = _uses()
    classes: OrderedDict[str, list[tuple[str, Path]]] = OrderedDict()
    package = [s for s in cached_samples(STARTER_PRESET, settings.cache_dir) if uses.takes(uses.starter, s.label)]
    for sample in package:
        classes.setdefault(uses.starter_class(sample.label or ""), []).append(
            (f"{sample.label} {sample.path.stem}", sample.path))
    for example in example_images(settings.assets_dir):
        classes.setdefault(uses.example_class(example.path.name), []).append((example.title, example.path))
    missing = () if package else (f"the {STARTER_PRESET} package's photos (its wheel is not in this server's "
                                  "cache): only the examples were loaded",)
    return StarterSet(classes, missing)


def held_out_photos(settings: Settings) -> list[Path]:
    """The package's photos a starter-set head is never trained on; [] when its wheel is not cached."""
    uses = _uses()
    return [s.path for s in cached_samples(STARTER_PRESET, settings.cache_dir) if uses.takes(uses.held_out, s.label)]
