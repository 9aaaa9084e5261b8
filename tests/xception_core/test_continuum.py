"""The continuum from a regular convolution to a depthwise separable one (`xception_core.arch.continuum`),
against a hand count and against what Keras's own layers hold."""

from __future__ import annotations

import math

import keras
import pytest

from xception_core.arch.continuum import continuum, inception_step, segment_counts


def test_a_hand_count_of_the_three_named_points():
    """32 → 64 channels, 3×3 windows, a 10×10 output (100 positions):
    one segment: 1×1 conv 32·64 = 2,048 weights, then a 3×3 conv 64 → 64: 9·64·64 = 36,864;
    four segments of 16: 4 · 9·16·16 = 9,216; 64 segments of 1 (depthwise): 64 · 9 = 576;
    Xception's order: depthwise 3×3 on the 32 inputs, 9·32 = 288, then 1×1 32·64 = 2,048."""
    c = continuum(32, 64, 10, 10)
    assert [s.segments for s in c.steps] == [1, 2, 4, 8, 16, 32, 64]
    assert (c.regular.pointwise_params, c.regular.spatial_params) == (2_048, 36_864)
    four = inception_step(32, 64, 10, 10, 4)
    assert (four.segment_channels, four.spatial_params, four.params) == (16, 9_216, 11_264)
    assert (c.extreme.segment_channels, c.extreme.spatial_params, c.extreme.params) == (1, 576, 2_624)
    assert (c.xception.depthwise_params, c.xception.pointwise_params) == (288, 2_048)
    assert (c.regular.pointwise_macs, c.regular.spatial_macs) == (204_800, 3_686_400)
    assert c.extreme.macs == 262_400 and c.xception.separable_macs == 233_600
    # Each doubling of the segments halves the spatial conv's weights.
    assert all(a.spatial_params == 2 * b.spatial_params for a, b in zip(c.steps, c.steps[1:]))


@pytest.mark.parametrize("c_in, c_out, side", [(5, 12, 4), (8, 6, 3)])
def test_every_step_is_what_kerass_layers_hold_and_compute(c_in, c_out, side):
    """The 1×1 conv and each grouped 3×3 conv (`Conv2D(groups=segments)`) as Keras layers: their
    `count_params` and, by hand from their kernels and output shapes, their MACs."""
    def macs(layer) -> int:
        h, w, c = layer.output.shape[1:]
        return h * w * c * math.prod(layer.kernel.shape[:-1])

    x = keras.Input((side, side, c_in))
    pointwise = keras.layers.Conv2D(c_out, 1, use_bias=False)
    mid = pointwise(x)
    for step in continuum(c_in, c_out, side, side).steps:
        spatial = keras.layers.Conv2D(c_out, 3, padding="same", groups=step.segments, use_bias=False)
        spatial(mid)
        assert (step.pointwise_params, step.spatial_params) == (pointwise.count_params(), spatial.count_params())
        assert (step.pointwise_macs, step.spatial_macs) == (macs(pointwise), macs(spatial))
    separable = keras.layers.SeparableConv2D(c_out, 3, padding="same", use_bias=False)
    separable(x)
    xception = continuum(c_in, c_out, side, side).xception
    assert xception.separable_params == separable.count_params()


def test_segments_must_split_the_channels_evenly():
    assert segment_counts(12) == (1, 2, 3, 4, 6, 12)
    with pytest.raises(ValueError, match="5 segments do not split 12 channels evenly; choose one of"):
        inception_step(8, 12, 4, 4, 5)
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        inception_step(0, 12, 4, 4, 1)
    with pytest.raises(ValueError, match="segments must be a positive integer"):
        inception_step(8, 12, 4, 4, True)
