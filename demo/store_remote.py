"""The app's model store on a Ray Serve cluster: the `demo.store.Store` protocol, the models in replicas.

`RemoteModelStore` answers what the app asks of a store (`get`, `statuses`, `available`,
`local`, ...), but each image's forward pass, Grad-CAM and all-blocks activations run in a
replica of the `scale.deployment` deployment, reached through a Serve handle. The rest of the
app does not know which store it has: `demo.server.make_store` picks one from
`Settings.model_store`, and the Serve ingress (`scale.ingress`) passes this one in.

What stays in the app process: decoding and preprocessing (`demo.store.prepared`, as in the local
store), labels and top-k (`Prediction.of`), the Explore tab's activation cache (the same
`ActivationExplorer`, filled from the replicas), and, only once someone asks for an architecture
description, the operation view or an export, a local copy of the weights from the same
translation cache (no TensorFlow once translated; no visitor's classify ever runs on it).

Calls are retried when a replica dies under them (Serve routes the retry to a live replica and
starts a new one); an error raised by the replica's own code is not retried but re-raised as it
was, without the remote traceback.

Needs `requirements-scale.txt` (Ray Serve); nothing else in the app imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError

from demo.store import (LocalServedModel, Prediction, SlotStatus, TranslationCache, candidate_sources,
                        default_candidates, has_settled, prepared, weights_title)
from xception_core.runtime.operation import BlockParams, LayerSource
from xception_core.runtime.translated import TranslatedModel
from xception_core.weights.source import ModelInfo, WeightsUnavailableError
from xception_core.runtime.activations import ActivationExplorer, BlockDifference, ImageActivations
from xception_core.settings import Settings

if TYPE_CHECKING:
    from xception_core.model import LoadedModel
    from xception_core.runtime.introspection import ModelDescription

logger = logging.getLogger(__name__)

MODEL_DEPLOYMENT = "XceptionModel"  # the deployment's name in the Serve config (scale/serve_config.yaml)
RETRIES = 4  # a dead replica's requests: each retry goes to a live replica
RETRY_PAUSE_S = 0.25
CALL_TIMEOUT_S = 120.0  # one forward, Grad-CAM or activations call, queueing included
STATUS_TIMEOUT_S = 3.0  # /healthz and the page's status line wait at most this for a replica
STATUS_TTL_S = 2.0  # the page polls status every few seconds; one remote call serves them all
# Lost replicas (the process died, or Serve had none to route to): the request can go elsewhere.
# A timeout is not retried: the replicas are busy, and sending the request again adds to that.
RETRYABLE = (RayActorError, DeploymentUnavailableError)


class ReplicasUnavailableError(RuntimeError):
    """No replica answered after the retries."""


@dataclass(frozen=True)
class RemoteStatus:
    """What one replica says about its models (every replica loads the same ones)."""

    default: str | None
    available: list[str]
    statuses: list[SlotStatus]
    titles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wiring:
    """Names the weights and wiring of an activations call (the replica has the model)."""

    info: ModelInfo


class RemoteServedModel:
    """A `ServedModel` whose forward pass and Grad-CAM run in a replica.

    Labels, preprocessing and top-k are the local store's (`prepared`, `Prediction.of`), so a
    prediction is built exactly as in the local store.
    """

    def __init__(self, store: "RemoteModelStore", key: str, labels: tuple[str, ...], info: ModelInfo,
                 input_size: int):
        self.store, self.key, self.labels = store, key, labels
        self._info, self._input_size = info, input_size

    @property
    def loaded(self) -> LoadedModel:
        """The weights as a Keras model in this process: Teach's `.keras` export only."""
        return self.store.local(self.key).loaded

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def title(self) -> str:
        return self._info.title

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def backend(self) -> None:
        return None

    @property
    def precision(self) -> None:
        return None

    def preprocess(self, image: Any) -> np.ndarray:
        return prepared(image, self._input_size)

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        """(size, size, 3) → `Prediction`: the forward batched in the replica, top-k here."""
        features, probabilities = self.store.call("predict", self.key, np.asarray(x, np.float32))
        return Prediction.of(features, probabilities, self.labels, k)

    def classify(self, image: Any, k: int = 5) -> Prediction:
        return self.predict(self.preprocess(image), k)

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM map in [0, 1] of one class, computed in a replica."""
        return self.store.call("gradcam", self.key, np.asarray(features, np.float32), int(class_index))

    def description(self, variant: str) -> ModelDescription:
        """The block table of a wiring (or 'reference'), from the local copy's translation."""
        return self.store.local(self.key).description(variant)

    def explorable(self, variant: str) -> Wiring:
        """What `RemoteExplorer.compute` is given: it only reads the wiring."""
        return Wiring(dataclasses.replace(self._info, variant=variant))

    def operation_pass(self, variant: str) -> LayerSource:
        return self.store.local(self.key).operation_pass(variant)

    def operation_params(self, block: str) -> BlockParams:
        return self.store.local(self.key).operation_params(block)

    def export(self, kind: str, variant: str, folder: Path, name: str) -> Path:
        return self.store.local(self.key).export(kind, variant, folder, name)


