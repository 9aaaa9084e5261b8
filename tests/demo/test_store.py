"""ModelStore: background loading, states, failures, served models with labels."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from demo.store import ModelStore
from xception_core.model import WeightsUnavailableError, load_model
from xception_core.settings import Settings


@pytest.fixture(scope="module")
def tiny_model():
    return load_model(None, input_shape=(96, 96, 3), classes=4)


def states(store):
    return {s.key: s.state for s in store.statuses()}


def test_store_answers_while_loading_then_serves(monkeypatch, tiny_model):
    release = threading.Event()

    def slow_load(key, settings):
        if key == "broken":
            raise WeightsUnavailableError("no network here")
        release.wait(10)
        return tiny_model

    monkeypatch.setattr("demo.store.load_model", slow_load)
    store = ModelStore(Settings(), ["broken", "slow"]).start()
    time.sleep(0.2)
    assert not store.is_ready() and not store.settled()
    assert states(store)["slow"] == "loading"
    with pytest.raises(TimeoutError, match="still loading"):
        store.get(timeout=0.1)
    release.set()
    served = store.get(timeout=30)
    assert store.default_key == "slow" and store.available() == ["slow"]
    assert served.loaded is tiny_model and served.labels == ("class 0", "class 1", "class 2", "class 3")
    assert states(store) == {"broken": "failed", "slow": "ready"} and store.settled()
    prediction = served.classify(Image.new("RGB", (50, 80), (10, 200, 30)), k=2)
    assert len(prediction.top) == 2 and prediction.features.shape == (3, 3, 2048)
    with pytest.raises(WeightsUnavailableError, match="no network here"):
        store.get("broken", timeout=5)
    with pytest.raises(ValueError, match="unknown weights"):
        store.get("resnet", timeout=5)


def test_store_reports_when_nothing_loads(monkeypatch):
    def fail(key, settings):
        raise WeightsUnavailableError(f"{key} is offline")

    monkeypatch.setattr("demo.store.load_model", fail)
    store = ModelStore(Settings(), ["a", "b"]).start()
    with pytest.raises(WeightsUnavailableError, match="a is offline.*b is offline"):
        store.get(timeout=10)


def test_when_ready_runs_after_the_default_loads_and_before_the_others(monkeypatch, tiny_model):
    order: list[str] = []
    release = threading.Event()

    def load(key, settings):
        if key == "second":
            order.append("load second")
        else:
            release.wait(10)
        return tiny_model

    monkeypatch.setattr("demo.store.load_model", load)
    store = ModelStore(Settings(), ["first", "second"])
    store.when_ready(lambda served: order.append(f"warm {served.key}"))
    store.when_ready(lambda served: 1 / 0)  # logged, does not stop loading
    store.start()
    time.sleep(0.1)
    assert order == []
    release.set()
    store.get("second", timeout=30)
    assert order == ["warm first", "load second"]
    done = threading.Event()
    store.when_ready(lambda served: (order.append(f"late {served.key}"), done.set()))  # already ready: runs at once
    assert done.wait(10) and order[-1] == "late first"
