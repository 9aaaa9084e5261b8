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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from PIL import Image

from demo.services import UserError
from demo.services.classify import CAM_ALPHA
from demo.services.explore import THUMB, cell_side
from demo.services.models import served_model
from demo.services.payloads import payload_to_image
from demo.services.teach.starter import starter_set
from demo.store import Prediction, ServedModel, Store
from xception_core.inputs.images import display_copy, load_image
from xception_core.io.labels import top_k
from xception_core.io.visualize import map_tile, overlay
from xception_core.runtime.knockout import (
    Boundaries, Knockout, KnockoutChain, KnockoutError, chain_of, parse_knockouts, probabilities,
)
from xception_core.runtime.ort import FEATURES, OUTPUT
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_samples

PHOTOS_KEPT = 3  # photos whose intact chain pass is kept (~20 MB each at 299 px)
CHAINS_KEPT = 1  # weights whose chain is kept (a chain holds its own re-blocked weights)
LESION_BATCH = 8  # photos per chain run in the lesion study
# Besides the middle flow, the lesion study removes these branches: their shortcut is a 1×1 conv.
LESION_CONV_BLOCKS = ("block4", "block13")
MAX_VISITOR_PHOTOS = 24  # a visitor's labelled uploads one study reads (measured at each click)
# Where the lesion study's photos come from, in the order they are counted.
LESION_SOURCES = ("preset", "starter", "visitor")


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
    """One removed branch over the labelled photos: top-1 accuracy (over the photos labelled with
    one of the model's classes), and agreement of the top-1 class with the intact network's (over
    every photo)."""

    block: str
    shortcut: str
    accuracy: float | None
    agreement: float


@dataclass(frozen=True)
class LesionRecords:
    """Some photos through the intact and each lesioned network: top-1 class indices.

    Attributes:
        sources: Photos from each source, in order ({source: count}, `LESION_SOURCES`).
        truth: (n,) the label's class index; -1 for a label that is none of the model's classes.
        intact: (n,) the intact network's top-1.
        lesioned: {block: (n,)} top-1 with that block's branch removed.
    """

    sources: dict[str, int]
    truth: np.ndarray
    intact: np.ndarray
    lesioned: dict[str, np.ndarray]
    seconds: float


@dataclass(frozen=True)
class LesionTable:
    """The lesion study: `photos` in all (`sources`: how many of each), `scored` of them labelled
    with one of the model's classes (top-1 accuracy is over those; None when there are none)."""

    weights: str
    photos: int
    intact_accuracy: float | None
    rows: tuple[LesionRow, ...]
    seconds: float
    sources: dict[str, int] = field(default_factory=dict)
    scored: int = 0
    visitor_offered: int = 0  # the visitor's labelled uploads in all (at most `MAX_VISITOR_PHOTOS` used)

    def to_json(self) -> dict[str, Any]:
        def r4(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"weights": self.weights, "photos": self.photos, "scored": self.scored, "sources": dict(self.sources),
                "visitor_offered": self.visitor_offered,
                "intact_accuracy": r4(self.intact_accuracy),
                "rows": [{"block": r.block, "shortcut": r.shortcut, "accuracy": r4(r.accuracy),
                          "agreement": round(r.agreement, 4)} for r in self.rows],
                "seconds": round(self.seconds, 2)}


def lesion_table(weights: str, shortcuts: dict[str, str], parts: Sequence[LesionRecords]) -> LesionTable:
    """The table of the photos of `parts` together."""
    truth = np.concatenate([p.truth for p in parts])
    intact = np.concatenate([p.intact for p in parts])
    scored = truth >= 0

    def accuracy(top1: np.ndarray) -> float | None:
        return float((top1[scored] == truth[scored]).mean()) if scored.any() else None

    sources: dict[str, int] = {}
    for part in parts:
        for source, n in part.sources.items():
            sources[source] = sources.get(source, 0) + n
    rows = []
    for block in parts[0].lesioned:
        top1 = np.concatenate([p.lesioned[block] for p in parts])
        rows.append(LesionRow(block, shortcuts[block], accuracy(top1), float((top1 == intact).mean())))
    return LesionTable(weights, int(truth.size), accuracy(intact), tuple(rows), sum(p.seconds for p in parts),
                       {k: v for k, v in sources.items() if v}, int(scored.sum()))


def starter_photos(settings: Settings) -> list[tuple[Path, str]]:
    """Teach's starter set as (file, class): its package photos and the bundled examples."""
    return [(path, name) for name, items in starter_set(settings).classes.items() for _, path in items]


