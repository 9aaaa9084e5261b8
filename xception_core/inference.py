"""Fast inference: one compiled forward pass that also yields the exit-flow features, and
Grad-CAM from those features without a second pass through the network.

`model.predict` is never used on the hot path: it rebuilds a data pipeline per call (~1.6× the
compiled call at batch 1 on 2 CPU cores, see bench/).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xception_core.labels import load_labels, softmax, top_k
from xception_core.model import block_output_layer
from xception_core.preprocessing import load_image, preprocess
from xception_core.spec import XCEPTION_SPEC
from xception_core.weights import WeightsInfo, weights_info


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    Attributes:
        top: (label, probability) pairs, most probable first.
        probabilities: (classes,) float32.
        features: (h, w, 2048) exit-flow features (input to Grad-CAM).
    """

    top: list[tuple[str, float]]
    probabilities: np.ndarray
    features: np.ndarray


class Classifier:
    """A built Xception with its labels, preprocessing and compiled forward.

    Thread-safe: TensorFlow runs concurrent calls of a `tf.function` safely; the lock only guards
    the lazy tracing of the Grad-CAM function.
    """

    def __init__(self, model: keras.Model, labels: tuple[str, ...] | None = None):
        info = weights_info(model)
        if info.outputs == "features":
            raise ValueError("Classifier needs a model with a classifier (include_top=True)")
        self.model = model
        self.info: WeightsInfo = info
        classes = int(model.outputs[0].shape[-1])
        if labels is None:
            labels = load_labels(info.labels) if info.labels else tuple(f"class {i}" for i in range(classes))
        if len(labels) != classes:
            raise ValueError(f"{len(labels)} labels for a classifier of {classes} classes")
        self.labels = labels
        self.input_size: int = info.input_size or XCEPTION_SPEC.default_input_size
        features_name = block_output_layer(XCEPTION_SPEC.blocks[-1], info.variant)
        features_layer = model.get_layer(features_name)
        both = keras.Model(model.inputs[0], [features_layer.output, model.outputs[0]])
        self._head_layers = head_layers(model, features_layer)
        size = self.input_size
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        self._forward = tf.function(lambda x: both(x, training=False), input_signature=[spec])
        self._gradcam_fn: Any = None
        self._lock = threading.Lock()

    @property
    def title(self) -> str:
        return self.info.title

    def preprocess(self, image: Any) -> np.ndarray:
        """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1]."""
        return preprocess(load_image(image), self.input_size)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Runs the compiled forward.

        Args:
            batch: (N, size, size, 3) float32 in [-1, 1].

        Returns:
            (features (N, h, w, 2048), probabilities (N, classes)).
        """
        batch = np.asarray(batch, dtype=np.float32)
        expected = (self.input_size, self.input_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"batch must have shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        features, out = self._forward(tf.constant(batch))
        out = out.numpy()
        if self.info.outputs == "logits":
            out = softmax(out)
        return features.numpy(), out

    def warm_up(self) -> None:
        """Traces the compiled forward and Grad-CAM once, so the first user does not wait for it."""
        features, probs = self.forward(np.zeros((1, self.input_size, self.input_size, 3), np.float32))
        self.gradcam(features[0], int(probs[0].argmax()))

    def predict_arrays(self, batch: np.ndarray, k: int = 5) -> list[Prediction]:
        """Forward + top-k for a preprocessed batch (N, size, size, 3)."""
        features, probs = self.forward(batch)
        k = min(k, len(self.labels))
        return [Prediction(top_k(p, self.labels, k), p, f) for f, p in zip(features, probs)]

    def classify(self, image: Any, k: int = 5) -> Prediction:
        """Top-k labels of one image (any input `load_image` accepts)."""
        return self.predict_arrays(self.preprocess(image)[None], k)[0]

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM (Selvaraju et al. 2017) of one class from exit-flow features.

        Only the head (pooling and classifier) is differentiated, so this costs ~1 ms, not a
        second forward pass.

        Args:
            features: (h, w, 2048) features from `forward`.
            class_index: Class to explain.

        Returns:
            (h, w) float32 heat map in [0, 1] (all zeros when no region raises the class score).
        """
        if not 0 <= class_index < len(self.labels):
            raise ValueError(f"class_index must be in [0, {len(self.labels)}), got {class_index}")
        with self._lock:
            if self._gradcam_fn is None:
                head_layers = self._head_layers

                @tf.function(input_signature=[tf.TensorSpec([1, None, None, features.shape[-1]], tf.float32),
                                              tf.TensorSpec([], tf.int32)])
                def gradcam_fn(f, index):
                    with tf.GradientTape() as tape:
                        tape.watch(f)
                        score = _scores(head_layers, f)[0, index]
                    grads = tape.gradient(score, f)
                    weights = tf.reduce_mean(grads, axis=(1, 2))  # (1, C): channel importance
                    cam = tf.nn.relu(tf.reduce_sum(f * weights[:, None, None, :], axis=-1))[0]
                    return cam / (tf.reduce_max(cam) + 1e-12)

                self._gradcam_fn = gradcam_fn
        cam = self._gradcam_fn(tf.constant(features[None], tf.float32), tf.constant(class_index, tf.int32))
        return cam.numpy().astype(np.float32)


def head_layers(model: keras.Model, features_layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers after the exit-flow features (pooling, classifier, a transfer head), shared."""
    layer_list = list(model.layers)
    return layer_list[layer_list.index(features_layer) + 1 :]


def _scores(head_layers: list[keras.layers.Layer], features: tf.Tensor) -> tf.Tensor:
    """Pre-softmax class scores from features: a final Dense is applied as its linear part,
    since gradients of a saturated softmax vanish."""
    x = features
    for layer in head_layers[:-1]:
        x = layer(x, training=False)
    last = head_layers[-1]
    if isinstance(last, keras.layers.Dense):
        x = tf.matmul(x, last.kernel)
        return x + last.bias if last.use_bias else x
    return last(x, training=False)
