"""The one place that chooses what runs a model's forward pass: ONNX Runtime or TensorFlow.

`build_forward(model, features_layer, backend=...)` returns a `Forward`: a compiled pass that
maps an (N, H, W, C) float32 batch to named outputs. The classifier, the feature extractor and the
activation explorer all get theirs here, so the choice is made, and explained, the same way:

- backend 'tf': a `tf.function` (`TfForward`);
- backend 'onnx': an ONNX Runtime session of the translated graph (`OnnxForward`), or
  `BackendUnavailableError` saying why not: an explicit request is never quietly replaced;
- backend None: ONNX Runtime when `onnx` and `onnxruntime` are importable and the model
  translates, else TensorFlow, with a log line saying why.

Both implementations give the same outputs under the same names (within float32 rounding and
BatchNorm folding), named as in `xception_core.runtime.onnx`: `FEATURES` (N, h, w, C) and
`OUTPUT` (N, classes), plus what was asked for: `pooled_name(layer)` (N, C) spatial means, block
maps (N, c, h, w) float16 each with its `means_name` (N, c) float32, and extra layers (NHWC).
A forward made from an ONNX file instead of a Keras model only has to satisfy the same
`Forward` protocol (`OnnxForward(proto)` already runs any such graph).

Numbers only; TensorFlow is imported only when a TensorFlow forward is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from xception_core.settings import BACKENDS, PRECISIONS

if TYPE_CHECKING:
    import keras

__all__ = ["BackendUnavailableError", "Forward", "TfForward", "build_forward"]

logger = logging.getLogger(__name__)


class BackendUnavailableError(RuntimeError):
    """The backend that was asked for explicitly cannot run this model (the cause is chained)."""


@runtime_checkable
class Forward(Protocol):
    """A compiled forward pass of one model.

    Attributes:
        backend: 'onnx' or 'tf': what runs it.
        precision: 'fp32' or 'int8'.
    """

    backend: str
    precision: str

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) float32 → (features (N, h, w, C), output (N, classes))."""
        ...

    def run(self, batch: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every output of the pass (or the named ones) for an (N, H, W, C) float32 batch."""
        ...


def build_forward(model: keras.Model, features_layer: str, *, backend: str | None = None, precision: str = "fp32",
                  calibration: Sequence[np.ndarray] = (), threads: int | None = None,
                  extra_outputs: Sequence[str] = (), pooled_outputs: Sequence[str] = (),
                  block_maps: Mapping[str, str] | None = None) -> Forward:
    """The forward pass of `model` on the chosen backend (see the module docstring).

    Args:
        model: A single-input, single-output functional model, NHWC input.
        features_layer: Layer whose output is `FEATURES`.
        backend: 'onnx', 'tf', or None (ONNX Runtime when it can, else TensorFlow, logged).
        precision: 'fp32', or 'int8' (ONNX Runtime static quantization calibrated on
            `calibration`). int8 that cannot be had (TensorFlow runs, no calibration images, the
            quantizer fails) runs fp32 with a warning; `Forward.precision` says which runs.
        calibration: Preprocessed (S, S, 3) images that set int8 activation ranges.
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).
        extra_outputs, pooled_outputs, block_maps: Further outputs, as `to_onnx_parts` names them.

    Raises:
        BackendUnavailableError: backend 'onnx' was asked for and cannot run this model.
        ValueError: an unknown backend or precision.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)} or None, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    outputs = dict(extra_outputs=tuple(extra_outputs), pooled_outputs=tuple(pooled_outputs),
                   block_maps=dict(block_maps or {}))
    if backend == "tf":
        return _tf(model, features_layer, precision, outputs)
    from xception_core.runtime import onnx as onnx_backend

    if not onnx_backend.available():
        if backend == "onnx":
            raise BackendUnavailableError("backend 'onnx' was asked for, but the onnx and onnxruntime packages "
                                          "are not installed")
        logger.warning("%s runs on TensorFlow: the onnx and onnxruntime packages are not installed", model.name)
        return _tf(model, features_layer, precision, outputs)
    try:
        return _onnx(model, features_layer, precision, calibration, threads, outputs)
    except Exception as exc:  # noqa: BLE001 - an untranslatable layer, an ORT error (plain Exception subclasses)
        if backend == "onnx":
            raise BackendUnavailableError(f"backend 'onnx' was asked for, but ONNX Runtime cannot run model "
                                          f"{model.name!r}: {type(exc).__name__}: {exc}") from exc
        logger.warning("%s runs on TensorFlow: ONNX Runtime cannot run it (%s: %s)", model.name,
                       type(exc).__name__, exc)
        return _tf(model, features_layer, precision, outputs)


