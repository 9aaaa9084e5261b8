"""One separable step, number by number, against the model's own numbers: Keras intermediate
outputs (random weights in both wirings; the real kitchenware weights on a real photo), TensorFlow's
depthwise convolution, and a hand count of its cost."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import random_loaded, run_checked
from xception_core.arch.graph import separable_names, separable_plan
from xception_core.arch.registry import architecture
from xception_core.io.assets import example_images
from xception_core.io.preprocessing import preprocess
from xception_core.model import rewire
from xception_core.runtime.introspection import describe, separable_layers
from xception_core.runtime.operation import BlockParams, OperationCache, SeparableStep, image_key, separable_step
from xception_core.runtime.operation_pass import layer_source, pass_layers

SIZE = 79
TOLERANCE = 1e-4
STEP_BLOCKS = [b.name for b in architecture().spec.blocks if separable_names(b)]


def keras_outputs(loaded, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every named layer's output of the Keras model for one image: the reference."""
    model = loaded.model
    names = [layer.name for layer in model.layers if layer.name.startswith("block")]
    probe = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in names})
    return {n: np.asarray(v)[0] for n, v in probe(x[None], training=False).items()}


def close(ours: float, reference: np.ndarray, value: float) -> bool:
    """|ours − Keras| ≤ 1e-4 relative to the value, or to the layer's spread for values near 0."""
    return abs(ours - value) <= TOLERANCE * (abs(value) + float(np.std(reference)))


def depthwise_reference(feed: np.ndarray, relu: bool, kernel: np.ndarray) -> np.ndarray:
    """TensorFlow's own depthwise conv of the step's input: (h, w, Cin)."""
    x = tf.nn.relu(feed) if relu else tf.constant(feed)
    return tf.nn.depthwise_conv2d(x[None], kernel[..., None], [1, 1, 1, 1], "SAME").numpy()[0]


