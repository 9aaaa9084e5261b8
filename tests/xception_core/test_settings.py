"""Settings: every environment variable read in one place, validated, with defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from xception_core.settings import Settings


def test_defaults_when_nothing_is_set():
    s = Settings.from_env({})
    assert s.weights is None and s.backend is None and s.precision == "fp32"
    assert (s.host, s.port, s.max_batch, s.batch_wait_s) == ("127.0.0.1", 7860, 8, 0.0)
    assert (s.model_store, s.serve_app) == ("local", "xception")  # models in this process
    assert s.exports == s.cache_dir / "exports" and s.onnx_threads >= 1


def test_every_variable_is_read():
    s = Settings.from_env({
        "XCEPTION_WEIGHTS": " kitchenware ", "KERAS_HOME": "/k", "XCEPTION_CACHE_DIR": "/c",
        "XCEPTION_EXPORT_DIR": "/e", "XCEPTION_ASSETS_DIR": "/a", "XCEPTION_BACKEND": "TF",
        "XCEPTION_PRECISION": "int8", "XCEPTION_ONNX_THREADS": "3", "XCEPTION_MAX_BATCH": "2",
        "XCEPTION_BATCH_WAIT_MS": "5", "GRADIO_TEMP_DIR": "/g", "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": "8080", "XCEPTION_MODEL_STORE": " Ray ", "XCEPTION_SERVE_APP": "class-42",
    })
    assert s.weights == "kitchenware" and s.keras_home == Path("/k") and s.cache_dir == Path("/c")
    assert s.exports == Path("/e") and s.assets_dir == Path("/a") and s.upload_dir == Path("/g")
    assert (s.backend, s.precision, s.onnx_threads, s.max_batch) == ("tf", "int8", 3, 2)
    assert s.batch_wait_s == pytest.approx(0.005) and (s.host, s.port) == ("0.0.0.0", 8080)
    assert (s.model_store, s.serve_app) == ("ray", "class-42")


@pytest.mark.parametrize("env,match", [
    ({"XCEPTION_BACKEND": "xla"}, "XCEPTION_BACKEND must be one of"),
    ({"XCEPTION_PRECISION": "fp16"}, "XCEPTION_PRECISION must be one of"),
    ({"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT must be a number"),
    ({"XCEPTION_MAX_BATCH": "0"}, "XCEPTION_MAX_BATCH must be ≥ 1"),
    ({"XCEPTION_MODEL_STORE": "k8s"}, r"XCEPTION_MODEL_STORE must be one of \['local', 'ray'\]"),
])
def test_bad_values_are_refused_with_the_variable_named(env, match):
    with pytest.raises(ValueError, match=match):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]