def _tf(model: keras.Model, features_layer: str, precision: str, outputs: dict[str, Any]) -> TfForward:
    if precision == "int8":
        logger.warning("int8 needs the onnx backend; %s runs fp32 on TensorFlow", model.name)
    return TfForward(model, features_layer, **outputs)


def _onnx(model: keras.Model, features_layer: str, precision: str, calibration: Sequence[np.ndarray],
          threads: int | None, outputs: dict[str, Any]) -> Forward:
    from xception_core.runtime.onnx import OnnxForward, forward_of, quantize_int8, to_onnx

    if precision == "int8":
        # The translation's own errors propagate (they decide the backend); the quantizer's only cost int8.
        proto = to_onnx(model, features_layer, **outputs)
        try:
            if not len(calibration):
                raise ValueError("no calibration images")
            quantized = quantize_int8(proto, list(calibration))
        except Exception as exc:  # noqa: BLE001 - quantizer missing or failing: fp32 still works
            logger.warning("int8 quantization of %s failed (%s); running fp32", model.name, exc)
        else:
            return OnnxForward(quantized, threads=threads, precision="int8")
        del proto  # fp32 from external weights holds them once, not inside a serialized graph too
    return forward_of(model, features_layer, threads=threads, **outputs)


class TfForward:
    """The `Forward` of the 'tf' backend: one `tf.function` over a multi-output view of the model
    (sharing its layers, no copy of the weights), traced once, on first call, for any batch size.

    Args:
        model, features_layer, extra_outputs, pooled_outputs, block_maps: As for `build_forward`.
    """

    backend = "tf"
    precision = "fp32"

    def __init__(self, model: keras.Model, features_layer: str, *, extra_outputs: Sequence[str] = (),
                 pooled_outputs: Sequence[str] = (), block_maps: Mapping[str, str] | None = None):
        import keras
        import tensorflow as tf

        from xception_core.runtime.ort import FEATURES, FLOAT16_MAX, OUTPUT, means_name, pooled_name

        self._features, self._output = FEATURES, OUTPUT
        layer = model.get_layer
        tensors = {FEATURES: layer(features_layer).output, OUTPUT: model.outputs[0]}
        tensors.update({name: layer(name).output for name in extra_outputs})
        pooled = {pooled_name(name): layer(name).output for name in pooled_outputs}
        maps = {name: layer(source).output for name, source in (block_maps or {}).items()}
        for name, tensor in {**pooled, **maps}.items():
            if len(tensor.shape) != 4:
                raise ValueError(f"{name}: only rank-4 (N, H, W, C) outputs can be pooled or mapped")
        view = keras.Model(model.inputs[0], {**tensors, **pooled, **maps}, name=f"{model.name}_forward")

        @tf.function(input_signature=[tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)])
        def forward(x):
            outs = view(x, training=False)
            result = {name: outs[name] for name in tensors}
            for name in pooled:
                result[name] = tf.reduce_mean(outs[name], axis=(1, 2))
            for name in maps:  # as the ONNX graph gives them: NCHW float16, clipped to its range
                t = outs[name]
                nchw = tf.transpose(tf.clip_by_value(t, -FLOAT16_MAX, FLOAT16_MAX), [0, 3, 1, 2])
                result[name] = tf.cast(nchw, tf.float16)
                result[means_name(name)] = tf.reduce_mean(t, axis=(1, 2))
            return result

        self._forward = forward

    def run(self, batch: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every output (or the named ones) for an (N, H, W, C) float32 batch."""
        values = self._forward(np.ascontiguousarray(batch, np.float32))
        names = list(outputs) if outputs else list(values)
        return {name: values[name].numpy() for name in names}

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) float32 → (features (N, h, w, C), output (N, classes))."""
        out = self.run(batch, [self._features, self._output])
        return out[self._features], out[self._output]
