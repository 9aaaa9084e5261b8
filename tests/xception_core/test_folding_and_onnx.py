"""Inference rewrites: BatchNorm folding (`xception_core.runtime.folding`) and the ONNX Runtime backend
(`xception_core.runtime.onnx`), each against the plain Keras model on random weights with
randomised BatchNorm statistics, so a mis-folded or mis-wired layer cannot hide."""

from __future__ import annotations

import dataclasses
import gc

import keras
import numpy as np
import pytest

from tests.conftest import randomize
from xception_core.arch.builder import build_architecture, emit
from xception_core.arch.graph import INPUT_LAYER, LayerGraph, LayerNode, head_nodes, layer_graph
from xception_core.arch.names import block_output_layer, reference_layer_name
from xception_core.arch.registry import architecture
from xception_core.model import LoadedModel, ModelInfo, build_xception
from xception_core.runtime import onnx as onnx_backend
from xception_core.runtime.classifier import Classifier
from xception_core.runtime.folding import fold_batchnorm, foldable_pairs
from xception_core.runtime.forward import BackendUnavailableError
from xception_core.weights.load import copy_weights
from xception_core.settings import Settings

SIZE = 96


def _model(variant: str, size: int = SIZE, seed: int = 0, classifier_activation: str | None = "softmax"):
    model = build_xception(weights=None, input_shape=(size, size, 3), classes=7, variant=variant,
                           classifier_activation=classifier_activation)
    randomize(model, seed)
    return model


def _loaded(model: keras.Model, variant: str = "paper") -> LoadedModel:
    """`model` with the record `load_model` would give it (random weights)."""
    activation = getattr(model.layers[-1].activation, "__name__", "linear")
    outputs = "probabilities" if activation == "softmax" else "logits"
    return LoadedModel(model, ModelInfo(None, "random", "random", None, model.input_shape[1], outputs, variant))


def _x(size: int = SIZE, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def _blocks(folded, variant: str) -> list[str]:
    return [folded.resolve(block_output_layer(b, variant)) for b in architecture().spec.blocks]


@pytest.fixture(scope="module", params=["paper", "article"])
def original_and_folded(request):
    model = _model(request.param, classifier_activation=None)  # logits: sensitive, unlike a flat softmax
    return request.param, model, fold_batchnorm(model)


def test_fold_removes_every_batchnorm_and_keeps_the_names(original_and_folded):
    _, model, result = original_and_folded
    folded = result.model
    bns = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 40 and not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert set(result.removed) == set(bns)
    # Each BatchNorm's 4 vectors go, each conv gains a bias: 2 vectors' worth fewer per pair.
    removed = sum(int(np.prod(w.shape)) for name in bns for w in model.get_layer(name).weights)
    added = sum(model.get_layer(name).weights[0].shape[-1] for name in bns)
    assert folded.count_params() == model.count_params() - removed + added
    assert {layer.name for layer in folded.layers} <= {layer.name for layer in model.layers}


def test_folded_model_matches_every_block(original_and_folded):
    variant, model, result = original_and_folded
    folded = result.model
    x = _x()
    names = _blocks(result, variant)  # a folded BatchNorm output is its conv's output
    ours = keras.Model(model.input, [model.get_layer(layer).output for layer in architecture().block_outputs(variant).values()]
                       + [model.output])(x)
    theirs = keras.Model(folded.input, [folded.get_layer(n).output for n in names] + [folded.output])(x)
    for name, a, b in zip(names + ["logits"], ours, theirs):
        a, b = np.asarray(a), np.asarray(b)
        scale = max(float(np.abs(a).max()), 1.0)
        assert np.abs(a - b).max() <= 1e-5 * scale, name


def test_fold_leaves_shared_outputs_alone():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, [bn, keras.layers.ReLU(name="relu")(conv)])  # the conv output is read twice
    randomize(model)
    assert foldable_pairs(model) == {}
    folded = fold_batchnorm(model).model
    x = _x(8, 1)
    for a, b in zip(model(x), folded(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_fold_refuses_shared_layers():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 1, name="shared")
    model = keras.Model(inputs, conv(conv(inputs)))
    with pytest.raises(ValueError, match="called 2 times"):
        fold_batchnorm(model)


def test_fold_handles_depthwise_and_dense():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=True, name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, name="dense")(x)
    x = keras.layers.BatchNormalization(name="dense_bn")(x)
    model = keras.Model(inputs, x)
    randomize(model, 3)
    result = fold_batchnorm(model)
    folded = result.model
    assert result.removed == {"dw_bn": "dw", "dense_bn": "dense"}
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ ONNX backend

