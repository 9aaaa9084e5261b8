"""Named layer outputs from one forward pass: where the separable-step view and the channel search
get their numbers (`xception_core.runtime.operation.LayerSource`).

`layer_source(loaded)` builds, once per model and wiring, an ONNX Runtime session of the
BatchNorm-folded graph (`xception_core.runtime.onnx`) that exposes, as float32 NHWC outputs,
every layer output those views read (`pass_layers`): the input of each separable conv (before
its ReLU), each conv's BatchNorm, each block's sum and shortcut source, and each block's output.
A call asks only for the outputs it needs. Only building the session needs the Keras model;
running it is ONNX Runtime and NumPy. Where ONNX Runtime cannot run the model, a Keras model
with the same outputs does (slower, with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from xception_core.arch.graph import block_output, separable_names
from xception_core.arch.spec import XCEPTION_SPEC, XceptionSpec
from xception_core.model import LoadedModel
from xception_core.runtime.operation import LayerSource, block_layers

logger = logging.getLogger(__name__)

__all__ = ["KerasLayerSource", "OnnxLayerSource", "layer_source", "pass_layers"]


def pass_layers(variant: str = "paper", spec: XceptionSpec = XCEPTION_SPEC) -> tuple[str, ...]:
    """Every layer output a pass exposes: each block's separable-step layers and each block's output."""
    names: list[str] = []
    for block in spec.blocks:
        if separable_names(block):
            names += block_layers(block.name, variant, spec)
        names.append(block_output(block.name, variant, spec))
    return tuple(dict.fromkeys(names))


class OnnxLayerSource:
    """An ONNX Runtime session (float32, BatchNorm folded) exposing `layers` by name.

    Args:
        loaded: The model, in the wiring whose layers are wanted.
        layers: Layer names to expose (default `pass_layers` of its wiring).
        threads: Intra-op threads (default: every CPU this process may use).
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[str] | None = None, threads: int | None = None):
        from xception_core.runtime.onnx import OnnxForward

        self.layers = tuple(layers or pass_layers(loaded.info.variant))
        self.backend = "onnx"
        self._forward = OnnxForward(loaded.model, loaded.info.features_layer, extra_outputs=self.layers,
                                    threads=threads)

    def run(self, batch: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """(N, S, S, 3) float32 → {layer: (N, h, w, c) float32} for the named layers only."""
        unknown = [n for n in names if n not in self.layers]
        if unknown:
            raise ValueError(f"layers not exposed by this pass: {unknown[:3]}")
        return self._forward.run(batch, list(names))


class KerasLayerSource:
    """The same outputs from the Keras model itself (TensorFlow): the fallback, and a reference."""

    def __init__(self, loaded: LoadedModel, layers: Sequence[str] | None = None):
        import keras

        self.layers = tuple(layers or pass_layers(loaded.info.variant))
        self.backend = "tf"
        model = loaded.model
        self._model = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in self.layers})

    def run(self, batch: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        unknown = [n for n in names if n not in self.layers]
        if unknown:
            raise ValueError(f"layers not exposed by this pass: {unknown[:3]}")
        out = self._model(np.ascontiguousarray(batch, np.float32), training=False)
        return {n: np.asarray(out[n], np.float32) for n in names}


def layer_source(loaded: LoadedModel, *, backend: str | None = None, threads: int | None = None) -> LayerSource:
    """The pass for `loaded`: 'onnx' (ONNX Runtime, or an error saying why not), 'tf' (Keras), or
    None (ONNX Runtime when it can run the model, else Keras, with a warning)."""
    if backend not in (None, "onnx", "tf"):
        raise ValueError(f"backend must be 'onnx', 'tf' or None, got {backend!r}")
    if backend != "tf":
        try:
            return OnnxLayerSource(loaded, threads=threads)
        except Exception as exc:  # noqa: BLE001 - missing package, untranslatable layer, ORT error
            if backend == "onnx":
                raise
            logger.warning("separable-step pass on ONNX Runtime unavailable (%s); using TensorFlow", exc)
    return KerasLayerSource(loaded)
