"""Models for a server: each set of weights loaded once, lazily, in the background, shared by
every request and tab, with a status line the UI can show while weights download.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import keras
import numpy as np

from xception_core.inference import Classifier, Prediction, head_layers
from xception_core.labels import top_k
from xception_core.model import block_output_layer, build_architecture
from xception_core.presets import AUTO_ORDER, PRESETS
from xception_core.spec import XCEPTION_SPEC
from xception_core.weights import WEIGHTS_ENV, WeightsUnavailableError, copy_weights, load_weights_into, weights_info

logger = logging.getLogger(__name__)

MAX_BATCH_ENV, BATCH_WAIT_ENV = "XCEPTION_MAX_BATCH", "XCEPTION_BATCH_WAIT_MS"
# Batch what is already waiting, never wait for more: on 2 CPU cores a batch of 8 runs no more
# images per second than 8 single calls (the forward already keeps both cores busy), so a wait
# would only add latency to a lone request (bench/README.md, "Micro-batching").
DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S = 8, 0.0


@dataclass
class _Slot:
    state: Literal["loading", "ready", "failed"] = "loading"
    classifier: Classifier | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    ready: threading.Event = field(default_factory=threading.Event)


class ModelStore:
    """Thread-safe registry of classifiers keyed by weights name ('imagenet', 'kitchenware', or a
    file path from `XCEPTION_WEIGHTS`).

    `start()` returns at once; the default weights (env variable, else the presets in
    `AUTO_ORDER`) load in a background thread, then the other presets, so a selector can offer
    whatever could be had. Nothing is fetched at import time.
    """

    def __init__(self, candidates: list[str] | None = None, *, load_all: bool = True,
                 max_batch: int | None = None, max_wait_s: float | None = None):
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        # Micro-batching of concurrent classifies (see MicroBatcher); the environment can tune it.
        self.max_batch = max_batch if max_batch is not None else int(os.environ.get(MAX_BATCH_ENV) or DEFAULT_MAX_BATCH)
        self.max_wait_s = max_wait_s if max_wait_s is not None else (
            float(os.environ[BATCH_WAIT_ENV]) / 1000 if os.environ.get(BATCH_WAIT_ENV) else DEFAULT_MAX_WAIT_S)
        self.candidates: list[str] = candidates or ([env] if env else list(AUTO_ORDER))
        self.load_all = load_all
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._default: str | None = None
        self._default_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._variants: dict[tuple[str, str], keras.Model] = {}
        self._batchers: dict[int, MicroBatcher] = {}

    # ---------------------------------------------------------------- loading

    def start(self) -> "ModelStore":
        """Starts background loading (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
                self._thread.start()
        return self

    def _load_all(self) -> None:
        for key in self.candidates:
            if self._load(key) and self._default is None:
                self._default = key
                self._default_ready.set()
                if not self.load_all:
                    break
        self._default_ready.set()  # also when nothing loaded: waiters get the error

    def _load(self, key: str) -> bool:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        try:
            model = load_weights_into(key)
            classifier = Classifier(model)
            classifier.warm_up()
            slot.classifier = classifier
            slot.state = "ready"
            logger.info("weights %r ready in %.1f s", key, time.monotonic() - slot.started)
            return True
        except (WeightsUnavailableError, ValueError, OSError) as exc:
            slot.state, slot.error = "failed", str(exc)
            logger.warning("weights %r unavailable: %s", key, exc)
            return False
        finally:
            slot.ready.set()

    # ---------------------------------------------------------------- queries

    @property
    def default_key(self) -> str | None:
        return self._default

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        ready = [k for k, s in self._slots.items() if s.state == "ready"]
        return sorted(ready, key=lambda k: (k != self._default, self.candidates.index(k) if k in self.candidates else 99))

    def title(self, key: str) -> str:
        slot = self._slots.get(key)
        if slot and slot.classifier:
            return slot.classifier.title
        return PRESETS[key].title if key in PRESETS else key

    def status(self) -> str:
        """One line for the UI: what is loading, ready or failed."""
        parts = []
        for key in self.candidates:
            slot = self._slots.get(key)
            if slot is None:
                parts.append(f"{self.title(key)}: waiting")
            elif slot.state == "loading":
                parts.append(f"{self.title(key)}: loading ({time.monotonic() - slot.started:.0f} s; first start downloads the weights)")
            elif slot.state == "ready":
                parts.append(f"{self.title(key)}: ready")
            else:
                parts.append(f"{self.title(key)}: unavailable")
        return " · ".join(parts)

    def is_ready(self) -> bool:
        return self._default is not None

    def get(self, key: str | None = None, timeout: float | None = None) -> Classifier:
        """The classifier for `key` (default weights when None), waiting for it to load.

        Raises:
            WeightsUnavailableError: It failed to load, or nothing could be loaded.
            TimeoutError: Still loading after `timeout` seconds.
            ValueError: Unknown key.
        """
        self.start()
        if key is None:
            if not self._default_ready.wait(timeout):
                raise TimeoutError("the model is still loading; try again in a few seconds")
            if self._default is None:
                errors = "; ".join(f"{k}: {s.error}" for k, s in self._slots.items())
                raise WeightsUnavailableError(f"no pretrained weights could be loaded ({errors})")
            key = self._default
        slot = self._slots.get(key)
        if slot is None:
            if key not in self.candidates:
                raise ValueError(f"unknown weights {key!r}; available: {self.available()}")
            deadline = None if timeout is None else time.monotonic() + timeout
            while (slot := self._slots.get(key)) is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"weights {key!r} are still loading")
                time.sleep(0.05)
        if not slot.ready.wait(timeout):
            raise TimeoutError(f"weights {key!r} are still loading; try again in a few seconds")
        if slot.classifier is None:
            raise WeightsUnavailableError(f"weights {key!r} are unavailable: {slot.error}")
        return slot.classifier

    def predict(self, classifier: Classifier, x, k: int = 5):
        """One preprocessed image (size, size, 3) → `Prediction`, batched with concurrent callers."""
        with self._lock:
            batcher = self._batchers.get(id(classifier))
            if batcher is None:
                batcher = self._batchers[id(classifier)] = MicroBatcher(
                    classifier.forward, max_batch=self.max_batch, max_wait_s=self.max_wait_s)
        features, probs = batcher.run(x)
        return Prediction(top_k(probs, classifier.labels, min(k, len(classifier.labels))), probs, features)

    def model_variant(self, key: str | None, variant: str) -> keras.Model:
        """The classifier's weights in another wiring ('article'), built once and cached."""
        classifier = self.get(key)
        if variant == classifier.info.variant:
            return classifier.model
        cache_key = (key or self._default or "", variant)
        with self._lock:
            if cache_key not in self._variants:
                source = classifier.model
                info = weights_info(source)
                size = classifier.input_size
                features = build_architecture(input_shape=(size, size, 3), include_top=False, variant=variant)
                copy_weights(source, features)
                x = features.output
                # The head's layers are shared, not copied: both wirings use the same classifier.
                last = source.get_layer(block_output_layer(XCEPTION_SPEC.blocks[-1], info.variant))
                for layer in head_layers(source, last):
                    x = layer(x)
                model = keras.Model(features.inputs[0], x, name=f"{source.name}_{variant}")
                model.xception_info = dataclasses.replace(info, variant=variant)
                self._variants[cache_key] = model
            return self._variants[cache_key]


class MicroBatcher:
    """Groups concurrent single-image forwards into one batched call.

    Each request thread calls `run(x)` and blocks; a worker thread takes the first waiting input,
    collects any others that arrive within `max_wait_s` (up to `max_batch`), runs `fn` once on
    the stack and hands each caller its row. Inputs are validated by the callers, so one bad
    image never fails its neighbours.
    """

    def __init__(self, fn, *, max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._queue: "queue.Queue[tuple]" = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run, for tests and the benchmark
        threading.Thread(target=self._work, name="micro-batcher", daemon=True).start()

    def run(self, x):
        """Runs `fn` on `x[None]` as part of a batch; returns that row of each of `fn`'s outputs."""
        done = threading.Event()
        box: dict = {}
        self._queue.put((x, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _work(self) -> None:
        while True:
            items = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(items) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    items.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            self.batches.append(len(items))
            del self.batches[:-1000]
            try:
                outputs = self.fn(np.stack([x for x, _, _ in items]))
                for i, (_, box, _) in enumerate(items):
                    box["result"] = tuple(o[i] for o in outputs)
            except Exception as exc:  # handed to every caller of this batch; the worker lives on
                for _, box, _ in items:
                    box["error"] = exc
            for _, _, done in items:
                done.set()
