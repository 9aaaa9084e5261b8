"""The page as a teacher projects it for a whole lesson, in headless Chromium on the real app
(kitchenware weights), read as a person sees it: Explore's sub-tabs answer a photo once (no view
re-rendering after another's answer), the phone's answer in view after an example click, an
example unmarked once another photo is uploaded, chart text big enough for a projector, every map
with its colour scale, tables without sideways scrolling (as cards on a phone, every number on
the screen), the ladder's labels apart on a phone, Teach's try box naming the block it uses, its
photo map with one meaning per legend entry, a code line that fits a phone, and `/healthz`
described with an example."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from PIL import Image

from tests.demo.conftest import SCREENSHOTS, open_app
from tests.demo.test_first_visit_browser import open_subtab
from tests.demo.test_teach_browser import load_starter_set

pytestmark = pytest.mark.browser

MIN_TEXT_PX = 11  # every text in a chart at a desktop's width
SENTENCE = re.compile(r"this view took \d+ ms")

# Records each new text of the Activations status sentence ("… this view took N ms …"): one view
# rendered is one new sentence; Gradio's progress overlay ("processing | 0.3s") is not counted.
WATCH_STATUS = """() => { window.__views = []; const el = document.querySelector('#explore-cache-status');
  const seen = () => { const m = el.innerText.match(/[^\\n]*this view took \\d+ ms[^\\n]*/);
    const v = m ? m[0] : null; const c = window.__views; if (v && c[c.length - 1] !== v) c.push(v); };
  seen(); new MutationObserver(seen).observe(el, {subtree: true, childList: true, characterData: true}); }"""

# Every piece of text drawn in the charts under `selector`, with the size it is drawn at on the
# screen (the font size of its own element, or of the tspan that sets one, times the SVG's scale;
# a rotated label is as big as an upright one).
CHART_TEXT = """(selector) => [...document.querySelectorAll(selector)].flatMap(root =>
  [...root.querySelectorAll('svg text, svg tspan')].filter(t =>
    [...t.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()) && t.getBoundingClientRect().width > 0)
  .map(t => ({chart: root.id, text: t.textContent.trim().slice(0, 40),
              px: parseFloat(getComputedStyle(t).fontSize)
                  * (t.getScreenCTM() ? Math.hypot(t.getScreenCTM().a, t.getScreenCTM().b) : 1)})))"""


# The share of the tiles' pixels whose colour is on the colour bar's ramp (within 40 of one of 64
# colours sampled along the bar's gradient; 12×12 points a tile): a tile a reader can read off
# the bar. And the first tile's address (to see it replaced).
ON_THE_RAMP = """() => {
  const stops = [...document.querySelector('#explore-colour-bar .colour-bar span:nth-child(2)').style.background
    .matchAll(/rgb\\((\\d+), (\\d+), (\\d+)\\)/g)].map(m => [+m[1], +m[2], +m[3]]);
  const ramp = []; for (let i = 0; i < 64; i++) {
    const t = i / 63 * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
    ramp.push(stops[k].map((v, j) => v + (stops[k + 1][j] - v) * f)); }
  const imgs = [...document.querySelectorAll('#explore-gallery img')]; let on = 0, all = 0;
  for (const img of imgs) {
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
    for (let y = 0; y < 12; y++) for (let x = 0; x < 12; x++) {
      const px = Math.floor((x + 0.37) / 12 * c.width), py = Math.floor((y + 0.41) / 12 * c.height);
      const o = (py * c.width + px) * 4;
      const near = ramp.some(r => Math.hypot(r[0] - d[o], r[1] - d[o + 1], r[2] - d[o + 2]) < 40);
      on += near ? 1 : 0; all += 1; } }
  return {share: on / all, first: imgs[0].src, stops: stops.length}; }"""


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def explore(page, sub_tab: str) -> None:
    page.get_by_role("tab", name="Explore", exact=True).click()
    open_subtab(page, sub_tab)


def example_in_operation(page) -> None:
    """Inside one operation: the first example, answered number by number."""
    explore(page, "Inside one operation")
    thumb = page.locator("#op-examples .thumbnail-item").first
    thumb.wait_for(timeout=60_000)
    thumb.click()
    page.locator("#op-where").filter(has_text="output position").wait_for(timeout=120_000)


def gallery_loaded(page, count: int = 16) -> None:
    page.locator("#explore-gallery").scroll_into_view_if_needed()
    page.wait_for_function(
        "(n) => { const imgs = [...document.querySelectorAll('#explore-gallery img')];"
        " return imgs.length == n && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=count,
        timeout=60_000)


def small_chart_text(page, selector: str) -> list[dict]:
    found = page.evaluate(CHART_TEXT, selector)
    assert found, f"no chart text under {selector}"
    return [t for t in found if t["px"] < MIN_TEXT_PX - 0.05]


def test_activations_after_inside_one_operation_renders_once(chromium, live_server):
    """The issue's path: Inside one operation, an example, then Activations. Its view was drawn
    once when the photo was chosen; opening the sub-tab draws nothing more (it once re-rendered
    for the whole session, each answer of one sub-tab setting off the other)."""
    page, errors = open_app(chromium, live_server, 1366, 900)
    example_in_operation(page)
    open_subtab(page, "Activations")
    page.evaluate(WATCH_STATUS)
    gallery_loaded(page)
    page.wait_for_timeout(10_000)
    views = page.evaluate("window.__views")
    assert 1 <= len(views) <= 2, views  # the sentence there is, and at most one more
    gallery_loaded(page)  # the tiles are still there, not under a spinner
    assert page.locator("#explore-gallery .pending, #explore-histogram .pending").count() == 0
    # Another example there: one more view, and the tab settles again.
    page.locator("#explore-examples .thumbnail-item").nth(1).click()
    page.wait_for_function("(n) => window.__views.length > n", arg=len(views), timeout=60_000)
    page.wait_for_timeout(10_000)
    assert len(page.evaluate("window.__views")) - len(views) <= 2, page.evaluate("window.__views")
    shot(page, "lesson-activations-after-operation-1366-light")
    assert not errors, errors
    page.close()


def test_activations_from_classify_renders_once(chromium, live_server):
    """A Classify example, then Explore › Activations: the photo comes along, drawn once."""
    page, errors = open_app(chromium, live_server, 1366, 900)
    page.locator("#classify-examples .thumbnail-item").nth(2).click()
    page.get_by_test_id("label-output-value").wait_for(timeout=60_000)
    explore(page, "Activations")
    page.locator("#explore-cache-status").wait_for(state="attached", timeout=30_000)
    page.evaluate(WATCH_STATUS)
    gallery_loaded(page)
    page.wait_for_timeout(10_000)
    views = page.evaluate("window.__views")
    assert len(views) == 1, views
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_phone_shows_the_top_5_after_an_example_click(chromium, live_server, scheme):
    """390×844: the top 5 sit below the examples; after a click on one they are on the screen,
    all five rows, without the reader scrolling."""
    page, errors = open_app(chromium, live_server, 390, 844, color_scheme=scheme)
    page.locator("#classify-examples .thumbnail-item").nth(1).click()
    page.get_by_test_id("label-output-value").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => { const r = document.querySelector('#top5').getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight / 2; }", timeout=10_000)
    page.wait_for_timeout(600)  # the smooth scroll's last frames
    boxes = page.locator("#top5 .confidence-set").evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; })")
    assert len(boxes) == 5, boxes
    assert all(0 <= top and bottom <= 844 for top, bottom in boxes), boxes
    shot(page, f"lesson-classify-top5-390-{scheme}")
    assert not errors, errors
    page.close()


def test_an_upload_unmarks_the_example(chromium, live_server, tmp_path):
    """The example clicked is marked while it is the photo; an upload of one's own unmarks it."""
    photo = tmp_path / "mine.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo)
    page, errors = open_app(chromium, live_server, 1366, 900)
    page.locator("#classify-examples .thumbnail-item").first.click()
    page.get_by_test_id("label-output-value").wait_for(timeout=60_000)
    assert page.locator("#classify-examples .thumbnail-item.selected").count() == 1
    page.locator("#classify-image input[type=file]").set_input_files(str(photo))
    page.locator("#classify-info").filter(has_text="64×48 pixels").wait_for(timeout=60_000)
    assert page.locator("#classify-examples .thumbnail-item.selected").count() == 0
    shot(page, "lesson-classify-upload-1366-light")
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_chart_text_is_projector_sized_and_every_map_has_its_scale(chromium, live_server, scheme):
    """1366 px: no text in Explore's charts (At a glance, the pointwise bars and the cost of Inside
    one operation, the histogram) below 11 px; the operation's feature map and the Activations
    tiles each with a colour bar giving the values of its ends; the default Activations tiles
    drawn without the photo underneath (16 tiles in a pale wash looked alike)."""
    page, errors = open_app(chromium, live_server, 1366, 900, color_scheme=scheme)
    explore(page, "At a glance")
    page.locator("#explore-ladder .textpoint text").first.wait_for(timeout=60_000)
    page.locator("#explore-cost .main-svg").first.wait_for(timeout=30_000)
    assert small_chart_text(page, "#explore-block-view, #explore-ladder, #explore-cost") == []

    example_in_operation(page)
    page.locator("#op-pointwise .bartext").first.wait_for(timeout=30_000)
    page.locator("#op-macs .main-svg").first.wait_for(timeout=30_000)
    assert small_chart_text(page, "#op-pointwise, #op-macs") == []
    scale = page.locator("#op-map-scale .colour-bar")
    scale.wait_for(timeout=30_000)
    ends = scale.locator("span").all_inner_texts()
    assert len(ends) == 3 and all(re.fullmatch(r"−?-?[\d.e+-]+", e.strip()) for e in (ends[0], ends[2])), ends
    assert float(ends[0].replace("−", "-")) < float(ends[2].replace("−", "-"))
    assert "channel #" in page.locator("#op-map-scale").inner_text()
    page.locator("#op-map").scroll_into_view_if_needed()
    shot(page, f"lesson-operation-1366-{scheme}")

    open_subtab(page, "Activations")
    gallery_loaded(page)
    assert not page.locator("#explore-overlay input").is_checked()
    page.locator("#explore-colour-bar .colour-bar").wait_for(timeout=30_000)
    page.locator("#explore-histogram .main-svg").first.wait_for(timeout=30_000)
    assert small_chart_text(page, "#explore-histogram") == []
    # Legible by default: the tiles' colours are the colour bar's (the overlay's blend with the photo
    # takes most of them off it).
    page.locator("#explore-gallery").scroll_into_view_if_needed()
    plain = page.evaluate(ON_THE_RAMP)
    assert plain["stops"] >= 5, plain
    page.locator("#explore-overlay input").click()
    page.locator("#explore-cache-status").filter(has_text="Cache hit").wait_for(timeout=30_000)
    page.wait_for_function("(before) => { const i = document.querySelector('#explore-gallery img');"
                           " return i && i.complete && i.src !== before; }", arg=plain["first"], timeout=30_000)
    gallery_loaded(page)
    over = page.evaluate(ON_THE_RAMP)
    print(f"\n[{scheme}] tile pixels on the colour bar's ramp: {plain['share']:.2f} plain, "
          f"{over['share']:.2f} overlaid")
    assert plain["share"] > 2 * over["share"], (plain, over)
    page.locator("#explore-overlay input").click()
    page.locator("#explore-cache-status").filter(has_text="Cache hit").wait_for(timeout=30_000)
    gallery_loaded(page)
    page.locator("#explore-gallery").scroll_into_view_if_needed()
    shot(page, f"lesson-activations-1366-{scheme}")
    assert not errors, errors
    page.close()


