"""Explore › Knockouts without Gradio: a visitor's knockouts on the served network, and the lesion
study over the labelled photos the app has (`xception_core.runtime.knockout` does the numbers).

The intact answer is the served model's own forward (so an empty knockout list is `/classify`'s
answer exactly); the knocked one runs the block chain from the first changed block, fed from the
photo's intact chain pass (kept for a few photos). One chain per weights, built on first use:
the default app holds none until someone opens the sub-tab or calls `/knockout`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from PIL import Image

from demo.services import UserError
from demo.services.classify import CAM_ALPHA
from demo.services.explore import THUMB, cell_side
from demo.services.models import served_model
from demo.services.payloads import payload_to_image
from demo.store import Prediction, ServedModel, Store
from xception_core.inputs.images import display_copy, load_image
from xception_core.io.labels import top_k
from xception_core.io.visualize import map_tile, overlay
from xception_core.runtime.knockout import (
    Boundaries, Knockout, KnockoutChain, KnockoutError, chain_of, parse_knockouts, probabilities,
)
from xception_core.runtime.ort import FEATURES, OUTPUT
from xception_core.weights.fetch import cached_samples

PHOTOS_KEPT = 3  # photos whose intact chain pass is kept (~20 MB each at 299 px)
CHAINS_KEPT = 1  # weights whose chain is kept (a chain holds its own re-blocked weights)
LESION_BATCH = 8  # photos per chain run in the lesion study
# Besides the middle flow, the lesion study removes these branches: their shortcut is a 1×1 conv.
LESION_CONV_BLOCKS = ("block4", "block13")


@dataclass(frozen=True)
class BlockChange:
    """How one block's output moved: the intact and knocked outputs' means and the relative size
    of the change, ‖knocked − intact‖ / ‖intact‖."""

    block: str
    intact_mean: float
    knocked_mean: float
    relative_change: float


@dataclass(frozen=True)
class KnockoutAnswer:
    """One photo, intact and knocked.

    Attributes:
        served: The model that ran.
        knockouts: What was changed, checked and in network order.
        intact, knocked: Top-5 and probabilities (`Prediction`, features included).
        changes: Every block from the first changed one on.
        seconds: Time in the knocked chain (0 for no knockouts).
        reused: Whether the intact chain pass of the photo was already kept.
        maps: {block: (intact, knocked) (h, w) channel-mean maps} of the first changed block and
            the last block.
    """

    served: ServedModel
    knockouts: tuple[Knockout, ...]
    intact: Prediction
    knocked: Prediction
    changes: tuple[BlockChange, ...]
    seconds: float
    reused: bool
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class LesionRow:
    """One removed branch over the labelled photos: top-1 accuracy, and agreement of the top-1
    class with the intact network's."""

    block: str
    shortcut: str
    accuracy: float
    agreement: float


@dataclass(frozen=True)
class LesionTable:
    weights: str
    photos: int
    intact_accuracy: float
    rows: tuple[LesionRow, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "photos": self.photos, "intact_accuracy": round(self.intact_accuracy, 4),
                "rows": [{"block": r.block, "shortcut": r.shortcut, "accuracy": round(r.accuracy, 4),
                          "agreement": round(r.agreement, 4)} for r in self.rows],
                "seconds": round(self.seconds, 2)}


def _top(prediction: Prediction) -> dict[str, float]:
    """`{label: probability}` as `/classify` rounds it."""
    return {label: round(float(p), 6) for label, p in prediction.top}


def answer_json(answer: KnockoutAnswer) -> dict[str, Any]:
    """The `/knockout` answer: both top-5s, what changed, and each later block's change."""
    return {"weights": answer.served.key,
            "knockouts": [k.to_dict() for k in answer.knockouts],
            "intact": _top(answer.intact), "knocked": _top(answer.knocked),
            "top1_changed": answer.intact.top[0][0] != answer.knocked.top[0][0],
            "blocks": [{"block": c.block, "intact_mean": round(c.intact_mean, 6), "knocked_mean": round(c.knocked_mean, 6),
                        "relative_change": round(c.relative_change, 6)} for c in answer.changes],
            "knocked_ms": round(answer.seconds * 1000, 1), "intact_pass_reused": answer.reused}


