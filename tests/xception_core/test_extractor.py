"""The transfer-learning extractor (pooled block features in one pass) and the taught model's
export: checked against Keras computing the same things layer by layer."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import random_loaded

SIZE = 71  # the smallest input Xception takes: a fast test


@pytest.fixture(scope="module")
def small_loaded():
    return random_loaded(SIZE, 3, seed=3)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def _reference(loaded, batch, blocks):
    import keras

    from xception_core.arch.names import block_output_layer
    from xception_core.arch.registry import architecture

    model = loaded.model
    names = [block_output_layer(architecture().spec.block(b)) for b in blocks]
    multi = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    maps = multi(batch, training=False)
    return {b: np.asarray(m).mean(axis=(1, 2)) for b, m in zip(blocks, maps)}, np.asarray(maps[-1])


@pytest.mark.parametrize("backend", ["onnx", "tf"])
def test_pooled_features_equal_keras_block_outputs_averaged(small_loaded, batch, backend):
    from xception_core.runtime.extractor import TRANSFER_BLOCKS, FeatureExtractor

    extractor = FeatureExtractor(small_loaded, backend=backend)
    assert extractor.backend == backend
    out = extractor(batch)
    ref, ref_map = _reference(small_loaded, batch, TRANSFER_BLOCKS)
    assert list(out.pooled) == list(TRANSFER_BLOCKS)
    for block in TRANSFER_BLOCKS:
        assert out.pooled[block].shape == (2, extractor.dims[block])
        np.testing.assert_allclose(out.pooled[block], ref[block], rtol=1e-3, atol=1e-3 * np.abs(ref[block]).max())
    assert extractor.dims["block14"] == 2048 and extractor.dims["block2"] == 128
    np.testing.assert_allclose(out.feature_map, ref_map, rtol=1e-3, atol=1e-3 * np.abs(ref_map).max())


def test_extractor_rejects_wrong_shapes_and_blocks(small_loaded):
    from xception_core.runtime.extractor import FeatureExtractor

    extractor = FeatureExtractor(small_loaded, blocks=("block14",))
    with pytest.raises(ValueError, match="batch must have shape"):
        extractor(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="unknown block"):
        FeatureExtractor(small_loaded, blocks=("block99",))


def test_transfer_model_computes_the_head_on_pooled_exit_features(small_loaded, batch):
    from xception_core.runtime.extractor import FeatureExtractor, transfer_model
    from xception_core.runtime.transfer import SoftmaxHead

    rng = np.random.default_rng(1)
    head = SoftmaxHead(rng.normal(0, 0.05, (2048, 4)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32))
    model = transfer_model(small_loaded, head.weights, head.bias)
    pooled = FeatureExtractor(small_loaded, blocks=("block14",), backend="tf")(batch).pooled["block14"]
    np.testing.assert_allclose(np.asarray(model(batch, training=False)), head.probabilities(pooled), atol=1e-4)
    with pytest.raises(ValueError):
        transfer_model(small_loaded, head.weights[:10], head.bias)
