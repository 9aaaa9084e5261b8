"""Xception (Chollet 2017) from its building blocks, with weights presets, preprocessing, labels,
introspection and export. Pure TensorFlow/Keras/NumPy/Pillow: no UI code here.

The names below are imported lazily, so `xception_core.preprocessing` and `xception_core.labels`
can be used without paying for TensorFlow's import (~3 s, 0.6 GB).
"""

from __future__ import annotations

import importlib
import os as _os
from typing import Any

# TensorFlow's C++ start-up chatter is noise for users of this package.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_EXPORTS = {
    "build_xception": "xception_core.model",
    "build_architecture": "xception_core.model",
    "conv_bn": "xception_core.model",
    "sep_bn": "xception_core.model",
    "XCEPTION_SPEC": "xception_core.spec",
    "VARIANT_SPECS": "xception_core.spec",
    "WeightsInfo": "xception_core.weights",
    "WeightsUnavailableError": "xception_core.weights",
    "weights_info": "xception_core.weights",
    "Classifier": "xception_core.inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xception_core' has no attribute {name!r}")
