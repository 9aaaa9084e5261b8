"""ModelStore: background loading, states, failures, served models with labels; reads that stay
consistent while the loader thread works; the local store and served model keep the protocols."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from demo.store import LocalServedModel, ModelStore, ServedModel, Store
from tests.conftest import shared_loaded
from xception_core.model import WeightsUnavailableError
from xception_core.settings import Settings


@pytest.fixture(scope="module")
def tiny_model():
    return shared_loaded(96, 6, seed=0)  # the `store` fixture's weights (tests/demo/conftest.py): translated once


def states(store):
    return {s.key: s.state for s in store.statuses()}


def protocol_members(protocol: type) -> set[str]:
    """The names a protocol declares: its methods, properties and annotated attributes."""
    names = {n for n in vars(protocol) if not n.startswith("_") or n in ("__len__",)}
    names |= set(getattr(protocol, "__annotations__", {}))
    return names - {"_is_protocol", "_is_runtime_protocol"}


def test_store_answers_while_loading_then_serves(monkeypatch, tiny_model):
    release, loading = threading.Event(), threading.Event()

    def slow_load(key, settings):
        if key == "broken":
            raise WeightsUnavailableError("no network here")
        loading.set()
        release.wait(10)
        return tiny_model

    monkeypatch.setattr("demo.store.cache.load_model", slow_load)
    store = ModelStore(Settings(), ["broken", "slow"])
    assert states(store) == {"broken": "waiting", "slow": "waiting"}
    store.start()
    assert loading.wait(10)
    assert not store.is_ready() and not store.settled()
    assert states(store)["slow"] == "loading"
    with pytest.raises(TimeoutError, match="still loading"):
        store.get(timeout=0.1)
    release.set()
    served = store.get(timeout=30)
    assert store.default_key == "slow" and store.available() == ["slow"]
    assert served.loaded is tiny_model and served.labels == tuple(f"class {i}" for i in range(6))
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

    monkeypatch.setattr("demo.store.cache.load_model", fail)
    store = ModelStore(Settings(), ["a", "b"]).start()
    with pytest.raises(WeightsUnavailableError, match="a is offline.*b is offline"):
        store.get(timeout=10)


def test_when_ready_runs_after_the_default_loads_and_before_the_others(monkeypatch, tiny_model):
    order: list[str] = []
    release, loading_first = threading.Event(), threading.Event()

    def load(key, settings):
        if key == "second":
            order.append("load second")
        else:
            loading_first.set()
            release.wait(10)
        return tiny_model

    monkeypatch.setattr("demo.store.cache.load_model", load)
    store = ModelStore(Settings(), ["first", "second"])
    store.when_ready(lambda served: order.append(f"warm {served.key}"))
    store.when_ready(lambda served: 1 / 0)  # logged, does not stop loading
    store.start()
    assert loading_first.wait(10)
    assert order == []
    release.set()
    store.get("second", timeout=120)  # two translations, each of both wirings
    assert order == ["warm first", "load second"]
    done = threading.Event()
    store.when_ready(lambda served: (order.append(f"late {served.key}"), done.set()))  # already ready: runs at once
    assert done.wait(10) and order[-1] == "late first"


# ------------------------------------------------------------------------------ reads while loading


class _InstantClassifier:
    """A stand-in for `Classifier` that loads in no time, so the loader thread goes through many
    weights while other threads read the store."""

    classes, input_size, backend, precision = 2, 8, "tf", "fp32"
    labels = ("a", "b")

    def __init__(self, loaded, **options):
        self.loaded, self.info = loaded, loaded.info

    def warm_up(self) -> None:
        pass

    def forward(self, x):
        return np.zeros((len(x), 1, 1, 4), np.float32), np.full((len(x), 2), 0.5, np.float32)


ORDER = {"waiting": 0, "loading": 1, "ready": 2, "failed": 2}


def test_reads_from_many_threads_while_the_loader_works_stay_consistent(monkeypatch):
    """`available`, `statuses`, `title` and `get` from four threads while the loader goes through
    64 weights (thread switches forced every microsecond): no "dictionary changed size during
    iteration", no state seen to go backwards, and only ready weights offered."""
    keys = [f"w{i:02d}" for i in range(64)]

    def load(key, settings):
        info = SimpleNamespace(labels=None, source="/no/such/file", preset=None, title=f"Title {key}", variant="paper")
        if key.endswith("7"):
            raise WeightsUnavailableError(f"{key} is offline")
        return SimpleNamespace(info=info, input_size=8)

    def serve(self, key):  # the loader's one step, instant: loaded, "translated", wrapped
        classifier = _InstantClassifier(load(key, self.settings))
        return LocalServedModel(key, classifier, self.settings)

    monkeypatch.setattr(ModelStore, "_serve", serve)
    store = ModelStore(Settings(), keys)
    readers = 4
    go = threading.Barrier(readers + 1)
    problems: list[str] = []

    def read() -> None:
        seen = dict.fromkeys(keys, 0)
        go.wait()
        try:
            while True:
                finished = store.settled()
                offered = store.available()
                for status in store.statuses():
                    if ORDER[status.state] < seen[status.key]:
                        problems.append(f"{status.key} went back to {status.state}")
                    seen[status.key] = ORDER[status.state]
                    if (status.state == "ready") != (status.title == f"Title {status.key}"):
                        problems.append(f"{status.key} is {status.state} titled {status.title!r}")
                if any(seen[k] < 2 for k in offered) or offered != sorted(offered):
                    problems.append(f"offered {offered} before they were ready")
                for key in keys[::9]:
                    store.title(key)
                    try:
                        served = store.get(key, timeout=0)
                    except (TimeoutError, WeightsUnavailableError):
                        continue
                    if served.key != key:
                        problems.append(f"get({key}) gave {served.key}")
                if finished:
                    return
        except Exception as exc:  # noqa: BLE001 - what a request thread would have raised
            problems.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=read) for _ in range(readers)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        go.wait()
        store.start()
        for thread in threads:
            thread.join(120)
    finally:
        sys.setswitchinterval(switch)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    assert store.available() == [k for k in keys if not k.endswith("7")]
    assert {s.key: s.state for s in store.statuses()} == {k: "failed" if k.endswith("7") else "ready" for k in keys}


