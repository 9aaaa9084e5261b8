"""Weights: the official legacy-HDF5 path (offline, with a file written in the official layout),
preset resolution, transfer-learning models, and the real kitchenware weights."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from tests.conftest import randomize
from xception_core.inputs.images import load_image
from xception_core.inputs.preprocessing import preprocess
from xception_core.model import WeightsFailure, WeightsUnavailableError, build_xception, load_model
from xception_core.weights import presets as presets_module

SIZE = 96


def write_official_h5(model: keras.Model, path) -> None:
    """Writes `model`'s weights in the layout of the official Keras Xception files: a root
    'layer_names' attribute and one group per layer with 'weight_names' ('layer/kernel:0', ...)."""
    with h5py.File(path, "w") as f:
        weighted = [layer for layer in model.layers]
        f.attrs["layer_names"] = [layer.name.encode() for layer in weighted]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.3"
        for layer in weighted:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.path.split('/')[-1]}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, w in zip(names, layer.weights):
                group.create_dataset(name.decode(), data=np.asarray(w.numpy()))


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    """A randomly initialised keras.applications.Xception (with and without top) and its weights
    written as official-layout files."""
    out = {}
    folder = tmp_path_factory.mktemp("official")
    for include_top, fname in ((True, "xception_weights_tf_dim_ordering_tf_kernels.h5"),
                               (False, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5")):
        reference = keras.applications.Xception(weights=None, include_top=include_top, input_shape=(SIZE, SIZE, 3))
        randomize(reference, seed=7)
        write_official_h5(reference, folder / fname)
        out[include_top] = (reference, folder / fname)
    return out


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(5).uniform(-1, 1, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.parametrize("include_top", [True, False])
def test_official_layout_file_loads_from_a_path(reference_files, include_top):
    reference, path = reference_files[include_top]
    loaded = load_model(str(path), include_top=include_top, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(loaded.model(_x()).numpy(), reference(_x()).numpy(), atol=1e-5, rtol=1e-5)
    assert loaded.info.preset == "file"


@pytest.fixture
def offline_imagenet(reference_files, tmp_path, monkeypatch):
    """The imagenet preset pointed at a Keras cache holding our official-layout files (their md5
    recorded in the preset, as Keras's are) and at an unreachable URL: any download attempt fails."""
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    files = {}
    for include_top, (_, path) in reference_files.items():
        (models / path.name).write_bytes(path.read_bytes())
        files[include_top] = presets_module.RemoteFile(
            path.name, "http://127.0.0.1:9/unreachable.h5", hashlib.md5(path.read_bytes()).hexdigest()
        )
    preset = dataclasses.replace(presets_module.IMAGENET, with_top=files[True], no_top=files[False])
    monkeypatch.setitem(presets_module.PRESETS, "imagenet", preset)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return preset


@pytest.mark.parametrize("include_top", [True, False])
def test_imagenet_preset_loads_offline_from_cache(offline_imagenet, reference_files, include_top):
    reference, _ = reference_files[include_top]
    loaded = load_model("imagenet", include_top=include_top, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(loaded.model(_x()).numpy(), reference(_x()).numpy(), atol=1e-5, rtol=1e-5)
    info = loaded.info
    assert info.preset == "imagenet" and info.title == "ImageNet-1k, Keras official weights"
    assert info.labels == ("imagenet1k" if include_top else None)
    assert info.outputs == ("probabilities" if include_top else "features")


def test_article_variant_gets_the_same_weights(offline_imagenet):
    paper = build_xception(weights="imagenet", input_shape=(SIZE, SIZE, 3))
    article = build_xception(weights="imagenet", input_shape=(SIZE, SIZE, 3), variant="article")
    for layer in (layer for layer in paper.layers if layer.weights):
        for a, b in zip(layer.get_weights(), article.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_imagenet_unavailable_without_cache_or_network(offline_imagenet, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsUnavailableError, match="unreachable.h5") as excinfo:
        build_xception(weights="imagenet")
    assert excinfo.value.cause is WeightsFailure.OFFLINE  # nothing listens on that port


def test_env_variable_picks_the_weights(reference_files, monkeypatch):
    _, path = reference_files[True]
    monkeypatch.setenv("XCEPTION_WEIGHTS", str(path))
    loaded = load_model(input_shape=(SIZE, SIZE, 3))  # weights='auto'
    assert loaded.info.source == str(path)


def test_auto_lists_everything_it_tried(monkeypatch):
    monkeypatch.delenv("XCEPTION_WEIGHTS", raising=False)

    def unavailable(*args, **kwargs):
        raise WeightsUnavailableError("offline in this test")

    monkeypatch.setattr("xception_core.model.fetch_keras_file", unavailable)
    monkeypatch.setattr("xception_core.model.fetch_wheel_model", unavailable)
    with pytest.raises(WeightsUnavailableError) as excinfo:
        build_xception()
    message = str(excinfo.value)
    assert "- imagenet: offline in this test" in message and "- kitchenware: offline in this test" in message
    assert "weights=None" in message  # says how to get random weights on purpose
    assert excinfo.value.cause is WeightsFailure.UNKNOWN  # what each candidate said: nothing


def test_auto_keeps_a_cause_every_candidate_shares(monkeypatch):
    monkeypatch.delenv("XCEPTION_WEIGHTS", raising=False)

    def offline(*args, **kwargs):
        raise WeightsUnavailableError("offline in this test", WeightsFailure.OFFLINE)

    def damaged(*args, **kwargs):
        raise WeightsUnavailableError("damaged in this test", WeightsFailure.DAMAGED)

    monkeypatch.setattr("xception_core.model.fetch_keras_file", offline)
    monkeypatch.setattr("xception_core.model.fetch_wheel_model", offline)
    with pytest.raises(WeightsUnavailableError) as both_offline:
        build_xception()
    monkeypatch.setattr("xception_core.model.fetch_wheel_model", damaged)
    with pytest.raises(WeightsUnavailableError) as mixed:
        build_xception()
    assert both_offline.value.cause is WeightsFailure.OFFLINE and mixed.value.cause is WeightsFailure.UNKNOWN


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(classes=10), "contradicts weights"),
        (dict(input_shape=(SIZE, SIZE, 1)), "3 channels"),
        (dict(classifier_activation="sigmoid"), "only 'softmax' or None"),
    ],
)
def test_arguments_that_contradict_the_weights(reference_files, kwargs, match):
    _, path = reference_files[True]
    with pytest.raises(ValueError, match=match):
        build_xception(weights=str(path), **{"input_shape": (SIZE, SIZE, 3), **kwargs})


