"""Explore › Knockouts' service and `/knockout`: an empty list is `/classify`'s answer exactly, each
kind of knockout answers as Keras rebuilt by hand with it (`tests.conftest.knocked_keras`), bad
knockouts are refused in one sentence, and the lesion study is measured, per removed branch."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo.services import UserError
from demo.services.classify import ClassifyService
from demo.services.knockout import KnockoutService, answer_json
from demo.ui.explore.api import knockout_handler
from tests.conftest import knocked_keras, shared_loaded, store_serving
from tests.demo.conftest import TINY_SIZE
from xception_core.runtime.knockout import parse_knockouts

CASES = [
    [{"kind": "skip_branch", "block": "block6"}, {"kind": "skip_branch", "block": "block10"}],
    [{"kind": "drop_shortcut", "block": "block8"}],
    [{"kind": "zero_channels", "block": "block12", "channels": [1, 2, 3, 500]}],
    [{"kind": "relu_between", "block": "block13", "layer": "block13_sepconv2"}],
]


@pytest.fixture(scope="module")
def loaded():
    return shared_loaded(TINY_SIZE, 6, seed=0)  # the `store` fixture's weights: translated once a run


@pytest.fixture(scope="module")
def served_store(loaded, upload_dir):
    from xception_core.settings import Settings

    return store_serving(loaded, Settings(upload_dir=upload_dir))


def upload(upload_dir, name: str, seed: int) -> dict:
    path = upload_dir / name
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def photos(upload_dir):
    return [upload(upload_dir, f"photo{i}.png", i) for i in range(3)]


@pytest.fixture(scope="module")
def service(served_store, photos):
    served = served_store.get()
    return KnockoutService(served_store, lambda: [(p["path"], served.labels[i % 2]) for i, p in enumerate(photos)])


def test_an_empty_list_is_classify_exactly(service, served_store, photos):
    answer = answer_json(service.knockout(photos[0], []))
    assert answer["knocked"] == answer["intact"] == ClassifyService(served_store).top(photos[0])
    assert answer["blocks"] == [] and answer["top1_changed"] is False


@pytest.mark.parametrize("items", CASES, ids=lambda items: items[0]["kind"])
def test_each_knockout_answers_as_keras_rebuilt_by_hand(items, service, served_store, loaded, photos, upload_dir):
    served = served_store.get()
    answer = service.knockout(photos[0], items)
    x = served.preprocess(Image.open(photos[0]["path"]).convert("RGB"))[None]
    _, reference = knocked_keras(loaded, parse_knockouts(items, service.facts()))(x, training=False)
    np.testing.assert_allclose(answer.knocked.probabilities, np.asarray(reference)[0], atol=1e-4)
    data = answer_json(answer)
    assert data["blocks"][0]["block"] == items[0]["block"] and data["blocks"][-1]["block"] == "block14"
    assert data["blocks"][0]["relative_change"] > 0
    assert service.knockout(photos[0], items).reused, "the photo's intact pass is kept"


def test_the_api_reads_json_text_and_refuses_in_one_sentence(service, photos):
    knockout = knockout_handler(service)
    text = '[{"kind": "skip_branch", "block": "block7"}]'
    assert knockout(photos[1], text)["knocked"] == answer_json(service.knockout(photos[1], [
        {"kind": "skip_branch", "block": "block7"}]))["knocked"]
    for bad, words in [('[{"kind": "skip_branch", "block": "block40"}]', "unknown block 'block40'"),
                       ("[{", "must be JSON"),
                       ('[{"kind": "zero_channels", "block": "block5", "channels": [9999]}]', "channel 9999"),
                       ('[{"kind": "relu_between", "block": "block5", "layer": "nope"}]', "unknown layer 'nope'")]:
        with pytest.raises(gr.Error) as caught:
            knockout(photos[1], bad)
        assert words in caught.value.message


def test_the_strongest_channels_are_the_highest_means(service, served_store, loaded, photos):
    served = served_store.get()
    channels = service.strongest(photos[2], "block9", 5)
    x = served.preprocess(Image.open(photos[2]["path"]).convert("RGB"))[None]
    import keras

    block9 = keras.Model(loaded.model.inputs, loaded.model.get_layer("block9_add").output)
    means = np.asarray(block9(x, training=False))[0].mean(axis=(0, 1))
    assert channels == list(np.argsort(-means)[:5])


def test_the_lesion_study_is_measured(service, served_store, loaded, photos):
    table = service.lesion()
    served = served_store.get()
    assert [r.block for r in table.rows] == [f"block{i}" for i in range(5, 13)] + ["block4", "block13"]
    assert table.photos == 3 and service.lesion() is table  # cached per weights
    x = np.stack([served.preprocess(Image.open(p["path"]).convert("RGB")) for p in photos])
    truth = np.array([served.labels.index(served.labels[i % 2]) for i in range(3)])
    intact = np.asarray(loaded.model(x, training=False)).argmax(1)
    assert table.intact_accuracy == pytest.approx((intact == truth).mean())
    for row in table.rows:
        (k,) = parse_knockouts([{"kind": "skip_branch", "block": row.block}], service.facts())
        _, out = knocked_keras(loaded, [k])(x, training=False)
        top1 = np.asarray(out).argmax(1)
        assert (row.accuracy, row.agreement) == (pytest.approx((top1 == truth).mean()),
                                                 pytest.approx((top1 == intact).mean()))


def test_no_labelled_photos_is_said(served_store):
    with pytest.raises(UserError, match="no labelled photos"):
        KnockoutService(served_store).lesion()


def test_the_maps_shown_are_the_block_outputs_channel_means(service, served_store, loaded, photos):
    import keras

    answer = service.knockout(photos[0], CASES[1])  # drop block8's shortcut
    assert list(answer.maps) == ["block8", "block14"]
    x = served_store.get().preprocess(Image.open(photos[0]["path"]).convert("RGB"))[None]
    intact = keras.Model(loaded.model.inputs, loaded.model.get_layer("block8_add").output)(x, training=False)
    np.testing.assert_allclose(answer.maps["block8"][0], np.asarray(intact)[0].mean(axis=-1), atol=1e-4)
    pictures = service.map_pictures(answer)
    assert [caption.split(" · ")[:2] for _, caption in pictures] == [
        ["block8", "intact"], ["block8", "knocked out"], ["block14", "intact"], ["block14", "knocked out"]]
