"""The translated model cached for serving: it answers as the Keras model does (forward, Grad-CAM
as the class activation map, every block's map), it is read back only when every byte checks out,
and a process that reads it never imports TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_loaded
from xception_core.runtime.translated import (
    BLOCKS, FORWARD, INT8, MANIFEST, PARAMS, REFERENCE, TRANSLATOR_VERSION, WEIGHTS, TranslatedModel, cam,
    open_translation, save, translate, translation_dir,
)

ROOT = Path(__file__).resolve().parents[2]
SIZE, CLASSES = 71, 5
SHA = "ab" * 32


@pytest.fixture(scope="module")
def loaded():
    return random_loaded(SIZE, CLASSES, seed=3)


@pytest.fixture(scope="module")
def translation(loaded):
    from xception_core.io.export import export_files

    return translate(loaded, [f"c{i}" for i in range(CLASSES)], SHA, exporter=export_files)


@pytest.fixture(scope="module")
def saved(translation, tmp_path_factory):
    return save(translation, translation_dir(tmp_path_factory.mktemp("cache"), SHA))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def test_forward_and_gradcam_match_the_keras_model(loaded, saved, images):
    from xception_core.runtime.classifier import Classifier

    reference = Classifier(loaded, backend="tf")
    served = TranslatedModel(open_translation(saved, SHA))
    features, probs = served.forward(images)
    ref_features, ref_probs = reference.forward(images)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    np.testing.assert_allclose(features, ref_features, atol=1e-3, rtol=1e-3)
    assert served.has_cam
    for image in range(2):
        for k in range(CLASSES):
            # On the same features, so only the head's maths is compared: CAM vs GradientTape.
            tape = reference.gradcam(ref_features[image], k)
            np.testing.assert_allclose(served.gradcam(ref_features[image], k), tape, atol=1e-5)


def test_cam_is_gradcam_of_a_linear_head_on_random_weights():
    """The identity itself, on random numbers: a GradientTape through GAP + Dense vs `cam`."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, 5, 7, 16)).astype(np.float32)
    w = rng.normal(size=(16, 4)).astype(np.float32)
    for k in range(4):
        x = tf.constant(f)
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.matmul(tf.reduce_mean(x, axis=(1, 2)), w)[0, k]
        grads = tape.gradient(score, x)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        heat = tf.nn.relu(tf.reduce_sum(x * weights[:, None, None, :], axis=-1))[0]
        expected = (heat / (tf.reduce_max(heat) + 1e-12)).numpy()
        np.testing.assert_allclose(cam(f[0], w[:, k]), expected, atol=1e-5)


def _head_model(head: str):
    """A random-weight Xception at SIZE with another head: 'mlp' (GAP, Dense relu, Dropout, Dense
    softmax), 'logits' (classifier_activation=None) or 'norm' (GAP, BatchNorm, Dense: no hand path)."""
    import keras

    from tests.conftest import randomize
    from xception_core.model import LoadedModel, load_model
    from xception_core.weights.load import BuildRequest
    from xception_core.weights.source import ModelInfo

    if head == "logits":
        loaded = load_model(None, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None)
        randomize(loaded.model, 5)
        return loaded
    features = BuildRequest(input_shape=(SIZE, SIZE, 3), include_top=False).architecture()
    x = keras.layers.GlobalAveragePooling2D()(features.output)
    if head == "mlp":
        x = keras.layers.Dropout(0.5)(keras.layers.Dense(16, activation="relu")(x))
    else:
        x = keras.layers.BatchNormalization()(x)
    model = keras.Model(features.input, keras.layers.Dense(CLASSES, activation="softmax")(x))
    randomize(model, 6)
    info = ModelInfo(preset=None, title="test head", source="test", labels=None, input_size=SIZE,
                     outputs="probabilities", variant="paper")
    return LoadedModel(model, info)


