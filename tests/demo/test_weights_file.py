"""Weights given as a file (XCEPTION_WEIGHTS=/path/x.keras, the Teach round trip): one safe key from
the file's stem everywhere, no server path in any answer, and every tab's handler and endpoint
works with it (issue 21 item 10). A taught `.keras` saved from a tiny random model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import random_loaded
from demo.store import ModelStore, weights_key
from xception_core.settings import Settings

NAMES = ("mug", "spoon")


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """(folder, path) of a taught model saved as the Teach tab saves it, in a folder whose name
    must never reach a client."""
    from xception_core.io.heads import save_taught_model
    from xception_core.runtime.transfer import SoftmaxHead

    folder = tmp_path_factory.mktemp("secret-server-folder")
    rng = np.random.default_rng(3)
    head = SoftmaxHead(rng.normal(0, 0.05, (2048, 2)).astype(np.float32), rng.normal(0, 0.1, 2).astype(np.float32))
    path = save_taught_model(folder / "xception_taught.keras", random_loaded(71, 3, seed=2), head, NAMES)
    return folder, path


@pytest.fixture(scope="module")
def served(taught, tmp_path_factory):
    from demo.server import create_app

    folder, path = taught
    tmp = tmp_path_factory.mktemp("app")
    settings = Settings(weights=str(path), cache_dir=tmp / "cache", upload_dir=tmp / "gradio")
    store = ModelStore(settings).start()
    store.get(timeout=300)
    app = create_app(settings, store)
    with TestClient(app) as client:
        yield client, app, store


def png_data_url(seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def call(client: TestClient, name: str, data: list) -> tuple[str, str]:
    """(event, raw data) of a named Gradio endpoint, called as gradio_client calls it."""
    response = client.post(f"/gradio_api/call/{name}", json={"data": data})
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    event = None
    with client.stream("GET", f"/gradio_api/call/{name}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event, line[5:].strip()
    raise AssertionError("no answer")


def test_the_key_is_the_files_safe_stem_and_never_a_presets_name():
    assert weights_key("/srv/m/xception_taught.keras") == "xception_taught"
    assert weights_key("kitchenware") == "kitchenware" and weights_key("/x/kitchenware.keras") == "kitchenware-file"
    assert weights_key("/x/my model (v2).weights.h5") == "my_model_v2_weights"
    assert weights_key("/x/" + "é" * 300 + ".keras") == "weights" and len(weights_key("/x/" + "a" * 300 + ".h5")) == 40


def test_every_endpoint_names_the_weights_by_the_key_and_no_path(served, taught):
    client, app, store = served
    folder, path = taught
    secret = folder.name
    key = "xception_taught"
    assert store.candidates == (key,) and store.available() == [key]

    health = client.get("/healthz")
    assert health.json()["weights"] == [key] and secret not in health.text

    image = base64.b64decode(png_data_url().split(",", 1)[1])
    for weights in (key, None):
        answer = client.post("/api/v1/classify", params={"weights": weights} if weights else {}, content=image)
        assert answer.status_code == 200, answer.text
        assert answer.json()["weights"] == key and [t["label"] for t in answer.json()["top"]] == sorted(
            NAMES, key=lambda n: -dict((t["label"], t["probability"]) for t in answer.json()["top"])[n])
        assert secret not in answer.text and "/" not in answer.json()["weights"]
    refused = client.post("/api/v1/classify", params={"weights": str(path)}, content=image)
    assert refused.status_code == 400 and secret not in refused.text  # the path is not a key

    for name, data in (("classify", [{"url": png_data_url()}, key]),
                       ("gradcam", [{"url": png_data_url()}, "spoon", key]),
                       ("architecture", ["loaded"]),
                       ("activations", [{"url": png_data_url()}, "block4", 4])):
        event, raw = call(client, name, data)
        assert event == "complete", (name, raw[:300])
        assert secret not in raw and str(path) not in raw, name
    event, raw = call(client, "classify", [{"url": png_data_url()}, str(path)])
    assert event == "error" and secret not in raw


def test_the_graph_and_the_keras_download_have_valid_names_and_serve(served, taught):
    client, app, store = served
    exports = app.state.exports
    for variant in ("paper", "article"):
        graph = exports.graph(variant)
        assert graph.startswith("xception-xception_taught-") and taught[0].name not in graph
        assert client.get(f"/models/{graph}").status_code == 200
    keras_file = exports.full_keras("paper")
    assert keras_file.name.startswith("xception-xception_taught-")
    response = client.get(f"/models/{keras_file.name}")
    assert response.status_code == 200 and len(response.content) == keras_file.stat().st_size > 1_000_000


def test_teach_works_on_weights_from_a_file(served):
    from demo.services.teach import TeachService

    client, app, store = served
    teach = TeachService(store, store.settings.upload_dir / "teach")
    rng = np.random.default_rng(0)
    for name, color in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        photos = [Image.fromarray(np.clip(np.full((60, 80, 3), color) + rng.integers(-30, 30, (60, 80, 3)), 0, 255)
                                  .astype(np.uint8)) for _ in range(3)]
        assert teach.add_photos("s1", name, photos).added == 3
    trained = teach.train("s1")
    assert trained.class_names == ("red", "blue") and "xception_taught" in trained.weights_title
    assert [n for n, _ in teach.classify("s1", Image.new("RGB", (80, 60), (220, 30, 30))).top][0] in ("red", "blue")
    model = teach.export_model("s1")
    assert model.is_file() and model.is_relative_to(store.settings.upload_dir)
    assert json.dumps(teach.export_head("s1").name) == '"taught_head.npz"'


def run_page_event(client: TestClient, config: dict, output_elem: str, trigger: str, data: list) -> dict:
    """One page event (the first whose outputs include `output_elem`, fired by `trigger`) through
    Gradio's queue, as the page runs it; its completion message."""
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == output_elem}
    dep = next(d for d in config["dependencies"]
               if ids & set(d["outputs"]) and any(t[1] == trigger for t in d["targets"]))
    session = base64.b16encode(np.random.default_rng().bytes(5)).decode().lower()
    joined = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "session_hash": session})
    assert joined.status_code == 200, joined.text[:300]
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                return json.loads(line[5:])
    raise AssertionError("no answer")


