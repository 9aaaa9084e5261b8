"""What clients and the log see of a bad request (issue 21 items 6 and 7): no value echoed whole,
no line of the log holding it, no traceback for a forged file path, no web address or OS error
code in a weights failure, and a sentence (not a bare 500) for an event the page does not have.
The real create_app around a tiny random model."""

from __future__ import annotations

import html
import json
import logging
import os

import pytest
from fastapi.testclient import TestClient

from tests.conftest import random_loaded, shared_loaded, store_serving
from demo.errors import NO_SUCH_EVENT
from demo.services import UserError
from demo.services.models import served_model
from demo.store import ModelStore
from xception_core.settings import Settings

HUGE = "z" * 2_000_000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from demo.server import create_app

    tmp = tmp_path_factory.mktemp("answers")
    store = store_serving(shared_loaded(71, 3, seed=1), Settings(upload_dir=tmp / "gradio", cache_dir=tmp / "cache"))
    app = create_app(store.settings, store)
    with TestClient(app) as client:
        config = client.get("/config").json()
        yield client, config


def component(config: dict, elem_id: str) -> int:
    return next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def event_with_input(config: dict, component_id: int) -> dict:
    return next(d for d in config["dependencies"] if component_id in d["inputs"])


def run_event(client: TestClient, dep: dict, data: list, logs: list | None = None) -> tuple[dict, int]:
    """Gradio's queue, as the page uses it: (the completion message, bytes of the whole answer);
    the toasts ("log" messages) go to `logs`."""
    session = os.urandom(6).hex()
    joined = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "session_hash": session})
    assert joined.status_code == 200, joined.text[:300]
    size = 0
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            size += len(line)
            if logs is not None and line.startswith("data:") and '"msg":"log"' in line.replace(" ", ""):
                logs.append(json.loads(line[5:]))
            if "process_completed" in line:
                return json.loads(line[5:]), size
    raise AssertionError("no answer")


def test_a_huge_value_for_a_choice_is_refused_in_a_short_answer_and_a_short_log_line(page, capfd, caplog):
    client, config = page
    block = component(config, "teach-block")  # a private radio: Teach's "Features from"
    dep = event_with_input(config, block)
    data = [HUGE if i == block else None for i in dep["inputs"]]
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    for _ in range(3):
        message, size = run_event(client, dep, data)
        assert not message["success"]
        assert message["output"]["error"] == "A value sent is not one of the choices offered."
        assert size < 5_000, size  # before: the 2 MB value came back whole
    err = capfd.readouterr().err
    assert "Traceback" not in err and "zzzzzzzzzz" not in err and len(err) < 5_000
    logged = [r.getMessage() for r in caplog.records]
    assert any("input refused" in m for m in logged) and all("zzzzzzzzzz" not in m for m in logged)


def test_a_forged_file_path_costs_one_log_line_not_a_traceback(page, capfd, caplog):
    client, config = page
    photo = component(config, "teach-new")
    dep = event_with_input(config, photo)
    forged = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}, "orig_name": "passwd"}
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    message, _ = run_event(client, dep, [forged if i == photo else None for i in dep["inputs"]])
    assert not message["success"]
    assert message["output"]["error"] == "A file sent is not one this server received or gave out."
    err = capfd.readouterr().err
    assert "Traceback" not in err and "/etc/passwd" not in err
    assert sum("input refused" in r.getMessage() for r in caplog.records) == 1
    capfd.readouterr()
    assert client.get("/gradio_api/file=/etc/passwd").status_code in (403, 404)  # the file route: refused quietly
    assert "Traceback" not in capfd.readouterr().err


def test_an_event_the_page_does_not_have_answers_a_sentence(page):
    client, config = page
    missing = len(config["dependencies"]) + 7  # past the page's last event, however many it gains
    for route in ("/gradio_api/queue/join", "/gradio_api/run/predict"):
        response = client.post(route, json={"data": [], "fn_index": missing, "session_hash": "abcdef"})
        assert response.status_code == 404, (route, response.status_code, response.text[:200])
        assert response.json() == {"detail": NO_SUCH_EVENT}


def test_weights_that_failed_to_download_are_explained_without_address_or_error_code(monkeypatch):
    from xception_core.weights.fetch import WeightsFailure, WeightsUnavailableError

    def load(key, settings):
        if key == "imagenet":
            raise WeightsUnavailableError(
                "could not fetch xception_weights_tf_dim_ordering_tf_kernels.h5 from "
                "https://storage.googleapis.com/tensorflow/keras-applications/xception/x.h5: "
                "[Errno -2] Name or service not known", cause=WeightsFailure.OFFLINE)
        return random_loaded(71, 3)

    monkeypatch.setattr("demo.store.cache.load_model", load)
    store = ModelStore(Settings(), ["kitchenware", "imagenet"]).start()
    store.get(timeout=120)
    with pytest.raises(UserError) as excinfo:
        served_model(store, "imagenet", wait_s=120)
    message = str(excinfo.value)
    assert "could not be downloaded here (no network access)" in message and "kitchenware" in message
    assert "://" not in message and "Errno" not in message and "googleapis" not in message


def test_the_page_and_rest_name_the_same_failure_alike():
    from demo.errors import LoadFailure, unavailable_words
    from demo.store import SlotStatus
    from xception_core.weights.fetch import WeightsFailure

    statuses = [SlotStatus("imagenet", "ImageNet", "failed", failure=LoadFailure(WeightsFailure.OFFLINE)),
                SlotStatus("kitchenware", "Kitchenware", "ready")]
    words = unavailable_words(statuses, "imagenet")
    assert words.startswith("The weights 'imagenet' are unavailable on this server (ImageNet: could not be downloaded")
    assert unavailable_words(statuses, None).startswith("No weights could be loaded on this server (ImageNet: ")



def test_a_download_that_is_gone_says_to_prepare_it_again_and_hides(page):
    """Teach's download buttons ask the server on click: one never prepared (or trimmed by the file
    budget since) is a toast saying to press Prepare again, and the button hides (issue 21 item 4)."""
    from demo.services.teach import DOWNLOAD_GONE

    client, config = page
    button = component(config, "teach-dl-model")
    dep = next(d for d in config["dependencies"] if any(t[0] == button and t[1] == "click" for t in d["targets"]))
    toasts: list = []
    message, _ = run_event(client, dep, [], toasts)
    assert message["success"], message
    assert [t["log"] for t in toasts] == [html.escape(DOWNLOAD_GONE)]  # toasts are text, escaped
    assert message["output"]["data"][0]["visible"] is False