@pytest.mark.parametrize("head", ["mlp", "logits", "norm"])
def test_other_heads_keep_a_correct_gradcam(head, images):
    """Dense layers after the pooling (a ReLU inside, or logits) are differentiated by hand, equal
    to the GradientTape; a head with another layer has no hand path (`has_cam` False), so the
    store differentiates its Keras model instead."""
    from xception_core.runtime.classifier import Classifier

    loaded = _head_model(head)
    served = TranslatedModel(translate(loaded, [f"c{i}" for i in range(CLASSES)], SHA))
    assert served.has_cam == (head != "norm")
    if head == "norm":
        with pytest.raises(NotImplementedError):
            served.gradcam(np.ones((3, 3, 2048), np.float32), 0)
        return
    reference = Classifier(loaded, backend="tf")
    features, _ = reference.forward(images)
    for k in range(CLASSES):  # a hidden layer: float32 sums in another order than TensorFlow's
        np.testing.assert_allclose(served.gradcam(features[0], k), reference.gradcam(features[0], k),
                                   atol=1e-5 if head == "logits" else 1e-4)


def test_the_blocks_pass_gives_the_explorers_record(loaded, saved, images):
    from xception_core.runtime.activations import ActivationExplorer

    served = TranslatedModel(open_translation(saved, SHA))
    ours, _ = ActivationExplorer().compute(served, images[0])
    theirs, _ = ActivationExplorer(backend="tf").compute(loaded, images[0])
    assert ours.block_names == theirs.block_names and ours.backend == "onnx"
    for block in ours.block_names:
        np.testing.assert_allclose(ours.channel_means[block], theirs.channel_means[block], atol=2e-3, rtol=2e-3)
        assert ours.stats[block].after_relu == theirs.stats[block].after_relu
    np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-4)


