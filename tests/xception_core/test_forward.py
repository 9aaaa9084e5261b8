"""The one forward factory (`xception_core.runtime.forward`): which backend runs, that an explicit
request is never quietly replaced, that a fallback says why, and that the classifier, the feature
extractor and the activation explorer all choose through it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import random_loaded, randomize
from xception_core.runtime import forward as forward_module
from xception_core.runtime import onnx as onnx_backend
from xception_core.runtime.forward import BackendUnavailableError, Forward, TfForward, build_forward

needs_onnx = pytest.mark.skipif(not onnx_backend.available(), reason="needs the onnx and onnxruntime packages")
LOGGER = "xception_core.runtime.forward"


def _tiny(activation: keras.layers.Layer | None = None) -> keras.Model:
    """conv → BatchNorm → ReLU ('relu', the features) → pool → softmax, random but non-trivial."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = (activation or keras.layers.ReLU(name="relu"))(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x), name="tiny")
    randomize(model, 1)
    return model


def _batch(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 8, 8, 3)).astype(np.float32)


@needs_onnx
def test_both_backends_give_the_same_named_outputs():
    model = _tiny()
    # Layers after the BatchNorm: a conv whose BatchNorm is folded gives the folded values in ONNX.
    kwargs = dict(extra_outputs=["relu"], pooled_outputs=["relu"], block_maps={"relu map": "relu"})
    onnx_run, tf_run = (build_forward(model, "relu", backend=b, **kwargs) for b in ("onnx", "tf"))
    assert (onnx_run.backend, tf_run.backend) == ("onnx", "tf") and isinstance(tf_run, TfForward)
    assert isinstance(onnx_run, Forward) and isinstance(tf_run, Forward)
    x = _batch()
    a, b = onnx_run.run(x), tf_run.run(x)
    names = {"features", "output", "relu", onnx_backend.pooled_name("relu"), "relu map",
             onnx_backend.means_name("relu map")}
    assert set(a) == set(b) == names
    for name in names:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
        np.testing.assert_allclose(a[name].astype(np.float32), b[name].astype(np.float32), atol=2e-3, err_msg=name)
    assert a["relu map"].dtype == np.float16 and a["relu map"].shape == (2, 4, 8, 8)  # NCHW, as the explorer keeps it
    np.testing.assert_allclose(tf_run(x)[1], model(x).numpy(), atol=1e-6)
    assert list(tf_run.run(x, ["output"])) == ["output"]


@needs_onnx
def test_an_explicit_onnx_request_that_cannot_run_raises_and_says_why():
    model = _tiny(keras.layers.LeakyReLU(name="relu"))  # no ONNX translation for LeakyReLU here
    with pytest.raises(BackendUnavailableError, match="backend 'onnx' was asked for.*relu") as excinfo:
        build_forward(model, "relu", backend="onnx")
    assert isinstance(excinfo.value.__cause__, onnx_backend.UnsupportedLayerError)


@needs_onnx
def test_no_request_falls_back_to_tensorflow_and_logs_why(caplog):
    model = _tiny(keras.layers.LeakyReLU(name="relu"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        chosen = build_forward(model, "relu")
    assert chosen.backend == "tf"
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert "tiny runs on TensorFlow" in record.getMessage() and "UnsupportedLayerError" in record.getMessage()
    assert "relu" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build_forward(_tiny(), "relu").backend == "onnx"
    assert not caplog.records


def test_without_onnx_runtime_an_explicit_request_raises_and_none_logs(monkeypatch, caplog):
    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    model = _tiny()
    with pytest.raises(BackendUnavailableError, match="not installed"):
        build_forward(model, "relu", backend="onnx")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build_forward(model, "relu").backend == "tf"
    assert "not installed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert build_forward(model, "relu", backend="tf").backend == "tf"
    assert not caplog.records  # asked for and given: nothing to explain


@needs_onnx
def test_int8_that_cannot_be_had_runs_fp32_and_says_so(caplog):
    model = _tiny()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        on_tf = build_forward(model, "relu", backend="tf", precision="int8")
        uncalibrated = build_forward(model, "relu", backend="onnx", precision="int8", calibration=())
    assert (on_tf.backend, on_tf.precision) == ("tf", "fp32")
    assert (uncalibrated.backend, uncalibrated.precision) == ("onnx", "fp32")
    assert "int8 needs the onnx backend" in caplog.text and "no calibration images" in caplog.text


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        build_forward(_tiny(), "relu", backend="torch")
    with pytest.raises(ValueError, match="precision must be one of"):
        build_forward(_tiny(), "relu", precision="fp16")


def test_the_classifier_the_extractor_and_the_explorer_choose_through_the_one_factory(monkeypatch, caplog):
    from xception_core.runtime.activations import ActivationExplorer
    from xception_core.runtime.classifier import Classifier
    from xception_core.runtime.extractor import FeatureExtractor

    loaded = random_loaded(71, 3, seed=2)
    x = np.zeros((1, 71, 71, 3), np.float32)

    def failing_onnx(*args, **kwargs):
        raise RuntimeError("ONNX Runtime refused in this test")

    monkeypatch.setattr(onnx_backend, "available", lambda: True)
    monkeypatch.setattr(forward_module, "_onnx", failing_onnx)
    users = {
        "classifier": lambda backend: Classifier(loaded, backend=backend).backend,
        "extractor": lambda backend: FeatureExtractor(loaded, ("block2",), backend=backend).backend,
        "explorer": lambda backend: ActivationExplorer(backend=backend).compute(loaded, x[0])[0].backend,
    }
    for name, make in users.items():
        with pytest.raises(BackendUnavailableError, match="refused in this test"):
            make("onnx")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert make(None) == "tf", name
        assert any(r.name == LOGGER and "refused in this test" in r.getMessage() for r in caplog.records), name


def test_only_the_factory_builds_a_backend():
    """No other module of the core constructs a forward or asks whether ONNX Runtime is there, but
    the session's own module, the cached translation's and the knockout chain's (a cut of the
    translation's forward graph: both ONNX by construction, the serving path that never imports
    TensorFlow)."""
    root = Path(__file__).resolve().parents[2] / "xception_core"
    allowed = {root / "runtime" / "forward.py", root / "runtime" / "onnx.py", root / "runtime" / "ort.py",
               root / "runtime" / "translated.py", root / "runtime" / "knockout.py"}
    found = []
    for path in sorted(root.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in ("OnnxForward", "TfForward", "available", "to_onnx_parts"):
                found.append(f"{path.relative_to(root)}: {name}")
    assert not found, found