def test_unknown_preset_in_env(monkeypatch):
    monkeypatch.setenv("XCEPTION_WEIGHTS", "resnet")
    with pytest.raises(ValueError, match="weights must be None, 'auto', one of"):
        build_xception()


def test_transfer_model_with_nested_xception(tmp_path):
    """A typical Keras transfer-learning model: nested Xception base, GAP, Dense head."""
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    randomize(base, seed=11)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    transfer = keras.Model(inputs, outputs)
    path = tmp_path / "transfer.keras"
    transfer.save(path)
    loaded = load_model(str(path))
    np.testing.assert_allclose(loaded.model(_x()).numpy(), transfer(_x()).numpy(), atol=1e-5)
    info = loaded.info
    assert (info.input_size, info.outputs, info.labels) == (SIZE, "probabilities", None)
    with pytest.raises(ValueError, match="contradicts"):
        build_xception(weights=str(path), classes=1000)


def test_our_own_saved_model_round_trips(tmp_path):
    model = build_xception(weights=None, input_shape=(SIZE, SIZE, 3), classes=5)
    randomize(model, seed=4)
    path = tmp_path / "ours.keras"
    model.save(path)
    again = build_xception(weights=str(path), variant="article")  # our file, other wiring: weights by name
    for layer in (layer for layer in model.layers if layer.weights):
        for a, b in zip(layer.get_weights(), again.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_a_keras_file_without_xception_is_rejected(tmp_path):
    inputs = keras.Input((8,))
    path = tmp_path / "other.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    with pytest.raises(ValueError, match="contains no Xception"):
        build_xception(weights=str(path))


# ------------------------------------------------------------------------------ real weights


@pytest.mark.slow
def test_kitchenware_matches_the_original_model_on_every_shipped_photo(kitchenware_loaded, kitchenware_original,
                                                                      kitchenware_samples):
    kitchenware_model = kitchenware_loaded.model
    samples = kitchenware_samples
    assert len(samples) == 18
    batch = np.stack([preprocess(load_image(s.path), 150) for s in samples])
    ours = kitchenware_model.predict_on_batch(batch)
    original = kitchenware_original.predict_on_batch(batch)
    np.testing.assert_allclose(ours, original, atol=1e-4)
    assert kitchenware_loaded.info.labels == "kitchenware6"


@pytest.mark.slow
def test_kitchenware_classifies_the_labelled_photos(kitchenware_model, kitchenware_samples):
    from xception_core.io.labels import load_labels

    labels = load_labels("kitchenware6")
    labelled = [s for s in kitchenware_samples if s.label]
    assert len(labelled) == 9
    batch = np.stack([preprocess(load_image(s.path), 150) for s in labelled])
    predicted = [labels[i] for i in kitchenware_model.predict_on_batch(batch).argmax(axis=1)]
    assert predicted == [s.label for s in labelled]


@pytest.mark.slow
def test_pip_wheel_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XCEPTION_CACHE_DIR", str(tmp_path))
    bad = dataclasses.replace(presets_module.KITCHENWARE, wheel_sha256="0" * 64)
    monkeypatch.setitem(presets_module.PRESETS, "kitchenware", bad)
    with pytest.raises(WeightsUnavailableError, match="refusing to load it"):
        build_xception(weights="kitchenware")
    assert not any(tmp_path.glob("kitchenware/*.keras"))


def test_a_presets_converted_copy_is_kept_and_reused(tmp_path, monkeypatch, caplog):
    """The second load of a preset's `.keras` reads our converted copy: one model file loaded,
    the same numbers and the same description; a damaged copy is replaced."""
    from xception_core.weights import load as load_module

    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    randomize(base, seed=12)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)))
    path = tmp_path / "wheel" / "model.keras"
    path.parent.mkdir()
    keras.Model(inputs, outputs).save(path)
    preset = dataclasses.replace(presets_module.PRESETS["kitchenware"], input_size=SIZE, classes=3)
    request = load_module.BuildRequest()
    reads: list[str] = []
    real = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda p, **kw: (reads.append(Path(p).name), real(p, **kw))[1])

    first, source = load_module.from_keras_model(path, preset, request)
    cached = load_module.converted_path(path, preset, request)
    assert reads == ["model.keras"] and cached.is_file() and cached.parent == path.parent
    again, source_again = load_module.from_keras_model(path, preset, request)
    assert reads == ["model.keras", cached.name] and source_again == source
    np.testing.assert_array_equal(again(_x()).numpy(), first(_x()).numpy())
    assert [layer.name for layer in again.layers] == [layer.name for layer in first.layers]
    # Another wiring is another copy; a damaged copy is converted again.
    assert load_module.converted_path(path, preset, dataclasses.replace(request, variant="article")) != cached
    cached.write_bytes(b"not a keras file")
    third, _ = load_module.from_keras_model(path, preset, request)
    assert reads[-1] == "model.keras" and "unusable" in caplog.text
    np.testing.assert_array_equal(third(_x()).numpy(), first(_x()).numpy())