class KnockoutService:
    """Knockouts and the lesion study on the store's default weights.

    Args:
        store: Where the served model comes from.
        photos: The labelled photos of the lesion study beyond the preset's own, (path, label)
            (the bundled examples' declared classes, a visitor's labelled uploads); a callable is
            read at each study.
    """

    def __init__(self, store: Store, photos: Callable[[], Sequence[tuple[Path, str]]] | None = None):
        self.store = store
        self.photos = photos or (lambda: ())
        self._lock = threading.Lock()
        self._chains: OrderedDict[str, KnockoutChain] = OrderedDict()
        self._passes: OrderedDict[tuple[str, str], Boundaries] = OrderedDict()
        self._lesions: dict[str, LesionTable] = {}

    def model(self) -> ServedModel:
        return served_model(self.store)

    def chain(self, served: ServedModel) -> KnockoutChain:
        """The served weights' chain (made once; refused for a model served without its translation)."""
        translated = getattr(served, "translated", None)
        if translated is None:
            raise UserError("Knockouts need the translated model in this process, and this server does not hold one.")
        with self._lock:
            chain = self._chains.get(served.key)
            if chain is None:
                chain = self._chains[served.key] = chain_of(translated)
                while len(self._chains) > CHAINS_KEPT:
                    self._chains.popitem(last=False)
            self._chains.move_to_end(served.key)
            return chain

    def facts(self) -> Any:
        """The served network's blocks, sums, channels and separable convs (`NetworkFacts`)."""
        return self.chain(self.model()).facts

    def parse(self, items: Any) -> tuple[Knockout, ...]:
        """Knockouts from plain JSON, checked (refusals are `UserError` sentences)."""
        try:
            return parse_knockouts(items, self.facts())
        except KnockoutError as exc:
            raise UserError(str(exc)) from None

    def _intact_pass(self, served: ServedModel, chain: KnockoutChain, x: np.ndarray) -> tuple[Boundaries, bool]:
        key = (served.key, hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest())
        with self._lock:
            kept = self._passes.get(key)
            if kept is not None:
                self._passes.move_to_end(key)
                return kept, True
        boundaries = chain.intact(x[None])
        with self._lock:
            self._passes[key] = boundaries
            while len(self._passes) > PHOTOS_KEPT:
                self._passes.popitem(last=False)
        return boundaries, False

    def strongest(self, payload: Any, block: str, n: int) -> list[int]:
        """The `n` channels of a block's output with the highest mean on the photo, highest first
        (Activations' order: by channel mean)."""
        served = self.model()
        chain = self.chain(served)
        if block not in chain.blocks:
            raise UserError(f"Unknown block {str(block)[:40]!r}; expected one of {', '.join(chain.blocks)}.")
        x = served.preprocess(payload_to_image(payload, self.store.settings.upload_dir))
        boundaries, _ = self._intact_pass(served, chain, x)
        means = boundaries[chain.block_outputs()[block]][0].mean(axis=(1, 2))
        return [int(c) for c in np.argsort(-means, kind="stable")[:max(1, min(int(n), means.size))]]

    def knockout(self, payload: Any, items: Any) -> KnockoutAnswer:
        """The photo through the intact and the knocked network."""
        served = self.model()
        knockouts = self.parse(items)
        image = payload_to_image(payload, self.store.settings.upload_dir)
        x = served.preprocess(image)
        intact = served.predict(x, 5)
        if not knockouts:
            return KnockoutAnswer(served, (), intact, intact, (), 0.0, False)
        chain = self.chain(served)
        boundaries, reused = self._intact_pass(served, chain, x)
        start = time.perf_counter()
        out = chain.run(boundaries, knockouts)
        seconds = time.perf_counter() - start
        probs = probabilities(served.translated, out[OUTPUT])[0]
        k = min(5, len(served.labels))
        knocked = Prediction(top_k(probs, served.labels, k), probs, out[FEATURES][0])
        outputs = chain.block_outputs()
        changes = []
        for block in chain.blocks[chain.first_changed(knockouts):]:
            a, b = boundaries[outputs[block]], out[outputs[block]]
            norm = float(np.linalg.norm(a))
            changes.append(BlockChange(block, float(a.mean()), float(b.mean()),
                                       float(np.linalg.norm(b - a)) / norm if norm else 0.0))
        shown = dict.fromkeys([changes[0].block, chain.blocks[-1]])
        maps = {b: (boundaries[outputs[b]][0].mean(axis=0), out[outputs[b]][0].mean(axis=0)) for b in shown}
        return KnockoutAnswer(served, knockouts, intact, knocked, tuple(changes), seconds, reused, maps)

    def pictures(self, answer: KnockoutAnswer, payload: Any) -> tuple[Image.Image, Image.Image]:
        """Grad-CAM of each network's own top class over the photo: (intact, knocked)."""
        served = answer.served
        image = display_copy(payload_to_image(payload, self.store.settings.upload_dir))
        return tuple(overlay(image, served.gradcam(p.features, served.labels.index(p.top[0][0])), alpha=CAM_ALPHA)
                     for p in (answer.intact, answer.knocked))

    @staticmethod
    def map_pictures(answer: KnockoutAnswer) -> list[tuple[Image.Image, str]]:
        """Each shown block's channel-mean output, intact then knocked, on one colour scale per
        block and on its true grid: (picture, caption)."""
        out = []
        for block, (a, b) in answer.maps.items():
            value_range = (float(min(a.min(), b.min())), float(max(a.max(), b.max())))
            side = cell_side(a.shape[0], THUMB)
            for which, values in (("intact", a), ("knocked out", b)):
                out.append((map_tile(values, side, nearest=True, value_range=value_range, grid=True),
                            f"{block} · {which} · mean over channels"))
        return out

    # ---------------------------------------------------------------- the lesion study

    def labelled_photos(self, served: ServedModel) -> list[tuple[Path, str]]:
        """The preset's shipped photos labelled with one of the model's classes, then `photos`'."""
        labels = set(served.labels)
        found = [(s.path, s.label) for s in cached_samples(served.info.preset, self.store.settings.cache_dir)
                 if s.label in labels] if served.info.preset else []
        found += [(Path(p), label) for p, label in self.photos() if label in labels]
        return list(dict.fromkeys(found))

    def lesion_blocks(self, chain: KnockoutChain) -> list[str]:
        """Every identity-shortcut block (the middle flow), then `LESION_CONV_BLOCKS`."""
        return ([b for b in chain.blocks if chain.facts.shortcuts.get(b) == "identity"]
                + [b for b in LESION_CONV_BLOCKS if b in chain.facts.shortcuts])

    def lesion(self) -> LesionTable:
        """Each branch removed in turn, over the labelled photos (cached per weights)."""
        served = self.model()
        with self._lock:
            if served.key in self._lesions:
                return self._lesions[served.key]
        chain = self.chain(served)
        photos = self.labelled_photos(served)
        if not photos:
            raise UserError("These weights have no labelled photos here to measure the lesion study on.")
        start = time.perf_counter()
        index = {label: i for i, label in enumerate(served.labels)}
        truth = np.array([index[label] for _, label in photos])
        blocks = self.lesion_blocks(chain)
        intact, lesioned = [], {b: [] for b in blocks}
        for at in range(0, len(photos), LESION_BATCH):
            batch = np.stack([served.preprocess(load_image(p)) for p, _ in photos[at:at + LESION_BATCH]])
            boundaries = chain.intact(batch)
            intact.append(probabilities(served.translated, boundaries[OUTPUT]).argmax(1))
            for block in blocks:
                out = chain.run(boundaries, [Knockout("skip_branch", block)])
                lesioned[block].append(probabilities(served.translated, out[OUTPUT]).argmax(1))
        top1 = np.concatenate(intact)
        rows = tuple(LesionRow(b, chain.facts.shortcuts[b], float((np.concatenate(v) == truth).mean()),
                               float((np.concatenate(v) == top1).mean())) for b, v in lesioned.items())
        table = LesionTable(served.key, len(photos), float((top1 == truth).mean()), rows, time.perf_counter() - start)
        with self._lock:
            self._lesions[served.key] = table
        return table