# The project's own module is imported above (an ImportError there is a failure, not a skip);
# only the optional third-party packages may be missing.
needs_onnx = pytest.mark.skipif(not onnx_backend.available(), reason="needs the onnx and onnxruntime packages")


@needs_onnx
@pytest.mark.parametrize("variant,size", [("paper", SIZE), ("article", SIZE), ("paper", 97)])
def test_onnx_forward_matches_the_tf_forward(variant, size):
    """97 px exercises TensorFlow's asymmetric 'same' padding at every stride-2 stage."""
    model = _model(variant, size, seed=1, classifier_activation=None)
    x = _x(size, 3, seed=2)
    tf_clf = Classifier(_loaded(model, variant), backend="tf")
    onnx_clf = Classifier(_loaded(model, variant), backend="onnx")
    assert onnx_clf.backend == "onnx" and tf_clf.backend == "tf"
    f_tf, p_tf = tf_clf.forward(x)
    f_onnx, p_onnx = onnx_clf.forward(x)
    assert f_onnx.shape == f_tf.shape and p_onnx.shape == p_tf.shape == (3, 7)
    np.testing.assert_allclose(f_onnx, f_tf, atol=1e-4)
    np.testing.assert_allclose(p_onnx, p_tf, atol=1e-4)
    # The raw logits too (the classifier applies softmax to both alike).
    _, logits = onnx_clf.runner(x)
    np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4 * max(1.0, float(np.abs(logits).max())))


def _unblocked(nodes) -> dict[str, LayerNode]:
    """{name: node} without the block each node belongs to (a Keras model does not record it)."""
    return {n.name: dataclasses.replace(n, block="") for n in nodes}


def _reference_nodes(reference: keras.Model) -> dict[str, LayerNode]:
    """`keras.applications.Xception`'s nodes under our names: it leaves its shortcuts unnamed
    (`reference_layer_name` names them) and its sums too (block by block, in order)."""
    names = {layer.name: reference_layer_name(layer) for layer in reference.layers}
    sums = [layer.name for layer in reference.layers if isinstance(layer, keras.layers.Add)]
    names.update(zip(sums, [n.name for n in layer_graph("paper").nodes if n.op == "add"], strict=True))
    names[reference.layers[0].name] = INPUT_LAYER  # Keras numbers a second model's input
    return {names[n.name]: dataclasses.replace(n, name=names[n.name], inputs=tuple(names[i] for i in n.inputs))
            for n in onnx_backend.keras_graph(reference).nodes}


@needs_onnx
@pytest.mark.parametrize("variant", ["paper", "article"])
def test_both_emitters_emit_the_one_graph_against_the_keras_reference(variant):
    """The layer graph (and its head) is what the Keras builder builds and what the ONNX translator
    emits, node for node; in the paper's wiring it is `keras.applications.Xception`'s own graph and
    both emitted models compute the reference's function on its random weights (BatchNorm
    statistics randomised); in the article's, the ONNX graph computes the Keras model's, and the
    graph differs from the reference's in exactly the nodes of the four wiring differences."""
    reference = keras.applications.Xception(weights=None, input_shape=(SIZE, SIZE, 3), classes=7,
                                            classifier_activation=None)
    randomize(reference, seed=21)
    ours = build_architecture(input_shape=(SIZE, SIZE, 3), classes=7, classifier_activation=None, variant=variant)
    copy_weights(reference, ours)
    graph = layer_graph(variant)
    graph = graph.extended(head_nodes(graph.output, include_top=True, pooling=None, classes=7,
                                      classifier_activation=None))
    assert [layer.name for layer in ours.layers if layer.name not in graph] == []
    assert _unblocked(onnx_backend.keras_graph(ours).nodes) == _unblocked(graph.nodes)
    theirs = _reference_nodes(reference)
    if variant == "paper":
        assert theirs == _unblocked(graph.nodes)
    else:
        mine = _unblocked(graph.nodes)
        differing = {n for n in set(theirs) | set(mine) if theirs.get(n) != mine.get(n)}
        assert differing == {"block1_conv1", "block1_conv2", "block3_residual_conv", "block4_residual_conv",
                             "block14_sepconv2_act", "avg_pool"} | {f"block{i}_sepconv3_post_act" for i in range(5, 13)} \
            | {f"block{i}_add" for i in range(5, 13)}
    proto = onnx_backend.to_onnx(ours, graph.node("avg_pool").inputs[0], check=True)
    emitted = {n.name.rsplit("/", 1)[0] for n in proto.graph.node}
    folded = {n.name for n in graph.nodes if n.op == "batchnorm"}
    assert {n.name for n in graph.nodes if n.op != "input"} - folded <= emitted
    x = _x(seed=22)
    keras_out = ours(x, training=False).numpy()
    assert np.abs(keras_out).max() > 1e-3
    tol = 1e-4 * max(1.0, float(np.abs(keras_out).max()))
    if variant == "paper":
        np.testing.assert_allclose(keras_out, reference(x, training=False).numpy(), atol=tol)
    np.testing.assert_allclose(onnx_backend.OnnxForward(proto)(x)[1], keras_out, atol=tol)