def positions(h: int, w: int) -> list[tuple[int, int]]:
    return sorted({(0, 0), (h - 1, w - 1), (0, w - 1), (h // 2, w // 3), (h - 1, 1)})


def check_block(loaded, x, reference, cache: OperationCache, source, block: str, channels=(0, 5)) -> int:
    variant = loaded.info.variant
    params = BlockParams.from_model(loaded.model, block)
    tensors, _ = cache.tensors(source, x, weights_key="w", variant=variant, block=block)
    checked = 0
    for k in range(1, len(separable_names(architecture().spec.block(block))) + 1):
        plan = separable_plan(block, k, variant)
        conv = params.separable_conv(plan.layer)
        h, w = tensors.arrays[plan.feed].shape[:2]
        dw = depthwise_reference(reference[plan.feed], plan.relu_before is not None, conv.depthwise)
        for r, c in positions(h, w):
            for o in channels:
                step = separable_step(plan, params, tensors, r, c, o % plan.out_channels, top=3)
                dw_ref = dw[r, c]
                assert np.allclose(step.depthwise_values, dw_ref, rtol=TOLERANCE, atol=TOLERANCE * dw.std()), plan.layer
                for shown in step.depthwise:
                    assert shown.value == pytest.approx(float(step.depthwise_values[shown.channel]))
                    assert shown.products.sum() == pytest.approx(shown.value)
                for stage in step.stages():
                    ref = reference[stage.layer]
                    value = float(ref[stage.row, stage.col, stage.channel])
                    assert close(stage.value, ref, value), (variant, stage, value)
                    checked += 1
                for layer, value in step.model.items():  # the pass's own numbers (folded BatchNorm)
                    stage = next(s for s in step.stages() if s.layer == layer)
                    assert close(value, reference[layer], float(reference[layer][stage.row, stage.col, stage.channel]))
    return checked


@pytest.fixture(scope="module")
def paper():
    return random_loaded(SIZE, 5, seed=3)


@pytest.fixture(scope="module")
def article(paper):
    return rewire(paper, "article")


@pytest.fixture(scope="module")
def photo():
    return np.random.default_rng(7).uniform(-1, 1, (SIZE, SIZE, 3)).astype("float32")


@pytest.mark.parametrize("variant", ["paper", "article"])
def test_every_stage_equals_the_keras_layer_output(paper, article, photo, variant):
    loaded = paper if variant == "paper" else article
    reference = keras_outputs(loaded, photo)
    source, cache = layer_source(loaded, backend="onnx"), OperationCache(max_entries=2)
    checked = sum(check_block(loaded, photo, reference, cache, source, block) for block in STEP_BLOCKS)
    assert checked > 800
    assert cache.forward_calls == len(STEP_BLOCKS) and len(cache) == 2


def test_the_wirings_show_their_own_relus(paper, article, photo):
    cache = OperationCache()
    steps = {}
    for loaded in (paper, article):
        v = loaded.info.variant
        for block, k in (("block7", 3), ("block14", 2), ("block3", 2)):
            source = layer_source(loaded, backend="onnx")
            tensors, _ = cache.tensors(source, photo, weights_key="w", variant=v, block=block)
            steps[v, block] = separable_step(separable_plan(block, k, v), BlockParams.from_model(loaded.model, block),
                                             tensors, 2, 2, 1)
    # ③ The article's ReLU before each middle-flow sum; the paper adds the BatchNorm's output.
    assert steps["paper", "block7"].relu is None
    relu = steps["article", "block7"].relu
    assert relu.layer == "block7_sepconv3_post_act" and steps["article", "block7"].add.main == relu.value >= 0
    # ④ The paper's ReLU after block 14's last conv; the article pools the BatchNorm's output.
    assert steps["paper", "block14"].relu.layer == "block14_sepconv2_act" and steps["article", "block14"].relu is None
    # ② The article's block-3 shortcut reads block 2's shortcut, the paper's block 2's sum.
    assert steps["paper", "block3"].add.shortcut.source == "block2_add"
    assert steps["article", "block3"].add.shortcut.source == "block2_residual_bn"


def test_border_patches_are_zero_padded_and_the_pool_window_holds_the_position(paper, photo):
    tensors, _ = OperationCache().tensors(layer_source(paper, backend="onnx"), photo, weights_key="w", variant="paper",
                                          block="block3")
    params = BlockParams.from_model(paper.model, "block3")
    step = separable_step(separable_plan("block3", 2), params, tensors, 0, 0, 4, top=5)
    assert len(step.depthwise) == 5
    for shown in step.depthwise:
        assert shown.padding[0].all() and shown.padding[:, 0].all() and not shown.padding[1:, 1:].any()
        assert (shown.inputs[shown.padding] == 0).all() and (shown.inputs >= 0).all()  # after the ReLU
        assert np.array_equal(shown.inputs, np.maximum(shown.before_relu, 0))
    magnitudes = [abs(c.product) for c in step.pointwise.top]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert step.pointwise.rest_count == params.separable[1].pointwise.shape[0] - 5
    assert step.pointwise.value == pytest.approx(sum(c.product for c in step.pointwise.top) + step.pointwise.rest)
    pool = step.pool
    assert pool is not None and (pool.row, pool.col) == (0, 0)
    inside = [(i, j) for i in range(3) for j in range(3) if 0 <= pool.top + i and 0 <= pool.left + j]
    assert np.isnan(pool.window).sum() == 9 - len(inside)
    assert pool.window[-pool.top, -pool.left] == pytest.approx(step.batchnorm.value)
    assert pool.value == np.nanmax(pool.window) and step.add.main == pool.value
    bn = step.batchnorm
    assert bn.value == pytest.approx(bn.scale * bn.x + bn.shift)
    assert step.receptive.layer == "block3_sepconv2" and (step.receptive.top, step.receptive.left) == (0, 0)


def test_cost_by_hand_and_as_the_explorer_counts_it(paper, photo):
    tensors, _ = OperationCache().tensors(layer_source(paper, backend="onnx"), photo, weights_key="w", variant="paper",
                                          block="block4")
    step = separable_step(separable_plan("block4", 1), BlockParams.from_model(paper.model, "block4"), tensors, 1, 1, 0)
    h, w = step.grid
    cost = step.cost
    assert (cost.in_channels, cost.out_channels) == (256, 728)
    assert cost.depthwise_macs == h * w * 256 * 9 and cost.pointwise_macs == h * w * 256 * 728
    assert cost.standard_macs == h * w * 256 * 728 * 9
    assert cost.standard_macs / cost.separable_macs == pytest.approx(9 * 728 / (9 + 728))
    described = dict(separable_layers(describe(paper.model)))["block4_sepconv1"]
    assert described == cost
    layer_info = next(x for b in describe(paper.model).blocks for x in b.layers if x.name == "block4_sepconv1")
    assert layer_info.macs == cost.separable_macs


def test_params_round_trip_through_plain_arrays(paper, photo):
    for block in ("block2", "block9", "block14"):
        params = BlockParams.from_model(paper.model, block)
        again = BlockParams.from_arrays(block, {k: np.array(v) for k, v in params.to_arrays().items()})
        assert params.to_arrays().keys() == again.to_arrays().keys()
        for name, value in params.to_arrays().items():
            assert np.array_equal(value, again.to_arrays()[name]), name
    assert "block2_residual_bn/moving_variance" in BlockParams.from_model(paper.model, "block2").to_arrays()
    with pytest.raises(ValueError, match="no separable"):
        BlockParams.from_model(paper.model, "block1")


def test_the_cache_runs_once_per_photo_and_block_and_stays_bounded(paper, photo):
    source = layer_source(paper, backend="onnx")
    cache = OperationCache(max_entries=3, max_photos=2)
    first, hit = cache.tensors(source, photo, weights_key="w", variant="paper", block="block5")
    assert not hit and cache.forward_calls == 1 and first.photo == image_key(photo)
    again, hit = cache.tensors(source, photo, weights_key="w", variant="paper", block="block5")
    assert hit and again is first and cache.forward_calls == 1
    assert np.array_equal(cache.photo(first.photo), photo)  # the photo comes back bit for bit
    pixels = np.random.default_rng(1).integers(0, 256, photo.shape).astype(np.uint8)
    quantized = preprocess(pixels, SIZE)
    key = cache.remember(quantized)
    assert np.array_equal(cache.photo(key), quantized) and cache._photos[key].dtype == np.uint8
    for block in ("block6", "block7", "block8"):
        cache.tensors(source, photo, weights_key="w", variant="paper", block=block)
    assert len(cache) == 3 and cache.lookup(first.photo, "w", "paper", "block5") is None
    small = OperationCache(max_bytes=1)
    small.tensors(source, photo, weights_key="w", variant="paper", block="block5")
    small.tensors(source, photo, weights_key="w", variant="paper", block="block6")
    assert len(small) == 1  # over budget: only the newest stays
    others = [np.full_like(photo, v) for v in (0.1, 0.2, 0.3)]
    for x in others:
        cache.remember(x)
    assert cache.photo(first.photo) is None  # two photos kept: the oldest went
    with pytest.raises(ValueError, match="one preprocessed image"):
        cache.tensors(source, photo[None], weights_key="w", variant="paper", block="block5")


def test_the_keras_source_gives_the_same_tensors(paper, photo):
    names = list(pass_layers("paper"))[:6]
    onnx_out = layer_source(paper, backend="onnx").run(photo[None], names)
    keras_out = layer_source(paper, backend="tf").run(photo[None], names)
    for name in names:
        assert np.allclose(onnx_out[name], keras_out[name], rtol=1e-4, atol=1e-4 * keras_out[name].std()), name


def test_bad_positions_and_channels_are_refused(paper, photo):
    tensors, _ = OperationCache().tensors(layer_source(paper, backend="onnx"), photo, weights_key="w", variant="paper",
                                          block="block5")
    params = BlockParams.from_model(paper.model, "block5")
    plan = separable_plan("block5", 1)
    h, w = tensors.arrays[plan.feed].shape[:2]
    for row, col, channel in ((h, 0, 0), (0, -1, 0), (0, 0, 728), (1.0, 0, 0), (True, 0, 0)):
        with pytest.raises(ValueError, match="must be an integer"):
            separable_step(plan, params, tensors, row, col, channel)
    with pytest.raises(ValueError, match="tensors of block5"):
        separable_step(separable_plan("block6", 1), BlockParams.from_model(paper.model, "block6"), tensors, 0, 0, 0)


def test_the_numbers_need_no_tensorflow():
    """The step, the fields and the channel search import neither TensorFlow nor Keras."""
    code = ("import sys; import xception_core.runtime.operation, xception_core.runtime.patches, "
            "xception_core.arch.receptive, xception_core.arch.cost; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules))")
    out = run_checked([sys.executable, "-c", code], timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "article"])
def test_real_weights_on_a_real_photo(kitchenware_loaded, settings, variant):
    """The kitchenware model's ImageNet body on a real photo: every stage of a sample of steps."""
    loaded = rewire(kitchenware_loaded, variant)
    photo_path = next(e.path for e in example_images(settings.assets_dir) if e.path.name == "coffee.jpg")
    x = preprocess(photo_path, loaded.input_size)
    reference = keras_outputs(loaded, x)
    source, cache = layer_source(loaded, backend="onnx"), OperationCache(max_entries=1)
    checked = sum(check_block(loaded, x, reference, cache, source, block, channels=(0, 17, 300))
                  for block in ("block2", "block4", "block7", "block12", "block13", "block14"))
    assert checked > 300


def test_a_step_is_a_record_of_plain_numbers(paper, photo):
    tensors, _ = OperationCache().tensors(layer_source(paper, backend="onnx"), photo, weights_key="w", variant="paper",
                                          block="block13")
    step = separable_step(separable_plan("block13", 2), BlockParams.from_model(paper.model, "block13"), tensors,
                          3, 4, 1000)
    assert isinstance(step, SeparableStep) and step.value == step.add.value
    assert [s.stage for s in step.stages()] == ["pointwise", "batchnorm", "pool", "shortcut", "add"]
    assert step.add.shortcut.kind == "conv" and step.add.shortcut.conv.layer == "block13_residual_conv"
    assert step.add.shortcut.batchnorm.layer == "block13_residual_bn"
    assert set(step.model) == {"block13_sepconv2_bn", "block13_add"}
