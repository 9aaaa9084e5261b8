"""Fast inference: one compiled forward pass that also yields the exit-flow features, and
Grad-CAM from those features without a second pass through the network. Numbers only: arrays
in, arrays out (labels and image decoding belong to `xception_core.io`).

`model.predict` is never used on the hot path: it rebuilds a data pipeline per call (slower than
the compiled call at batch 1, see bench/README.md).

Two backends run the forward, chosen in `xception_core.runtime.forward`: ONNX Runtime on a graph
translated from the model with BatchNorm folded in (`xception_core.runtime.onnx`, the default when
onnxruntime is installed), or a `tf.function`. Both return the same (features, probabilities);
Grad-CAM always differentiates the head in TensorFlow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xception_core.model import LoadedModel
from xception_core.runtime.forward import Forward, build_forward
from xception_core.runtime.ort import softmax  # noqa: F401 - re-exported: its first home
from xception_core.weights.load import layers_after

logger = logging.getLogger(__name__)


class Classifier:
    """A built Xception's compiled forward and Grad-CAM.

    Thread-safe: TensorFlow runs concurrent calls of a `tf.function` safely, ONNX Runtime
    concurrent `run` calls; the lock only guards the lazy tracing of the Grad-CAM function.

    Args:
        loaded: A model from `load_model` with its classifier.
        backend: 'onnx', 'tf', or None (ONNX Runtime when it can run the model, else TensorFlow,
            logged); see `xception_core.runtime.forward.build_forward`. `self.backend` says which
            runs.
        precision: 'fp32' or 'int8' (ONNX Runtime static quantization calibrated on
            `calibration`; speed and agreement with fp32 in bench/README.md). int8 needs the onnx
            backend and calibration images; otherwise, or if quantizing fails, fp32 runs (with a
            warning). `self.precision` says which runs.
        calibration: Preprocessed (S, S, 3) images that set int8 activation ranges.
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).

    Raises:
        BackendUnavailableError: backend 'onnx' was asked for and cannot run this model.
    """

    def __init__(self, loaded: LoadedModel, *, backend: str | None = None, precision: str = "fp32",
                 calibration: Sequence[np.ndarray] = (), threads: int | None = None):
        info = loaded.info
        if info.outputs == "features":
            raise ValueError("Classifier needs a model with a classifier (include_top=True)")
        model = loaded.model
        self.loaded, self.model, self.info = loaded, model, info
        self.classes = int(model.outputs[0].shape[-1])
        self.input_size: int = loaded.input_size
        self._head_layers = layers_after(model, model.get_layer(info.features_layer))
        self._gradcam_fn: Any = None
        self._lock = threading.Lock()
        self.runner: Forward = build_forward(model, info.features_layer, backend=backend, precision=precision,
                                             calibration=calibration, threads=threads)
        self.backend, self.precision = self.runner.backend, self.runner.precision

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
        features, out = self.runner(batch)
        if self.info.outputs == "logits":
            out = softmax(out)
        return features, out

    def warm_up(self) -> None:
        """Traces the compiled forward and Grad-CAM once, so the first user does not wait for it."""
        features, probs = self.forward(np.zeros((1, self.input_size, self.input_size, 3), np.float32))
        self.gradcam(features[0], int(probs[0].argmax()))

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
        if not 0 <= class_index < self.classes:
            raise ValueError(f"class_index must be in [0, {self.classes}), got {class_index}")
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
