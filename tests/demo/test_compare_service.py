"""The Compare service (`demo.services.compare`) against independent counts, and Inception V3's
preparation (`demo.store.compared`): offline (seeded random weights, cached, never predicting)
and with its ImageNet file fetched from a local server (md5-checked, translated, cached, both
top-5 and both Grad-CAM maps)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.server
import math
import threading

import numpy as np
import pytest
from PIL import Image

from demo.services import UserError
from demo.services.compare import INCEPTION_V3, PAPER, XCEPTION, CompareService
from demo.store import ComparedModels
from tests.conftest import random_loaded, shared_loaded, store_serving
from xception_core.settings import Settings
from xception_core.weights import fetch
from xception_core.weights import presets as presets_module
from xception_core.weights.source import WeightsFailure

SMALL = 75  # Inception V3's smallest side: quick to build and translate

pytestmark = pytest.mark.skipif(not __import__("xception_core.runtime.ort", fromlist=["x"]).available(),
                                reason="needs onnxruntime")


def _keras_counts(model) -> tuple[dict[str, int], dict[str, int]]:
    """{module: parameters}, {module: MACs} of a `keras.applications.InceptionV3`, by hand: its
    layers in order, a module ending at its concatenation 'mixedN', the classifier after 'mixed10';
    MACs of a conv = output h·w·c_out · kh·kw·c_in, of the dense layer c_in·c_out."""
    params: dict[str, int] = collections.defaultdict(int)
    macs: dict[str, int] = collections.defaultdict(int)
    module, pools = "stem", 0
    for layer in model.layers:
        params[module] += layer.count_params()
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            macs[module] += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            macs[module] += layer.input.shape[-1] * layer.units
        if module == "stem" and kind == "MaxPooling2D":
            pools += 1
            module = "mixed0" if pools == 2 else module  # the stem ends at its second pool
        elif layer.name == module:  # a module ends at its concatenation, named as the module
            module = "head" if module == "mixed10" else f"mixed{int(module[5:]) + 1}"
    return dict(params), dict(macs)


@pytest.fixture(scope="module")
def service(upload_dir, tmp_path_factory):
    """Xception (random, 96 px, 6 classes) beside Inception V3 prepared offline at 75 px in a cache of its own."""
    settings = Settings(upload_dir=upload_dir, cache_dir=tmp_path_factory.mktemp("cache"), keras_home=tmp_path_factory.mktemp("keras"))
    store = store_serving(shared_loaded(96, 6, seed=0), settings)  # the `store` fixture's weights: translated once a run
    return CompareService(store, ComparedModels(settings, input_size=SMALL, fetch=False))


@pytest.fixture(scope="module")
def photo(upload_dir):
    path = upload_dir / "compare.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("size", [SMALL, 299])
def test_inception_modules_match_a_hand_count_over_kerass_layers(service, size):
    import keras

    reference = keras.applications.InceptionV3(weights=None, input_shape=(size, size, 3))
    params, macs = _keras_counts(reference)
    _, inception = service.structure(size)
    table = {row["name"]: row for row in inception.rows()}
    assert list(table) == list(params)
    for name in table:
        assert (table[name]["params"], table[name]["macs"]) == (params[name], macs[name]), name
    assert inception.description.total_params == reference.count_params()
    # Placement: the stem by hand (five conv2d_bn, BatchNorm without γ: β, mean, variance).
    stem = 3 * 3 * 3 * 32 + 3 * 3 * 32 * 32 + 3 * 3 * 32 * 64 + 64 * 80 + 3 * 3 * 80 * 192 + 3 * (32 + 32 + 64 + 80 + 192)
    placed = dict(inception.placement)
    assert placed["stem"] == stem and placed["classifier"] == 2048 * 1000 + 1000
    assert sum(placed.values()) == reference.count_params()


def test_xception_totals_match_keras_and_the_papers_learned_count(service):
    import keras

    reference = keras.applications.Xception(weights=None)
    xception, inception = service.structure(299)
    assert xception.description.total_params == reference.count_params()
    trainable = sum(math.prod(w.shape) for w in reference.trainable_weights)
    assert xception.description.learned_params == trainable == PAPER[XCEPTION].params
    assert sum(dict(xception.placement).values()) == reference.count_params()
    hand = sum(layer.output.shape[1] * layer.output.shape[2] * (
        layer.output.shape[3] * math.prod(layer.kernel_size) * layer.input.shape[-1] if type(layer).__name__ == "Conv2D"
        else layer.input.shape[-1] * math.prod(layer.kernel_size) + layer.input.shape[-1] * layer.output.shape[-1])
        for layer in reference.layers if type(layer).__name__ in ("Conv2D", "SeparableConv2D"))
    assert xception.description.total_macs == hand + 2048 * 1000
    # The paper's Inception V3 figure is neither of Keras's counts: the answer says by how much.
    answer = service.compare_json(size=299)
    assert answer["networks"][INCEPTION_V3]["paper"]["params_minus_learned"] == (
        PAPER[INCEPTION_V3].params - inception.description.learned_params) != 0
    assert answer["networks"][XCEPTION]["paper"]["params_minus_learned"] == 0


def test_sizes_are_checked(service):
    for bad in (74, 1025, 2.5, "x", True):
        with pytest.raises(UserError):
            service.structure(bad)


def test_offline_inception_times_alternate_and_never_predict(service, photo):
    assert service.state() == "idle"  # nothing of Inception V3 until it is asked for
    with pytest.raises(UserError, match="being prepared"):
        service.timings(photo, 2, wait_s=0)
    model = service.inception(wait_s=300)
    assert not model.pretrained and model.failure == WeightsFailure.OFFLINE and model.translated_now
    timings = service.timings(photo, 3, wait_s=0)
    assert len(timings.xception_ms) == len(timings.inception_ms) == 3 and min(timings.inception_ms) > 0
    assert timings.first == (XCEPTION, INCEPTION_V3, XCEPTION)
    assert timings.input_sizes == {XCEPTION: 96, INCEPTION_V3: SMALL}
    assert service.predictions(photo, wait_s=0) is None
    answer = service.compare_json(photo, SMALL, 2)
    assert answer["predictions"] is None and answer["inception_v3_weights"] == "random"
    assert answer["predictions_withheld"] == "offline" and len(answer["timings"]["xception_ms"]) == 2
    # A second process reads the cached translation: the same seeded weights, nothing translated.
    again = ComparedModels(service.compared.settings, input_size=SMALL, fetch=False).get(300)
    assert not again.translated_now
    x = np.random.default_rng(0).uniform(-1, 1, (1, SMALL, SMALL, 3)).astype("float32")
    np.testing.assert_array_equal(again.model.forward(x)[1], model.model.forward(x)[1])


def test_continuum_is_checked(service):
    c = service.continuum(64, 128, 8)
    assert c.regular.segments == 1 and c.extreme.segments == 128
    for bad in ((0, 128, 8), (64, 5000, 8), (64, 128, 0)):
        with pytest.raises(UserError):
            service.continuum(*bad)


class _FileServer(http.server.ThreadingHTTPServer):
    body = b""
    requests = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests += 1  # type: ignore[attr-defined]
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def imagenet_server(tmp_path, monkeypatch):
    """Inception V3's ImageNet preset pointed at a local server holding a weights=None Keras
    InceptionV3's weights in the official legacy-HDF5 layout, its md5 recorded as Keras records the real one's."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.InceptionV3(weights=None, input_shape=(SMALL, SMALL, 3))
    path = tmp_path / "inception_v3.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    server = _FileServer(("127.0.0.1", 0), _Handler)
    server.body = path.read_bytes()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    preset = presets_module.INCEPTION_V3_IMAGENET
    remote = dataclasses.replace(preset.with_top, url=f"http://127.0.0.1:{server.server_address[1]}/w.h5",
                                 md5=hashlib.md5(server.body).hexdigest())
    monkeypatch.setitem(presets_module.PRESETS, preset.name, dataclasses.replace(preset, with_top=remote))
    fetch._HASHES.clear()
    try:
        yield server, reference
    finally:
        server.shutdown()
        server.server_close()
        fetch._HASHES.clear()


