"""The Explore tab in headless Chromium: its Plotly figures render, an example's activations show
as a grid of channel maps, changing the view afterwards is a cache hit, and the article-vs-paper
comparison draws its per-block differences."""

from __future__ import annotations

import pytest

from tests.demo.conftest import SCREENSHOTS, open_app
from tests.demo.test_first_visit_browser import open_subtab

pytestmark = pytest.mark.browser


def test_explore_tab_renders_figures_and_an_activation_grid(chromium, live_server):
    page, errors = open_app(chromium, live_server, width=1400, height=1000)
    page.get_by_role("tab", name="Explore").click()

    # Architecture at a glance: block view, resolution ladder, cost.
    open_subtab(page, "At a glance")
    for elem_id in ("explore-block-view", "explore-ladder", "explore-cost"):
        page.locator(f"#{elem_id} .js-plotly-plot").wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 3
    assert page.locator("#explore-block-view .scatterlayer path.point").count() >= 16  # input, 14 blocks, head
    page.locator("#explore-arch-status", has_text="parameters").wait_for()
    page.locator("#explore-table", has_text="block14").wait_for()
    open_subtab(page, "Separable convolutions")
    page.locator("#explore-calculator", has_text="1,728").wait_for()
    assert "219" in page.locator("#explore-calculator").inner_text()

    # Live activations on an example (the Classify tab has its own examples: stay in this tab).
    open_subtab(page, "Activations")
    section = page.locator("#explore-activations")
    section.locator("#explore-examples .thumbnail-item").first.click()
    status = page.locator("#explore-cache-status")
    status.filter(has_text="ms").wait_for(timeout=60_000)
    tiles = page.locator("#explore-gallery img")
    tiles.first.wait_for(timeout=30_000)
    assert tiles.count() == 16  # the default N
    page.locator("#explore-gallery").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#explore-gallery img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }", timeout=30_000)
    page.locator("#explore-histogram .js-plotly-plot").wait_for()
    page.locator("#explore-full img").wait_for()
    page.locator("#explore-stats", has_text="block4").wait_for()

    # Another view of the same image does not run the model again.
    section.get_by_text("Overlay on the image").click()
    status.filter(has_text="Cache hit").wait_for(timeout=30_000)

    # Article vs paper on the same image: where the wiring differs, per-block differences and both top-5s.
    open_subtab(page, "Article vs paper")
    page.locator("#explore-diff-view .js-plotly-plot").wait_for(timeout=60_000)
    page.get_by_role("button", name="Compare both wirings on your photo").click()
    page.locator("#explore-diff .js-plotly-plot").wait_for(timeout=60_000)
    assert page.locator("#explore-diff .bars path").count() >= 14
    page.get_by_text("Top class: paper").wait_for(timeout=30_000)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "explore.png"), full_page=True)
    assert not errors, errors
    page.close()
