"""The HTTP API's interactive docs at `/docs` in headless Chromium, with every request to another
origin blocked (as on a machine with no internet): the classify operation renders, lists its
errors, and "Try it out" classifies a photo; at a desktop's and a phone's width."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo.conftest import ROOT, SCREENSHOTS

pytestmark = pytest.mark.browser

WIDTHS = {"desktop": (1366, 900), "phone": (390, 844)}


@pytest.mark.parametrize("size", WIDTHS)
def test_the_docs_work_offline_and_classify_a_photo(chromium, live_server, size):
    width, height = WIDTHS[size]
    page = chromium.new_page(viewport={"width": width, "height": height})
    outside: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def only_this_origin(route):
        if route.request.url.startswith(live_server + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_origin)
    try:
        page.goto(live_server + "/docs")
        operation = page.locator(".opblock-post", has_text="/api/v1/classify")
        operation.wait_for(timeout=30_000)
        summary = operation.locator(".opblock-summary")
        assert "Classify one image" in summary.inner_text()
        box = summary.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (box, width)
        summary.click()
        responses = operation.locator(".responses-table .response-col_status")
        responses.first.wait_for()
        codes = {text.strip() for text in responses.all_inner_texts()}
        assert {"200", "400", "408", "413", "422", "500", "503"} <= codes, codes
        # Try it out (on by default here): send one of the app's example photos as the body.
        if operation.get_by_role("button", name="Try it out").count():
            operation.get_by_role("button", name="Try it out").click()
        photo = Path(ROOT / "assets" / "examples").glob("*.jpg")
        operation.locator("input[type=file]").set_input_files(str(next(photo)))
        operation.get_by_role("button", name="Execute").click()
        live = operation.locator(".live-responses-table tbody .response-col_status").first
        live.wait_for(timeout=60_000)
        assert live.inner_text().strip() == "200", operation.locator(".live-responses-table").inner_text()
        body = operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
        assert '"top"' in body and '"probability"' in body, body
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"api-docs-{size}.png"), full_page=False)
    finally:
        page.close()
    assert not outside, f"the docs asked another origin for {outside}"
    assert not errors, errors
