"""Click to result in Chromium: what a person waits for on the page.

Debian's Chromium driven by Playwright (`executable_path=/usr/bin/chromium`), desktop 1366×900.
The clock is the page's own: a capturing listener stamps the click (or Enter) as the browser
dispatches it, and a MutationObserver stamps the moment the result's element changes (the
Grad-CAM image's or the first gallery tile's `src`, which every new result replaces). So the
figure is browser event → result in the DOM, without Playwright's round trips.

Measured: classify (a click on an example photo, two alternated, so every result differs), Grad-CAM of another
class (the radio of the 2nd and 3rd class, alternated), the activations of another block (a
cache hit: one pass computed all blocks), and the activations of a new image (a pass).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

_ARM = """([selector, kinds]) => {
  const current = () => { const el = document.querySelector(selector); return el ? el.getAttribute('src') : null; };
  const before = current();
  window.__t0 = null; window.__t1 = null;
  const stamp = (e) => {
    const wanted = kinds.includes(e.type) && (e.type !== 'keydown' || e.key === 'Enter');
    if (window.__t0 === null && wanted) window.__t0 = performance.now();
  };
  document.addEventListener('click', stamp, true);
  document.addEventListener('keydown', stamp, true);
  const obs = new MutationObserver(() => {
    const now = current();
    if (window.__t0 !== null && now && now !== before) { window.__t1 = performance.now(); obs.disconnect(); }
  });
  obs.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def _measure(page, selector: str, action, kinds: tuple[str, ...] = ("click",), timeout_ms: int = 60_000) -> float:
    """Milliseconds from the action's click (or Enter key, `kinds`) to `selector`'s `src` changing."""
    page.evaluate(_ARM, [selector, list(kinds)])
    action()
    page.wait_for_function("() => window.__t1 !== null", timeout=timeout_ms)
    return float(page.evaluate("() => window.__t1 - window.__t0"))


def _median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 1) if values else None


def click_to_result(url: str, photos: list[Path], repeats: int = 5) -> dict[str, Any]:
    """Opens the app in Chromium and times the three interactions `repeats` times each.

    Args:
        url: The app's base URL (trailing slash).
        photos: At least two photos to alternate.
    """
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"browser": "Debian Chromium (Playwright), 1366×900"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            t = time.perf_counter()
            page.goto(url)
            page.locator("#gradcam").wait_for(timeout=60_000)
            out["page_load_ms"] = round((time.perf_counter() - t) * 1000, 1)

            # ---- classify: a click on an example photo (alternated, so every result differs; an
            # example runs at once, as an upload does) → the Grad-CAM overlay of the new result
            examples = page.locator("#classify-examples .thumbnail-item")
            examples.first.wait_for(timeout=60_000)
            times: list[float] = []
            for i in range(repeats + 1):
                ms = _measure(page, "#gradcam img", examples.nth(i % 2).click)
                if i:  # the first is a warm-up of the page's own code paths
                    times.append(ms)
            out["classify_ms"] = times

            # ---- Grad-CAM of another class (the radios of the current top 5)
            radios = page.get_by_role("radio")
            times = []
            for i in range(repeats):
                times.append(_measure(page, "#gradcam img", radios.nth(1 + i % 2).click))
            out["gradcam_other_class_ms"] = times

            # ---- Explore: activations of a new image, then of other blocks
            page.get_by_role("tab", name="Explore").click()
            page.get_by_role("tab", name="Activations", exact=True).click()
            explore_upload = page.locator("#explore-image input[type=file]")
            explore_upload.wait_for(state="attached", timeout=30_000)
            gallery = "#explore-gallery img"
            new_image: list[float] = []
            blocks: list[float] = []
            block_input = page.locator("#explore-block input")
            for i in range(repeats + 1):
                # A new image: timed from the change event Gradio fires once the upload is done is
                # not observable from the page, so this is upload + pass + render, from the upload.
                page.evaluate(_ARM, [gallery, []])
                page.evaluate("() => { window.__t0 = performance.now(); }")
                explore_upload.set_input_files(str(photos[(i + 1) % len(photos)]))
                page.wait_for_function("() => window.__t1 !== null", timeout=60_000)
                ms = float(page.evaluate("() => window.__t1 - window.__t0"))
                if i:
                    new_image.append(ms)
                name = f"block{2 + (3 * i) % 12}"

                def pick(name: str = name) -> None:
                    block_input.click()
                    block_input.fill(name)
                    block_input.press("Enter")

                blocks.append(_measure(page, gallery, pick, kinds=("keydown",)))
            out["activations_new_image_ms"] = new_image
            out["activations_other_block_ms"] = blocks[1:]
        finally:
            browser.close()
    for key in ("classify_ms", "gradcam_other_class_ms", "activations_new_image_ms", "activations_other_block_ms"):
        out[key.replace("_ms", "_median_ms")] = _median(out.get(key, []))
    return out
