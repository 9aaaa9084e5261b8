"""The Classify tab in headless Chromium, as a person uses it."""

from __future__ import annotations

import pytest

from tests.demo.conftest import SCREENSHOTS, open_app

pytestmark = pytest.mark.browser


def test_classify_an_example_through_the_page(chromium, live_server):
    page, errors = open_app(chromium, live_server)
    page.locator("#classify-examples .thumbnail-item").first.click()  # an example is classified on click
    top = page.get_by_test_id("label-output-value")
    top.wait_for(timeout=60_000)
    label = top.inner_text().strip()
    assert label in {"cup", "fork", "glass", "knife", "plate", "spoon"}  # the offline kitchenware weights
    page.get_by_text("ms in the network").wait_for()
    page.get_by_text("Kitchenware-6, offline weights").first.wait_for()
    # The Grad-CAM overlay is shown, and the top-5 classes can be explained one by one.
    page.locator("#gradcam img").first.wait_for()
    assert page.get_by_role("radio").count() == 5
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "classify.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_a_bad_upload_shows_a_clear_error(chromium, live_server, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    page, _ = open_app(chromium, live_server)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Classify", exact=True).click()
    error = page.get_by_text("not a recognised image").or_(page.get_by_text("truncated")).or_(page.get_by_text("corrupt"))
    error.first.wait_for(timeout=30_000)
    assert page.get_by_text("Traceback").count() == 0
    page.close()
