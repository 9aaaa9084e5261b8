"""Named layer outputs from one forward pass: where the separable-step view and the channel search
get their numbers (`xception_core.runtime.operation.LayerSource`).

`layer_source(loaded)` builds, once per model and wiring, an ONNX Runtime session of the
BatchNorm-folded graph (`xception_core.runtime.onnx`) that exposes, as float32 NHWC outputs,
every layer output those views read (`pass_layers`): the input of each separable conv (before
its ReLU), each conv's BatchNorm, each block's sum and shortcut source, and each block's output.
A call asks only for the outputs it needs. Only building the session needs the Keras model;
running it is ONNX Runtime and NumPy. The backend is chosen by the one forward factory
(`xception_core.runtime.forward.build_forward`), like every other pass.
"""

from __future__ import annotations

from xception_core.model import LoadedModel
from xception_core.runtime.operation import LayerSource, pass_layers

__all__ = ["layer_source", "pass_layers"]


def layer_source(loaded: LoadedModel, *, backend: str | None = None, threads: int | None = None) -> LayerSource:
    """The pass for `loaded`, exposing `pass_layers` of its wiring, from the one forward factory:
    'onnx' (ONNX Runtime, or an error saying why not), 'tf' (TensorFlow), or None (ONNX Runtime
    when it can run the model, else TensorFlow, logged)."""
    from xception_core.runtime.forward import build_forward

    return build_forward(loaded.model, loaded.info.features_layer, backend=backend, threads=threads,
                         extra_outputs=pass_layers(loaded.info.variant))
