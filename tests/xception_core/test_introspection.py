"""Per-block description and the all-blocks activation model."""

from __future__ import annotations

import numpy as np
import pytest

from xception_core import build_xception
from xception_core.arch.registry import architecture
from xception_core.runtime.introspection import block_outputs_model, describe, layer_macs, separable_cost, separable_layers


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_totals_equal_the_model(paper_model):
    d = describe(paper_model)
    assert d.total_params == paper_model.count_params() == 22_910_480
    assert d.trainable_params == _trainable(paper_model) == 22_855_952
    assert d.non_trainable_params == 54_528
    assert [b.name for b in d.blocks] == [f"block{i}" for i in range(1, 15)] + ["head"]
    assert [b.flow for b in d.blocks[:14]] == ["entry"] * 4 + ["middle"] * 8 + ["exit"] * 2


def test_macs_at_299_match_the_published_cost(paper_model):
    total = describe(paper_model).total_macs
    assert abs(total - 8.36e9) / 8.36e9 < 0.01


def test_hand_computed_separable_conv(paper_model):
    # block4_sepconv1: 256 → 728 channels at 37×37 (it precedes the pool), 3×3 depthwise.
    layer = paper_model.get_layer("block4_sepconv1")
    depthwise = 37 * 37 * 256 * 9
    pointwise = 37 * 37 * 256 * 728
    assert layer_macs(layer) == depthwise + pointwise == 258_291_968
    cost = dict(separable_layers(describe(paper_model)))["block4_sepconv1"]
    assert (cost.depthwise_params, cost.pointwise_params) == (256 * 9, 256 * 728)
    assert cost.separable_macs == depthwise + pointwise


def test_article_example_of_separable_savings():
    cost = separable_cost(3, 3, 64)
    assert (cost.depthwise_params, cost.pointwise_params, cost.standard_params) == (27, 192, 1728)
    assert cost.separable_params == 219
    assert cost.ratio == pytest.approx(1728 / 219)
    with pytest.raises(ValueError, match="kernel_size must be a positive integer, got 0"):
        separable_cost(0, 3, 64)


@pytest.mark.parametrize("size", [299, 160])
def test_block_shapes_equal_the_built_tensors(size):
    model = build_xception(weights=None, input_shape=(size, size, 3))
    d = describe(model)
    outputs = block_outputs_model(model, "paper")(np.zeros((1, size, size, 3), "float32"))
    for block in d.blocks[:14]:
        assert tuple(outputs[block.name].shape[1:]) == block.output_shape, block.name
    assert d.block("block14").output_shape[-1] == 2048
    assert d.block("head").output_shape == (1000,)


def test_block_outputs_come_from_one_forward_pass(paper_model):
    multi = block_outputs_model(paper_model)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype("float32")
    outputs = multi(x)
    assert len(outputs) == len(architecture().spec.blocks) + 1
    np.testing.assert_allclose(outputs["output"].numpy(), paper_model(x).numpy(), atol=1e-6)
    # Shares the model's layers: no second copy of the weights.
    assert multi.count_params() == paper_model.count_params()


def test_json_form(paper_model):
    data = describe(paper_model).to_dict()
    assert data["total_params"] == 22_910_480
    assert data["blocks"][3] == {
        **{k: data["blocks"][3][k] for k in ("params", "trainable_params", "non_trainable_params", "macs")},
        "name": "block4", "flow": "entry", "kind": "downsample", "output_layer": "block4_add",
        "output_shape": [19, 19, 728], "shortcut": "conv", "wiring_differences": ["entry_shortcut_from"],
    }
    full = describe(paper_model).to_dict(layers=True)
    assert sum(len(b["layers"]) for b in full["blocks"]) == len(paper_model.layers) - 1


def test_article_variant_described(article_model):
    d = describe(article_model, "article")
    assert d.variant == "article"
    assert d.block("block1").output_shape == (150, 150, 64)
    assert d.block("block14").output_layer == "block14_sepconv2_bn"


def test_reference_description_is_imagenet_at_299():
    from xception_core.runtime.introspection import reference_description, separable_totals

    d = reference_description()
    assert d.input_shape == (299, 299, 3) and d.total_params == 22_910_480
    assert d.block("block4").shortcut == "conv" and d.block("block7").shortcut == "identity"
    assert d.block("block1").shortcut == "none" and d.block("block3").wiring_differences == ("entry_shortcut_from",)
    totals = separable_totals(d)
    costs = [c for _, c in separable_layers(d)]
    assert totals.count == len(costs) == 34
    assert totals.separable_params == sum(c.separable_params for c in costs)
    assert totals.params_ratio == totals.standard_params / totals.separable_params > 1
