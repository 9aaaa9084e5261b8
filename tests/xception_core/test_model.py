"""Architecture: parameter counts, shapes, equivalence with keras.applications.Xception, and
exactly four wiring differences between the 'paper' and 'article' variants."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import randomize
from xception_core.arch.builder import build_architecture
from xception_core.arch.names import block_output_layer
from xception_core.arch.registry import architecture
from xception_core.arch.spec import VARIANT_SPECS, WIRING_DIFFERENCES
from xception_core.model import build_xception
from xception_core.weights.load import copy_weights


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("fixture", ["paper_model", "article_model"])
def test_parameter_counts(fixture, request):
    model = request.getfixturevalue(fixture)
    assert model.count_params() == 22_910_480
    assert _trainable(model) == 22_855_952
    assert model.count_params() - _trainable(model) == 54_528


def test_shapes_per_flow_at_299(paper_model):
    shape = lambda name: tuple(paper_model.get_layer(name).output.shape[1:])  # noqa: E731
    assert shape("block1_conv1_act") == (149, 149, 32)
    assert shape("block1_conv2_act") == (147, 147, 64)
    assert shape("block4_add") == (19, 19, 728)  # entry flow out
    assert shape("block12_add") == (19, 19, 728)  # middle flow out
    assert shape("block14_sepconv2_act") == (10, 10, 2048)  # exit flow out
    assert tuple(paper_model.output.shape) == (None, 1000)


@pytest.mark.parametrize("size,expected", [(71, (3, 3)), (512, (16, 16))])
def test_exit_shape_at_other_sizes(size, expected):
    model = build_xception(weights=None, input_shape=(size, size, 3), include_top=False)
    assert tuple(model.output.shape[1:]) == (*expected, 2048)


def test_undefined_size_without_top():
    model = build_xception(weights=None, input_shape=(None, None, 3), include_top=False, pooling="avg")
    assert tuple(model.output.shape) == (None, 2048)
    features = build_xception(weights=None, input_shape=(None, None, 3), include_top=False)
    out = features(np.zeros((1, 100, 130, 3), "float32"))
    assert tuple(out.shape) == (1, 3, 4, 2048)  # 100→49→47→24→12→6→3, 130→64→62→31→16→8→4


def test_main_path_names_match_keras_reference(paper_model):
    reference = keras.applications.Xception(weights=None)
    ref_names = {layer.name for layer in reference.layers if layer.name.startswith("block")} | {"avg_pool", "predictions"}
    ours = {layer.name for layer in paper_model.layers}
    assert ref_names <= ours
    # Every layer is named: no Keras auto-names such as 'conv2d_3' or 'add_7'.
    auto = [layer.name for layer in paper_model.layers if not layer.name.startswith("block")]
    assert auto == ["input_layer", "avg_pool", "predictions"]
    assert {"block3_residual_conv", "block3_residual_bn", "block3_add", "block13_residual_conv"} <= ours


@pytest.mark.parametrize("include_top", [True, False])
def test_equivalent_to_keras_reference(include_top):
    """Same weights → same outputs as keras.applications.Xception(weights=None)."""
    reference = keras.applications.Xception(weights=None, include_top=include_top, input_shape=(96, 96, 3))
    randomize(reference, seed=1)
    ours = build_architecture(include_top=include_top, input_shape=(96, 96, 3))
    assert copy_weights(reference, ours) == 81 - (0 if include_top else 1)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    expected, got = reference(x, training=False).numpy(), ours(x, training=False).numpy()
    assert np.abs(expected).max() > 1e-3  # a live signal, not all zeros
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def _graph(model) -> dict[str, tuple[str, tuple[str, ...]]]:
    """layer name -> (class, names of the layers feeding it)."""
    out = {}
    for layer in model.layers:
        inputs = keras.tree.flatten(layer.input) if not isinstance(layer, keras.layers.InputLayer) else []
        out[layer.name] = (type(layer).__name__, tuple(t._keras_history[0].name for t in inputs))
    return out


def test_article_differs_in_exactly_four_places(paper_model, article_model):
    paper, article = _graph(paper_model), _graph(article_model)
    only_paper = sorted(set(paper) - set(article))
    only_article = sorted(set(article) - set(paper))
    rewired = sorted(n for n in set(paper) & set(article) if paper[n][1] != article[n][1])
    # 1. stem padding: same layers, different config
    stem_padding = {n for n in ("block1_conv1", "block1_conv2")
                    if paper_model.get_layer(n).padding != article_model.get_layer(n).padding}
    assert stem_padding == {"block1_conv1", "block1_conv2"}
    assert article_model.get_layer("block1_conv2_act").output.shape[1:3] == (150, 150)
    # 2. entry-flow shortcuts of blocks 3 and 4 fed by the previous shortcut
    assert article["block3_residual_conv"][1] == ("block2_residual_bn",)
    assert paper["block3_residual_conv"][1] == ("block2_add",)
    assert article["block4_residual_conv"][1] == ("block3_residual_bn",)
    # 3. a ReLU before each middle-flow sum (8 blocks) ...
    middle = [f"block{i}_sepconv3_post_act" for i in range(5, 13)]
    assert only_article == sorted(middle)
    # 4. ... and no final exit-flow ReLU
    assert only_paper == ["block14_sepconv2_act"]
    # Nothing else is rewired: the sums after the extra ReLUs, the shortcuts, and the pooling.
    expected_rewired = {"block3_residual_conv", "block4_residual_conv", "avg_pool"} | {f"block{i}_add" for i in range(5, 13)}
    assert set(rewired) == expected_rewired
    assert set(VARIANT_SPECS["paper"].differences(VARIANT_SPECS["article"])) == {d.field for d in WIRING_DIFFERENCES}


def test_each_wiring_difference_names_the_blocks_it_lives_in():
    where = {d.field: d.blocks for d in WIRING_DIFFERENCES}
    assert where == {
        "stem_padding": ("block1",),
        "entry_shortcut_from": ("block3", "block4"),
        "middle_relu_before_add": tuple(f"block{i}" for i in range(5, 13)),
        "exit_final_relu": ("block14",),
    }
    assert architecture().spec.block("block7").wiring_differences == ("middle_relu_before_add",)
    assert architecture().spec.block("block2").wiring_differences == ()
    assert all(d.label and d.note for d in WIRING_DIFFERENCES)


def test_variants_compute_different_functions():
    paper = build_architecture(include_top=False, input_shape=(96, 96, 3))
    article = build_architecture(include_top=False, input_shape=(96, 96, 3), variant="article")
    randomize(paper, seed=3)
    copy_weights(paper, article)  # same weights, different wiring
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    a, b = paper(x).numpy(), article(x).numpy()
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()


def test_block_output_layers_exist(paper_model, article_model):
    for block in architecture().spec.blocks:
        paper_model.get_layer(block_output_layer(block, "paper"))
        article_model.get_layer(block_output_layer(block, "article"))
    assert len(architecture().spec.blocks) == 14
    assert [b.name for b in architecture().spec.flow_blocks("middle")] == [f"block{i}" for i in range(5, 13)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(70, 299, 3)), "≥ 71"),
        (dict(input_shape=(299, 299)), "height, width, channels"),
        (dict(input_shape=(None, None, 3)), "include_top=False"),
        (dict(input_shape="big"), "input_shape"),
        (dict(variant="keras"), "variant must be one of"),
        (dict(pooling="mean", include_top=False), "pooling must be one of"),
        (dict(classes=0), "classes must be a positive integer"),
        (dict(classifier_activation="sparkle"), "classifier_activation"),
        (dict(weights="resnet"), "weights must be None, 'auto'"),
        (dict(weights="/no/such/file.h5"), "existing"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_xception(**{"weights": None, **kwargs})


def test_weights_file_with_wrong_suffix(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix '.bin'"):
        build_xception(weights=str(path))


def test_model_info_is_the_weights_source_plus_its_wiring():
    """One record: `ModelInfo` extends `WeightsSource` by the wiring and the architecture alone,
    and `load_model` and `rewire` carry every field of the source."""
    import dataclasses

    from xception_core.model import ModelInfo, load_model, rewire
    from xception_core.weights.load import WeightsSource

    source_fields = [f.name for f in dataclasses.fields(WeightsSource)]
    assert issubclass(ModelInfo, WeightsSource)
    assert [f.name for f in dataclasses.fields(ModelInfo)] == [*source_fields, "variant", "architecture"]
    assert set(ModelInfo.__annotations__) == {"variant", "architecture"}  # nothing re-declared
    loaded = load_model(None, input_shape=(71, 71, 3), classes=3)
    info = loaded.info
    assert (info.preset, info.title, info.source, info.labels, info.input_size, info.outputs, info.variant) == (
        None, "random initialisation (untrained)", "random initialisation", None, 71, "probabilities", "paper")
    assert info.features_layer == block_output_layer(architecture().spec.blocks[-1], "paper")
    article = rewire(loaded, "article").info
    assert article.variant == "article" and article.features_layer != info.features_layer
    assert info.architecture == article.architecture == "xception" and info.arch is architecture("xception")
    assert {n: getattr(article, n) for n in source_fields} == {n: getattr(info, n) for n in source_fields}
    assert ModelInfo.wired(WeightsSource(*(getattr(info, n) for n in source_fields)), "paper") == info


def test_presets_and_models_name_a_registered_architecture():
    """Each preset names its architecture as a key of the registry, and a model loaded from it
    carries that key; the record holds the spec, each wiring's graph (its last layer is the
    features layer) and the wirings' differences."""
    from xception_core.arch.graph import layer_graph
    from xception_core.arch.registry import ARCHITECTURES
    from xception_core.weights.presets import PRESETS

    assert {p.architecture for p in PRESETS.values()} <= set(ARCHITECTURES)
    for arch in ARCHITECTURES.values():
        assert arch.reference_wiring in arch.wirings
        for wiring in arch.wirings:
            assert arch.graph(wiring) is layer_graph(wiring, arch.spec)
            assert arch.features_layer(wiring) == arch.block_output(arch.block_names[-1], wiring)
    xception = architecture("xception")
    assert xception.differences == WIRING_DIFFERENCES and dict(xception.wirings) == VARIANT_SPECS
    assert xception.features_layer("paper") == "block14_sepconv2_act"
    assert xception.features_layer("article") == "block14_sepconv2_bn"
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; known: \\['xception', 'inception_v3'\\]"):
        architecture("resnet")