def scrolls_sideways(page, selector: str) -> list:
    """Elements inside `selector` whose content is wider than their box, with a scroll bar for it."""
    return page.evaluate(
        """(sel) => [...document.querySelector(sel).querySelectorAll('*')].filter(e =>
          e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
          .map(e => [e.className.slice(0, 40), e.scrollWidth, e.clientWidth])""", selector)


# The desktop table's column names and its first row, as shown (Gradio's virtual table renders the
# rows in view; the first is one of them).
FIRST_ROW = """(sel) => [[...document.querySelectorAll(sel + ' thead th .header-content')].map(e => e.innerText.trim()),
  [...document.querySelectorAll(sel + ' [data-row="0"]')].map(e => e.innerText.trim())]"""

# A phone's cards under `sel`, each line as [label, value, both on the screen and apart, not cut]:
# drawn (non-zero boxes), inside the viewport's width and the card, label left of value, and no
# element whose text is wider than its box.
CARD_LINES = """(sel) => [...document.querySelectorAll(sel + ' .table-card')].map(card => {
  const c = card.getBoundingClientRect();
  return [...card.children].map(line => { const [dt, dd] = line.children;
    const a = dt.getBoundingClientRect(), b = dd.getBoundingClientRect();
    const shown = a.width > 0 && b.width > 0 && a.left >= c.left && b.right <= c.right + 0.5
      && c.right <= window.innerWidth && a.right <= b.left
      && [dt, dd].every(e => e.scrollWidth <= e.clientWidth + 1);
    return [dt.innerText.trim(), dd.innerText.trim(), shown]; }); })"""