def test_imagenet_inception_is_fetched_checked_translated_and_predicts(imagenet_server, tmp_path, upload_dir, photo):
    import keras

    server, reference = imagenet_server
    settings = Settings(upload_dir=upload_dir, cache_dir=tmp_path / "cache", keras_home=tmp_path / "keras")
    xception = random_loaded(96, 1000, seed=4)  # labelled as ImageNet's, so both speak the same classes
    xception = dataclasses.replace(xception, info=dataclasses.replace(xception.info, labels="imagenet1k"))
    service = CompareService(store_serving(xception, settings), ComparedModels(settings, input_size=SMALL))
    model = service.inception(wait_s=300)
    assert model.pretrained and model.failure is None and server.requests == 1
    assert (tmp_path / "keras" / "models" / presets_module.INCEPTION_V3_IMAGENET.with_top.fname).is_file()
    x = np.random.default_rng(5).uniform(-1, 1, (2, SMALL, SMALL, 3)).astype("float32")
    np.testing.assert_allclose(model.model.forward(x)[1], reference(x).numpy(), atol=1e-5)
    found = service.predictions(photo, wait_s=0)
    assert found is not None and len(found.xception) == len(found.inception) == 5
    assert found.xception_cam.size == found.inception_cam.size
    answer = service.compare_json(photo, 299, 1)
    assert answer["inception_v3_weights"] == "imagenet"
    assert [p["label"] for p in answer["predictions"][INCEPTION_V3]] == [label for label, _ in found.inception]
    # The next process: no download (the file checks out), no translation (it is cached).
    again = ComparedModels(settings, input_size=SMALL).get(300)
    assert again.pretrained and not again.translated_now and server.requests == 1
    del keras


