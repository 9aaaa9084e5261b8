"""The continuum from a regular convolution to a depthwise separable one (the Xception paper,
Figures 1–4), as arithmetic on shapes (no Keras).

The paper reformulates a simplified Inception module (Fig. 3) as one 1×1 convolution followed by
spatial convolutions over non-overlapping segments of its output channels: with one segment that
is a regular k×k convolution after a 1×1; with one segment per channel it is the "extreme"
Inception (Fig. 4), a depthwise convolution after a pointwise one, which is a depthwise
separable convolution up to the order of its two steps. Xception uses the other order
(depthwise, then pointwise: `xception_core.arch.cost.separable_cost`), which the paper argues
matters little when the steps are stacked.

`inception_step(c_in, c_out, h, w, segments)` counts one point of that continuum: the 1×1 conv
(c_in → c_out) and the spatial k×k conv, grouped into `segments` groups of c_out / segments
channels each (a Keras `Conv2D(groups=segments)`). No biases: a BatchNorm follows each conv in
both networks. MACs are for an h×w output (stride 1, 'same' padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from xception_core.arch.cost import SeparableCost, check_positive, separable_cost


@dataclass(frozen=True)
class InceptionStep:
    """One point of the continuum: a 1×1 conv, then a k×k conv over `segments` channel segments.

    Attributes:
        segments: Channel segments of the spatial conv (1: a regular conv; out_channels: depthwise).
        segment_channels: Channels per segment (out_channels / segments).
        pointwise_params, spatial_params: Weights of the 1×1 conv and of the grouped k×k conv.
        pointwise_macs, spatial_macs: Their multiply-accumulates for an height×width output.
    """

    kernel_size: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    segments: int
    segment_channels: int
    pointwise_params: int
    spatial_params: int
    pointwise_macs: int
    spatial_macs: int

    @property
    def params(self) -> int:
        return self.pointwise_params + self.spatial_params

    @property
    def macs(self) -> int:
        return self.pointwise_macs + self.spatial_macs


def segment_counts(out_channels: int) -> tuple[int, ...]:
    """The numbers of equal channel segments `out_channels` splits into: its divisors, 1 to itself."""
    check_positive(out_channels=out_channels)
    return tuple(s for s in range(1, out_channels + 1) if out_channels % s == 0)


def inception_step(in_channels: int, out_channels: int, height: int, width: int, segments: int,
                   kernel_size: int = 3) -> InceptionStep:
    """Weights and MACs of a 1×1 conv (in → out channels) then a k×k conv over `segments` segments.

    Raises:
        ValueError: A size that is not a positive integer, or `segments` not dividing `out_channels`.
    """
    check_positive(in_channels=in_channels, out_channels=out_channels, height=height, width=width, segments=segments,
              kernel_size=kernel_size)
    if out_channels % segments:
        raise ValueError(f"{segments} segments do not split {out_channels} channels evenly; "
                         f"choose one of {list(segment_counts(out_channels))}")
    per = out_channels // segments
    hw, k2 = height * width, kernel_size * kernel_size
    pointwise = in_channels * out_channels
    spatial = segments * k2 * per * per  # each segment: a k×k conv from its `per` channels to `per`
    return InceptionStep(kernel_size, in_channels, out_channels, height, width, segments, per, pointwise, spatial,
                         pointwise * hw, spatial * hw)


@dataclass(frozen=True)
class Continuum:
    """Every point from one segment to one per channel, and Xception's order for comparison.

    Attributes:
        steps: `inception_step` for each segment count (`segment_counts(out_channels)`), 1 first.
        xception: The depthwise k×k conv on the input's channels, then the 1×1 conv (the order
            Xception uses), as `separable_cost` counts it.
    """

    steps: tuple[InceptionStep, ...]
    xception: SeparableCost

    @property
    def regular(self) -> InceptionStep:
        """One segment: a regular k×k conv after the 1×1 (the simplified Inception module)."""
        return self.steps[0]

    @property
    def extreme(self) -> InceptionStep:
        """One segment per channel: the "extreme" Inception, a pointwise then a depthwise conv."""
        return self.steps[-1]


def continuum(in_channels: int, out_channels: int, height: int, width: int, kernel_size: int = 3) -> Continuum:
    """The continuum for one input and output width at an height×width output."""
    steps = tuple(inception_step(in_channels, out_channels, height, width, s, kernel_size)
                  for s in segment_counts(out_channels))
    return Continuum(steps, separable_cost(kernel_size, in_channels, out_channels, height, width))


__all__ = ["Continuum", "InceptionStep", "continuum", "inception_step", "segment_counts"]