def desktop_first_row(page, selector: str) -> dict:
    headers, row = page.evaluate(FIRST_ROW, selector)
    assert len(headers) == len(row) > 0, (headers, row)
    return dict(zip(headers, row))


def phone_cards_read_whole(page, selector: str, first_row: dict, rows: int) -> None:
    """The cards under `selector`: no sideways scroll in them, one a row, every column's value on
    the screen beside its name, the first card the desktop table's first row."""
    box = page.locator(selector)
    box.scroll_into_view_if_needed()
    widths = box.locator(".table-cards").evaluate(
        "e => [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right]")
    assert widths[0] <= widths[1] and widths[2] <= 390, widths
    assert scrolls_sideways(page, selector) == []
    cards = page.evaluate(CARD_LINES, selector)
    assert len(cards) == rows, len(cards)
    hidden = [line for card in cards for line in card if not line[2]]
    assert hidden == [], hidden[:5]
    assert {label: value for label, value, _ in cards[0]} == first_row


def test_tables_fit_a_desktop_and_the_ladder_labels_stay_apart_on_a_phone(chromium, live_server):
    page, errors = open_app(chromium, live_server, 1366, 900)
    explore(page, "At a glance")
    page.locator("#explore-table", has_text="total").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert scrolls_sideways(page, "#explore-table") == []
    assert not page.locator("#explore-table-cards").is_visible()  # the cards are the phone's
    blocks = desktop_first_row(page, "#explore-table")
    block_rows = int(page.locator("#explore-table [role=grid]").get_attribute("aria-rowcount")) - 1
    open_subtab(page, "Separable convolutions")
    page.locator("#explore-separable", has_text="block2_sepconv1").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert scrolls_sideways(page, "#explore-separable") == []
    headers = page.locator("#explore-separable thead th").count()
    assert headers == 13  # every column there, none dropped to make it fit
    separable = desktop_first_row(page, "#explore-separable")
    separable_rows = int(page.locator("#explore-separable [role=grid]").get_attribute("aria-rowcount")) - 1
    page.locator("#explore-separable").scroll_into_view_if_needed()
    shot(page, "lesson-separable-1366-light")
    page.close()

    for scheme in ("light", "dark"):
        page, more = open_app(chromium, live_server, 390, 844, color_scheme=scheme)
        errors += more
        explore(page, "At a glance")
        labels = page.locator("#explore-ladder .textpoint text")
        labels.first.wait_for(timeout=60_000)
        boxes = labels.evaluate_all("els => els.filter(e => e.textContent.trim()).map(e => {"
                                    " const r = e.getBoundingClientRect(); return [e.textContent, r.left, r.top,"
                                    " r.right, r.bottom]; })")
        assert [b[0] for b in boxes] == ["150", "72", "36", "18", "9", "5"]
        for a, b in zip(boxes, boxes[1:]):
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, (a, b)
        page.locator("#explore-ladder").scroll_into_view_if_needed()
        shot(page, f"lesson-ladder-390-{scheme}")

        # Both tables as cards: every number on the screen, none beyond its right edge.
        assert not page.locator("#explore-table").is_visible()
        page.locator("#explore-table-cards .table-card", has_text="total").wait_for(timeout=60_000)
        phone_cards_read_whole(page, "#explore-table-cards", blocks, block_rows)
        shot(page, f"lesson-glance-table-390-{scheme}")
        open_subtab(page, "Separable convolutions")
        page.locator("#explore-separable-cards .table-card").first.wait_for(timeout=60_000)
        assert not page.locator("#explore-separable").is_visible()
        phone_cards_read_whole(page, "#explore-separable-cards", separable, separable_rows)
        shot(page, f"lesson-separable-390-{scheme}")
        page.close()
    assert not errors, errors


