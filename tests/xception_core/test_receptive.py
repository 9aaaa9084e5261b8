"""The layer graph and the receptive fields, against the Keras model itself: its layers and shapes,
and the gradient footprint of single output positions (interior and border, both wirings)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xception_core.arch.builder import build_architecture
from xception_core.arch.graph import INPUT_LAYER, block_output, layer_graph, separable_plan
from xception_core.arch.names import block_output_layer
from xception_core.arch.receptive import geometries, position_at, receptive_field, receptive_table
from xception_core.arch.registry import architecture
from xception_core.runtime.folding import layer_inputs

VARIANTS = ("paper", "article")
SIZE = 79  # odd: 'same' padding puts its odd pixel after in some layers and not in others


def _features(variant: str, size: int) -> keras.Model:
    return build_architecture(input_shape=(size, size, 3), include_top=False, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [SIZE, 80])
def test_the_graph_is_the_model_the_builder_builds(variant, size):
    model = _features(variant, size)
    graph = layer_graph(variant)
    sizes, channels = graph.sizes(size), graph.channels()
    keras_layers = {layer.name: layer for layer in model.layers}
    assert set(keras_layers) == {n.name for n in graph.nodes}
    for node in graph.nodes:
        layer = keras_layers[node.name]
        if node.op == "input":
            continue
        assert tuple(t._keras_history.operation.name for t in layer_inputs(layer)) == node.inputs, node.name
        assert tuple(layer.output.shape[1:]) == (*sizes[node.name], channels[node.name]), node.name
        if node.kernel > 1 or node.stride > 1:
            window = getattr(layer, "kernel_size", getattr(layer, "pool_size", None))
            assert (window[0], layer.strides[0], layer.padding) == (node.kernel, node.stride, node.padding), node.name
    for block in architecture().spec.blocks:
        assert block_output(block.name, variant) == block_output_layer(block, variant)


def _footprint_model(variant: str, size: int, layers: list[str]) -> keras.Model:
    """The features model with every kernel made positive and each max-pool replaced by an
    average-pool over the same window: every activation is then > 0 for a positive input, no
    ReLU blocks a gradient and no sum cancels one, so a pixel's gradient is non-zero exactly when
    the output depends on it (a max-pool's window, not its winner, is what it depends on)."""
    model = _features(variant, size)

    def clone(layer):
        if isinstance(layer, keras.layers.MaxPooling2D):
            return keras.layers.AveragePooling2D(layer.pool_size, layer.strides, layer.padding, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            twin.get_layer(layer.name).set_weights([np.abs(w) + 0.01 for w in weights])
    return keras.Model(twin.inputs[0], [twin.get_layer(n).output for n in layers])


def _positions(h: int, w: int) -> list[tuple[int, int]]:
    return sorted({(0, 0), (h - 1, w - 1), (h // 2, w // 2), (1, w - 2), (h - 2, 0), (0, w // 3)})


LAYERS = ["block1_conv1", "block1_conv2_act", "block2_sepconv1", "block2_sepconv2_bn", "block2_pool",
          "block2_residual_bn", "block2_add", "block3_sepconv1_act", "block3_add", "block4_residual_bn", "block4_add",
          "block5_add", "block11_sepconv3_bn", "block13_pool", "block13_add", "block14_sepconv1_act",
          "block14_sepconv2_bn"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_fields_equal_the_gradient_footprint(variant):
    probe = _footprint_model(variant, SIZE, LAYERS)
    x = tf.constant(np.random.default_rng(0).uniform(0.2, 1.0, (1, SIZE, SIZE, 3)).astype("float32"))
    positions_of = [_positions(*output.shape[1:3]) for output in probe.outputs]
    # One forward pass for every layer (a persistent tape), one image per position: image b's
    # gradient is then the footprint of position b alone.
    batch = tf.repeat(x, max(map(len, positions_of)), axis=0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(batch)
        outs = probe(batch, training=False)
        picks = [tf.stack([tf.reduce_sum(out[b, r, c]) for b, (r, c) in enumerate(positions)])
                 for out, positions in zip(outs, positions_of)]
        totals = [tf.reduce_sum(picked) for picked in picks]
    checked = 0
    for index, layer in enumerate(LAYERS):
        positions, picked = positions_of[index], picks[index]
        assert float(tf.reduce_min(picked)) > 0, f"{layer}: an activation is not positive; the footprint is not exact"
        grads = np.abs(tape.gradient(totals[index], batch).numpy()).max(axis=-1)  # (B, H, W)
        for b, (r, c) in enumerate(positions):
            rf = receptive_field(layer, r, c, SIZE, variant)
            expected = np.zeros((SIZE, SIZE), bool)
            left, top, right, bottom = rf.box
            expected[top:bottom, left:right] = True
            footprint = grads[b] > 0
            assert np.array_equal(footprint, expected), (
                f"{variant} {layer} ({r}, {c}): field rows {rf.top}-{rf.bottom} cols {rf.left}-{rf.right}; footprint "
                f"rows {np.flatnonzero(footprint.any(1))[[0, -1]]} cols {np.flatnonzero(footprint.any(0))[[0, -1]]}")
            checked += 1
    assert checked > 80


def test_the_table_by_hand_and_block_14_at_299():
    table = {row.block: row for row in receptive_table(299, "paper")}
    # By hand (paper): the stem's 3×3/2 then 3×3 see 3 + 2·2 = 7 px; block 2's two 3×3 convs at
    # jump 2 add 4 + 4 and its 3×3/2 pool 4 more: 19 px at jump 4; each entry block then adds
    # 2·2·j (two convs) + 2·j (pool) with j its input jump; each middle block 3·2·16 = 96.
    expected = {"block1": (7, 2, 147), "block2": (19, 4, 74), "block3": (43, 8, 37), "block4": (91, 16, 19),
                "block5": (187, 16, 19), "block12": (859, 16, 19), "block13": (955, 32, 10), "block14": (1083, 32, 10)}
    for block, (size, jump, grid) in expected.items():
        assert (table[block].size, table[block].jump, table[block].grid) == (size, jump, (grid, grid)), block
    assert table["block14"].layer == "block14_sepconv2_act"
    assert all(table[b].centre.covers_input for b in ("block7", "block13", "block14"))
    assert not table["block6"].centre.covers_input and table["block6"].centre.height == 283
    article = {row.block: row for row in receptive_table(299, "article")}
    assert article["block1"].grid == (150, 150) and article["block14"].layer == "block14_sepconv2_bn"


@pytest.mark.parametrize("variant", VARIANTS)
def test_interior_fields_are_the_unclipped_geometry_and_clicks_land_back(variant):
    size = 299
    geo = geometries(size, variant)
    for layer in ("block2_sepconv2", "block3_add", "block4_pool", "block6_sepconv1"):
        rows, cols = geo[layer]
        h, w = layer_graph(variant).sizes(size)[layer]
        for r in range(h):
            rf = receptive_field(layer, r, r % w, size, variant)
            top, bottom = r * rows.jump + rows.start, r * rows.jump + rows.end
            assert (rf.top, rf.bottom) == (max(top, 0), min(bottom, size - 1))
            assert rf.clipped == (top < 0 or bottom > size - 1 or rf.width < cols.size)
            cy, cx = rows.centre(r), cols.centre(r % w)
            if 0 <= cy < size and 0 <= cx < size:
                assert position_at(layer, cy, cx, size, variant) == (r, r % w)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown layer"):
        receptive_field("block15_add", 0, 0, 299)
    with pytest.raises(ValueError, match=r"row must be an integer in \[0, 19\)"):
        receptive_field("block5_add", 19, 0, 299)
    with pytest.raises(ValueError, match="col must be"):
        receptive_field("block5_add", 0, True, 299)
    with pytest.raises(ValueError, match="input_size"):
        receptive_field("block5_add", 0, 0, "299")
    with pytest.raises(ValueError, match="too small"):
        layer_graph("paper").sizes(3)
    assert layer_graph("paper").node(INPUT_LAYER).op == "input"


def test_plans_follow_each_wiring():
    paper, article = separable_plan("block7", 3, "paper"), separable_plan("block7", 3, "article")
    assert paper.relu_after is None and paper.add == "block7_add" and paper.shortcut == "identity"
    assert article.relu_after == "block7_sepconv3_post_act" and article.output == "block7_add"
    assert separable_plan("block4", 2, "article").shortcut_source == "block3_residual_bn"
    assert separable_plan("block4", 2, "paper").shortcut_source == "block3_add"
    # Block 2 has no ReLU of its own before its first conv: the stem's last ReLU is the one.
    first = separable_plan("block2", 1)
    assert first.relu_before == "block1_conv2_act" and first.feed == "block1_conv2_bn"
    assert separable_plan("block2", 2).relu_before == "block2_sepconv2_act"
    assert separable_plan("block2", 1).relu_after == "block2_sepconv2_act" and separable_plan("block2", 1).add is None
    assert separable_plan("block13", 2).pool == "block13_pool"
    assert separable_plan("block14", 1).feed == "block13_add" and separable_plan("block14", 1).relu_before is None
    assert separable_plan("block14", 2, "paper").relu_after == "block14_sepconv2_act"
    assert separable_plan("block14", 2, "article").relu_after is None
    with pytest.raises(ValueError, match="no separable"):
        separable_plan("block1", 1)
    with pytest.raises(ValueError, match="separable convs 1 to 3"):
        separable_plan("block5", 4)
