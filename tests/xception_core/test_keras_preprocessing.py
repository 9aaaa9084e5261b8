"""Each preset's preprocessing is its weights' own (issue 25): the app's input is Keras's reference
pipeline, `keras.utils.load_img(path, target_size, interpolation=<the preset's>)` →
`img_to_array` → `keras.applications.xception.preprocess_input`, bit for bit, and the served
kitchenware model answers the package's photos and the bundled examples as the package's own
Keras model fed that way does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xception_core.inputs.preprocessing import preprocess
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_samples, cached_weights_sha256
from xception_core.weights.presets import IMAGENET, KITCHENWARE, PRESETS, preprocessing_for

keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.jpg"))


def keras_input(path: Path, size: int, interpolation: str) -> np.ndarray:
    """Keras's reference pipeline for Xception: (size, size, 3) float32."""
    image = keras.utils.load_img(path, target_size=(size, size), interpolation=interpolation)
    return keras.applications.xception.preprocess_input(keras.utils.img_to_array(image))


def _photos() -> list[Path]:
    samples = cached_samples("kitchenware", Settings.from_env().cache_dir)
    return EXAMPLES + [s.path for s in samples]


def test_the_presets_name_keras_load_imgs_filter():
    """Both presets resize as Keras's reference pipeline does: `load_img`'s default, 'nearest'."""
    import inspect

    default = inspect.signature(keras.utils.load_img).parameters["interpolation"].default
    assert KITCHENWARE.preprocessing.resize == default == "nearest"
    assert IMAGENET.preprocessing.resize == default
    assert all(preprocessing_for(name) == preset.preprocessing for name, preset in PRESETS.items())
    assert preprocessing_for("file").resize == default and preprocessing_for(None).resize == default


@pytest.mark.parametrize("preset", [IMAGENET, KITCHENWARE], ids=lambda p: p.name)
def test_the_input_is_kerass_bit_for_bit(preset):
    photos = _photos()
    assert len(photos) >= len(EXAMPLES) >= 4
    for path in photos:
        ours = preprocessing_for(preset.name)(path, preset.input_size)
        np.testing.assert_array_equal(ours, keras_input(path, preset.input_size, preset.preprocessing.resize),
                                      err_msg=path.name)
    # The filter matters: bicubic is another input (what the app fed before issue 25).
    assert not np.array_equal(preprocess(EXAMPLES[0], KITCHENWARE.input_size, "bicubic"),
                              keras_input(EXAMPLES[0], KITCHENWARE.input_size, "nearest"))


@pytest.mark.slow
def test_the_served_kitchenware_model_answers_as_the_packages_keras_model():
    """The cached translation (what serving runs, ONNX Runtime), fed the preset's preprocessing,
    against the package's own `.keras` fed by `load_img` (nearest): every probability within 1e-5,
    on the package's photos and the bundled examples."""
    from xception_core.runtime.ort import softmax
    from xception_core.runtime.translated import TranslatedModel, open_translation, translation_dir
    from xception_core.weights.fetch import fetch_wheel_model

    settings = Settings.from_env()
    sha = cached_weights_sha256("kitchenware", settings.keras_home, settings.cache_dir)
    translation = open_translation(translation_dir(settings.cache_dir, sha), sha) if sha else None
    if translation is None:
        pytest.skip("the kitchenware translation is not cached here (start the app once)")
    served = TranslatedModel(translation, threads=1)
    package = keras.saving.load_model(fetch_wheel_model(KITCHENWARE, settings.cache_dir), compile=False)
    photos = _photos()
    size = KITCHENWARE.input_size
    reference = softmax(np.asarray(package.predict_on_batch(np.stack([keras_input(p, size, "nearest")
                                                                       for p in photos]))))
    ours = np.stack([served.forward(preprocessing_for(served.info.preset)(p, size)[None])[1][0] for p in photos])
    assert len(photos) > 20
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)
    assert (ours.argmax(1) == reference.argmax(1)).all()
