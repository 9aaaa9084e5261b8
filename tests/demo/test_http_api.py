"""`POST /api/v1/classify` on a bare FastAPI app with a tiny random model: answers, limits,
messages and the OpenAPI description. The live `python app.py` is covered in test_app_http.py."""

from __future__ import annotations

import io
import re
import threading
from http import HTTPStatus

import fastapi
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import shared_loaded, store_serving
from demo.http_api import NO_IMAGE, PREFIX, PROBLEM, ROUTE, register_http_api
from demo.store import ModelStore
from xception_core.inputs.images import load_image
from xception_core.settings import Settings

CAP = 200_000


@pytest.fixture(scope="module")
def tiny_model():
    return shared_loaded(71, 7)


@pytest.fixture(scope="module")
def served_app(tiny_model):
    store = store_serving(tiny_model, Settings())
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    return TestClient(app), store


def jpeg(size=(120, 90), color=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_raw_body_and_multipart_give_the_models_own_answer(served_app):
    client, store = served_app
    data = jpeg()
    want = store.get().classify(load_image(data), 3)
    for response in (client.post(f"{ROUTE}?k=3", content=data, headers={"Content-Type": "image/jpeg"}),
                     client.post(f"{ROUTE}?k=3", files={"file": ("photo.jpg", data, "image/jpeg")})):
        assert response.status_code == 200, response.text
        body = response.json()
        assert [t["label"] for t in body["top"]] == [label for label, _ in want.top]
        np.testing.assert_allclose([t["probability"] for t in body["top"]], [p for _, p in want.top], atol=1e-6)
        assert (body["weights"], body["classes"], body["input_size"]) == ("tiny", 7, 71)
        assert body["backend"] in ("onnx", "tf") and body["precision"] == "fp32" and body["server_ms"] > 0
    # k is capped at the number of classes; the default is 5.
    assert len(client.post(f"{ROUTE}?k=20", content=data).json()["top"]) == 7
    assert len(client.post(ROUTE, content=data).json()["top"]) == 5


def assert_problem(response, status: int) -> str:
    """`response` is the declared problem document with `status`; returns its detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body == {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                    "detail": body["detail"]}
    assert body["detail"] and not re.search(r"\[\'|\[\]|<class|Errno|://|bytes \(", body["detail"]), body["detail"]
    return body["detail"]


def test_the_decoders_limits_and_messages_apply(served_app):
    client, _ = served_app
    garbage = b"this is not an image at all"
    with pytest.raises(ValueError) as expected:
        load_image(garbage, name=f"the uploaded file, {len(garbage)} bytes")
    response = client.post(ROUTE, content=garbage, headers={"Content-Type": "image/png"})
    assert assert_problem(response, 400) == str(expected.value)
    assert "(the uploaded file, 27 bytes) is not a recognised image" in response.json()["detail"]
    assert assert_problem(client.post(ROUTE, content=b""), 400) == NO_IMAGE
    assert assert_problem(client.post(ROUTE, files={"other": ("a.jpg", jpeg(), "image/jpeg")}), 400) == NO_IMAGE
    for header in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
        response = client.post(ROUTE, content=b"--abc\r\nnot a form", headers={"Content-Type": header})
        assert assert_problem(response, 400).startswith("Malformed multipart body"), header


def test_bad_parameters_are_problems_in_plain_words(served_app):
    client, _ = served_app
    detail = assert_problem(client.post(f"{ROUTE}?k=0", content=jpeg()), 422)
    assert detail == "Query parameter 'k': input should be greater than or equal to 1."
    assert "integer" in assert_problem(client.post(f"{ROUTE}?k=lots", content=jpeg()), 422)
    long = "w" * 5000
    detail = assert_problem(client.post(f"{ROUTE}?weights={long}", content=jpeg()), 422)
    assert "weights" in detail and "w" * 100 not in detail, "the client's value is not echoed whole"
    detail = assert_problem(client.post(f"{ROUTE}?weights=resnet", content=jpeg()), 400)
    assert detail == "Unknown weights 'resnet'. Weights this server has: 'tiny'."
    detail = assert_problem(client.post(f"{ROUTE}?weights={'r' * 150}", content=jpeg()), 400)
    assert "r" * 60 not in detail


def test_bodies_over_the_upload_cap_are_refused(served_app):
    client, _ = served_app
    big = jpeg() + b"\0" * CAP
    message = f"File size exceeded maximum allowed size of {CAP} bytes."
    response = client.post(ROUTE, content=big)
    assert assert_problem(response, 413) == message

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(CAP // 10_000 + 2):
            yield b"\0" * 10_000

    assert assert_problem(client.post(ROUTE, content=chunks()), 413) == message
    assert assert_problem(client.post(ROUTE, files={"file": ("big.jpg", big, "image/jpeg")}), 413) == message


def test_503_while_the_model_loads(tiny_model, monkeypatch):
    monkeypatch.setattr("demo.http_api.MODEL_WAIT_S", 0.05)
    release = threading.Event()

    def slow(key, settings):
        release.wait(30)
        return tiny_model

    monkeypatch.setattr("demo.store.cache.load_model", slow)
    store = ModelStore(Settings(), ["slow"]).start()
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    client = TestClient(app)
    response = client.post(ROUTE, content=jpeg())
    assert assert_problem(response, 503) == "The model is still loading; try again in a few seconds."
    assert response.headers["retry-after"] == "2"
    release.set()
    store.get(timeout=60)
    assert client.post(ROUTE, content=jpeg()).status_code == 200


def test_weights_that_failed_offline_say_so_without_addresses_or_errno(tiny_model, tmp_path, monkeypatch):
    """`?weights=imagenet` on a server that could not download them: 503 with Retry-After, in
    plain words, and none of the download URL, the errno or the cache folder of the raw error."""
    from xception_core.model import WeightsFailure, WeightsUnavailableError

    def load(key, settings):
        if key == "imagenet":
            raise WeightsUnavailableError(
                "could not fetch xception_weights_tf_dim_ordering_tf_kernels.h5 from https://storage.example/"
                f"x.h5 and it is not in the Keras cache ({tmp_path}/models): <urlopen error [Errno -2] Name or "
                "service not known>", cause=WeightsFailure.OFFLINE)
        return tiny_model

    monkeypatch.setattr("demo.store.cache.load_model", load)
    store = ModelStore(Settings(), ["tiny", "imagenet"]).start()
    with pytest.raises(WeightsUnavailableError):
        store.get("imagenet", timeout=60)  # returns once that load has ended
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    client = TestClient(app)
    response = client.post(f"{ROUTE}?weights=imagenet", content=jpeg())
    detail = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 60
    assert "could not be downloaded here" in detail and "'tiny'" in detail, detail
    assert str(tmp_path) not in response.text and "storage.example" not in response.text


def test_other_methods_and_paths_say_how_to_call_the_api(served_app):
    client, _ = served_app
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = client.request(method, ROUTE)
        detail = assert_problem(response, 405)
        assert response.headers["allow"] == "POST" and "POST it to /api/v1/classify" in detail and "/docs" in detail
    head = client.head(ROUTE)
    assert head.status_code == 405 and head.headers["allow"] == "POST"
    for path in (f"{PREFIX}/", f"{PREFIX}/classify/extra", f"{PREFIX}/predict"):
        assert "POST it to /api/v1/classify" in assert_problem(client.post(path, content=jpeg()), 404)


def test_a_failure_inside_is_a_500_problem_without_its_text(tiny_model, monkeypatch):
    store = store_serving(tiny_model, Settings())
    monkeypatch.setattr(type(store.get()), "predict", lambda *a: (_ for _ in ()).throw(
        RuntimeError("boom in /srv/secret/model.py")))
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    response = TestClient(app).post(ROUTE, content=jpeg())
    assert "log" in assert_problem(response, 500) and "secret" not in response.text and "boom" not in response.text


def test_the_api_decodes_by_the_pages_one_policy(served_app, monkeypatch):
    """Bytes posted to the API go through `decode_image`: `DECODE_SIDE`, in a turn of the decode
    gate taken before the decode (prepaid) for what the format costs (`decode_cost`): a WebP's
    turn is dearer per pixel than a PNG's."""
    from demo.services import payloads

    client, _ = served_app
    calls, turns = [], []
    gate = payloads.DecodeGate()
    real_ticket = gate.ticket
    monkeypatch.setattr(gate, "ticket", lambda cost, who=("", ""): (turns.append(cost), real_ticket(cost, who))[1])
    monkeypatch.setattr(payloads, "DECODES", gate)
    real = payloads.load_image
    monkeypatch.setattr(payloads, "load_image", lambda source, side, name=None: (
        calls.append((side, payloads.DECODE_PREPAID.get() is not None)), real(source, side, name))[1])
    for kind in ("PNG", "WEBP"):
        data = io.BytesIO()
        Image.new("RGB", (120, 90), (10, 200, 30)).save(data, kind)
        assert client.post(ROUTE, content=data.getvalue()).status_code == 200
        assert calls.pop() == (payloads.DECODE_SIDE, True)
    assert turns == [int(120 * 90 * payloads.MODE_BYTES_PER_PIXEL["RGB"]),
                     int(120 * 90 * payloads.FORMAT_BYTES_PER_PIXEL["WEBP"])]
    assert gate.held() == 0 and gate.waiting() == 0, "every turn ended"


def test_openapi_describes_the_endpoint_and_every_error(served_app):
    client, _ = served_app
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][ROUTE]["post"]
    content = operation["requestBody"]["content"]
    assert content["image/jpeg"]["schema"] == {"type": "string", "format": "binary"}
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert set(operation["responses"]) == {"200", "400", "408", "413", "422", "500", "503"}
    for status, response in operation["responses"].items():
        if status != "200":
            assert response["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, status
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert set(schema["components"]["schemas"]["Problem"]["properties"]) == {"type", "title", "status", "detail"}
    assert {p["name"] for p in operation["parameters"]} == {"k", "weights"}


def test_the_docs_are_served_from_here(served_app):
    client, _ = served_app
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "'/openapi.json'" in page.text
    assert not re.search(r"(src|href)=\"https?:", page.text), "nothing loaded from another site"
    for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css"), ("favicon.png", "png")):
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"] and len(asset.content) > 1000
    assert client.get("/docs/assets/core.py").status_code == 404
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404


def test_int8_is_said_on_the_page_and_in_the_api(tiny_model, served_app, monkeypatch):
    from demo.ui import text

    fp32_client, fp32_store = served_app
    assert "int8" not in text.classify_info(fp32_store.get(), 0.01)
    monkeypatch.setattr("demo.store.cache.load_model", lambda key, settings: tiny_model)
    store = ModelStore(Settings(precision="int8"), ["tiny"]).start()
    served = store.get(timeout=120)
    assert served.classifier.precision == "int8"
    assert "**int8 model**" in text.classify_info(served, 0.01)
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    assert TestClient(app).post(ROUTE, content=jpeg()).json()["precision"] == "int8"


def test_messages_carry_no_server_paths(tiny_model, tmp_path):
    """A store serving weights from a file: an unknown-weights answer names them by their key (the
    file's stem, what `?weights=` takes), never the folder."""
    key = str(tmp_path / "secret-folder" / "weights.keras")
    app = fastapi.FastAPI()
    register_http_api(app, store_serving(tiny_model, Settings(), key=key), max_bytes=CAP)
    r = TestClient(app).post("/api/v1/classify?weights=resnet", content=jpeg())
    detail = assert_problem(r, 400)
    assert "Unknown weights" in detail and "has: 'weights'." in detail and "secret-folder" not in detail
    assert TestClient(app).post("/api/v1/classify?weights=weights", content=jpeg()).status_code == 200
