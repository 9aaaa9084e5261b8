"""The compiled forward and Grad-CAM (numbers in, numbers out)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xception_core.io.labels import load_labels, top_k
from xception_core.inputs.preprocessing import preprocess
from xception_core.model import load_model
from xception_core.runtime.classifier import Classifier, softmax


@pytest.fixture(scope="module")
def small_classifier():
    return Classifier(load_model(None, input_shape=(96, 96, 3), classes=7))


def test_forward_matches_the_model(small_classifier):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 96, 96, 3)).astype("float32")
    features, probs = small_classifier.forward(x)
    assert features.shape == (3, 3, 3, 2048) and probs.shape == (3, 7)
    np.testing.assert_allclose(probs, small_classifier.model(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_classify_any_image(small_classifier):
    image = Image.new("RGB", (300, 200), (200, 30, 30))
    _, probs = small_classifier.forward(preprocess(image, 96)[None])
    top = top_k(probs[0], [f"class {i}" for i in range(7)], 3)
    assert len(top) == 3
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_softmax_is_stable_and_checks_its_input():
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        softmax(np.array([np.nan, 1.0]))


def test_forward_rejects_wrong_shapes(small_classifier):
    with pytest.raises(ValueError, match=r"got \(1, 64, 64, 3\)"):
        small_classifier.forward(np.zeros((1, 64, 64, 3), "float32"))


def test_gradcam_shape_and_range(small_classifier):
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    features, probs = small_classifier.forward(x)
    cam = small_classifier.gradcam(features[0], int(probs[0].argmax()))
    assert cam.shape == (3, 3) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="class_index must be in"):
        small_classifier.gradcam(features[0], 7)


def test_features_only_model_is_refused():
    with pytest.raises(ValueError, match="include_top=True"):
        Classifier(load_model(None, include_top=False, input_shape=(96, 96, 3)))


@pytest.mark.slow
def test_kitchenware_classifier_on_a_shipped_photo(kitchenware_loaded, kitchenware_samples):
    classifier = Classifier(kitchenware_loaded)
    labels = load_labels(kitchenware_loaded.info.labels)
    assert labels == ("cup", "fork", "glass", "knife", "plate", "spoon")
    sample = next(s for s in kitchenware_samples if s.label)
    _, probs = classifier.forward(preprocess(sample.path, classifier.input_size)[None])
    top = top_k(probs[0], labels, 6)
    assert top[0][0] == sample.label
    assert abs(sum(p for _, p in top) - 1.0) < 1e-4  # all 6 classes: softmax of the logits
