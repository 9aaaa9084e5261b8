"""Grad-CAM on real weights: the peak lies on a single object, and follows it when it moves.

The kitchenware head was trained on whole photos at 150×150 and is fragile on composites, so the
test uses a photo it classifies correctly wherever it is pasted (0013.jpg, a knife) and checks
the peak in three placements on a plain canvas.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xception_core.io.labels import load_labels
from xception_core.inputs.preprocessing import preprocess
from xception_core.io.visualize import upsample
from xception_core.runtime.classifier import Classifier

CANVAS = 800


@pytest.fixture(scope="module")
def knife_photo(kitchenware_samples):
    sample = next(s for s in kitchenware_samples if s.path.stem == "0013")
    assert sample.label == "knife"
    photo = Image.open(sample.path).convert("RGB")
    photo.thumbnail((440, 440))
    return photo


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["centre", "top-left", "bottom-right"])
def test_peak_lies_on_the_object(kitchenware_loaded, knife_photo, placement):
    classifier = Classifier(kitchenware_loaded)
    labels = load_labels(kitchenware_loaded.info.labels)
    w, h = knife_photo.size
    left, top = {"centre": ((CANVAS - w) // 2, (CANVAS - h) // 2), "top-left": (20, 20),
                 "bottom-right": (CANVAS - 20 - w, CANVAS - 20 - h)}[placement]
    canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
    canvas.paste(knife_photo, (left, top))
    features, probs = classifier.forward(preprocess(canvas, classifier.input_size)[None])
    assert labels[int(probs[0].argmax())] == "knife"
    heat = upsample(classifier.gradcam(features[0], labels.index("knife")), canvas.size)
    assert heat.shape == (CANVAS, CANVAS)  # the input's size
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert left <= x < left + w and top <= y < top + h, (placement, x, y)
    # The heat is concentrated on the photo, not spread over the empty canvas around it.
    mask = np.zeros(heat.shape, bool)
    mask[top:top + h, left:left + w] = True
    assert heat[mask].mean() > 1.5 * heat[~mask].mean()
