"""Every file loaded from a cache is checked (issue 25, item 3): the converted copy of a preset's
`.keras` (`xception_core.weights.load.from_keras_model`) is loaded only when its sha256 matches
the one its sidecar recorded; an altered copy (a valid model file, one tensor overwritten), a
sidecar without a hash, or a damaged copy is converted again from the verified original, never
served.

The other kinds of cached file have theirs: the official ImageNet file's md5
(`tests/xception_core/test_download.py::test_an_altered_cached_file_is_downloaded_again`), the
extracted wheel (`test_fetch_safety.py::test_a_damaged_or_altered_cache_is_fetched_again_once_and_logged`)
and each file of the translation (`test_translated.py::test_a_tampered_file_is_never_served`).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import keras
import numpy as np
import pytest

from tests.conftest import randomize
from xception_core.weights import load as load_module
from xception_core.weights import presets as presets_module

SIZE = 71


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A transfer model as a wheel ships one (a nested Keras Xception, a dense head), a preset for it."""
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    randomize(base, seed=3)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)))
    path = tmp_path_factory.mktemp("wheel") / "model.keras"
    keras.Model(inputs, outputs).save(path)
    preset = dataclasses.replace(presets_module.KITCHENWARE, input_size=SIZE, classes=3)
    return path, preset


def _x() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)


def _alter_one_tensor(path) -> None:
    """Rewrites the copy as a valid `.keras` whose head kernel is another one."""
    model = keras.saving.load_model(path, compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel[:, ::-1].copy(), bias])  # the classes swapped: "cup" answered as "fork"
    model.save(path)


@pytest.mark.parametrize("damage", ["one tensor altered", "no hash recorded", "not a model file"])
def test_a_converted_copy_that_does_not_match_its_hash_is_made_again(original, damage, caplog):
    path, preset = original
    request = load_module.BuildRequest()
    expected = load_module.from_keras_model(path, preset, request)[0](_x()).numpy()
    cached = load_module.converted_path(path, preset, request)
    sidecar = cached.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    assert record["sha256"] == load_module.file_sha256(cached)
    if damage == "one tensor altered":
        _alter_one_tensor(cached)
        altered = keras.saving.load_model(cached, compile=False)(_x()).numpy()
        assert not np.allclose(altered, expected)  # what would have been served
    elif damage == "no hash recorded":  # a sidecar of the first format
        sidecar.write_text(json.dumps(record["source"]))
    else:
        cached.write_bytes(b"PK\x03\x04 not a keras file")
    caplog.set_level(logging.WARNING, logger="xception_core.weights.load")
    model, _ = load_module.from_keras_model(path, preset, request)
    assert "unusable" in caplog.text and "converting model.keras again" in caplog.text
    np.testing.assert_allclose(model(_x()).numpy(), expected, rtol=0, atol=1e-6)
    # Made again with a hash that checks: the next load reads the copy, and it says nothing.
    assert json.loads(sidecar.read_text())["sha256"] == load_module.file_sha256(cached)
    caplog.clear()
    load_module.from_keras_model(path, preset, request)
    assert "unusable" not in caplog.text