@pytest.mark.parametrize("width,height,scheme", [(1366, 900, "light"), (390, 844, "dark")],
                         ids=["desktop-light", "phone-dark"])
def test_teach_names_the_block_it_tries_and_maps_photos_legibly(chromium, live_server, width, height, scheme):
    """After the starter set's training: beside the try box, the block its classifier uses (block
    14) and why, when another block was shown first; the photo map's legend with one entry a
    class and one for the misclassified, and thumbnails big enough to recognise; its text at
    least 11 px on a desktop; the code line of the downloads on the screen."""
    page, errors = open_app(chromium, live_server, width, height, color_scheme=scheme)
    page.get_by_role("tab", name="Teach", exact=True).click()
    assert "Train first" in page.locator("#teach-try-note").inner_text()
    load_starter_set(page)
    page.get_by_role("button", name="Train", exact=True).click()
    page.locator("#teach-summary").get_by_text("Your classes separate best on").wait_for(timeout=120_000)
    first = re.search(r"separate best on block (\d+)", page.locator("#teach-summary").inner_text()).group(1)
    note = " ".join(page.locator("#teach-try-note").inner_text().split())
    assert note.startswith("This classifier is block 14's"), note
    if first != "14":
        assert f"not block {first}'s shown first above" in note and "Why:" in note

    chart = page.locator("#teach-map .js-plotly-plot")
    chart.wait_for(timeout=30_000)
    legend = chart.locator("g.legend g.traces").evaluate_all("els => els.map(e => e.textContent.trim())")
    assert sorted(legend[:-1]) == ["cup", "cutlery", "not kitchenware", "plate"], legend  # one entry a class
    assert legend[-1] == "misclassified (cross-validated)", legend  # and one for every misclassified photo
    ring = chart.locator("g.legend g.traces").last.locator("path.scatterpts")  # its marker is drawn, in ink
    stroke = ring.evaluate("e => getComputedStyle(e).stroke")
    assert ring.count() == 1 and stroke not in ("", "none", "rgba(0, 0, 0, 0)"), stroke
    sides = chart.locator("svg image").evaluate_all(
        "els => els.map(e => Math.min(e.getBoundingClientRect().width, e.getBoundingClientRect().height))")
    assert len(sides) == 14 and min(sides) >= (40 if width > 700 else 24), sides
    if width > 700:
        assert small_chart_text(page, "#teach-map, #teach-accuracy, #teach-confusion") == []
    code = page.locator("code", has_text="xception_taught.keras").first
    code.scroll_into_view_if_needed()
    right = code.evaluate("e => Math.max(...[...e.getClientRects()].map(r => r.right))")
    assert right <= width, right
    page.locator("#teach-map").scroll_into_view_if_needed()
    shot(page, f"lesson-teach-map-{width}-{scheme}")
    page.locator("#teach-try-note").scroll_into_view_if_needed()
    shot(page, f"lesson-teach-try-{width}-{scheme}")
    assert not errors, errors
    page.close()


def test_healthz_is_described_with_its_fields_and_an_example(live_server):
    with urllib.request.urlopen(live_server + "/openapi.json", timeout=10) as r:
        spec = json.load(r)
    answer = spec["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    schema = spec["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]]
    assert set(schema["properties"]) == {"ready", "page", "status", "weights", "replicas"}
    assert schema["examples"][0]["weights"] == ["kitchenware"]
    with urllib.request.urlopen(live_server + "/healthz", timeout=10) as r:
        health = json.load(r)
    assert set(health) == {"ready", "page", "status", "weights"} and health["ready"] is True  # no "replicas": null
    assert health["page"] is True