def test_teachs_features_come_from_the_blocks_pass(loaded, saved, images):
    """The pooled features and the exit-flow map Teach fits on, from the translation (no
    TensorFlow), equal those of the Keras model."""
    from xception_core.runtime.extractor import TRANSFER_BLOCKS, FeatureExtractor

    ours = FeatureExtractor(TranslatedModel(open_translation(saved, SHA)), TRANSFER_BLOCKS)(images)
    reference = FeatureExtractor(loaded, TRANSFER_BLOCKS, backend="tf")
    theirs = reference(images)
    assert ours.pooled.keys() == theirs.pooled.keys()
    for block in TRANSFER_BLOCKS:
        np.testing.assert_allclose(ours.pooled[block], theirs.pooled[block], atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(ours.feature_map, theirs.feature_map, atol=1e-3, rtol=1e-3)


def test_one_session_serves_the_forward_and_the_blocks_pass(saved, images):
    """A model the explorer uses runs its forward in the all-blocks session (one session, not
    two), from the start or once the pass is first built, with the same answers."""
    two = TranslatedModel(open_translation(saved, SHA))
    features, probs = two.forward(images)
    first = two.runner
    blocks = two.blocks_forward()
    assert two.runner is blocks and first is not blocks
    one = TranslatedModel(open_translation(saved, SHA), all_blocks=True)
    assert one.runner is one.blocks_forward()
    for model in (two, one):
        f, p = model.forward(images)
        np.testing.assert_allclose(p, probs, atol=1e-6)
        np.testing.assert_allclose(f, features, atol=1e-5)


def test_descriptions_are_the_keras_ones(loaded, saved):
    from xception_core.model import rewire
    from xception_core.runtime.introspection import describe, reference_description

    served = TranslatedModel(open_translation(saved, SHA))
    assert served.description("paper") == describe(loaded.model, "paper")
    assert served.description("article") == describe(rewire(loaded, "article").model, "article")
    assert served.description(REFERENCE) == reference_description()


def test_weights_are_stored_once_for_both_graphs(saved, loaded):
    size = (saved / WEIGHTS).stat().st_size
    params = loaded.model.count_params()
    assert size < 4 * params  # folded BatchNorm: fewer numbers than the Keras model, not two copies
    manifest = json.loads((saved / MANIFEST).read_text())
    assert manifest["translator_version"] == TRANSLATOR_VERSION and manifest["weights_sha256"] == SHA
    assert set(manifest["initializers"][FORWARD].values()) <= set(manifest["initializers"][BLOCKS].values())


def linked_copy(folder: Path, into: Path, own: tuple[str, ...] = ()) -> Path:
    """`folder` as another folder: a symbolic link to each of its files, but a copy of each in
    `own` (the files a test alters), so that a translation saved once serves every such test."""
    into.mkdir()
    for path in folder.iterdir():
        if path.name in own:
            (into / path.name).write_bytes(path.read_bytes())
        else:
            (into / path.name).symlink_to(path)
    return into


@pytest.mark.parametrize("victim", [FORWARD, BLOCKS, WEIGHTS, "blocks-article.onnx", "operation-paper.onnx",
                                    "operation-article.onnx", PARAMS, "graph-article.json", "model-paper.keras",
                                    "model-article.keras"])
def test_a_tampered_file_is_never_served(saved, tmp_path, victim, caplog):
    folder = linked_copy(saved, tmp_path / "t", own=(victim,))
    assert open_translation(folder, SHA) is not None
    data = bytearray((folder / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / victim).write_bytes(bytes(data))
    assert open_translation(folder, SHA) is None
    assert f"{victim} does not match its sha256" in caplog.text


def test_other_weights_another_version_or_a_missing_precision_are_not_used(saved, tmp_path):
    folder = linked_copy(saved, tmp_path / "t", own=(MANIFEST,))
    assert open_translation(folder, "cd" * 32) is None
    assert open_translation(folder, SHA, precision="int8") is None  # no int8 graph in it
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["translator_version"] = TRANSLATOR_VERSION - 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert open_translation(folder, SHA) is None
    assert open_translation(tmp_path / "nothing", SHA) is None


def test_int8_is_made_from_the_cached_graph(translation, images, tmp_path):
    from xception_core.runtime.translated import add_int8

    copy = type(translation)(dict(translation.meta), dict(translation.graphs), dict(translation.arrays),
                             dict(translation.files))
    add_int8(copy, list(images))
    folder = save(copy, tmp_path / "t")
    again = open_translation(folder, SHA, precision="int8")
    assert again is not None and INT8 in again.graphs
    served = TranslatedModel(again, precision="int8")
    assert served.precision == "int8"
    _, probs = served.forward(images)
    assert probs.shape == (2, CLASSES) and np.allclose(probs.sum(axis=1), 1, atol=0.02)  # uint8 outputs


def test_reading_and_serving_it_imports_no_tensorflow(saved, images, tmp_path):
    """A fresh interpreter opens the cached translation and answers a forward, Grad-CAM and the
    all-blocks pass, with neither TensorFlow nor Keras in `sys.modules`."""
    np.save(tmp_path / "x.npy", images[:1])
    code = f"""
import sys, numpy as np
from xception_core.runtime.translated import TranslatedModel, open_translation
from xception_core.runtime.activations import ActivationExplorer
model = TranslatedModel(open_translation({str(saved)!r}, {SHA!r}))
x = np.load({str(tmp_path / 'x.npy')!r})
features, probs = model.forward(x)
heat = model.gradcam(features[0], int(probs[0].argmax()))
record, _ = ActivationExplorer().compute(model, x[0])
model.description('article')
article, _ = ActivationExplorer().compute(model.wiring('article'), x[0])
out = model.wiring('article').operation_pass().run(x, ['block4_sepconv2_bn'])
params = model.operation_params('block4')
assert heat.shape == features.shape[1:3] and len(record.maps) == 14 and article.variant == 'article'
assert out['block4_sepconv2_bn'].ndim == 4 and params.separable[0].layer == 'block4_sepconv1'
print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ both wirings, one translation


@pytest.mark.parametrize("variant", ["paper", "article"])
def test_the_operation_view_reads_the_keras_models_numbers(loaded, saved, images, variant):
    """The operation pass and weights served from the translation are the Keras model's: the
    params array for array, the pass's layer outputs against the Keras reference pass
    (`operation_pass.layer_source`, TensorFlow) of the same wiring."""
    from xception_core.model import rewire
    from xception_core.runtime.operation import BlockParams, pass_layers
    from xception_core.runtime.operation_pass import layer_source

    served = TranslatedModel(open_translation(saved, SHA)).wiring(variant)
    for block in ("block2", "block7", "block13", "block14"):
        ours, keras_params = served.operation_params(block).to_arrays(), BlockParams.from_model(loaded.model, block)
        reference = keras_params.to_arrays()
        assert ours.keys() == reference.keys()
        for name, array in reference.items():
            assert np.array_equal(ours[name], array), name
    names = list(pass_layers(variant))
    ours = served.operation_pass().run(images, names)
    reference = layer_source(rewire(loaded, variant), backend="tf").run(images, names)
    for name in names:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-3, atol=2e-4, err_msg=name)


def test_the_article_wiring_is_served_from_the_translation(loaded, saved, images):
    """The article's all-blocks pass from the cached translation gives the record the Keras
    article model gives (`ActivationExplorer` on `rewire(loaded, 'article')`, TensorFlow)."""
    from xception_core.model import rewire
    from xception_core.runtime.activations import ActivationExplorer

    article = TranslatedModel(open_translation(saved, SHA)).wiring("article")
    assert article.info.variant == "article" and article.after_relu["block14"] is False
    ours, _ = ActivationExplorer().compute(article, images[0])
    keras_record, _ = ActivationExplorer(backend="tf").compute(rewire(loaded, "article"), images[0])
    np.testing.assert_allclose(ours.probabilities, keras_record.probabilities, atol=1e-5)
    for block in ours.maps:
        np.testing.assert_allclose(ours.channel_means[block], keras_record.channel_means[block], rtol=2e-3, atol=2e-3)


def test_the_exports_are_the_keras_ones(loaded, saved, tmp_path):
    """The graph document and the `.keras` the Graph sub-tab serves are the ones the exporter
    makes from the Keras model of each wiring (same config and weights fingerprints)."""
    import keras

    from xception_core.io.export import config_fingerprint, graph_document, weights_fingerprint
    from xception_core.model import rewire

    translation = open_translation(saved, SHA)
    for variant in ("paper", "article"):
        model = rewire(loaded, variant).model
        document = json.loads(translation.export("graph", variant).read_bytes())
        assert document["modelTopology"]["model_config"] == graph_document(model)["modelTopology"]["model_config"]
        prints = translation.meta["exports"][variant]
        assert prints == {"config": config_fingerprint(model), "weights": weights_fingerprint(model)}
    again = keras.models.load_model(translation.export("keras", "article"))
    assert weights_fingerprint(again) == translation.meta["exports"]["article"]["weights"]


GROWTH = """
import sys
from pathlib import Path
import onnxruntime  # noqa: F401 - its own memory is not a session's
from xception_core.runtime.ort import OnnxForward
from xception_core.runtime.translated import open_translation, operation_graph
def rss():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024
translation = open_translation(Path(sys.argv[1]), sys.argv[2])
graph = operation_graph("paper")
weights = translation.weights_for(graph)
kept = []
for lean in (True, False):
    before = rss()
    kept += [OnnxForward(translation.graphs[graph], weights, lean=lean) for _ in range(4)]
    print(rss() - before, end=" ")
print(sum(a.nbytes for a in weights.values()))
"""


def test_a_lean_session_answers_alike_and_holds_no_copy_of_the_weights(saved, images):
    """The sessions run now and then (the operation pass, another wiring) use the translation's
    weights where they lie; the classifier's own session keeps copies of its own (ONNX Runtime's
    re-blocked convs), which is what this measures against: RSS growth of four sessions of each
    kind, in a fresh process (where freed memory cannot hide a copy). (Lean sessions are not
    free: ONNX Runtime's first ones in a process cost some tens of MB of its own.)"""
    from xception_core.runtime.ort import OnnxForward
    from xception_core.runtime.translated import operation_graph

    out = subprocess.run([sys.executable, "-c", GROWTH, str(saved), SHA], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lean_growth, full_growth, weight_bytes = map(int, out.stdout.split())
    # Four sessions each: a copy of the weights in each would be 4 × weight_bytes.
    assert lean_growth < 2 * weight_bytes < 3 * weight_bytes < full_growth, (lean_growth, full_growth, weight_bytes)
    translation = open_translation(saved, SHA)
    graph = operation_graph("paper")
    lean, full = (OnnxForward(translation.graphs[graph], translation.weights_for(graph), lean=x) for x in (True, False))
    ours, reference = lean.run(images), full.run(images)
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
