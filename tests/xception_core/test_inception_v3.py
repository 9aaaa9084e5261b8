"""Inception V3 from data (`xception_core.arch.inception_v3`) against `keras.applications.InceptionV3`:
the same layers under the same names in the same order (so the official HDF5 weights load), the
same function on random weights with randomised BatchNorm statistics (Keras builder and ONNX
translator alike), the same parameter count, and its module table (`describe_graph`) against an
independent count over the reference's Keras layers."""

from __future__ import annotations

import collections
import dataclasses
import math

import keras
import numpy as np
import pytest
from keras.src.backend.common import global_state
from keras.src.legacy.saving import legacy_h5_format

from tests.conftest import randomize
from xception_core.arch.builder import build_architecture
from xception_core.arch.graph import head_nodes
from xception_core.arch.registry import architecture
from xception_core.runtime import onnx as onnx_backend
from xception_core.runtime.introspection import describe, describe_graph

SMALL = 75  # Inception V3's smallest input (Keras's `min_size`): every module's map is 1×1 or more
KERAS_TOTAL = 23_851_784  # `keras.applications.InceptionV3(weights=None).count_params()`

ARCH = architecture("inception_v3")


def _reference(size: int, classes: int) -> keras.Model:
    """Keras's InceptionV3 with the layer names a fresh process gives it: its automatic names are
    numbered per process, so the counters are swapped for fresh ones while it is built."""
    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        return keras.applications.InceptionV3(weights=None, input_shape=(size, size, 3), classes=classes,
                                              classifier_activation=None)
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def _ours(size: int, classes: int) -> keras.Model:
    return build_architecture(input_shape=(size, size, 3), classes=classes, classifier_activation=None,
                              spec=ARCH.spec, name="inception_v3")


def _x(size: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def _unblocked(nodes) -> dict:
    return {n.name: dataclasses.replace(n, block="") for n in nodes}


@pytest.fixture(scope="module")
def small():
    """(reference, ours) at 75 px with 7 classes; the reference's weights randomised."""
    reference = _reference(SMALL, 7)
    randomize(reference, seed=31)
    return reference, _ours(SMALL, 7)


def test_layers_are_the_references_by_name_order_and_op(small):
    reference, ours = small
    assert [layer.name for layer in ours.layers] == [layer.name for layer in reference.layers]
    graph = ARCH.graph()
    graph = graph.extended(head_nodes(graph.output, include_top=True, pooling=None, classes=7,
                                      classifier_activation=None))
    assert _unblocked(onnx_backend.keras_graph(ours).nodes) == _unblocked(graph.nodes)
    assert _unblocked(onnx_backend.keras_graph(reference).nodes) == _unblocked(graph.nodes)
    sizes, channels = graph.sizes(SMALL), graph.channels()
    for layer in ours.layers:
        if len(layer.output.shape) == 4:
            assert tuple(layer.output.shape[1:]) == (*sizes[layer.name], channels[layer.name]), layer.name
    assert sizes["mixed10"] == (1, 1) and channels["mixed10"] == 2048


def test_the_references_hdf5_weights_load_by_order_and_give_its_outputs(small, tmp_path):
    """Keras's legacy HDF5 loader (the official weights' format) matches layers by order, not by
    name: a file written from the reference loads into ours and computes the same function, in
    Keras and in the ONNX translation."""
    import h5py

    reference, ours = small
    path = tmp_path / "inception_v3_weights.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    ours.load_weights(path)
    x = _x(SMALL, 2, seed=32)
    expected = reference(x, training=False).numpy()
    assert np.abs(expected).max() > 1e-3
    tol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ours(x, training=False).numpy(), expected, atol=tol)


@pytest.mark.skipif(not onnx_backend.available(), reason="needs the onnx and onnxruntime packages")
def test_the_onnx_translation_computes_the_references_function(small):
    """The ONNX emitters translate the same nodes (BatchNorms folded into their convs)."""
    reference, ours = small
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    x = _x(SMALL, 2, seed=35)
    expected = reference(x, training=False).numpy()
    features, logits = onnx_backend.forward_of(ours, "mixed10")(x)
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert features.shape == (2, 1, 1, 2048)


def test_at_299_px_outputs_and_parameters_are_kerass():
    reference, ours = _reference(299, 1000), _ours(299, 1000)
    assert ours.count_params() == reference.count_params() == KERAS_TOTAL
    randomize(reference, seed=33)
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    x = _x(299, 1, seed=34)
    expected = reference(x, training=False).numpy()
    tol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ours(x, training=False).numpy(), expected, atol=tol)
    description = describe(ours, spec=ARCH.spec)
    assert description.to_dict(layers=True) == _by_layer_order(describe_graph(ARCH), description)