# ------------------------------------------------------------------------------ the protocols


def test_the_local_store_and_served_model_have_everything_the_protocols_declare(tiny_model, tmp_path):
    from tests.conftest import store_serving

    store = store_serving(tiny_model, Settings(upload_dir=tmp_path), key="tiny")
    served = store.get()
    assert isinstance(served, LocalServedModel)
    for name in protocol_members(Store):
        assert hasattr(store, name), f"ModelStore lacks Store.{name}"
    for name in protocol_members(ServedModel):
        assert hasattr(served, name), f"LocalServedModel lacks ServedModel.{name}"
    assert served.backend in ("onnx", "tf") and served.precision == "fp32" and store.replicas() is None
    assert store.candidates == ("tiny",) and store.settled()


# ------------------------------------------------------------------------------ what serves


@pytest.mark.parametrize("backend", [None, "tf"])
def test_the_translation_serves_unless_tensorflow_is_asked_for(monkeypatch, tiny_model, backend, tmp_path):
    """By default the store serves the model's translation (ONNX Runtime, Grad-CAM by hand) and
    keeps the Keras model it had to load for it; backend 'tf' serves a Keras `Classifier`. Both
    answer the same."""
    from xception_core.runtime.classifier import Classifier
    from xception_core.runtime.translated import TranslatedModel

    monkeypatch.setattr("demo.store.cache.load_model", lambda key, settings: tiny_model)
    store = ModelStore(Settings(backend=backend, cache_dir=tmp_path), ["tiny"]).start()
    served = store.get(timeout=120)
    assert isinstance(served.classifier, TranslatedModel if backend is None else Classifier)
    assert served.backend == ("onnx" if backend is None else "tf") and served.keras_state() == "ready"
    assert served.loaded is tiny_model
    x = np.random.default_rng(0).uniform(-1, 1, (served.input_size, served.input_size, 3)).astype(np.float32)
    prediction = served.predict(x)
    reference = Classifier(tiny_model, backend="tf")
    features, probabilities = reference.forward(x[None])
    np.testing.assert_allclose(prediction.probabilities, probabilities[0], atol=1e-4)
    np.testing.assert_allclose(served.gradcam(features[0], 1), reference.gradcam(features[0], 1), atol=1e-5)
    assert served.description("article").variant == "article" and served.description("reference").input_shape[0] == 299
    # Every other feature, from the translation or (backend 'tf') the Keras model, with the same numbers.
    from xception_core.model import rewire
    from xception_core.runtime.operation import BlockParams
    from xception_core.runtime.operation_pass import layer_source

    article = rewire(tiny_model, "article")
    ours = served.operation_pass("article").run(x[None], ["block5_sepconv2_bn"])["block5_sepconv2_bn"]
    theirs = layer_source(article, backend="tf").run(x[None], ["block5_sepconv2_bn"])["block5_sepconv2_bn"]
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    params, reference = served.operation_params("block5").to_arrays(), BlockParams.from_model(tiny_model.model, "block5")
    assert all(np.array_equal(params[name], array) for name, array in reference.to_arrays().items())
    assert served.explorable("article").info.variant == "article"
    graph = served.export("graph", "article", tmp_path / "exports", "xception-tiny-article")
    assert graph.name.startswith("xception-tiny-article.graph-") and graph.stat().st_size > 1000
