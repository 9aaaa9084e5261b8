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


CHECKED_LESIONS = ("block5", "block4")  # one identity shortcut, one 1×1-conv shortcut (one /knockout a photo each)


def test_the_lesion_study_plots_what_knockout_answers(chromium, live_server, client, tmp_path):
    """A photo labelled in Teach joins the app's labelled photos; one click runs the study; the
    plotted points and the table's percentages at two removed branches are what `/knockout`
    answers on each of those photos (accuracy over those labelled with one of the model's classes,
    agreement over all). One width and scheme: the figure's theme is checked on the knockout
    figure above, and the study is the slow part."""
    from gradio_client import handle_file
    from PIL import Image

    from demo.services.knockout import app_photos, starter_photos
    from xception_core.io.labels import load_labels
    from xception_core.settings import Settings
    from xception_core.weights.presets import PRESETS

    mine = tmp_path / "my_cup.png"
    Image.new("RGB", (120, 90), (230, 230, 220)).save(mine)
    page, errors = open_app(chromium, live_server, width=1366, height=900)
    page.get_by_role("tab", name="Teach").click()
    page.locator("#teach-class input").fill("cup")
    page.locator("#teach-files input[type=file]").set_input_files([str(mine)])
    page.locator("#teach-files").get_by_text("my_cup").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Add photos to this class").click()
    page.get_by_text("Added 1 photo(s) to “cup”").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, "Knockouts")
    page.locator("#knockouts-lesion").click()
    page.locator("#knockouts-lesion-summary", has_text="Measured in").wait_for(timeout=240_000)
    page.locator("#knockouts-lesion-plot .js-plotly-plot").first.wait_for(timeout=30_000)
    page.locator("#knockouts-lesion-table", has_text="block13").wait_for(timeout=30_000)
    traces = page.evaluate("""() => document.querySelector('#knockouts-lesion-plot .js-plotly-plot').data
                              .map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))""")
    plotted = {t["name"]: dict(zip(t["x"], t["y"])) for t in traces}
    cells = [c.strip() for c in page.locator("#knockouts-lesion-table").inner_text().splitlines() if c.strip()]
    shown = {row[0]: row for row in (cells[i:i + 4] for i in range(4, len(cells), 4))}  # after the 4 headers

    settings = Settings.from_env()
    photos = app_photos("kitchenware", settings.cache_dir, starter_photos(settings)) + [(mine, "cup", "visitor")]
    classes = set(load_labels(PRESETS["kitchenware"].labels))
    scored = [label in classes for _, label, _ in photos]
    summary = page.locator("#knockouts-lesion-summary").inner_text()
    preset = sum(source == "preset" for *_, source in photos)
    assert (f"{len(photos)} photos: {preset} shipped with the weights, {len(photos) - preset - 1} from Teach's "
            "starter set, 1 of yours from Teach") in summary, summary
    assert f"the {sum(scored)} labelled with one of this model's classes" in summary, summary
    for block in CHECKED_LESIONS:
        answers = [client.predict(handle_file(str(path)), [{"kind": "skip_branch", "block": block}],
                                  api_name="/knockout") for path, _, _ in photos]
        top1 = [(next(iter(a["intact"])), next(iter(a["knocked"]))) for a in answers]
        accuracy = sum(k == label for (_, k), (_, label, _), s in zip(top1, photos, scored) if s) / sum(scored)
        agreement = sum(i == k for i, k in top1) / len(photos)
        assert plotted["top-1 accuracy"][block] == pytest.approx(accuracy, abs=1e-4), block
        assert plotted["agrees with the intact network"][block] == pytest.approx(agreement, abs=1e-4), block
        assert shown[block][2:] == [f"{accuracy:.0%}", f"{agreement:.0%}"], shown[block]
    no_error_badges(page)
    assert not errors, errors
    page.close()
