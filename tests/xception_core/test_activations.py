"""All block outputs from one forward pass, the LRU cache around it, statistics, and article vs paper.

Tiny 96×96 models with random (but non-trivial) weights keep this fast: one trace per model.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

from tests.conftest import randomize
from xception_core.arch.registry import architecture
from xception_core.model import load_model, rewire
from xception_core.runtime.activations import ActivationExplorer, compare_variants

SIZE = 96
BLOCKS = [b.name for b in architecture().spec.blocks]


@pytest.fixture(scope="module")
def models():
    """The same random weights in both wirings (`LoadedModel`s)."""
    paper = load_model(None, input_shape=(SIZE, SIZE, 3), classes=5)
    randomize(paper.model, seed=1)
    return paper, rewire(paper, "article")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (SIZE, SIZE, 3)).astype("float32") for _ in range(4)]


@pytest.fixture(scope="module")
def shared(models, images):
    """One explorer with the first image computed through both wirings."""
    explorer = ActivationExplorer()
    paper, _ = explorer.compute(models[0], images[0], weights_key="w")
    article, _ = explorer.compute(models[1], images[0], weights_key="w")
    return explorer, paper, article


def _counting(explorer: ActivationExplorer, model) -> list[int]:
    """Wraps the compiled forward of `model` so that every real call of the network is counted."""
    compiled = explorer._compile(model)
    calls = [0]
    inner = compiled.runner

    class Counted:
        backend, precision = inner.backend, inner.precision

        def __call__(self, batch):
            return inner(batch)

        def run(self, batch, outputs=None):
            calls[0] += 1
            return inner.run(batch, outputs)

    compiled.runner = Counted()
    return calls


def test_one_forward_pass_per_image_whatever_block_is_viewed(models, images):
    explorer = ActivationExplorer()
    calls = _counting(explorer, models[0])
    record, hit = explorer.compute(models[0], images[0], weights_key="w")
    assert (hit, calls[0], explorer.forward_calls) == (False, 1, 1)
    first = record.top_channels("block4", 3)
    # A second request for another block of the same image (a copy: same content) is a cache hit.
    again, hit = explorer.compute(models[0], images[0].copy(), weights_key="w")
    assert hit and again is record
    assert again.top_channels("block13", 5) and again.channel_map("block2", 0).shape == record.shape("block2")[:2]
    assert again.top_channels("block4", 3) == first
    assert (calls[0], explorer.forward_calls, explorer.hits, explorer.misses) == (1, 1, 1, 1)
    # Another image, other weights or another wiring run the model again.
    explorer.compute(models[0], images[1], weights_key="w")
    explorer.compute(models[0], images[0], weights_key="other weights")
    assert (calls[0], explorer.forward_calls) == (3, 3)


def test_concurrent_requests_for_one_image_share_one_forward(models, images):
    explorer = ActivationExplorer()
    calls = _counting(explorer, models[0])
    results = []
    threads = [threading.Thread(target=lambda: results.append(explorer.compute(models[0], images[2], weights_key="w")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls[0] == 1
    assert sorted(hit for _, hit in results) == [False, True, True, True]
    assert len({id(record) for record, _ in results}) == 1


@pytest.mark.parametrize("backend", ["onnx", "tf"])
def test_block_outputs_equal_the_models_own_tensors(models, images, backend):
    explorer = ActivationExplorer(backend=backend)
    paper, _ = explorer.compute(models[0], images[0], weights_key="w")
    assert paper.backend == backend
    model = models[0].model
    names = {b: layer for b, layer in zip(BLOCKS, ["block1_conv2_act"] + [f"block{i}_add" for i in range(2, 14)]
                                          + ["block14_sepconv2_act"])}
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names.values()] + [model.outputs[0]])
    *expected, probabilities = probe(images[0][None], training=False)
    for block, want in zip(names, expected):
        want = np.asarray(want)[0]
        got = paper.blocks[block]
        assert got.dtype == np.float16 and got.shape == want.shape, block
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3 * scale)
        np.testing.assert_allclose(paper.channel_means[block], want.mean(axis=(0, 1)), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(paper.probabilities, np.asarray(probabilities)[0], rtol=1e-4, atol=1e-6)
    assert paper.image.dtype == np.uint8 and paper.image.shape == (SIZE, SIZE, 3)
    assert paper.block_names == BLOCKS


def test_statistics_and_histograms(shared):
    _, paper, article = shared
    for record in (paper, article):
        for block in BLOCKS:
            s = record.stats[block]
            values = record.blocks[block].astype(np.float32)
            assert s.shape == values.shape
            assert s.histogram_counts.sum() == values.size
            assert len(s.histogram_edges) == len(s.histogram_counts) + 1
            assert s.histogram_edges[0] == pytest.approx(s.min)
            assert s.histogram_edges[-1] == pytest.approx(s.max, abs=1e-5)
            assert s.mean == pytest.approx(float(values.mean()), rel=1e-2, abs=1e-3)
            assert 0.0 <= s.zero_fraction <= 1.0
    # Zeros are meaningful only after a ReLU: the stem in both wirings, block 14 in the paper's only.
    assert paper.stats["block1"].after_relu and paper.stats["block1"].zero_fraction > 0.05
    assert paper.stats["block1"].zero_fraction == pytest.approx(float((paper.blocks["block1"] == 0).mean()), abs=1e-6)
    assert not paper.stats["block5"].after_relu
    assert paper.stats["block14"].after_relu and not article.stats["block14"].after_relu
    assert paper.stats["block14"].min >= 0.0 and article.stats["block14"].min < 0.0


def test_top_channels_and_channel_maps(shared):
    _, paper, _ = shared
    means = paper.channel_means["block3"]
    top = paper.top_channels("block3", 10)
    assert [c for c, _ in top] == list(np.argsort(-means, kind="stable")[:10])
    assert [m for _, m in top] == sorted((m for _, m in top), reverse=True)
    assert len(paper.top_channels("block1", 1000)) == 64  # capped at the block's width
    channel = top[0][0]
    np.testing.assert_array_equal(paper.channel_map("block3", channel), paper.blocks["block3"][:, :, channel])
    assert paper.channel_map("block3", channel).dtype == np.float32
    with pytest.raises(ValueError, match="n must be a positive integer"):
        paper.top_channels("block3", 0)
    with pytest.raises(ValueError, match=r"channel must be an integer in \[0, 256\) for block3, got 256"):
        paper.channel_map("block3", 256)
    with pytest.raises(ValueError, match="unknown block 'block15'"):
        paper.top_channels("block15", 3)
    assert paper.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_lru_eviction_by_count_and_by_bytes(models, images):
    explorer = ActivationExplorer(max_entries=2)
    keys = [explorer.compute(models[0], x, weights_key="w")[0].key for x in images[:3]]
    assert len(explorer) == 2 and keys[0] not in explorer and keys[1] in explorer and keys[2] in explorer
    assert explorer.lookup(keys[0]) is None
    # Using image 1 makes image 2 the least recently used one.
    assert explorer.compute(models[0], images[1], weights_key="w")[1]
    explorer.compute(models[0], images[0], weights_key="w")
    assert keys[1] in explorer and keys[2] not in explorer and explorer.forward_calls == 4
    # A byte budget smaller than one record keeps only the newest.
    tight = ActivationExplorer(max_entries=8, max_bytes=1)
    for x in images[:3]:
        record, _ = tight.compute(models[0], x, weights_key="w")
    assert len(tight) == 1 and record.key in tight and tight.nbytes == record.nbytes
    # float16 maps: about 2 bytes a value.
    values = sum(int(np.prod(record.shape(b))) for b in BLOCKS)
    assert 2 * values <= record.nbytes < 2 * values + 200_000


def test_warm_up_neither_counts_nor_caches(models):
    explorer = ActivationExplorer()
    explorer.warm_up(models[0])
    assert (explorer.forward_calls, len(explorer), explorer.hits, explorer.misses) == (0, 0, 0, 0)


def test_bad_inputs_are_rejected(models, images):
    explorer = ActivationExplorer()
    with pytest.raises(ValueError, match=r"x must be one preprocessed image of shape \(96, 96, 3\)"):
        explorer.compute(models[0], images[0][None])
    with pytest.raises(ValueError, match="max_entries"):
        ActivationExplorer(max_entries=0)


def test_article_vs_paper_difference(shared):
    explorer, paper, article = shared
    assert (paper.variant, article.variant) == ("paper", "article")
    rows = explorer.compare(paper, article)
    assert explorer.compare(paper, article) is rows  # memoised
    assert [r.block for r in rows] == BLOCKS
    by = {r.block: r for r in rows}
    # 'same' padding: 96 → 48 → 48 in the article, 96 → 47 → 45 in the paper; resized to compare.
    assert by["block1"].paper_shape == (45, 45, 64) and by["block1"].article_shape == (48, 48, 64)
    assert by["block1"].resized and not by["block14"].resized
    assert all(r.paper_shape[-1] == r.article_shape[-1] for r in rows)
    assert by["block1"].wiring == ("stem_padding",) and by["block2"].wiring == ()
    assert by["block4"].wiring == ("entry_shortcut_from",) and by["block14"].wiring == ("exit_final_relu",)
    assert all(r.relative_l2 > 0.01 for r in rows)
    assert all(-1.0 <= r.cosine <= 1.0 for r in rows)
    # The same record against itself: no difference.
    same = compare_variants(paper, paper)
    assert all(r.relative_l2 == 0.0 and r.cosine == pytest.approx(1.0) and not r.resized for r in same)
    assert article.probabilities.shape == paper.probabilities.shape == (5,)


def test_onnx_and_tf_passes_give_the_same_record(models, images):
    """The explorer on ONNX Runtime (BatchNorm folded) against its TensorFlow fallback, both
    wirings: the same maps within float16 rounding, means and probabilities within the folding
    tolerance, the same statistics and comparison."""
    onnx, tf_ = ActivationExplorer(backend="onnx"), ActivationExplorer(backend="tf")
    for model in models:
        a, _ = onnx.compute(model, images[3], weights_key="w")
        b, _ = tf_.compute(model, images[3], weights_key="w")
        assert (a.backend, b.backend) == ("onnx", "tf") and a.key == b.key
        for block in BLOCKS:
            want = b.maps[block].astype(np.float32)
            scale = float(np.abs(want).max())
            assert a.maps[block].shape == want.shape and a.maps[block].dtype == np.float16
            np.testing.assert_allclose(a.maps[block].astype(np.float32), want, rtol=2e-3, atol=2e-3 * scale)
            np.testing.assert_allclose(a.channel_means[block], b.channel_means[block], rtol=1e-4, atol=1e-5 * scale)
            assert a.stats[block].mean == pytest.approx(b.stats[block].mean, rel=1e-2, abs=1e-3 * scale)
            assert a.stats[block].after_relu == b.stats[block].after_relu
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-4, atol=1e-6)
    pa, aa = (onnx.compute(m, images[3], weights_key="w")[0] for m in models)
    pb, ab = (tf_.compute(m, images[3], weights_key="w")[0] for m in models)
    for x, y in zip(compare_variants(pa, aa), compare_variants(pb, ab)):
        assert x.relative_l2 == pytest.approx(y.relative_l2, rel=1e-2, abs=1e-4)


def test_onnx_failure_falls_back_to_tf_only_when_no_backend_was_asked_for(models, images, monkeypatch, caplog):
    from xception_core.runtime import onnx as onnx_backend
    from xception_core.runtime.forward import BackendUnavailableError

    def refuse(*args, **kwargs):
        raise onnx_backend.UnsupportedLayerError("no translation for this test")

    monkeypatch.setattr(onnx_backend, "to_onnx_parts", refuse)
    with pytest.raises(BackendUnavailableError, match="no translation for this test"):
        ActivationExplorer(backend="onnx").compute(models[0], images[0], weights_key="w")
    monkeypatch.setattr(onnx_backend, "available", lambda: True)
    explorer = ActivationExplorer()
    with caplog.at_level("WARNING", logger="xception_core.runtime.forward"):
        record, _ = explorer.compute(models[0], images[0], weights_key="w")
    assert record.backend == "tf" and explorer.backend_for(models[0]) == "tf"
    assert "no translation for this test" in caplog.text


def test_compiled_passes_are_bounded_and_default_keys_never_reused(models, images):
    """At most `max_models` compiled passes are kept (each holds a session or a traced function and
    its model); a model compiled again gets a new name in default cache keys, so a record made for
    one model object is never served for another."""
    explorer = ActivationExplorer(max_models=1, backend="tf")
    first, _ = explorer.compute(models[0], images[0])
    assert len(explorer._compiled) == 1
    explorer.compute(models[1], images[0])
    assert len(explorer._compiled) == 1 and models[0].model not in explorer._compiled
    again, hit = explorer.compute(models[0], images[0])
    assert not hit and again.weights_key != first.weights_key
    assert again.weights_key.startswith(models[0].model.name)
    with pytest.raises(ValueError, match="max_models"):
        ActivationExplorer(max_models=0)


def test_statistics_are_computed_when_first_read(models, images):
    explorer = ActivationExplorer()
    record, _ = explorer.compute(models[0], images[1], weights_key="w")
    assert record.stats._done == {}
    first = record.stats["block7"]
    assert list(record.stats._done) == ["block7"] and record.stats["block7"] is first
    assert len(record.stats) == len(BLOCKS) and list(record.stats) == BLOCKS


def test_a_record_pickles_with_its_lazy_statistics(shared):
    """Records cross process boundaries (Ray Serve replicas send them to the app) by pickle."""
    import pickle

    _, paper, _ = shared
    paper.stats["block2"]
    copy = pickle.loads(pickle.dumps(paper))
    assert copy.key == paper.key and copy.backend == paper.backend
    np.testing.assert_array_equal(copy.maps["block9"], paper.maps["block9"])
    assert copy.stats["block9"].mean == paper.stats["block9"].mean
