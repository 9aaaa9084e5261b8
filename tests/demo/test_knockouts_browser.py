"""Explore › Knockouts in headless Chromium on the real app (kitchenware weights), at a desktop's
width in light mode and a phone's in dark mode: pick an example, add a knockout, run it, and read
the knocked network's top class and probability where a person reads them, against `/knockout`
for the same photo (the intact side is `/classify`'s), and the two blocks' maps side by side."""

from __future__ import annotations

import re

import pytest

from tests.demo.conftest import SCREENSHOTS, open_app
from tests.demo.test_first_screen_browser import check_chart_theme, no_error_badges
from tests.demo.test_first_visit_browser import open_subtab

pytestmark = pytest.mark.browser

CASES = {"desktop-light": (1366, 900, "light"), "phone-dark": (390, 844, "dark"),
         "desktop-dark": (1366, 900, "dark"), "phone-light": (390, 844, "light")}
KNOCKOUT = [{"kind": "skip_branch", "block": "block7"}]  # the sub-tab's defaults


def shown_top(page, selector: str) -> tuple[str, int]:
    """(class, whole percent) of the top row of a Label as drawn."""
    label = page.locator(f"{selector}")
    label.locator(".output-class, h2").first.wait_for(timeout=60_000)
    words = label.inner_text()
    top = label.locator(".output-class, h2").first.inner_text().strip()
    percent = re.search(rf"{re.escape(top)}\s*(\d+)%", words)
    return top, int(percent.group(1)) if percent else -1


@pytest.mark.parametrize("case", CASES)
def test_a_knockout_changes_the_top5_as_the_api_says(chromium, live_server, client, case, tmp_path):
    from gradio_client import handle_file

    width, height, scheme = CASES[case]
    page, errors = open_app(chromium, live_server, width=width, height=height, color_scheme=scheme)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Knockouts")
    thumb = page.locator("#knockouts-examples .thumbnail-item").first
    thumb.wait_for(timeout=60_000)
    photo_url = thumb.locator("img").get_attribute("src")
    thumb.click()
    page.locator("#knockouts-add").click()
    page.locator("#knockouts-list", has_text="block7").wait_for(timeout=30_000)
    page.locator("#knockouts-run").click()
    page.locator("#knockouts-verdict", has_text="first changed block").wait_for(timeout=120_000)

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(page.request.get(photo_url if photo_url.startswith("http") else live_server + photo_url).body())
    answer = client.predict(handle_file(str(photo)), KNOCKOUT, api_name="/knockout")
    assert answer["intact"] == client.predict(handle_file(str(photo)), "", api_name="/classify")
    for selector, side in (("#knockouts-knocked", "knocked"), ("#knockouts-intact", "intact")):
        label, p = next(iter(answer[side].items()))
        assert shown_top(page, selector) == (label, round(p * 100)), side
    # The first changed block and the last, intact beside knocked out.
    page.locator("#knockouts-maps .thumbnail-item").nth(3).wait_for(timeout=30_000)
    assert page.locator("#knockouts-maps .thumbnail-item").count() == 4
    check_chart_theme(page, ["#knockouts-changes"], scheme)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width + 1
    no_error_badges(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"knockouts-{case}.png"), full_page=True)
    assert not errors, errors
    page.close()