def _inception_like() -> LayerGraph:
    """Inception V3's ops as nodes, with no walker of its own: conv without bias + BatchNorm
    without γ + ReLU ('valid' and 'same', a 1×7 and a 7×1), 'valid' max-pool, 'same' average pool,
    a concatenation of three branches, global average pool and a dense softmax."""
    nodes = [LayerNode(INPUT_LAYER, "input", ())]

    def conv_bn_relu(x: str, name: str, filters: int, kernel: int, width: int | None = None, stride: int = 1,
                     padding: str = "same") -> str:
        nodes.extend([LayerNode(name, "conv", (x,), kernel=kernel, kernel_width=width, stride=stride,
                                padding=padding, filters=filters),
                      LayerNode(f"{name}_bn", "batchnorm", (name,), scale=False),
                      LayerNode(f"{name}_act", "relu", (f"{name}_bn",))])
        return f"{name}_act"

    stem = conv_bn_relu(INPUT_LAYER, "stem", 8, 3, stride=2, padding="valid")
    nodes.append(LayerNode("stem_pool", "maxpool", (stem,), kernel=3, stride=2, padding="valid"))
    a = conv_bn_relu("stem_pool", "branch1x1", 4, 1)
    b = conv_bn_relu(conv_bn_relu("stem_pool", "branch7_a", 4, 1, 7), "branch7_b", 6, 7, 1)
    nodes.append(LayerNode("branch_pool", "avgpool", ("stem_pool",), kernel=3, stride=1, padding="same"))
    c = conv_bn_relu("branch_pool", "branch_pool_conv", 2, 1)
    nodes.append(LayerNode("mixed0", "concat", (a, b, c)))
    nodes.extend(head_nodes("mixed0", include_top=True, pooling=None, classes=5, classifier_activation="softmax"))
    return LayerGraph("inception-like", tuple(nodes))