def _by_layer_order(graph_description, keras_description) -> dict:
    """The graph's description with each block's layers in the Keras model's order (Keras lists
    a functional model's layers by depth, the graph by construction) and the model's name."""
    out = graph_description.to_dict(layers=True)
    order = {layer.name: i for b in keras_description.blocks for i, layer in enumerate(b.layers)}
    for block in out["blocks"]:
        block["layers"] = tuple(sorted(block["layers"], key=lambda layer: order[layer["name"]]))
    return {**out, "name": keras_description.name}


def _keras_modules(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """The reference's layers by module, found from its graph alone: the stem is everything
    before the layer mixed0's branches all read; each 'mixedN' is what lies between the previous
    module's output and its own concatenation; the rest is the classifier."""
    def inputs_of(layer):
        return [t._keras_history.operation for t in keras.tree.flatten(layer.input)]

    def ancestors(layer, stop) -> list:
        seen, todo = {}, [layer]
        while todo:
            current = todo.pop()
            if current.name in seen or current is stop or isinstance(current, keras.layers.InputLayer):
                continue
            seen[current.name] = current
            todo.extend(inputs_of(current))
        return list(seen.values())

    mixed0 = model.get_layer("mixed0")
    readers = collections.Counter(i.name for layer in ancestors(mixed0, None) for i in inputs_of(layer))
    stem_out = model.get_layer(readers.most_common(1)[0][0])
    modules = {"stem": ancestors(stem_out, None)}
    previous = stem_out
    for i in range(11):
        layer = model.get_layer(f"mixed{i}")
        modules[layer.name] = ancestors(layer, previous)
        previous = layer
    placed = {layer.name for layers in modules.values() for layer in layers}
    modules["head"] = [layer for layer in model.layers
                       if layer.name not in placed and not isinstance(layer, keras.layers.InputLayer)]
    return modules


def _hand_macs(layer: keras.layers.Layer) -> int:
    """A conv's MACs: each output value is one dot product over its kernel's window and input
    channels (kernel height × width × input channels / groups); a dense layer's, its weights."""
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c_out = layer.output.shape[1:]
        return h * w * c_out * math.prod(layer.kernel.shape[:-1])
    if isinstance(layer, keras.layers.Dense):
        return math.prod(layer.kernel.shape)
    return 0


def test_module_table_is_an_independent_count_over_kerass_layers():
    """`/architecture`'s table for 'inception_v3': each module's output shape, parameters (each
    Keras layer's `count_params`) and multiply-accumulates (by hand from each Conv2D / Dense
    kernel and output shape), totalling exactly Keras's parameters, at 299 px."""
    reference = _reference(299, 1000)
    description = describe_graph(ARCH)
    assert [b.name for b in description.blocks] == ["stem", *(f"mixed{i}" for i in range(11)), "head"]
    modules = _keras_modules(reference)
    assert sum(len(layers) for layers in modules.values()) == len(reference.layers) - 1
    for block in description.blocks:
        layers = modules[block.name]
        assert block.params == sum(layer.count_params() for layer in layers), block.name
        assert block.macs == sum(_hand_macs(layer) for layer in layers), block.name
        assert {layer.name for layer in block.layers} == {layer.name for layer in layers}, block.name
        output = reference.get_layer(block.output_layer).output
        assert block.output_shape == tuple(output.shape[1:]), block.name
    assert description.total_params == reference.count_params() == KERAS_TOTAL
    assert description.non_trainable_params == sum(
        math.prod(w.shape) for w in reference.non_trainable_weights)
    assert description.block("mixed10").output_shape == (8, 8, 2048)
    assert description.input_shape == (299, 299, 3) and description.name == "inception_v3"


def test_describe_graph_is_describe_for_xception_too():
    """The graph count is the Keras count for the other architecture as well (either wiring)."""
    xception = architecture("xception")
    for wiring in ("paper", "article"):
        model = build_architecture(input_shape=(80, 80, 3), classes=5, variant=wiring)
        counted = describe(model, wiring)
        assert _by_layer_order(describe_graph(xception, 80, classes=5, wiring=wiring), counted) \
            == counted.to_dict(layers=True)


def test_the_graph_refuses_what_inception_v3_cannot_do():
    with pytest.raises(ValueError, match="one wiring"):
        ARCH.spec.graph("article")
    with pytest.raises(ValueError, match="too small"):
        describe_graph(ARCH, 74)
    with pytest.raises(ValueError, match="unknown block"):
        ARCH.block("block5")
    assert ARCH.features_layer() == "mixed10" and ARCH.block_output("stem") == "max_pooling2d_1"
