"""Xception (Chollet 2017) from its building blocks, in layers that each import only downward:

    arch (spec, builder, names) → weights (presets, fetch, load) → model (the one factory)
    → runtime (classifier, ONNX, folding, batching, activations, introspection: numbers only)
    → io (images, preprocessing, labels, assets, visualize, export)

Pure TensorFlow/Keras/NumPy/Pillow: no UI code, no page text, and no environment reads outside
`xception.settings`. The names below are imported lazily, so `xception.io.images` and
`xception.io.labels` can be used without paying for TensorFlow's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_xception": "xception.model",
    "load_model": "xception.model",
    "rewire": "xception.model",
    "LoadedModel": "xception.model",
    "ModelInfo": "xception.model",
    "WeightsUnavailableError": "xception.model",
    "build_architecture": "xception.arch.builder",
    "conv_bn": "xception.arch.builder",
    "sep_bn": "xception.arch.builder",
    "XCEPTION_SPEC": "xception.arch.spec",
    "VARIANT_SPECS": "xception.arch.spec",
    "WIRING_DIFFERENCES": "xception.arch.spec",
    "Settings": "xception.settings",
    "Classifier": "xception.runtime.classifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xception' has no attribute {name!r}")
