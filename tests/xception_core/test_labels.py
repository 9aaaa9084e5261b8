"""Tests for xception_core.io.labels: bundled label files, top_k and softmax."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xception_core.io import labels
from xception_core.io.assets import assets_dir
from xception_core.io.labels import LABEL_SETS, load_labels, load_synsets, top_k
from xception_core.runtime.classifier import softmax

# ---------------------------------------------------------------------------------------------
# ImageNet-1k
# ---------------------------------------------------------------------------------------------


def test_imagenet_has_1000_unique_names_and_synsets():
    names, synsets = load_labels("imagenet1k"), load_synsets()
    assert len(names) == len(synsets) == 1000
    assert len(set(names)) == 1000
    assert len({name.lower() for name in names}) == 1000  # also unique ignoring case
    assert len(set(synsets)) == 1000
    assert all(name == name.strip() and name for name in names)
    assert all(len(s) == 9 and s[0] == "n" and s[1:].isdigit() for s in synsets)


def test_imagenet_is_in_keras_order():
    names, synsets = load_labels("imagenet1k"), load_synsets()
    assert list(synsets) == sorted(synsets)  # the Keras/ILSVRC class index sorts by WordNet id
    assert (synsets[0], names[0]) == ("n01440764", "tench")
    assert (synsets[281], names[281]) == ("n02123045", "tabby cat")
    assert (synsets[999], names[999]) == ("n15075141", "toilet paper")


def test_imagenet_file_records():
    records = json.loads((assets_dir() / "imagenet1k_labels.json").read_text(encoding="utf-8"))
    assert [r["index"] for r in records] == list(range(1000))
    assert all(set(r) == {"index", "synset", "name", "wordnet"} for r in records)
    assert records[999]["wordnet"].startswith("toilet tissue")


def test_kitchenware_order():
    assert load_labels("kitchenware6") == ("cup", "fork", "glass", "knife", "plate", "spoon")


def test_results_are_cached_tuples():
    first = load_labels("imagenet1k")
    assert type(first) is tuple and len(first) == 1000 and first[281] == "tabby cat"
    hits = labels._read_label_file.cache_info().hits
    assert load_labels("imagenet1k") == first
    assert labels._read_label_file.cache_info().hits == hits + 1  # the file is not read again


@pytest.mark.parametrize("name", ["imagenet", "ImageNet1k", "", None, 1000])
def test_unknown_label_set_lists_allowed_names(name):
    with pytest.raises(ValueError, match="'imagenet1k', 'kitchenware6'"):
        load_labels(name)


def test_label_sets_constant_matches_files():
    for name, (filename, count) in LABEL_SETS.items():
        assert (assets_dir() / filename).is_file()
        assert len(load_labels(name)) == count


# ---------------------------------------------------------------------------------------------
# Assets folder override and broken files
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def other_assets(tmp_path) -> Path:
    folder = tmp_path / "assets"
    folder.mkdir()
    shutil.copy(assets_dir() / "imagenet1k_labels.json", folder)
    return folder


def write_kitchenware(folder: Path, records) -> None:
    (folder / "kitchenware6_labels.json").write_text(json.dumps(records), encoding="utf-8")


def test_another_assets_folder_is_used(other_assets):
    write_kitchenware(other_assets, [{"index": i, "name": f"k{i}"} for i in range(6)])
    assert load_labels("kitchenware6", other_assets) == ("k0", "k1", "k2", "k3", "k4", "k5")
    assert len(load_labels("imagenet1k", other_assets)) == 1000
    assert load_labels("kitchenware6") == ("cup", "fork", "glass", "knife", "plate", "spoon")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"index": i, "name": f"k{i}"} for i in range(5)], "list of 6 entries"),
        ({"cup": 0}, "list of 6 entries"),
        ([{"index": i, "name": "same"} for i in range(6)], "appears twice"),
        ([{"index": 5 - i, "name": f"k{i}"} for i in range(6)], "index 0"),
        ([{"index": i, "name": ""} for i in range(6)], "non-empty name"),
    ],
)
def test_malformed_label_files_are_rejected(other_assets, records, message):
    write_kitchenware(other_assets, records)
    with pytest.raises(ValueError, match=message):
        load_labels("kitchenware6", other_assets)


def test_invalid_json_and_missing_file(other_assets):
    with pytest.raises(FileNotFoundError, match="kitchenware6_labels.json"):
        load_labels("kitchenware6", other_assets)
    (other_assets / "kitchenware6_labels.json").write_text("[not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_labels("kitchenware6", other_assets)


# ---------------------------------------------------------------------------------------------
# top_k
# ---------------------------------------------------------------------------------------------


def test_top_k_sorted_descending_with_python_floats():
    result = top_k(np.array([0.1, 0.5, 0.05, 0.35], np.float32), ["a", "b", "c", "d"], k=3)
    assert [label for label, _ in result] == ["b", "d", "a"]
    assert all(type(score) is float for _, score in result)
    assert result[0][1] == pytest.approx(0.5)


def test_top_k_ties_keep_class_order():
    result = top_k([0.2, 0.3, 0.2, 0.3], ["a", "b", "c", "d"], k=4)
    assert [label for label, _ in result] == ["b", "d", "a", "c"]


def test_top_k_default_and_full_range():
    probabilities = np.linspace(0.0, 1.0, 1000)
    names = load_labels("imagenet1k")
    assert [label for label, _ in top_k(probabilities, names)] == [names[i] for i in range(999, 994, -1)]
    assert len(top_k(probabilities, names, k=1000)) == 1000
    assert top_k(probabilities, names, k=np.int64(2))[0][0] == names[999]


@pytest.mark.parametrize("k", [0, -1, 5, True, 2.0, "3", None])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be an int from 1 to 4"):
        top_k([0.1, 0.2, 0.3, 0.4], ["a", "b", "c", "d"], k=k)


def test_top_k_validates_probabilities():
    with pytest.raises(ValueError, match="3 probabilities for 4 labels"):
        top_k([0.1, 0.2, 0.7], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"pass probabilities\[0\]"):
        top_k(np.ones((1, 4)) / 4, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="1-D"):
        top_k(0.5, ["a"])
    with pytest.raises(ValueError, match="NaN"):
        top_k([np.nan, 0.5], ["a", "b"], k=1)
    with pytest.raises(ValueError, match="array of numbers"):
        top_k(["x", "y"], ["a", "b"], k=1)


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------


def test_softmax_matches_naive_and_sums_to_one():
    logits = np.array([1.0, 2.0, 3.0])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(softmax(logits), expected)
    assert softmax(logits).sum() == pytest.approx(1.0)


def test_softmax_is_stable_for_large_logits():
    p = softmax(np.array([1000.0, 1001.0, -1000.0]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[:2], [1 / (1 + np.e), np.e / (1 + np.e)])
    assert p[2] == 0.0


def test_softmax_batch_axis_dtype_and_neg_inf():
    logits = np.array([[0.0, 0.0], [0.0, -np.inf]], dtype=np.float32)
    p = softmax(logits)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(softmax(np.zeros((3, 2)), axis=0), np.full((3, 2), 1 / 3))
    assert softmax([1, 2]).dtype == np.float64


@pytest.mark.parametrize("logits", [[np.nan, 1.0], [np.inf, 1.0], [-np.inf, -np.inf]])
def test_softmax_rejects_undefined_input(logits):
    with pytest.raises(ValueError):
        softmax(np.array(logits))