def test_the_figures_draw_the_services_numbers(service):
    from demo.ui import figures

    xception, inception = service.structure(299)
    placed = figures.placement_figure({n.title: n.placement for n in (xception, inception)})
    drawn = collections.defaultdict(int)
    for trace in placed.data:
        drawn[trace.y[0]] += trace.x[0]
    assert dict(drawn) == {"Xception": xception.description.total_params,
                           "Inception V3": inception.description.total_params}
    assert sorted(t.name for t in placed.data if t.showlegend) == sorted(
        {place for n in (xception, inception) for place, _ in n.placement})
    c = service.continuum(128, 256, 17)
    curve = figures.continuum_figure([p.segments for p in c.steps], [p.params for p in c.steps],
                                     [p.macs for p in c.steps], xception_params=c.xception.separable_params,
                                     xception_macs=c.xception.separable_macs, in_channels=128, out_channels=256, side=17)
    assert list(curve.data[0].y) == [p.params for p in c.steps] and list(curve.data[2].y) == [p.macs for p in c.steps]
    # Hand count: one segment is a 1×1 then a regular 3×3; one per channel a 1×1 then a depthwise 3×3.
    assert c.regular.params == 128 * 256 + 9 * 256 * 256 and c.extreme.params == 128 * 256 + 9 * 256
    assert c.xception.separable_params == 9 * 128 + 128 * 256


def test_the_timing_sentence_names_each_sides_work(service, photo):
    from demo.services.compare import PAPER
    from demo.ui import text

    timings = service.timings(photo, 1, wait_s=300)
    assert timings.macs == {XCEPTION: service.structure(96)[0].description.total_macs,
                            INCEPTION_V3: service.structure(SMALL)[1].description.total_macs}
    words = text.compare_timings(timings, PAPER)
    assert f"{timings.macs[XCEPTION] / 1e9:.2f} G multiply-accumulates per Xception forward" in words
    assert "31 steps/s for Inception V3 against 28 for Xception" in words
