"""Explore › Xception vs Inception V3 in headless Chromium, at 1366 and 390 px, light and dark: the
totals a reader sees are `/architecture`'s for both networks, the module tables (cards on a phone)
and the placement and continuum charts are drawn, nothing scrolls sideways, and the page says
Inception V3 is being prepared (nothing of it was loaded before the sub-tab opened)."""

from __future__ import annotations

import pytest

from tests.demo.conftest import open_app
from tests.demo.test_first_visit_browser import open_subtab, shot

pytestmark = pytest.mark.browser

VIEWS = [(1366, "light"), (1366, "dark"), (390, "light"), (390, "dark")]


@pytest.fixture(scope="module")
def architectures(client) -> dict:
    """`/architecture`'s answers for both networks at 299 px (the view's default size)."""
    return {which: client.predict(which, api_name="/architecture") for which in ("reference", "inception_v3")}


@pytest.mark.parametrize(("width", "scheme"), VIEWS)
def test_compare_view_totals_are_the_architecture_endpoints(chromium, live_server, architectures, width, scheme):
    page, errors = open_app(chromium, live_server, width=width, height=900, color_scheme=scheme)
    page.get_by_role("tab", name="Explore").click()
    open_subtab(page, "Xception vs Inception V3")
    totals = page.locator("#cmp-totals")
    totals.filter(has_text="Inception V3 at 299×299 px").wait_for(timeout=60_000)
    said = totals.inner_text()
    for which, title in (("reference", "Xception"), ("inception_v3", "Inception V3")):
        answer = architectures[which]
        part = said.split(f"{title} at 299×299 px", 1)[1]
        assert f"{answer['total_params']:,} parameters in all" in part, (which, part[:200])
        assert f"{answer['learned_params']:,} learned" in part
        assert f"{answer['total_macs'] / 1e9:.2f} G multiply-accumulates" in part
    assert "22,855,952 parameters (Table 3)" in said and "23,626,728 parameters (Table 3)" in said
    for elem_id in ("cmp-placement", "cmp-continuum"):
        page.locator(f"#{elem_id} .js-plotly-plot").wait_for(timeout=30_000)
    phone = width < 640
    shown, hidden = (("#cmp-inception-cards", "#cmp-inception-table") if phone
                     else ("#cmp-inception-table", "#cmp-inception-cards"))
    page.locator(shown).filter(has_text="mixed10").wait_for(timeout=30_000)
    assert not page.locator(hidden).is_visible()
    page.locator("#cmp-status").filter(has_text="Inception V3").wait_for(timeout=30_000)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    dark = page.evaluate("() => document.body.classList.contains('dark')")
    assert dark == (scheme == "dark")
    page.locator("#cmp-totals").scroll_into_view_if_needed()
    shot(page, f"compare-{width}-{scheme}")
    assert not errors


def test_compare_endpoint_gives_both_totals_timings_and_no_random_predictions(client, architectures):
    from gradio_client import handle_file

    from bench.common import example_path

    answer = client.predict(handle_file(str(example_path())), 299, 2, api_name="/compare")
    for which, key in (("reference", "xception"), ("inception_v3", "inception_v3")):
        network, expected = answer["networks"][key], architectures[which]
        assert (network["total_params"], network["learned_params"], network["total_macs"]) == (
            expected["total_params"], expected["learned_params"], expected["total_macs"])
        assert sum(network["placement"].values()) == expected["total_params"]
    timings = answer["timings"]
    assert len(timings["xception_ms"]) == len(timings["inception_v3_ms"]) == 2 and timings["first"] == [
        "xception", "inception_v3"]
    if answer["inception_v3_weights"] == "random":  # offline: no ImageNet file, so nothing predicts
        assert answer["predictions"] is None and answer["predictions_withheld"]
    else:
        assert len(answer["predictions"]["inception_v3"]) == 5
