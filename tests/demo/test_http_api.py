"""`POST /api/v1/classify` on a bare FastAPI app with a tiny random model: answers, limits,
messages and the OpenAPI description. The live `python app.py` is covered in test_app_http.py."""

from __future__ import annotations

import io
import threading

import fastapi
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import random_loaded, store_serving
from demo.http_api import NO_IMAGE, ROUTE, register_http_api
from demo.store import ModelStore
from xception_core.io.images import load_image
from xception_core.settings import Settings

CAP = 200_000


@pytest.fixture(scope="module")
def tiny_model():
    return random_loaded(71, 7)


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


def test_the_decoders_limits_and_messages_apply(served_app):
    client, _ = served_app
    garbage = b"this is not an image at all"
    with pytest.raises(ValueError) as expected:
        load_image(garbage)
    response = client.post(ROUTE, content=garbage, headers={"Content-Type": "image/png"})
    assert response.status_code == 400 and response.json()["detail"] == str(expected.value)
    assert client.post(ROUTE, content=b"").json() == {"detail": NO_IMAGE}
    assert client.post(ROUTE, files={"other": ("a.jpg", jpeg(), "image/jpeg")}).json() == {"detail": NO_IMAGE}
    assert client.post(f"{ROUTE}?k=0", content=jpeg()).status_code == 422
    for header in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
        response = client.post(ROUTE, content=b"--abc\r\nnot a form", headers={"Content-Type": header})
        assert response.status_code == 400 and response.json()["detail"].startswith("Malformed multipart body"), header
    response = client.post(f"{ROUTE}?weights=resnet", content=jpeg())
    assert response.status_code == 400 and "unknown weights 'resnet'" in response.json()["detail"]


def test_bodies_over_the_upload_cap_are_refused(served_app):
    client, _ = served_app
    big = jpeg() + b"\0" * CAP
    message = f"File size exceeded maximum allowed size of {CAP} bytes."
    response = client.post(ROUTE, content=big)
    assert response.status_code == 413 and response.json() == {"detail": message}

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(CAP // 10_000 + 2):
            yield b"\0" * 10_000

    response = client.post(ROUTE, content=chunks())
    assert response.status_code == 413 and response.json() == {"detail": message}
    response = client.post(ROUTE, files={"file": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and response.json() == {"detail": message}


def test_503_while_the_model_loads(tiny_model, monkeypatch):
    monkeypatch.setattr("demo.http_api.MODEL_WAIT_S", 0.05)
    release = threading.Event()

    def slow(key, settings):
        release.wait(30)
        return tiny_model

    monkeypatch.setattr("demo.store.load_model", slow)
    store = ModelStore(Settings(), ["slow"]).start()
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    client = TestClient(app)
    response = client.post(ROUTE, content=jpeg())
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert "still loading" in response.json()["detail"]
    release.set()
    store.get(timeout=60)
    assert client.post(ROUTE, content=jpeg()).status_code == 200


def test_openapi_describes_the_endpoint(served_app):
    client, _ = served_app
    operation = client.get("/openapi.json").json()["paths"][ROUTE]["post"]
    content = operation["requestBody"]["content"]
    assert content["image/jpeg"]["schema"] == {"type": "string", "format": "binary"}
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert {"200", "400", "413", "422", "503"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {"k", "weights"}


def test_int8_is_said_on_the_page_and_in_the_api(tiny_model, served_app, monkeypatch):
    from demo.ui import text

    fp32_client, fp32_store = served_app
    assert "int8" not in text.classify_info(fp32_store.get(), 0.01)
    monkeypatch.setattr("demo.store.load_model", lambda key, settings: tiny_model)
    store = ModelStore(Settings(precision="int8"), ["tiny"]).start()
    served = store.get(timeout=120)
    assert served.classifier.precision == "int8"
    assert "**int8 model**" in text.classify_info(served, 0.01)
    app = fastapi.FastAPI()
    register_http_api(app, store, max_bytes=CAP)
    assert TestClient(app).post(ROUTE, content=jpeg()).json()["precision"] == "int8"


def test_messages_carry_no_server_paths(tiny_model, tmp_path):
    """A store whose weights key is a file path: an unknown-weights answer names the file, not its folder."""
    key = str(tmp_path / "secret-folder" / "weights.keras")
    app = fastapi.FastAPI()
    register_http_api(app, store_serving(tiny_model, Settings(), key=key), max_bytes=CAP)
    r = TestClient(app).post("/api/v1/classify?weights=resnet", content=jpeg())
    assert r.status_code == 400 and "unknown weights" in r.json()["detail"]
    assert "weights.keras" in r.json()["detail"] and "secret-folder" not in r.json()["detail"]
