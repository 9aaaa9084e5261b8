"""The `Store` of this process: each set of weights loaded once, in a background thread, and
served to every request (`ModelStore`): the default weights first, then the other presets, each
from its translation (`demo.store.cache`) as a `demo.store.served.LocalServedModel`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from demo.errors import LoadFailure, echo, failure_reason, load_failure
from demo.store.interface import (SlotStatus, State, candidate_sources, default_candidates, has_settled,
                                  weights_title)
import demo.store.cache as store_cache  # its `load_model`, looked up at each call (tests replace it)
from demo.store.cache import TranslationCache, calibration, model_labels
from demo.store.served import KerasServedModel, LocalServedModel
from xception_core.arch.graph import separable_names
from xception_core.arch.receptive import receptive_field
from xception_core.runtime.activations import ActivationExplorer
from xception_core.runtime.operation import block_layers
from xception_core.runtime.ort import available
from xception_core.runtime.translated import TranslatedModel
from xception_core.settings import Settings
from xception_core.weights.source import WeightsUnavailableError

__all__ = ["ModelStore"]

logger = logging.getLogger(__name__)

Served = LocalServedModel | KerasServedModel


@dataclass
class _Slot:
    """One candidate's loading state. Written by the loader thread and read by request threads,
    always under the store's lock."""

    state: State = "waiting"
    served: Served | None = None
    error: str = ""
    failure: LoadFailure | None = None
    started: float | None = None  # time.monotonic() when loading began
    ready: threading.Event = field(default_factory=threading.Event)  # set once it is ready or failed


