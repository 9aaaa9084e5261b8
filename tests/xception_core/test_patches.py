"""What a channel looks for: peaks and patches against the Keras block outputs themselves."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import random_loaded
from xception_core.arch.graph import block_output
from xception_core.arch.receptive import receptive_field
from xception_core.arch.registry import architecture
from xception_core.io.preprocessing import preprocess
from xception_core.runtime.operation_pass import layer_source
from xception_core.runtime.patches import MAX_PHOTOS, PatchSearch, summarize, top_patches

SIZE = 80


@pytest.fixture(scope="module")
def loaded():
    return random_loaded(SIZE, 4, seed=5)


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(11)
    return [preprocess(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8), SIZE) for _ in range(6)]


def test_peaks_are_the_block_outputs_maxima_and_patches_are_cut_at_their_field(loaded, photos):
    model = loaded.model
    layers = {b.name: block_output(b.name, "paper") for b in architecture().spec.blocks}
    probe = keras.Model(model.inputs[0], {b: model.get_layer(n).output for b, n in layers.items()})
    reference = {b: np.asarray(v) for b, v in probe(np.stack(photos), training=False).items()}  # (N, h, w, c)
    search = PatchSearch()
    source = layer_source(loaded, backend="onnx")
    labels = [f"p{i}" for i in range(len(photos))]
    for block, channel in (("block1", 3), ("block3", 100), ("block8", 500), ("block14", 2047)):
        found = search.search(source, photos, labels, weights_key="w", variant="paper", block=block, channel=channel,
                              k=4)
        maps = reference[block][..., channel]  # (N, h, w)
        peaks = maps.reshape(len(photos), -1).max(axis=1)
        assert np.allclose(found.peaks, peaks, rtol=1e-4, atol=1e-4 * maps.std())
        assert [p.photo for p in found.patches] == list(np.argsort(-found.peaks, kind="stable")[:4])
        for patch in found.patches:
            assert patch.label == labels[patch.photo] and patch.value == pytest.approx(float(found.peaks[patch.photo]))
            assert maps[patch.photo, patch.row, patch.col] == pytest.approx(peaks[patch.photo], rel=1e-4, abs=1e-4)
            rf = receptive_field(found.layer, patch.row, patch.col, SIZE)
            assert patch.receptive == rf and patch.patch.shape == (rf.height, rf.width, 3)
            image = np.clip(np.rint((photos[patch.photo] + 1) * 127.5), 0, 255).astype(np.uint8)
            assert np.array_equal(patch.patch, image[rf.top:rf.bottom + 1, rf.left:rf.right + 1])
    assert search.forward_photos == len(photos)  # one pass per photo, whatever the block and channel


def test_a_photo_runs_once_whatever_set_it_is_in_and_the_cache_is_bounded(loaded, photos):
    search = PatchSearch(max_entries=MAX_PHOTOS)
    source = layer_source(loaded, backend="onnx")
    first = search.search(source, photos[:4], list("abcd"), weights_key="w", variant="paper", block="block5",
                          channel=1)
    assert first.passes == 4 and len(first.patches) == 4
    second = search.search(source, photos[2:], list("cdef"), weights_key="w", variant="paper", block="block2",
                           channel=7)
    assert second.passes == 2 and search.forward_photos == 6
    assert search.search(source, photos, list("abcdef"), weights_key="w", variant="paper", block="block2",
                         channel=7).passes == 0
    tiny = PatchSearch(max_entries=MAX_PHOTOS, max_bytes=1)
    tiny.summaries(source, photos[:3], weights_key="w", variant="paper")
    assert len(tiny) == 1
    with pytest.raises(ValueError, match="1 to 64 photos"):
        search.summaries(source, photos * 11, weights_key="w", variant="paper")


def test_ranking_by_hand():
    image = np.zeros((9, 9, 3), np.uint8)
    a = summarize("a", "w", "paper", image, {"block1": np.array([[[1.0, 5.0]], [[3.0, 2.0]]], np.float32)})
    b = summarize("b", "w", "paper", image, {"block1": np.array([[[4.0, 0.0]], [[2.0, 9.0]]], np.float32)})
    assert list(a.peaks["block1"]) == [3.0, 5.0] and list(a.where["block1"]) == [1, 0]
    with pytest.raises(ValueError, match="channel must be"):
        top_patches([a, b], ["a", "b"], "block1", 2)
    with pytest.raises(ValueError, match="labels for"):
        top_patches([a, b], ["a"], "block1", 0)
    with pytest.raises(ValueError, match="no photos"):
        top_patches([], [], "block1", 0)
