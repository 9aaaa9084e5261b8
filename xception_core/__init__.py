"""Xception (Chollet 2017) from its building blocks, in layers that each import only downward:

    arch (nodes, spec, registry, graph, builder, names) → weights (presets, fetch, load) → model (the one factory)
    → runtime (classifier, ONNX, folding, batching, activations, introspection: numbers only)
    → io (images, preprocessing, labels, assets, visualize, export)

Pure TensorFlow/Keras/NumPy/Pillow: no UI code, no page text, and no environment reads outside
`xception_core.settings`. The names below are imported lazily, so `xception_core.io.images` and
`xception_core.io.labels` can be used without paying for TensorFlow's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_xception": "xception_core.model",
    "load_model": "xception_core.model",
    "rewire": "xception_core.model",
    "LoadedModel": "xception_core.model",
    "ModelInfo": "xception_core.model",
    "WeightsUnavailableError": "xception_core.model",
    "WeightsFailure": "xception_core.model",
    "build_architecture": "xception_core.arch.builder",
    "conv_bn": "xception_core.arch.builder",
    "sep_bn": "xception_core.arch.builder",
    "architecture": "xception_core.arch.registry",
    "ARCHITECTURES": "xception_core.arch.registry",
    "VARIANT_SPECS": "xception_core.arch.spec",
    "WIRING_DIFFERENCES": "xception_core.arch.spec",
    "Settings": "xception_core.settings",
    "Classifier": "xception_core.runtime.classifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xception_core' has no attribute {name!r}")