def test_the_page_events_work_on_weights_from_a_file(served, taught):
    """The Classify tab's click, Explore's activations, the Graph sub-tab and its .keras download
    link, as the page runs them (Teach: `test_teach_works_on_weights_from_a_file`)."""
    client, app, store = served
    secret = taught[0].name
    config = client.get("/config").json()
    image = base64.b64decode(png_data_url(5).split(",", 1)[1])
    uploaded = client.post("/gradio_api/upload", files={"files": ("photo.png", image, "image/png")}).json()[0]
    photo = {"path": uploaded, "orig_name": "photo.png", "meta": {"_type": "gradio.FileData"}}
    classified = run_page_event(client, config, "gradcam", "click", [photo, None])
    assert classified["success"], classified
    assert {c["label"] for c in classified["output"]["data"][0]["confidences"]} == set(NAMES)
    explored = run_page_event(client, config, "explore-gallery", "change", [photo, "block4", 8, True, True, None])
    assert explored["success"], explored
    graph = run_page_event(client, config, "netron-view", "change", ["article"])
    assert graph["success"] and "xception-xception_taught-" in json.dumps(graph["output"]["data"])
    link = run_page_event(client, config, "keras-download", "click", ["paper"])
    assert link["success"], link
    html_link = link["output"]["data"][0]["value"]
    name = html_link.split('href="models/', 1)[1].split('"', 1)[0]
    assert name.startswith("xception-xception_taught-") and client.get(f"/models/{name}").status_code == 200
    for answer in (classified, explored, graph, link):
        assert secret not in json.dumps(answer)
