"""Files of a taught head: the small head file reads back equal; the whole taught model loads back
through `build_xception(weights=path)` and `XCEPTION_WEIGHTS=path` with equal outputs."""

from __future__ import annotations

import numpy as np
import pytest

from xception_core.runtime.transfer import SoftmaxHead


def _head(d: int = 2048, k: int = 3, seed: int = 0) -> SoftmaxHead:
    rng = np.random.default_rng(seed)
    return SoftmaxHead(rng.normal(0, 0.05, (d, k)).astype(np.float32), rng.normal(0, 0.1, k).astype(np.float32))


def test_head_file_round_trip(tmp_path):
    from xception_core.io.heads import load_head, save_head

    head = _head()
    path = save_head(tmp_path / "head.npz", head, ["mug", "spoon", "cat"], block="block14", input_size=150,
                     base="kitchenware")
    back = load_head(path)
    np.testing.assert_array_equal(back.head.weights, head.weights)
    np.testing.assert_array_equal(back.head.bias, head.bias)
    assert back.class_names == ("mug", "spoon", "cat") and back.block == "block14" and back.input_size == 150
    assert path.stat().st_size < 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["head.npz"]  # no temporary left behind
    with pytest.raises(ValueError):
        save_head(tmp_path / "bad.npz", head, ["only one"], block="block14", input_size=150, base="x")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a head file"):
        load_head(tmp_path / "junk.npz")


def test_a_taught_model_is_written_whole_as_a_keras_file(tmp_path):
    """Through the one atomic writer: the file appears complete (Keras reads it back with its class
    names), nothing else is left in the folder, and a name Keras could not read back is refused."""
    from tests.conftest import random_loaded
    from xception_core.io.heads import save_taught_model, taught_labels

    loaded = random_loaded(71, 3)
    with pytest.raises(ValueError, match=r"\.keras file"):
        save_taught_model(tmp_path / "taught.npz", loaded, _head(k=2), ["a", "b"])
    path = save_taught_model(tmp_path / "taught.keras", loaded, _head(k=2), ["a", "b"])
    assert [p.name for p in tmp_path.iterdir()] == ["taught.keras"] and taught_labels(path, 2) == ("a", "b")


@pytest.mark.slow
def test_taught_keras_loads_back_with_equal_outputs(tmp_path, kitchenware_loaded, kitchenware_samples):
    from xception_core import build_xception
    from xception_core.io.heads import save_taught_model
    from xception_core.inputs.images import load_image
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.model import load_model
    from xception_core.runtime.extractor import transfer_model
    from xception_core.settings import Settings

    head = _head(k=4, seed=2)
    names = ("mug", "bowl", "spoon", "not kitchen")
    path = save_taught_model(tmp_path / "taught.keras", kitchenware_loaded, head, names)
    x = np.stack([preprocess(load_image(s.path), 150) for s in kitchenware_samples[:3]])
    expected = np.asarray(transfer_model(kitchenware_loaded, head.weights, head.bias)(x, training=False))
    by_path = build_xception(weights=str(path))
    np.testing.assert_allclose(np.asarray(by_path(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    by_env = load_model("auto", settings=Settings.from_env({"XCEPTION_WEIGHTS": str(path)}))
    assert by_env.info.outputs == "probabilities" and by_env.info.input_size == 150
    np.testing.assert_allclose(np.asarray(by_env.model(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, expected[:, ::-1])  # a head that tells the photos apart
    from xception_core.io.heads import taught_labels

    assert taught_labels(path, 4) == names and taught_labels(path, 3) is None
    assert [p.name for p in tmp_path.iterdir()] == ["taught.keras"]


@pytest.mark.slow
def test_the_app_serves_a_taught_model_with_its_class_names(tmp_path, kitchenware_loaded):
    from demo.store import ModelStore
    from xception_core.io.heads import save_taught_model
    from xception_core.settings import Settings

    path = save_taught_model(tmp_path / "taught.keras", kitchenware_loaded, _head(k=2, seed=4), ["left", "right"])
    real = Settings.from_env()
    store = ModelStore(Settings(weights=str(path), cache_dir=real.cache_dir, keras_home=real.keras_home)).start()
    served = store.get(timeout=300)
    assert served.labels == ("left", "right")
    assert {label for label, _ in served.classify(np.zeros((40, 40, 3), np.uint8), k=2).top} == {"left", "right"}
