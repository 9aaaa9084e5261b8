"""Features for transfer learning: one forward pass giving the spatially pooled outputs of a few
blocks, shallow to deep, and the exit-flow feature map; and the Keras model of Xception with a
taught head on top, for export.

The extractor runs the all-blocks pass (`xception_core.runtime.activations.BlocksPass`), whose
channel means, computed inside the graph, are the pooled features: a served translation's own
graph (no TensorFlow), or a Keras model's pass on the backend `xception_core.runtime.forward`
picks. Numbers only: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xception_core.arch.registry import architecture
from xception_core.runtime.forward import Forward
from xception_core.runtime.ort import FEATURES, means_name

if TYPE_CHECKING:  # Keras is imported when a model is built, not with the Teach tab's constants
    import keras

    from xception_core.model import LoadedModel

__all__ = ["FINAL_BLOCK", "TRANSFER_BLOCKS", "Extracted", "FeatureExtractor", "transfer_model"]

# Blocks offered for the head, shallow to deep: early and late entry flow, middle of the middle
# flow, its end, and both exit-flow blocks (block14's pooled output is the 2,048-d feature
# vector the kitchenware head, and a taught head, sit on).
TRANSFER_BLOCKS: tuple[str, ...] = ("block2", "block4", "block8", "block12", "block13", "block14")
FINAL_BLOCK = architecture().block_names[-1]


@dataclass(frozen=True)
class Extracted:
    """One pass over a batch.

    Attributes:
        pooled: Block name → (N, C) spatial mean of the block's output.
        feature_map: (N, h, w, 2048) exit-flow features (what the final head's class activation
            map is drawn from).
    """

    pooled: dict[str, np.ndarray]
    feature_map: np.ndarray


class FeatureExtractor:
    """Pooled block features of a loaded Xception in one forward pass. Thread-safe.

    Args:
        loaded: Any model from `load_model` (its head, if any, is ignored), or a served
            `TranslatedModel`, whose all-blocks pass gives the same numbers without TensorFlow.
        blocks: Block names to pool, from `TRANSFER_BLOCKS` or any block of the model's
            architecture (`loaded.info.arch`).
        backend: 'onnx', 'tf', or None (ONNX Runtime when it can run the model, else TensorFlow,
            logged); see `xception_core.runtime.forward.build_forward`. `self.backend` says which
            runs.
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).

    Raises:
        BackendUnavailableError: backend 'onnx' was asked for and cannot run this model.
    """

    def __init__(self, loaded: Any, blocks: tuple[str, ...] = TRANSFER_BLOCKS, *, backend: str | None = None,
                 threads: int | None = None):
        if not blocks:
            raise ValueError("blocks must name at least one block")
        # One pass for every block: the all-blocks pass, whose channel means are the pooled
        # features (a served translation's own graph; a Keras model's on the chosen backend).
        from xception_core.runtime.activations import BlocksPass, KerasBlocksPass

        source = loaded if isinstance(loaded, BlocksPass) else KerasBlocksPass(loaded, backend=backend, threads=threads)
        self.loaded, self.input_size = loaded, source.input_size
        self.blocks = tuple(loaded.info.arch.block(b).name for b in blocks)
        shapes = _block_shapes(source)
        self.dims = {b: int(shapes[b][-1]) for b in self.blocks}
        self._pooled_names = {b: means_name(b) for b in self.blocks}
        self.runner: Forward = source.blocks_forward()
        self.backend = self.runner.backend

    def __call__(self, batch: np.ndarray) -> Extracted:
        """(N, S, S, 3) float32 in [-1, 1] → `Extracted`."""
        batch = np.asarray(batch, np.float32)
        expected = (self.input_size, self.input_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"batch must have shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        out = self.runner.run(batch, [FEATURES, *self._pooled_names.values()])
        return Extracted({b: out[n] for b, n in self._pooled_names.items()}, out[FEATURES])


def _block_shapes(source: Any) -> dict[str, tuple]:
    """{block: output shape (h, w, c)} of a blocks pass: a translation's block table, or the Keras model's layers."""
    if hasattr(source, "description"):
        return {b.name: b.output_shape for b in source.description(source.info.variant).blocks}
    model = source.loaded.model
    return {block: tuple(model.get_layer(layer).output.shape[1:]) for block, layer in source.layers.items()}


def transfer_model(loaded: LoadedModel, weights: np.ndarray, bias: np.ndarray, *, name: str = "xception_taught") -> keras.Model:
    """Xception's feature extractor with a taught softmax head: the layout of a Keras
    transfer-learning model (a nested base named 'xception', then pooling and one Dense), which
    `load_model`/`build_xception(weights=path)` read back from a saved `.keras`.

    Args:
        loaded: The model whose Xception weights to carry (its own head is dropped).
        weights: (2048, K) head weights on the pooled exit-flow features.
        bias: (K,) head bias.
        name: Model name.

    Returns:
        A `keras.Model` (N, S, S, 3) in [-1, 1] → (N, K) probabilities.
    """
    import keras

    from xception_core.weights.load import BuildRequest, copy_weights

    weights, bias = np.asarray(weights, np.float32), np.asarray(bias, np.float32)
    if weights.ndim != 2 or bias.shape != (weights.shape[1],):
        raise ValueError(f"weights must be (D, K) and bias (K,), got {weights.shape} and {bias.shape}")
    size = loaded.input_size
    base = BuildRequest(input_shape=(size, size, 3), include_top=False, variant=loaded.info.variant,
                        name="xception", arch_name=loaded.info.architecture).architecture()
    copy_weights(loaded.model, base)
    if weights.shape[0] != base.output.shape[-1]:
        raise ValueError(f"head takes {weights.shape[0]} features; the exit flow gives {base.output.shape[-1]}")
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base(inputs))
    dense = keras.layers.Dense(weights.shape[1], activation="softmax", name="predictions")
    outputs = dense(x)
    dense.set_weights([weights, bias])
    return keras.Model(inputs, outputs, name=name)
