"""Xception (Chollet 2017) from its building blocks, with weights presets, preprocessing, labels,
introspection and export. Pure TensorFlow/Keras/NumPy/Pillow: no UI code here."""

import os as _os

# TensorFlow's C++ start-up chatter is noise for users of this package.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from xception_core.model import build_architecture, build_xception, conv_bn, sep_bn  # noqa: E402
from xception_core.spec import VARIANT_SPECS, XCEPTION_SPEC  # noqa: E402
from xception_core.weights import WeightsInfo, WeightsUnavailableError, weights_info  # noqa: E402

__all__ = [
    "VARIANT_SPECS", "XCEPTION_SPEC", "WeightsInfo", "WeightsUnavailableError", "build_architecture",
    "build_xception", "conv_bn", "sep_bn", "weights_info",
]
