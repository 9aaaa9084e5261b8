"""What a first-time visitor sees, read off the rendered page at a desktop's and a phone's size, in
light and dark: the first screen (one status, the image input without scrolling, every Explore
sub-tab one tap away), charts on the page's own background, fonts that the app serves and that
have every glyph, new photos never beside an old answer, and failures as messages, never as
"Error" badges on the inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.demo.conftest import SCREENSHOTS, open_app
from tests.demo.test_first_visit_browser import WIDTHS, open_subtab

pytestmark = pytest.mark.browser

SCHEMES = ("light", "dark")
SUB_TABS = ("Start here", "At a glance", "Separable convolutions", "Inside one operation", "Activations",
            "Article vs paper", "Knockouts", "Xception vs Inception V3", "Graph (Netron)")
OWN_FONTS = {"Source Sans 3", "Source Sans Pro", "IBM Plex Mono", "Xception Explorer Fallback"}


def page_at(chromium, live_server, size: str, scheme: str, **options):
    width, height = WIDTHS[size]
    return open_app(chromium, live_server, width=width, height=height, color_scheme=scheme, **options)


def no_error_badges(page) -> None:
    """Gradio marks every output of a failed event with an "Error" badge: none may show."""
    assert page.locator(".error", has_text="Error").filter(visible=True).count() == 0
    assert page.get_by_text("Error", exact=True).filter(visible=True).count() == 0


def toast_text(page) -> str:
    toast = page.locator(".toast-body").last
    toast.wait_for(timeout=60_000)
    return toast.inner_text()


def luminance(rgb) -> float:
    r, g, b = (c / 255 for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def rendered_background(page, selector: str) -> float:
    """The median luminance of a chart as drawn (a screenshot of it): a chart on the page's own
    background is mostly that background, whatever its ink."""
    plot = page.locator(f"{selector} .js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    with Image.open(io.BytesIO(plot.screenshot())) as shot:
        rgb = np.asarray(shot.convert("RGB"), dtype=np.float64) / 255
    return float(np.median(rgb @ [0.2126, 0.7152, 0.0722]))


def check_chart_theme(page, selectors, scheme: str) -> dict[str, float]:
    """Each chart drawn dark on a dark page and light on a light one, with ink that reads on it."""
    seen = {}
    for selector in selectors:
        page.locator(f"{selector} .js-plotly-plot").first.wait_for(timeout=120_000)
        lum = rendered_background(page, selector)
        seen[selector] = round(lum, 3)
        if scheme == "dark":
            assert lum < 0.25, (selector, lum)  # no bright panel on a dark page
        else:
            assert lum > 0.8, (selector, lum)
        title = page.locator(f"{selector} .gtitle").first
        if title.count():
            fill = page.evaluate("(e) => getComputedStyle(e).fill", title.element_handle())
            ink = luminance([int(float(c)) for c in fill[fill.index("(") + 1: -1].split(",")[:3]])
            assert (ink > 0.6) if scheme == "dark" else (ink < 0.4), (selector, fill)
    return seen


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("size", WIDTHS)
def test_the_first_screen_shows_one_status_the_image_input_and_every_sub_tab(chromium, live_server, size, scheme):
    requests: list[str] = []
    page, errors = page_at(chromium, live_server, size, scheme)
    page.on("request", lambda r: requests.append(r.url))
    page.reload()
    page.locator("#status-line").get_by_text("Model status: ready").wait_for(timeout=60_000)
    width, height = WIDTHS[size]
    intro = page.locator("#intro").inner_text()
    assert all(f"{tab}" in intro for tab in ("Classify", "Explore", "Teach"))
    status = page.locator("#status-line")
    assert status.inner_text().count("Kitchenware-6") == 1 and "loading" not in status.inner_text()
    assert page.locator("#weights-panel").count() == 0 and not page.locator("#imagenet-help").is_visible()
    # The image input, upload button included, is on the first screen without scrolling.
    assert page.evaluate("() => window.scrollY") == 0
    box = page.locator("#classify-image").bounding_box()
    upload = page.locator("#classify-image button[aria-label='Upload file'], #classify-image .icon-buttons, "
                          "#classify-image button").first.bounding_box()
    assert 0 < box["y"] and box["y"] + box["height"] <= height, box
    assert upload["y"] + upload["height"] <= height and box["x"] >= 0 and box["x"] + box["width"] <= width
    shot_name = f"first-screen-{size}-{scheme}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{shot_name}.png"))

    page.get_by_role("tab", name="Explore", exact=True).click()
    tabs = [page.locator("#explore-tabs [role=tablist]").get_by_role("tab", name=n, exact=True) for n in SUB_TABS]
    boxes = [t.bounding_box() for t in tabs]
    assert page.locator("#explore-tabs").get_by_role("button", name="More tabs").filter(visible=True).count() == 0
    for name, b in zip(SUB_TABS, boxes):  # each one tap away: shown whole, inside the screen, apart
        assert b is not None and b["width"] > 40 and b["height"] >= 30, (name, b)
        assert 0 <= b["x"] and b["x"] + b["width"] <= width + 0.5, (name, b)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert (a["x"] + a["width"] <= b["x"] + 0.5 or b["x"] + b["width"] <= a["x"] + 0.5
                    or a["y"] + a["height"] <= b["y"] + 0.5 or b["y"] + b["height"] <= a["y"] + 0.5), (a, b)
    tabs[SUB_TABS.index("Article vs paper")].click()  # one tap on a tab that a phone used to hide behind "⋯"
    page.locator("#explore-article-intro").wait_for(state="visible", timeout=30_000)
    # Every request went to the app itself: fonts included.
    assert requests and all(r.startswith(live_server) or r.startswith(("data:", "blob:")) for r in requests), \
        sorted({r for r in requests if not r.startswith(live_server)})
    assert any("/fonts/fallback.woff2" in r for r in requests)
    assert not errors, errors
    page.close()


def _frame_document(node: dict, frame_id: str) -> int | None:
    """The node id of the document inside the iframe `frame_id`, found in a pierced DOM tree."""
    attributes = node.get("attributes", [])
    if node.get("nodeName") == "IFRAME" and frame_id in attributes[1::2] and "contentDocument" in node:
        return node["contentDocument"]["nodeId"]
    for child in node.get("children", []):
        found = _frame_document(child, frame_id)
        if found is not None:
            return found
    return None


def platform_fonts(page, selector: str, limit: int = 400, frame_id: str | None = None) -> dict[str, set[str]]:
    """{markup: the fonts Chromium drew its text with} for the elements `selector` finds, in the
    page or in its iframe `frame_id` (CDP)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    tree = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]
    root = _frame_document(tree, frame_id) if frame_id else tree["nodeId"]
    assert root is not None, f"no iframe {frame_id}"
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"][:limit]
    used: dict[str, set[str]] = {}
    for node in nodes:
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        if fonts:
            label = cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"][:400]
            used[label] = {f["familyName"] for f in fonts}
    cdp.detach()
    return used


