"""The plain HTTP API on the real `python app.py` (kitchenware weights): its routes win over the
Gradio page mounted at `/`, the app-wide body limit answers in the API's shape there, a 48 MP photo
is classified, and the docs are served. The budgets themselves: test_http_api_budgets.py."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROUTE = "/api/v1/classify"
PROBLEM = "application/problem+json"


def test_other_methods_get_405_with_a_hint_not_the_pages_404(live_server):
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, live_server + ROUTE, timeout=30)
        assert response.status_code == 405 and response.headers["allow"] == "POST", (method, response.text[:200])
        assert response.headers["content-type"] == PROBLEM and "POST it to" in response.json()["detail"]
    response = httpx.get(live_server + "/api/v1/nothing", timeout=30)
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM


def test_a_body_over_the_apps_limit_is_a_problem_on_the_api_and_text_on_the_page(live_server):
    big = b"\0" * (15 * 2**20)
    api = httpx.post(live_server + ROUTE, content=big, headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert api.status_code == 413 and api.headers["content-type"] == PROBLEM, api.text[:200]
    assert api.json()["status"] == 413
    page = httpx.post(live_server + "/gradio_api/queue/join", content=big,
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert page.status_code == 413 and page.headers["content-type"].startswith("text/plain")


def test_a_48_mp_photo_is_classified(live_server):
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000), (180, 180, 190)).save(buffer, "JPEG", quality=70)
    response = httpx.post(live_server + ROUTE + "?k=3", content=buffer.getvalue(),
                          headers={"Content-Type": "image/jpeg"}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["top"]) == 3 and response.json()["weights"] == "kitchenware"


def test_the_docs_and_their_files_are_served_by_the_app(live_server):
    page = httpx.get(live_server + "/docs", timeout=30)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert httpx.get(live_server + "/docs/assets/swagger-ui-bundle.js", timeout=30).status_code == 200
    operation = httpx.get(live_server + "/openapi.json", timeout=30).json()["paths"][ROUTE]["post"]
    assert {"400", "408", "413", "422", "500", "503"} <= set(operation["responses"])