def app_photos(preset: str | None, cache_dir: Path, starter: Sequence[tuple[Path, str]]) -> list[tuple[Path, str, str]]:
    """The app's own labelled photos, (file, label, source): the preset's shipped photos, then the
    starter set's not among them. Labels that are none of the model's classes stay (they count
    toward agreement, not accuracy)."""
    found: dict[Path, tuple[Path, str, str]] = {}
    for sample in cached_samples(preset, cache_dir) if preset else []:
        if sample.label:
            found.setdefault(Path(sample.path).resolve(), (Path(sample.path), sample.label, "preset"))
    for path, label in starter:
        found.setdefault(Path(path).resolve(), (Path(path), label, "starter"))
    return list(found.values())


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
        photos: The app's labelled photos beyond the preset's own, (path, label), read once per
            weights (default: Teach's starter set, `demo.services.teach.starter.starter_set`).
        visitor: A session's labelled uploads, (path, label) (Teach's
            `TeachService.labelled_uploads`), read at each study of that session.
    """

    def __init__(self, store: Store, photos: Callable[[], Sequence[tuple[Path, str]]] | None = None,
                 visitor: Callable[[Any], Sequence[tuple[Path, str]]] | None = None):
        self.store = store
        self.photos = photos or (lambda: starter_photos(store.settings))
        self.visitor = visitor or (lambda _session: ())
        self._lock = threading.Lock()
        self._chains: OrderedDict[str, KnockoutChain] = OrderedDict()
        self._passes: OrderedDict[tuple[str, str], Boundaries] = OrderedDict()
        self._lesions: dict[str, LesionRecords | None] = {}  # the app's own photos, per weights

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

    def labelled_photos(self, served: ServedModel) -> list[tuple[Path, str, str]]:
        """The app's own labelled photos for the served weights (`app_photos`)."""
        return app_photos(served.info.preset, self.store.settings.cache_dir, self.photos())

    def lesion_blocks(self, chain: KnockoutChain) -> list[str]:
        """Every identity-shortcut block (the middle flow), then `LESION_CONV_BLOCKS`."""
        return ([b for b in chain.blocks if chain.facts.shortcuts.get(b) == "identity"]
                + [b for b in LESION_CONV_BLOCKS if b in chain.facts.shortcuts])

    def _records(self, served: ServedModel, chain: KnockoutChain, photos: Sequence[tuple[Path, str, str]],
                 images: Sequence[Image.Image] | None = None) -> LesionRecords:
        """`photos` (file, label, source) through the intact network and each lesion."""
        start = time.perf_counter()
        index = {label: i for i, label in enumerate(served.labels)}
        blocks = self.lesion_blocks(chain)
        intact, lesioned = [], {b: [] for b in blocks}
        for at in range(0, len(photos), LESION_BATCH):
            chunk = photos[at:at + LESION_BATCH]
            pictures = images[at:at + LESION_BATCH] if images is not None else [load_image(p) for p, _, _ in chunk]
            boundaries = chain.intact(np.stack([served.preprocess(image) for image in pictures]))
            intact.append(probabilities(served.translated, boundaries[OUTPUT]).argmax(1))
            for block in blocks:
                out = chain.run(boundaries, [Knockout("skip_branch", block)])
                lesioned[block].append(probabilities(served.translated, out[OUTPUT]).argmax(1))
        sources: dict[str, int] = {}
        for _, _, source in photos:
            sources[source] = sources.get(source, 0) + 1
        empty = np.zeros(0, dtype=np.int64)
        return LesionRecords(sources, np.array([index.get(label, -1) for _, label, _ in photos], dtype=np.int64),
                             np.concatenate(intact) if intact else empty,
                             {b: np.concatenate(v) if v else empty for b, v in lesioned.items()},
                             time.perf_counter() - start)

    def _visitor_photos(self, session: Any) -> tuple[list[tuple[Path, str, str]], list[Image.Image], int]:
        """The session's labelled uploads that decode, at most `MAX_VISITOR_PHOTOS`: (photos,
        their images, how many the visitor has in all)."""
        given = list(self.visitor(session)) if session else []
        photos, images = [], []
        for path, label in given[:MAX_VISITOR_PHOTOS]:
            try:
                images.append(payload_to_image({"path": str(path)}, self.store.settings.upload_dir))
            except UserError:
                continue  # gone with the upload folder's age limit, or not a photo after all
            photos.append((Path(path), str(label), "visitor"))
        return photos, images, len(given)

    def lesion(self, session: Any = None) -> LesionTable:
        """Each branch removed in turn, over the app's labelled photos (their records cached per
        weights) and the session's labelled uploads (measured at each call, never cached: no
        visitor's photos reach another's table)."""
        served = self.model()
        chain = self.chain(served)
        with self._lock:
            known, own = served.key in self._lesions, self._lesions.get(served.key)
        if not known:
            photos = self.labelled_photos(served)
            own = self._records(served, chain, photos) if photos else None
            with self._lock:
                self._lesions[served.key] = own
        visitor, images, offered = self._visitor_photos(session)
        parts = [p for p in (own, self._records(served, chain, visitor, images) if visitor else None)
                 if p is not None and p.truth.size]
        if not parts:
            raise UserError("These weights have no labelled photos here to measure the lesion study on: "
                            "label some photos in Teach and run it again.")
        table = lesion_table(served.key, chain.facts.shortcuts, parts)
        return replace(table, visitor_offered=offered)
