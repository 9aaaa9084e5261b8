"""ONNX Runtime sessions of our translated graphs, and the graphs' input and output names.

Kept apart from the translation (`xception_core.runtime.onnx`, which reads Keras layers) so that a
process serving an already translated model (`xception_core.runtime.translated`) imports ONNX
Runtime and NumPy only: never Keras or TensorFlow.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np

from xception_core.settings import Settings

__all__ = ["FEATURES", "FLOAT16_MAX", "INPUT", "OUTPUT", "OnnxForward", "available", "means_name", "pooled_name", "quantize_int8",
           "softmax"]

INPUT, FEATURES, OUTPUT = "input", "features", "output"
FLOAT16_MAX = 65504.0  # larger magnitudes would become inf in float16


def available() -> bool:
    """Whether `onnx` and `onnxruntime` can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax.

    Args:
        logits: Array-like of shape ``(..., num_classes)``; ``-inf`` entries get probability 0.
        axis: Axis to normalise over.

    Returns:
        Probabilities with the same shape, summing to 1 along ``axis``; float32 for float32
        (or narrower) input, float64 otherwise.

    Raises:
        ValueError: for NaN or ``+inf`` logits, or a slice that is all ``-inf``.
    """
    x = np.asarray(logits)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("logits contain NaN or +inf.")
    peak = np.max(x, axis=axis, keepdims=True)
    if np.isneginf(peak).any():
        raise ValueError("logits along the softmax axis are all -inf.")
    # Subtracting the max keeps exp() in range: the largest term becomes exp(0) = 1.
    shifted = np.exp(x - peak)
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def quantize_int8(proto: Any, calibration: list[np.ndarray], *, reduce_range: bool = False) -> Any:
    """Static int8 quantization of a `to_onnx` model (ONNX Runtime's quantizer, QDQ format).

    Activations uint8 with ranges calibrated (min/max) on `calibration`, weights int8 per output
    channel; ONNX Runtime runs the result as QLinearConv / ConvInteger kernels. Takes ~4 s at
    150×150 with a handful of calibration images. Reduced precision: check the top-1 agreement with
    fp32 on real photos before trusting it (`python -m bench.run` reports it).

    Args:
        proto: An fp32 model from `to_onnx`.
        calibration: Preprocessed images, each (H, W, 3) or (1, H, W, 3) float32.
        reduce_range: 7-bit weights, which avoid the int16 saturation of u8×s8 products on CPUs
            without VNNI (ONNX Runtime's advice for AVX2/AVX-512 without VNNI), at some accuracy.

    Returns:
        The quantized `onnx.ModelProto`, same inputs and outputs.
    """
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.asarray(x, np.float32).reshape((1, *np.shape(x)[-3:])) for x in calibration]
    if not batches:
        raise ValueError("quantize_int8 needs at least one calibration image")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._items, None)
            return None if x is None else {INPUT: x}

    with tempfile.TemporaryDirectory(prefix="xception-int8-") as tmp:
        fp32, pre, int8 = (str(Path(tmp) / n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, fp32)
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)
        quantize_static(pre, int8, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
        return onnx.load(int8)


def pooled_name(layer: str) -> str:
    """Name of the graph output holding `layer`'s output averaged over space (`pooled_outputs`)."""
    return f"{layer}:mean"


def means_name(block_map: str) -> str:
    """Name of the graph output holding the (N, c) channel means of block map `block_map`."""
    return f"{block_map}/means"


class OnnxForward:
    """An ONNX Runtime session running a `to_onnx` graph: the `Forward` of the 'onnx' backend
    (`xception_core.runtime.forward`).

    Thread-safe (`InferenceSession.run` may be called concurrently). `xception_core.runtime.onnx.forward_of`
    translates a Keras model into one; the constructor runs any graph with that graph's inputs and outputs
    (e.g. a quantized one, or one read from a file).

    Args:
        proto: An `onnx.ModelProto` with input 'input' (N, H, W, C) and outputs 'features' and
            'output' (plus any extra ones); its large weights may be external (`weights`).
        weights: {initializer name: float32 array} for a graph from `to_onnx_parts`; the arrays
            must not change while the session lives (kept referenced here).
        threads: Intra-op threads (default: every CPU this process may use).
        spin: Let idle worker threads spin-wait. Off by default: on a shared 2-core machine
            spinning steals the cycles the HTTP server and the other threads need.
        precision: What the graph computes in, 'fp32' or 'int8' (said, not checked).
        lean: A session that holds no weights of its own, for a pass run now and then (the
            operation view's, another wiring's): the weights are ONNX Runtime's shared
            initializers (`SessionOptions.add_initializer`: used where they lie, where external
            initializers alone are copied into the session), the graph is optimised without the
            NCHWc layout (whose re-blocked copy of every conv's weights the session would keep),
            and its working memory is freed after each run (no arena). Slower per run than the
            default (bench/README.md, "Memory of the sessions"); the classifier's own session is
            not lean.
    """

    backend = "onnx"

    def __init__(self, proto: Any | bytes, weights: Mapping[str, np.ndarray] | None = None, *, threads: int | None = None,
                 spin: bool = False, precision: str = "fp32", lean: bool = False):
        import onnxruntime as ort

        weights = dict(weights or {})
        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if lean
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        options.intra_op_num_threads = threads or Settings().onnx_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3
        self.threads = options.intra_op_num_threads
        self.precision, self.lean = precision, lean
        # The session reads the weights from these arrays, which must outlive it: kept here.
        self._weights = [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()]
        if weights:
            options.add_external_initializers(list(weights), self._weights)
            if lean:
                options.enable_cpu_mem_arena = False
                for name, value in zip(weights, self._weights):
                    options.add_initializer(name, value)
        graph = proto if isinstance(proto, bytes) else proto.SerializeToString()
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) float32 → (features (N, h, w, c), output (N, classes))."""
        features, output = self.session.run([FEATURES, OUTPUT], {INPUT: np.ascontiguousarray(batch, np.float32)})
        return features, output

    def run(self, batch: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every output (or the named ones) of the graph for a (N, H, W, C) float32 batch."""
        names = list(outputs) if outputs else [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {INPUT: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(names, values))
