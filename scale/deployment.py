"""The model deployment: each replica loads the weights once, through the app's own local store
(`demo.store.ModelStore`: the same factory, labels, calibration and warm-up as `python app.py`),
and answers what a `demo.store_remote.RemoteModelStore` asks: forward passes batched across
concurrent callers with `@serve.batch`, Grad-CAM, all-blocks activations and the loading status.

Replica resources, counts and autoscaling live in the Serve config (`scale/serve_config.yaml`);
the batch size and wait come from `Settings` (XCEPTION_MAX_BATCH, XCEPTION_BATCH_WAIT_MS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import defaultdict

import numpy as np
import ray
from ray import serve

from demo.store import ModelStore
from demo.store_remote import MODEL_DEPLOYMENT, RemoteStatus
from scale import api
from xception_core.runtime.activations import ImageActivations
from xception_core.settings import Settings

logger = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 900.0  # a first start on a fresh node may download the weights


def replica_threads(settings: Settings) -> Settings:
    """`settings` with ONNX Runtime's threads set to the CPUs Ray reserved for this replica (at
    least 1), so that replicas sharing a machine do not each start one thread per core."""
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    except Exception:  # noqa: BLE001 - outside an actor: keep the settings as they are
        return settings
    return dataclasses.replace(settings, onnx_threads=max(1, int(round(cpus))))


@serve.deployment(
    name=MODEL_DEPLOYMENT,
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=16,
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=5,
)
class XceptionModel:
    """One replica: the app's models, a batched forward and an activation cache.

    Args:
        settings: The app's settings (weights, backend, precision, batch size and wait).
    """

    def __init__(self, settings: Settings):
        started = time.perf_counter()
        self.settings = replica_threads(settings)
        self.store = ModelStore(self.settings).start()
        # Serve routes nothing to a replica before its constructor returns: wait for the default
        # weights (warmed up by the store), so a new replica's first request is not a cold one.
        self.store.get(None, timeout=LOAD_TIMEOUT_S)
        # The store's own: the settings' backend and threads, warmed up in the background now.
        self.explorer = self.store.activation_explorer()
        self._forward_batch.set_max_batch_size(self.settings.max_batch)
        self._forward_batch.set_batch_wait_timeout_s(self.settings.batch_wait_s)
        self.batches: list[int] = []  # sizes of the batches run (tests, bench)
        self.init_seconds = time.perf_counter() - started  # weights, warm-up (bench: cold start)
        logger.info("replica ready: %s (%s %s, %d threads)", self.store.default_key,
                    self.settings.backend or "default backend", self.settings.precision, self.settings.onnx_threads)

    # ---------------------------------------------------------------- batched forward

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)  # both reset from settings in __init__
    async def _forward_batch(self, items: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(weights key, (size, size, 3) image)] → [((h, w, 2048) features, (classes,) probabilities)]."""
        self.batches.append(len(items))
        del self.batches[:-1000]
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, (key, _) in enumerate(items):
            by_key[key].append(i)
        out: list = [None] * len(items)
        for key, rows in by_key.items():
            classifier = self.store.get(key, timeout=0).classifier
            # In a worker thread: the replica's event loop keeps answering health checks.
            features, probs = await asyncio.to_thread(classifier.forward, np.stack([items[i][1] for i in rows]))
            for j, i in enumerate(rows):
                out[i] = (features[j], probs[j])
        return out

    async def predict(self, key: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One preprocessed image (size, size, 3) → (features, probabilities), batched."""
        served = self.store.get(key, timeout=0)  # never block the event loop on a loading model
        if x.shape != (served.input_size, served.input_size, 3):
            raise ValueError(f"expected one ({served.input_size}, {served.input_size}, 3) image, got {x.shape}")
        return await self._forward_batch((key, np.asarray(x, np.float32)))

    # ---------------------------------------------------------------- the plain HTTP API

    async def classify_image(self, data: bytes, weights: str | None, k: int) -> api.Outcome:
        """The API's classify (`scale/api.py`): the image's compressed bytes decoded and
        preprocessed here, the forward batched with the page's calls; problems come back as data."""
        return await api.classify_bytes(self.store, lambda key, x: self._forward_batch((key, x)), data, weights, k)

    # ---------------------------------------------------------------- the rest of the interface

    def gradcam(self, key: str, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM map in [0, 1] from `predict`'s features."""
        return self.store.get(key).gradcam(features, class_index)

    def activations(self, key: str, variant: str, x: np.ndarray) -> ImageActivations:
        """Every block's output for one preprocessed image (one forward, cached per replica)."""
        served = self.store.get(key)
        record, _ = self.explorer.compute(served.explorable(variant), x, weights_key=served.key)
        return record

    def served(self, key: str | None) -> tuple[tuple[str, ...], object, int]:
        """(labels, ModelInfo, input size) of a served model."""
        served = self.store.get(key, timeout=0)
        return served.labels, served.info, served.input_size

    def status(self) -> RemoteStatus:
        """This replica's models: default, available, per-candidate states and titles."""
        store = self.store
        return RemoteStatus(store.default_key, store.available(), store.statuses(),
                            {k: store.title(k) for k in store.candidates})

    def replica(self) -> dict:
        """Which replica answered: Serve's replica id and the process id (tests, bench)."""
        return {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid(),
                "batches": list(self.batches[-50:]), "threads": self.settings.onnx_threads,
                "init_seconds": round(self.init_seconds, 2)}

    def check_health(self) -> None:
        """Serve's periodic check: a replica whose default weights are gone is replaced."""
        if not self.store.is_ready():
            raise RuntimeError("no weights loaded")


def build_models(args: dict) -> serve.Application:
    """`scale.deployment:build_models` → application `xception` (`Settings.serve_app`, route
    prefix `/api/v1`): this deployment behind the plain API's front (`scale.api.XceptionApi`).
    `args` are unused: settings come from the environment (the config's `runtime_env.env_vars`).
    Here, not beside the page's builder, so that building it does not import Gradio."""
    return api.XceptionApi.bind(XceptionModel.bind(Settings.from_env()))