class RemoteExplorer:
    """The Explore tab's activation cache (`ActivationSource`) whose misses are each one all-blocks
    forward in a replica: an `ActivationExplorer` used as the cache, filled through its `cached`."""

    def __init__(self, store: "RemoteModelStore", max_entries: int = 8):
        self.store = store
        self.cache = ActivationExplorer(max_entries)

    def warm_up(self, loaded: LoadedModel) -> None:
        """Nothing to do here: each replica warms its own explorer once its weights are loaded."""

    def compute(self, loaded: LoadedModel, x: np.ndarray, *, weights_key: str | None = None
                ) -> tuple[ImageActivations, bool]:
        """As `ActivationExplorer.compute`; `loaded` only names the wiring, the replica has the weights."""
        x = np.asarray(x, dtype=np.float32)
        variant = loaded.info.variant
        weights_key = weights_key or self.store.default_key or ""
        return self.cache.cached(ActivationExplorer.key_for(x, weights_key, variant),
                                 lambda: self.store.call("activations", weights_key, variant, x))

    def lookup(self, key: str) -> ImageActivations | None:
        return self.cache.lookup(key)

    def compare(self, paper: ImageActivations, article: ImageActivations) -> list[BlockDifference]:
        return self.cache.compare(paper, article)

    @property
    def forward_calls(self) -> int:
        """Records computed in replicas for this cache (one all-blocks forward each)."""
        return self.cache.forward_calls

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def __len__(self) -> int:
        return len(self.cache)


