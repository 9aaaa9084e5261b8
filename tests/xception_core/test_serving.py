"""ModelStore (background loading, status, failures) and MicroBatcher (batching without mixing)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from xception_core import build_xception
from xception_core.serving import MicroBatcher, ModelStore
from xception_core.weights import WeightsUnavailableError


@pytest.fixture(scope="module")
def tiny_model():
    return build_xception(weights=None, input_shape=(96, 96, 3), classes=4)


def test_store_answers_while_loading_then_serves(monkeypatch, tiny_model):
    release = threading.Event()

    def slow_load(key):
        if key == "broken":
            raise WeightsUnavailableError("no network here")
        release.wait(10)
        return tiny_model

    monkeypatch.setattr("xception_core.serving.load_weights_into", slow_load)
    store = ModelStore(["broken", "slow"]).start()
    time.sleep(0.2)
    assert not store.is_ready()
    assert "loading" in store.status()
    with pytest.raises(TimeoutError, match="still loading"):
        store.get(timeout=0.1)
    release.set()
    classifier = store.get(timeout=30)
    assert store.default_key == "slow" and store.available() == ["slow"]
    assert classifier.model is tiny_model
    assert "unavailable" in store.status() and "ready" in store.status()
    with pytest.raises(WeightsUnavailableError, match="no network here"):
        store.get("broken", timeout=5)
    with pytest.raises(ValueError, match="unknown weights"):
        store.get("resnet", timeout=5)


def test_store_reports_when_nothing_loads(monkeypatch):
    def fail(key):
        raise WeightsUnavailableError(f"{key} is offline")

    monkeypatch.setattr("xception_core.serving.load_weights_into", fail)
    store = ModelStore(["a", "b"]).start()
    with pytest.raises(WeightsUnavailableError, match="a is offline.*b is offline"):
        store.get(timeout=10)


def test_batcher_groups_concurrent_calls_and_keeps_rows_apart():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        time.sleep(0.02)
        return batch * 2, batch.sum(axis=(1, 2))

    batcher = MicroBatcher(fn, max_batch=8, max_wait_s=0.05)
    inputs = [np.full((3, 3), i, np.float32) for i in range(16)]
    results: dict[int, tuple] = {}

    def call(i):
        results[i] = batcher.run(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 16 and max(calls) > 1  # batched
    for i in range(16):
        doubled, total = results[i]
        np.testing.assert_array_equal(doubled, inputs[i] * 2)
        assert total == 9 * i


def test_batcher_errors_reach_the_callers_and_the_worker_survives():
    def fn(batch):
        if (batch < 0).any():
            raise RuntimeError("negative input")
        return (batch,)

    batcher = MicroBatcher(fn, max_batch=1)
    with pytest.raises(RuntimeError, match="negative input"):
        batcher.run(np.array([-1.0]))
    assert batcher.run(np.array([2.0]))[0] == 2.0