@pytest.mark.parametrize("size", WIDTHS)
def test_text_is_drawn_with_the_apps_fonts_bold_included(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size, "light")
    page.locator("#classify-examples .thumbnail-item").first.click()
    page.get_by_test_id("label-output-value").wait_for(timeout=60_000)
    used = platform_fonts(page, "h1, strong, p, button, label span, .caption-label, .gtitle, code")
    assert used
    strangers = {label: fonts - OWN_FONTS for label, fonts in used.items() if fonts - OWN_FONTS}
    assert not strangers, strangers  # a bold "A" in Source Sans beside system-font letters was the bug
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "At a glance")
    page.locator("#explore-block-view .js-plotly-plot").wait_for(timeout=60_000)
    chart = platform_fonts(page, "#explore-block-view text, #explore-ladder text")
    assert chart and not {k: v - OWN_FONTS for k, v in chart.items() if v - OWN_FONTS}
    assert not errors, errors
    page.close()


def test_netron_draws_the_shape_brackets_with_the_apps_fallback(chromium, live_server):
    page, errors = page_at(chromium, live_server, "desktop", "light")
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Graph (Netron)")
    netron = page.frame_locator("#netron-frame")
    netron.locator("#canvas g.node").first.wait_for(timeout=90_000)
    netron.locator(".node-argument", has_text="〈").first.wait_for(timeout=30_000)
    used = platform_fonts(page, ".node-argument text", limit=80, frame_id="netron-frame")
    bracketed = {k: v for k, v in used.items() if "〈" in k}
    assert bracketed and all("Xception Explorer Fallback" in fonts for fonts in bracketed.values()), used
    page.close()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("size", WIDTHS)