@needs_onnx
def test_inception_v3s_ops_fit_the_vocabulary_of_both_emitters():
    graph = _inception_like()
    inputs = keras.Input((29, 31, 3), name=INPUT_LAYER)
    model = keras.Model(inputs, emit(graph.nodes, {INPUT_LAYER: inputs}))
    randomize(model, seed=23)
    assert _unblocked(onnx_backend.keras_graph(model).nodes) == _unblocked(graph.nodes)
    sizes, channels = graph.sizes((29, 31)), graph.channels()
    for layer in model.layers:
        if len(layer.output.shape) == 4:
            assert tuple(layer.output.shape[1:]) == (*sizes[layer.name], channels[layer.name]), layer.name
    assert channels["mixed0"] == 12 and not model.get_layer("stem_bn").scale
    x = np.random.default_rng(24).uniform(-1, 1, (2, 29, 31, 3)).astype("float32")
    features, probabilities = onnx_backend.forward_of(model, "mixed0")(x)
    np.testing.assert_allclose(probabilities, model(x, training=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(features, keras.Model(inputs, model.get_layer("mixed0").output)(x).numpy(), atol=1e-4)


@needs_onnx
def test_onnx_graph_is_valid_and_exposes_block_outputs():
    model = _model("paper", classifier_activation=None)
    blocks = [block_output_layer(b, "paper") for b in architecture().spec.blocks]
    proto = onnx_backend.to_onnx(model, blocks[-1], extra_outputs=blocks[:3], check=True)
    assert [o.name for o in proto.graph.output] == ["features", "output", *blocks[:3]]
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "Relu", "MaxPool", "Sum", "Gemm"} <= ops
    forward = onnx_backend.OnnxForward(proto)
    x = _x(n=1)
    out = forward.run(x)
    expected = keras.Model(model.input, [model.get_layer(b).output for b in blocks[:3]])(x)
    for name, e in zip(blocks[:3], expected):
        np.testing.assert_allclose(out[name], np.asarray(e), atol=1e-4)


@needs_onnx
def test_onnx_translates_a_transfer_head():
    base = build_xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dense(10, activation="relu")(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(4)(x)
    model = keras.Model(base.input, x)
    randomize(model, 4)
    forward = onnx_backend.forward_of(model, "block14_sepconv2_act")
    batch = _x(n=2)
    features, out = forward(batch)
    np.testing.assert_allclose(out, model(batch).numpy(), atol=1e-4)
    assert features.shape == (2, 3, 3, 2048)


@needs_onnx
def test_onnx_refuses_what_it_cannot_translate():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.LeakyReLU(name="leaky")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(onnx_backend.UnsupportedLayerError, match="leaky"):
        onnx_backend.to_onnx(model, "conv")


@needs_onnx
def test_classifier_falls_back_to_tf_only_when_no_backend_was_asked_for(monkeypatch, caplog):
    model = _model("paper", seed=5)

    def broken(*args, **kwargs):
        raise onnx_backend.UnsupportedLayerError("no translation for this test")

    monkeypatch.setattr(onnx_backend, "to_onnx_parts", broken)
    with pytest.raises(BackendUnavailableError, match="backend 'onnx' was asked for.*no translation for this test"):
        Classifier(_loaded(model), backend="onnx")
    with caplog.at_level("WARNING", logger="xception_core.runtime.forward"):
        clf = Classifier(_loaded(model))
    assert clf.backend == "tf" and "runs on TensorFlow" in caplog.text and "no translation for this test" in caplog.text
    features, probs = clf.forward(_x(n=1))
    assert features.shape == (1, 3, 3, 2048) and probs.shape == (1, 7)


def test_backend_switch(monkeypatch):
    assert Settings.from_env({"XCEPTION_BACKEND": "tf"}).backend == "tf"
    assert Settings.from_env({"XCEPTION_BACKEND": "ONNX"}).backend == "onnx"
    assert Settings.from_env({}).backend is None
    with pytest.raises(ValueError, match="XCEPTION_BACKEND must be one of"):
        Settings.from_env({"XCEPTION_BACKEND": "xla"})
    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    assert Classifier(_loaded(_model("paper"))).backend == "tf"
    with pytest.raises(ValueError, match="backend must be one of"):
        Classifier(_loaded(_model("paper")), backend="torch")


@needs_onnx
def test_gradcam_works_on_the_onnx_backend():
    model = _model("paper", seed=6)
    clf = Classifier(_loaded(model), backend="onnx")
    ref = Classifier(_loaded(model), backend="tf")
    x = _x(n=1, seed=7)
    features, probs = clf.forward(x)
    cam = clf.gradcam(features[0], int(probs[0].argmax()))
    ref_features, _ = ref.forward(x)
    np.testing.assert_allclose(cam, ref.gradcam(ref_features[0], int(probs[0].argmax())), atol=1e-3)
    assert cam.shape == (3, 3) and 0 <= cam.min() and cam.max() <= 1 + 1e-6


@needs_onnx
@pytest.mark.slow
def test_int8_quantization_runs_and_keeps_the_interface():
    model = _model("paper", size=71, seed=8, classifier_activation=None)
    proto = onnx_backend.to_onnx(model, "block14_sepconv2_act")
    calibration = list(_x(71, 3, seed=9))
    quantized = onnx_backend.quantize_int8(proto, calibration)
    assert any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in quantized.graph.node)
    fp32 = onnx_backend.OnnxForward(proto)
    int8 = onnx_backend.OnnxForward(quantized, precision="int8")
    x = _x(71, 1, seed=10)
    (f32, o32), (f8, o8) = fp32(x), int8(x)
    assert f8.shape == f32.shape and o8.shape == o32.shape == (1, 7)
    # Reduced precision, random weights: close in direction, not equal.
    cos = float(np.dot(f8.ravel(), f32.ravel()) / (np.linalg.norm(f8) * np.linalg.norm(f32)))
    assert cos > 0.9


def test_precision_switch():
    assert Settings.from_env({}).precision == "fp32"
    assert Settings.from_env({"XCEPTION_PRECISION": "INT8"}).precision == "int8"
    with pytest.raises(ValueError, match="XCEPTION_PRECISION must be one of"):
        Settings.from_env({"XCEPTION_PRECISION": "fp16"})
    clf = Classifier(_loaded(_model("paper")), backend="tf", precision="int8")  # int8 needs ONNX Runtime
    assert (clf.backend, clf.precision) == ("tf", "fp32")


@needs_onnx
@pytest.mark.slow
def test_int8_classifier_calibrates_on_real_photos(kitchenware_samples):
    from xception_core.io.preprocessing import preprocess

    model = _model("paper", size=71, seed=11)
    calibration = [preprocess(s.path, 71) for s in kitchenware_samples if not s.label]
    clf = Classifier(_loaded(model), backend="onnx", precision="int8", calibration=calibration)
    assert (clf.backend, clf.precision) == ("onnx", "int8")
    x = _x(71, 2, seed=12)
    features, probs = clf.forward(x)
    assert features.shape == (2, 3, 3, 2048) and probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert clf.gradcam(features[0], int(probs[0].argmax())).shape == (3, 3)


@needs_onnx
def test_external_weights_give_the_inline_graphs_outputs_and_are_shared_per_model():
    """`OnnxForward` builds from a weight-free graph plus the arrays: same outputs as the
    self-contained `to_onnx` graph; a second session of the same model reuses its arrays, and
    changed weights are not mistaken for the old ones."""
    model = _model("paper", seed=4, classifier_activation=None)
    features = block_output_layer(architecture().spec.blocks[-1], "paper")
    x = _x(n=1, seed=5)
    proto, arrays = onnx_backend.to_onnx_parts(model, features)
    assert arrays and proto.ByteSize() < 200_000  # the weights are not in the graph
    assert sum(a.nbytes for a in arrays.values()) > 0.95 * 4 * model.count_params() - 4 * 60_000
    inline = onnx_backend.OnnxForward(onnx_backend.to_onnx(model, features))
    external = onnx_backend.forward_of(model, features)
    for a, b in zip(inline(x), external(x)):
        np.testing.assert_array_equal(a, b)
    _, again = onnx_backend.to_onnx_parts(model, features, block_maps={"block4": "block4_add"})
    assert all(again[name] is arrays[name] for name in arrays)
    layer = model.get_layer("block4_sepconv1")
    layer.set_weights([w * 1.5 for w in layer.get_weights()])
    _, changed = onnx_backend.to_onnx_parts(model, features)
    assert sum(changed[n] is not arrays[n] for n in arrays) >= 1


@needs_onnx
def test_shared_arrays_hold_only_what_a_live_session_uses():
    """The pool that lets two sessions of one model share arrays keeps nothing alive itself: once
    no translation's arrays are referenced, it is empty although the model lives on."""
    model = _model("paper", size=71, seed=13, classifier_activation=None)
    features = block_output_layer(architecture().spec.blocks[-1], "paper")
    shared = onnx_backend.SharedArrays()
    _, first = onnx_backend.to_onnx_parts(model, features, shared=shared)
    _, second = onnx_backend.to_onnx_parts(model, features, shared=shared)
    assert all(second[name] is first[name] for name in first) and len(shared) == len(first) > 100
    session = onnx_backend.OnnxForward(*onnx_backend.to_onnx_parts(model, features, shared=shared))
    del first, second
    gc.collect()
    assert len(shared) > 100, "the session's arrays stay shared while it lives"
    del session
    gc.collect()
    assert len(shared) == 0 and model.count_params() > 0