class RemoteModelStore:
    """The `demo.store.Store` protocol over a Serve handle to the model deployment.

    Args:
        handle: A `DeploymentHandle` of `scale.deployment.XceptionModel` (or anything whose
            methods answer `.remote(...)` with a response that has `.result(timeout_s=...)`).
        settings: The app's settings (upload folder, exports, candidates for the status line).
        clock: Seconds, monotonic: how old the replicas' last status is (a fake one in tests).
    """

    def __init__(self, handle: Any, settings: Settings | None = None, clock: Callable[[], float] = time.monotonic):
        self.handle = handle
        self.settings = settings or Settings()
        self._sources = candidate_sources(default_candidates(self.settings))  # {key: preset name or file}
        self.candidates: tuple[str, ...] = tuple(self._sources)
        self.retries = 0  # calls sent again after a replica was lost (tests, bench)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._status: RemoteStatus | None = None
        self._status_lock = threading.Lock()
        self._status_at: float | None = None  # clock() of the last status question
        self._served: dict[str, RemoteServedModel] = {}
        self._local_copies: dict[str, LocalServedModel] = {}
        self._local_copies_lock = threading.Lock()  # a load takes seconds: never under `_lock`
        self._replicas: tuple[float | None, dict[str, int]] = (None, {})

    @classmethod
    def connect(cls, settings: Settings) -> "RemoteModelStore":
        """The store of a process outside Serve (`python app.py` with XCEPTION_MODEL_STORE=ray):
        joins the running cluster (RAY_ADDRESS, else the local one) and the deployment of
        `settings.serve_app`."""
        if not ray.is_initialized():
            ray.init(address="auto", logging_level=logging.WARNING)
        return cls(serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=settings.serve_app), settings)

    # ---------------------------------------------------------------- calls

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S, retries: int = RETRIES) -> Any:
        """`method(*args)` on some replica; retried on another one when a replica is lost.

        Raises:
            ReplicasUnavailableError: No replica answered after `retries` retries.
            TimeoutError: No answer within `timeout` seconds (not retried).
            Whatever the replica's code raised (e.g. `WeightsUnavailableError`, `ValueError`).
        """
        last: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                time.sleep(RETRY_PAUSE_S * attempt)
            try:
                return getattr(self.handle, method).remote(*args).result(timeout_s=timeout)
            except RayTaskError as exc:  # the replica's own code raised: same answer elsewhere
                cause = exc.cause if isinstance(exc.cause, Exception) else RuntimeError(str(exc.cause))
                raise cause from None
            except TimeoutError:
                raise TimeoutError(f"the model replicas did not answer within {timeout:.0f} s; "
                                   "they are busy or starting, try again shortly") from None
            except RETRYABLE as exc:
                last = exc
                logger.warning("replica call %s failed (%s); retrying", method, type(exc).__name__)
        raise ReplicasUnavailableError(f"no model replica answered {method!r} ({type(last).__name__})")

    def _remote_status(self) -> RemoteStatus | None:
        """The replicas' status, at most `STATUS_TTL_S` old (one thread asks; the others take the
        last answer meanwhile); None while no replica answers."""
        if self._fresh(self._status_at) or not self._status_lock.acquire(blocking=False):
            return self._status
        try:
            try:
                status = self.call("status", timeout=STATUS_TIMEOUT_S, retries=0)
            except (ReplicasUnavailableError, TimeoutError) as exc:
                logger.info("model replicas not answering yet: %s", exc)
                status = None
            self._status, self._status_at = status, self._clock()
            return status
        finally:
            self._status_lock.release()

    def _fresh(self, asked_at: float | None) -> bool:
        return asked_at is not None and self._clock() - asked_at < STATUS_TTL_S

    # ---------------------------------------------------------------- the Store protocol

    def start(self) -> "RemoteModelStore":
        """The replicas load their models themselves; nothing to start here."""
        return self

    @property
    def default_key(self) -> str | None:
        status = self._remote_status()
        return status.default if status else None

    def available(self) -> list[str]:
        status = self._remote_status()
        return list(status.available) if status else []

    def title(self, key: str) -> str:
        status = self._remote_status()
        if status and key in status.titles:
            return status.titles[key]
        return weights_title(self._sources.get(key, key))

    def statuses(self) -> list[SlotStatus]:
        status = self._remote_status()
        if status is not None:
            return list(status.statuses)
        waited = self._clock() - self._started
        return [SlotStatus(key, self.title(key), "loading", waited) for key in self.candidates]

    def is_ready(self) -> bool:
        return self.default_key is not None

    def settled(self) -> bool:
        return has_settled(self.is_ready(), self.statuses())

    def replicas(self) -> dict[str, int]:
        """The model deployment's replicas by state ('RUNNING', 'STARTING', ...), from Serve's
        controller, at most `STATUS_TTL_S` old."""
        at, counts = self._replicas
        if self._fresh(at):
            return counts
        try:
            app = serve.status().applications.get(self.settings.serve_app)
            deployment = app.deployments.get(MODEL_DEPLOYMENT) if app else None
            counts = {str(getattr(k, "value", k)): int(v) for k, v in deployment.replica_states.items() if v} \
                if deployment else {}
        except Exception as exc:  # noqa: BLE001 - health reports what it can
            logger.warning("Serve status unavailable: %s", exc)
            counts = {}
        self._replicas = (self._clock(), counts)
        return counts

    def get(self, key: str | None = None, timeout: float | None = None) -> RemoteServedModel:
        """The served model for `key` (default weights when None), waiting for a replica.

        Raises:
            WeightsUnavailableError: The replicas could not load it.
            TimeoutError: No replica ready after `timeout` seconds.
            ValueError: Unknown key.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            status = self._remote_status()
            if status is not None and status.default is not None:
                break
            if status is not None and all(s.state == "failed" for s in status.statuses):
                errors = "; ".join(f"{s.key}: {s.error}" for s in status.statuses)
                raise WeightsUnavailableError(f"no pretrained weights could be loaded ({errors})")
            if deadline is not None and self._clock() > deadline:
                raise TimeoutError("the model is still loading; try again in a few seconds")
            time.sleep(0.5)
        key = key or status.default
        with self._lock:
            if key in self._served:
                return self._served[key]
        labels, info, input_size = self.call("served", key)  # raises as the replica's store does
        served = RemoteServedModel(self, key, tuple(labels), info, int(input_size))
        with self._lock:
            return self._served.setdefault(key, served)

    def local(self, key: str | None) -> LocalServedModel:
        """A copy of the weights in this process, from the translation cache (no TensorFlow once
        translated), for what the replicas do not answer: block tables, the operation view, the
        exports and Teach's `.keras`. Made once per key; no visitor's classify runs on it."""
        served = self.get(key)
        with self._local_copies_lock:
            local = self._local_copies.get(served.key)
            if local is None:
                source = self._sources.get(served.key, served.key)
                translation, loaded = TranslationCache(self.settings).translation(served.key, source)
                model = TranslatedModel(translation, threads=self.settings.onnx_threads)
                local = self._local_copies[served.key] = LocalServedModel(served.key, model, self.settings,
                                                                          keras=loaded, source=source)
            return local

    def warm_operation_view(self, blocks: Sequence[str] = ()) -> None:
        """Nothing ahead of time: the page process's local copy is made on first need."""
        return None

    def activation_explorer(self) -> RemoteExplorer:
        """A new activation cache for the Explore tab whose forwards run in the replicas."""
        return RemoteExplorer(self, max_entries=8)
