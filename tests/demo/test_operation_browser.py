"""Explore › Inside one operation in headless Chromium, on the real app (kitchenware weights), at a
desktop's width in light mode and a phone's in dark mode: open the sub-tab, pick an example, click a
cell of the feature map, and read what a person sees: the position, the depthwise sums (equal to
the `/operation` endpoint's values for the same photo and place), the charts on the page's own
background, and nothing wider than the screen."""

from __future__ import annotations

import re
import time

import pytest

from tests.demo.conftest import SCREENSHOTS, open_app
from tests.demo.test_first_screen_browser import check_chart_theme, no_error_badges
from tests.demo.test_first_visit_browser import open_subtab

pytestmark = pytest.mark.browser

CASES = {"desktop-light": (1366, 900, "light"), "phone-dark": (390, 844, "dark")}
BLOCK, LAYER = "block5", "block5_sepconv3"  # the sub-tab's defaults


def shown_sums(page) -> list[tuple[int, float]]:
    """(input channel, the depthwise sum as written on the page) of every card shown."""
    cards = page.locator("#op-depthwise .op-depthwise")
    out = []
    for i in range(cards.count()):
        card = cards.nth(i)
        text = card.locator(".op-value").inner_text().replace("−", "-")
        out.append((int(card.get_attribute("data-channel")), float(text)))
    return out


def drawn_square(picture) -> tuple[float, float, float]:
    """(x, y, side) of a square picture as drawn inside its <img>: centred, shrunk to fit but never
    enlarged (Gradio's object-fit: scale-down, which its click coordinates follow too)."""
    return tuple(picture.evaluate(
        "(i) => { const r = i.getBoundingClientRect(); const s = Math.min(r.width / i.naturalWidth,"
        " r.height / i.naturalHeight, 1) * i.naturalWidth; return [(r.width - s) / 2, (r.height - s) / 2, s]; }"))


@pytest.mark.parametrize("case", CASES)
def test_a_click_on_the_map_shows_the_step_number_by_number(chromium, live_server, client, case, tmp_path):
    from gradio_client import handle_file

    width, height, scheme = CASES[case]
    page, errors = open_app(chromium, live_server, width=width, height=height, color_scheme=scheme)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Inside one operation")
    page.locator("#op-where", has_text="No photo yet").wait_for(timeout=30_000)

    thumb = page.locator("#op-examples .thumbnail-item").first
    thumb.wait_for(timeout=60_000)
    photo_url = thumb.locator("img").get_attribute("src")
    thumb.click()
    where = page.locator("#op-where")
    where.filter(has_text="output position").wait_for(timeout=120_000)
    grid = int(re.search(r"of its (\d+)×\d+ grid", where.inner_text()).group(1))

    # A click on a cell of the map (its picture is the conv's grid, drawn square).
    target = (1, grid - 2)
    picture = page.locator("#op-map img")
    picture.scroll_into_view_if_needed()
    # Gradio maps a click through the picture's natural size: one still loading takes no click.
    page.wait_for_function("() => { const i = document.querySelector('#op-map img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    x, y, side = drawn_square(picture)
    started = time.perf_counter()
    picture.click(position={"x": x + (target[1] + 0.5) * side / grid, "y": y + (target[0] + 0.5) * side / grid})
    where.filter(has_text=f"row {target[0]}, column {target[1]} ").wait_for(timeout=30_000)
    page.locator("#op-where", has_text="Cache hit").wait_for(timeout=30_000)
    print(f"\n[{case}] map click to numbers on the page: {(time.perf_counter() - started) * 1000:.0f} ms")
    said = where.inner_text()
    server_ms = re.search(r"this answer took (\d+) ms", said)
    print(f"[{case}] the server's share: {server_ms.group(1) if server_ms else '?'} ms")
    channel = int(page.locator("#op-channel input").input_value())

    # The same photo and place through the public endpoint: the sums a person reads are its values.
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(page.request.get(photo_url if photo_url.startswith("http") else live_server + photo_url).body())
    answer = client.predict(handle_file(str(photo)), BLOCK, LAYER, target[0], target[1], channel, "paper", 16,
                            api_name="/operation")
    sums = shown_sums(page)
    assert len(sums) == 3 and [c for c, _ in sums] == [d["channel"] for d in answer["depthwise"][:3]]
    for (shown_channel, shown_value), d in zip(sums, answer["depthwise"]):
        assert shown_value == pytest.approx(d["value"], rel=1e-3, abs=1e-6), shown_channel
    stages = page.locator("#op-stages").inner_text()
    assert "BatchNorm" in stages and "Residual sum" in stages and "the model computed" in stages
    page.locator("#op-cost", has_text="multiply-accumulates").wait_for()
    check_chart_theme(page, ["#op-pointwise", "#op-macs"], scheme)

    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width + 1
    for selector in ("#op-depthwise", "#op-stages", "#op-map", "#op-photo", "#op-pointwise"):
        right = page.locator(selector).bounding_box()
        assert right["x"] >= -0.5 and right["x"] + right["width"] <= width + 0.5, (selector, right)
    no_error_badges(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"operation-{case}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert not errors, errors
    page.close()
