"""What a depthwise-separable convolution costs against the standard convolution it replaces.

Plain arithmetic on shapes (no Keras): the explorer's calculator, its per-layer table
(`xception_core.runtime.introspection.separable_layers`) and the step-by-step view of one
separable conv (`xception_core.runtime.operation`) all count with this.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeparableCost:
    """A depthwise-separable conv against the standard conv it replaces (same in/out channels).

    Params are weights (no bias); MACs are for an output of `height`×`width`."""

    kernel_size: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    depthwise_params: int
    pointwise_params: int
    standard_params: int
    depthwise_macs: int
    pointwise_macs: int
    standard_macs: int

    @property
    def separable_params(self) -> int:
        return self.depthwise_params + self.pointwise_params

    @property
    def separable_macs(self) -> int:
        return self.depthwise_macs + self.pointwise_macs

    @property
    def ratio(self) -> float:
        """How many times more weights the standard conv needs."""
        return self.standard_params / self.separable_params


def check_positive(**values: int) -> None:
    """Raises a `ValueError` naming the first value that is not a positive integer (booleans are not)."""
    for label, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {repr(value)[:40]}")


def separable_cost(kernel_size: int, in_channels: int, out_channels: int, height: int = 1,
                   width: int = 1) -> SeparableCost:
    """Weights and cost of a k×k separable conv vs a standard one.

    The article's example: `separable_cost(3, 3, 64)` gives 27 + 192 = 219 weights vs 1,728.
    """
    check_positive(kernel_size=kernel_size, in_channels=in_channels, out_channels=out_channels, height=height,
                   width=width)
    k2 = kernel_size * kernel_size
    depthwise, pointwise, standard = k2 * in_channels, in_channels * out_channels, k2 * in_channels * out_channels
    hw = height * width
    return SeparableCost(kernel_size, in_channels, out_channels, height, width, depthwise, pointwise, standard,
                         depthwise * hw, pointwise * hw, standard * hw)


__all__ = ["SeparableCost", "check_positive", "separable_cost"]