def test_every_chart_follows_the_theme(chromium, live_server, size, scheme, tmp_path):
    page, errors = page_at(chromium, live_server, size, scheme)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "At a glance")
    seen = check_chart_theme(page, ["#explore-block-view", "#explore-ladder", "#explore-cost"], scheme)
    open_subtab(page, "Activations")
    page.locator("#explore-examples .thumbnail-item").first.click()
    page.locator("#explore-cache-status").filter(has_text="ms").wait_for(timeout=60_000)
    seen |= check_chart_theme(page, ["#explore-histogram"], scheme)
    open_subtab(page, "Article vs paper")
    page.locator("#explore-compare").click()
    page.get_by_text("Top class: paper").wait_for(timeout=60_000)
    seen |= check_chart_theme(page, ["#explore-diff-view", "#explore-diff"], scheme)
    page.get_by_role("tab", name="Teach", exact=True).click()
    page.get_by_role("button", name="Load the starter set").click()
    page.get_by_text("Loaded the starter set").wait_for(timeout=180_000)
    page.get_by_role("button", name="Train", exact=True).click()
    seen |= check_chart_theme(page, ["#teach-map", "#teach-accuracy", "#teach-confusion"], scheme)
    print(f"\n[{size} {scheme}] median chart luminance: {seen}")
    page.screenshot(path=str(SCREENSHOTS / f"teach-charts-{size}-{scheme}.png"), full_page=True)
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_a_new_photo_never_sits_beside_the_last_answer_and_failures_are_messages(chromium, live_server, size,
                                                                                tmp_path):
    small, broken = tmp_path / "small.png", tmp_path / "broken.jpg"
    Image.new("RGB", (8, 8), (30, 160, 40)).save(small)
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    page, errors = page_at(chromium, live_server, size, "light")
    page.locator("#classify-examples .thumbnail-item").nth(2).click()
    top = page.get_by_test_id("label-output-value")
    top.wait_for(timeout=60_000)
    first_info = page.locator("#classify-info").inner_text()
    # A new upload is classified at once (no Classify press), and says how much it was enlarged.
    page.locator("#classify-image input[type=file]").set_input_files(str(small))
    page.locator("#classify-info").filter(has_text="8×8 pixels").wait_for(timeout=60_000)
    assert "enlarged 19× to 150×150" in page.locator("#classify-info").inner_text() != first_info
    page.locator("#gradcam img").first.wait_for(timeout=30_000)
    # A file that is no image: a message, no badge, and nothing left of the last answer.
    page.locator("#classify-image input[type=file]").set_input_files(str(broken))
    assert "corrupt or unsupported image" in toast_text(page)
    page.wait_for_timeout(500)
    no_error_badges(page)
    assert top.count() == 0 and page.locator("#gradcam img").count() == 0
    assert page.locator("#classify-info").inner_text().strip() == ""
    assert not errors, errors
    page.close()

    # Article vs paper without a photo (a fresh page): the message points to where the photo is chosen.
    page, errors = page_at(chromium, live_server, size, "light")
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Article vs paper")
    page.locator("#explore-compare").click()
    page.locator(".toast-body", has_text="No photo to compare yet").wait_for(timeout=30_000)
    assert "Explore › Activations" in page.locator(".toast-body", has_text="No photo to compare").inner_text()
    no_error_badges(page)

    # Teach: Add with no class name says so; the photo stays in sight, and one Add later adds it once.
    page.get_by_role("tab", name="Teach", exact=True).click()
    page.locator("#teach-files input[type=file]").set_input_files(str(small))
    page.locator("#teach-files").get_by_text("small").first.wait_for(timeout=30_000)
    page.locator("#teach-add").click()
    page.locator(".toast-body", has_text="Name the class first").wait_for(timeout=30_000)
    no_error_badges(page)
    assert page.locator("#teach-files").get_by_text("small").first.is_visible()
    page.locator("#teach-class input").fill("green")
    page.locator("#teach-add").click()
    page.get_by_text("Added 1 photo(s) to “green”").wait_for(timeout=60_000)
    assert "green 1/30" in " ".join(page.locator("#teach-overview").inner_text().split())
    no_error_badges(page)
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_the_block_diagram_is_usable_without_hovering(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size, "light")
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "At a glance")
    view = page.locator("#explore-block-view .js-plotly-plot")
    view.wait_for(timeout=60_000)
    assert view.bounding_box()["width"] <= WIDTHS[size][0]
    sizes = page.evaluate("() => [...document.querySelectorAll('#explore-block-view .textpoint text')]"
                          ".map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 10, sizes  # node numbers readable on a phone
    pick = page.locator("#explore-block-pick input")
    pick.click()  # a tap, then the list: the same on a touch screen
    page.get_by_role("option", name="block5 · middle flow", exact=True).click()
    details = page.locator("#explore-block-details")
    details.filter(has_text="block5").wait_for(timeout=30_000)
    said = details.inner_text()
    assert "middle flow" in said and "9×9×728" in said and "1,618,344 parameters" in said
    page.wait_for_timeout(500)
    widths = page.evaluate("() => [...document.querySelectorAll('#explore-block-view .scatterlayer path.point')]"
                           ".map(p => parseFloat(p.style.strokeWidth) || 0)")
    assert max(widths) >= 4  # the chosen block is outlined in the diagram
    page.screenshot(path=str(SCREENSHOTS / f"block-pick-{size}.png"), full_page=False)
    assert not errors, errors
    page.close()


def test_small_holes_are_closed(chromium, live_server, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2600, 2600, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 10 * 2**20
    page, errors = page_at(chromium, live_server, "desktop", "light")
    # An upload over the limit: one message, not two.
    page.locator("#classify-image input[type=file]").set_input_files(str(big))
    page.locator(".toast-body").first.wait_for(timeout=30_000)
    page.wait_for_timeout(2000)
    assert page.locator(".toast-body").count() == 1, page.locator(".toast-body").all_inner_texts()
    page.locator("[data-testid=toast-close]").click()

    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Separable convolutions")
    answer = page.locator("#explore-calculator")
    answer.filter(has_text="1,728").wait_for(timeout=30_000)
    page.locator("#calc-in input").fill("")
    page.locator("#calc-in input").press("Enter")
    answer.filter(has_text="input channels is empty").wait_for(timeout=30_000)
    assert "None" not in answer.inner_text()

    open_subtab(page, "Activations")
    page.locator("#explore-examples .thumbnail-item").first.click()
    page.locator("#explore-cache-status").filter(has_text="ms").wait_for(timeout=60_000)
    box = page.locator("#explore-n-top input[type=number]")
    box.fill("100")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#explore-n-top input[type=number]').value == '64'",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#explore-gallery img').length == 64", timeout=60_000)

    page.get_by_role("tab", name="Teach", exact=True).click()
    page.locator("#teach-unseen input").click()
    options = page.get_by_role("option").all_inner_texts()
    assert options and all(o.strip().startswith("kitchenware photo ") for o in options), options
    no_error_badges(page)
    assert not errors, errors
    page.close()
