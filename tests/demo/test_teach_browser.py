"""The Teach tab in headless Chromium, the whole path as a student takes it, at desktop and phone
widths: starter set, photos of one's own, train, accuracy and map by block, a new photo, download."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from tests.demo.conftest import SCREENSHOTS, open_app

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_teach_path(chromium, live_server, tmp_path, width, height):
    for i, color in enumerate([(220, 30, 30), (200, 40, 50)]):
        image = Image.new("RGB", (120, 90), color)
        image.paste((255, 255, 255), (10 + 20 * i, 10, 40 + 20 * i, 40))
        image.save(tmp_path / f"red{i}.png")
    page, errors = open_app(chromium, live_server, width, height)
    page.get_by_role("tab", name="Teach").click()

    page.get_by_role("button", name="Load the starter set").click()
    page.get_by_text("Loaded the starter set").wait_for(timeout=120_000)
    overview = page.locator("#teach-overview")
    assert overview.locator("img").count() == 14
    for name, count in [("cup", 5), ("plate", 2), ("cutlery", 3), ("not kitchenware", 4)]:
        assert f"{name} {count}/30" in " ".join(overview.inner_text().split())

    page.locator("#teach-class input").fill("red squares")
    page.locator("#teach-files input[type=file]").set_input_files([str(tmp_path / "red0.png"), str(tmp_path / "red1.png")])
    page.locator("#teach-files").get_by_text("red1").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Add photos to this class").click()
    page.get_by_text("Added 2 photo(s) to “red squares”").wait_for(timeout=60_000)
    assert overview.locator("img").count() == 16

    page.get_by_role("button", name="Train", exact=True).click()
    summary = page.locator("#teach-summary")
    summary.get_by_text("Cross-validated accuracy on block 14").wait_for(timeout=60_000)
    assert "leave-one-out" in summary.inner_text() and "16 photos" in summary.inner_text()
    page.locator("#teach-map .js-plotly-plot").wait_for(timeout=30_000)
    page.locator("#teach-confusion .js-plotly-plot").wait_for(timeout=30_000)
    page.get_by_label("block 2 · early entry flow").check()
    summary.get_by_text("Cross-validated accuracy on block 2").wait_for(timeout=30_000)
    assert "On block 14's final features" in summary.inner_text()

    page.locator("#teach-new input[type=file]").set_input_files(str(tmp_path / "red0.png"))
    page.locator("#teach-new img").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Classify with my classifier").click()
    page.locator("#teach-result img").nth(1).wait_for(timeout=60_000)
    assert page.locator("#teach-top").get_by_text("red squares").count() >= 1

    page.get_by_role("button", name="Prepare downloads").click()
    head_button = page.locator("#teach-dl-head")
    head_button.wait_for(state="visible", timeout=180_000)
    assert page.locator("#teach-dl-model").is_visible()
    with page.expect_download() as download:
        head_button.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    served_file = Path(unquote(urlparse(download.value.url).path.split("file=", 1)[1]))
    assert served_file.is_file() and served_file.parent.parent.name == "teach"
    from xception_core.io.heads import load_head

    assert load_head(path).class_names == ("plate", "cup", "cutlery", "not kitchenware", "red squares")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"teach-{width}.png"), full_page=True)
    assert page.get_by_text("Traceback").count() == 0
    assert not errors, errors
    page.close()
    # Closing the page ends the session: its download files go (Gradio notices the closed
    # connection at its next heartbeat, every 15 s).
    deadline = time.monotonic() + 60
    while served_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert not served_file.exists() and not served_file.parent.exists()