class ModelStore:
    """The `Store` of this process: a thread-safe registry of served models keyed by weights name
    ('imagenet', 'kitchenware', or a file path from `Settings.weights`).

    `start()` returns at once; the default weights (`settings.weights`, else the presets in
    `AUTO_ORDER`) load in a background thread, then the other presets, so a selector can offer
    whatever could be had. Nothing is fetched at import time.
    """

    def __init__(self, settings: Settings | None = None, candidates: Sequence[str] | None = None):
        self.settings = settings or Settings()
        # Keys (`weights_key`) everywhere; the source (a preset name or a file path) only to load.
        self._sources = candidate_sources(tuple(candidates or default_candidates(self.settings)))
        self.candidates: tuple[str, ...] = tuple(self._sources)
        # A slot per candidate from the start: the loader changes slots, never this dict, and
        # every read of a slot's fields happens under `_lock`.
        self._slots: dict[str, _Slot] = {key: _Slot() for key in self.candidates}
        self._lock = threading.Lock()  # held only for reads and writes of state, never for a load
        self._default: str | None = None
        self._default_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_ready: list[Callable[[Served], None]] = []
        self.cache = TranslationCache(self.settings)

    # ---------------------------------------------------------------- loading

    def start(self) -> "ModelStore":
        """Starts background loading (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
                self._thread.start()
        return self

    def _load_all(self) -> None:
        try:
            for key in self.candidates:
                if self._load(key) and self._default is None:
                    with self._lock:
                        self._default = key
                        callbacks, self._on_ready = self._on_ready, []
                    self._default_ready.set()
                    for callback in callbacks:  # after the default is served: never on the first classify's path
                        self._call(callback)
        finally:
            # Whatever happened, nobody waits forever: candidates never reached are failed too.
            for slot in self._slots.values():
                with self._lock:
                    if not slot.ready.is_set():
                        slot.state, slot.error = "failed", slot.error or "loading stopped"
                slot.ready.set()
            self._default_ready.set()  # also when nothing loaded: waiters get the error

    def when_ready(self, callback: Callable[[Served], None]) -> None:
        """Runs `callback(default model)` once the default weights are ready: in the loader
        thread, before other weights load (in a new thread if they are ready already). For
        warm-ups that must not wait for a page view; a failing callback is logged."""
        with self._lock:
            if self._default is None:
                self._on_ready.append(callback)
                return
        threading.Thread(target=self._call, args=(callback,), name="when-ready", daemon=True).start()

    def _call(self, callback: Callable[[Served], None]) -> None:
        try:
            callback(self.get(self._default))
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first user time
            logger.warning("after-load step %s failed: %s", getattr(callback, "__name__", callback), exc)

    def _load(self, key: str) -> bool:
        slot = self._slots[key]
        with self._lock:
            slot.state, slot.started = "loading", time.monotonic()
        try:
            served = self._serve(key)
        except Exception as exc:  # noqa: BLE001 - any failure (a BadZipFile, a damaged HDF5, an
            # unregistered layer...) must end as "unavailable: <reason>", never as a dead loader
            with self._lock:
                slot.state, slot.error, slot.failure = "failed", failure_reason(exc), load_failure(exc)
            logger.warning("weights %r unavailable: %s: %s", key, type(exc).__name__, exc)
            return False
        else:
            with self._lock:
                slot.served, slot.state = served, "ready"
            logger.info("weights %r ready in %.1f s", key, time.monotonic() - (slot.started or 0.0))
            return True
        finally:
            slot.ready.set()

    def _serve(self, key: str) -> Served:
        """The served model of `key`: from its cached translation when one checks out (no
        TensorFlow), else loaded in Keras, translated and cached for the next start."""
        settings = self.settings
        source = self._sources[key]  # a preset's name or a file's path; `key` names it everywhere else
        if settings.backend == "tf" or not available():
            return self._serve_keras(key, source)
        translation, loaded = self.cache.translation(key, source)
        # The default weights are the ones the explorer warms up: their forward runs in the
        # all-blocks session from the start, one ONNX Runtime session instead of two.
        model = TranslatedModel(translation, precision=settings.precision, threads=settings.onnx_threads,
                                all_blocks=self._default is None)
        model.warm_up()
        return LocalServedModel(key, model, settings, keras=loaded, source=source)

    def _serve_keras(self, key: str, source: str) -> KerasServedModel:
        """Backend 'tf', or no ONNX Runtime: the Keras model serves, as a `Classifier`."""
        from xception_core.runtime.classifier import Classifier

        settings = self.settings
        loaded = store_cache.load_model(source, settings=settings)
        classifier = Classifier(loaded, backend=settings.backend, precision=settings.precision,
                                calibration=(calibration(loaded.info.preset, loaded.input_size, settings)
                                             if settings.precision == "int8" else ()),
                                threads=settings.onnx_threads)
        classifier.warm_up()
        return KerasServedModel(key, classifier, model_labels(loaded.info, classifier.classes, settings), settings,
                                source=source)

    # ---------------------------------------------------------------- queries

    @property
    def default_key(self) -> str | None:
        return self._default

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        with self._lock:
            ready = [key for key, slot in self._slots.items() if slot.state == "ready"]
            default = self._default
        return sorted(ready, key=lambda k: (k != default, self.candidates.index(k)))

    def title(self, key: str) -> str:
        slot = self._slots.get(key)
        with self._lock:
            served = slot.served if slot is not None else None
        return served.title if served is not None else weights_title(self._sources.get(key, key))

    def statuses(self) -> list[SlotStatus]:
        """Each candidate's state, in loading order."""
        now = time.monotonic()
        with self._lock:
            rows = [(key, slot.state, slot.started, slot.error, slot.failure, slot.served)
                    for key, slot in self._slots.items()]
        return [SlotStatus(key, served.title if served is not None else weights_title(self._sources[key]), state,
                           0.0 if started is None else now - started, error, failure)
                for key, state, started, error, failure, served in rows]

    def is_ready(self) -> bool:
        return self._default is not None

    def settled(self) -> bool:
        return has_settled(self.is_ready(), self.statuses())

    def replicas(self) -> None:
        """None: the models run in this process."""
        return None

    def activation_explorer(self) -> ActivationExplorer:
        """A new activation cache for the Explore tab, on the app's backend. Its all-blocks pass is
        built and run once as soon as the default model is ready, for API callers who never open
        the page."""
        explorer = ActivationExplorer(max_entries=8, backend=self.settings.backend, threads=self.settings.onnx_threads)
        self.when_ready(lambda served: explorer.warm_up(served.explorable(served.info.variant)))
        return explorer

    def warm_operation_view(self, blocks: Sequence[str] = ()) -> threading.Event:
        """Builds Inside one operation's pass of the default weights (their own wiring) and runs
        it once for each of `blocks` (ONNX Runtime's first run of a set of outputs costs more
        than the next ones) as soon as they are ready, so a visitor's first click there costs
        what any other photo's first click costs. Returns an event set once that is done (or
        has failed)."""
        done = threading.Event()

        def warm(served: Served) -> None:
            try:
                variant, size = served.info.variant, served.input_size
                source, spec = served.operation_pass(variant), served.info.arch.spec
                zeros = np.zeros((1, size, size, 3), np.float32)
                for block in blocks or [next(b.name for b in spec.blocks if separable_names(b))]:
                    source.run(zeros, list(block_layers(block, variant, spec)))
                    # What else a first click reads once: the weights' index (memory-mapped, not
                    # read) and the layers' geometry at this input size.
                    served.operation_params(block)
                    receptive_field(separable_names(spec.block(block))[0], 0, 0, size, variant)
            finally:
                done.set()

        self.when_ready(warm)
        return done

    def get(self, key: str | None = None, timeout: float | None = None) -> Served:
        """The served model for `key` (default weights when None), waiting for it to load.

        Raises:
            WeightsUnavailableError: It failed to load, or nothing could be loaded.
            TimeoutError: Still loading after `timeout` seconds.
            ValueError: Unknown key.
        """
        self.start()
        if key is None:
            if not self._default_ready.wait(timeout):
                raise TimeoutError("the model is still loading; try again in a few seconds")
            with self._lock:
                key = self._default
                errors = "; ".join(f"{k}: {slot.error}" for k, slot in self._slots.items())
            if key is None:
                raise WeightsUnavailableError(f"no pretrained weights could be loaded ({errors})")
        slot = self._slots.get(key) if isinstance(key, str) else None
        if slot is None:
            raise ValueError(f"unknown weights {echo(key)}; available: {', '.join(self.available()) or 'none yet'}")
        if not slot.ready.wait(timeout):
            raise TimeoutError(f"weights {key!r} are still loading; try again in a few seconds")
        with self._lock:
            served, error = slot.served, slot.error
        if served is None:
            raise WeightsUnavailableError(f"weights {key!r} are unavailable: {error}")
        return served
