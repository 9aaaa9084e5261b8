"""Section `compare`: Xception and Inception V3 side by side, as the Compare view runs them.

In a fresh process of its own (`python -m bench.compare`, so its memory is the app's, not the
benchmark's): the store serving `--weights` from its cached translation, then Inception V3
prepared as the view prepares it (`demo.store.compared`: ImageNet weights if they can be had, else
seeded random ones; its translation cached), then `CompareService.timings` on the benchmark photo
(both forwards alternated, batch 1, ONNX Runtime fp32). Figures: both medians, the ratio, the
preparation's seconds, and RSS (VmRSS and the peak VmHWM) with Xception alone and with both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import REPO, _say, example_path, summarize
from bench.procstats import proc_memory


def _rss() -> dict[str, float | None]:
    return proc_memory(os.getpid())


def child(weights: str, rounds: int) -> dict[str, Any]:
    """The measurement itself (run in the child process)."""
    from PIL import Image

    from demo.services.compare import CompareService
    from demo.store import ComparedModels, ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    out: dict[str, Any] = {"rss_start": _rss()}
    store = ModelStore(settings, [weights]).start()
    served = store.get(timeout=900)
    out["xception"] = {"weights": served.key, "input_size": served.input_size}
    out["rss_xception"] = _rss()
    start = time.monotonic()
    compared = ComparedModels(settings)
    model = compared.get(timeout=1800)
    out["inception_v3"] = {"pretrained": model.pretrained, "failure": model.failure and str(model.failure),
                           "translated_now": model.translated_now, "prepare_s": round(time.monotonic() - start, 1),
                           "input_size": model.model.input_size}
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    out["rss_both"] = _rss()
    with Image.open(example_path()) as image:
        photo = image.convert("RGB")
    timings = CompareService(store, compared).timings(photo, rounds, wait_s=0)
    out["timings"] = timings.to_dict()
    out["xception_forward"] = summarize([t / 1000 for t in timings.xception_ms])
    out["inception_v3_forward"] = summarize([t / 1000 for t in timings.inception_ms])
    out["rss_after_timings"] = _rss()
    return out


def bench_compare(args) -> dict[str, Any]:
    """Runs `child` in a fresh interpreter and returns its figures (or the error it ended with)."""
    rounds = min(20, max(3, args.repeats))
    _say(f"compare: Xception ({args.weights}) and Inception V3 in a fresh process, {rounds} rounds")
    cmd = [sys.executable, "-m", "bench.compare", "--weights", args.weights, "--rounds", str(rounds)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"], "returncode": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(section: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The section's rows of the benchmark's table."""
    if not section.get("timings"):
        return [("compare", "error" if section.get("error") else "skipped", str(section.get("error", ""))[:60], "")]
    x, i = section["xception_forward"], section["inception_v3_forward"]
    sizes, inc = section["timings"]["input_sizes"], section["inception_v3"]
    weights = "ImageNet" if inc["pretrained"] else "seeded random"
    mb = lambda r: f"{r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f})"  # noqa: E731
    return [
        (f"compare b1, alternated: Xception {sizes['xception']}px | Inception V3 {sizes['inception_v3']}px",
         f"{x['median_ms']:.1f} ms | {i['median_ms']:.1f} ms",
         f"Inception/Xception ×{section['timings']['inception_v3_over_xception']}", f"{x['runs']} rounds"),
        ("compare: Inception V3 prepared", f"{inc['prepare_s']} s",
         f"{weights} weights, {'translated now' if inc['translated_now'] else 'cached translation'}",
         f"TensorFlow imported: {section['tensorflow_imported']}"),
        ("compare: RSS Xception alone | both loaded", f"{mb(section['rss_xception'])} | {mb(section['rss_both'])}",
         f"after timing {mb(section['rss_after_timings'])}", ""),
    ]


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.compare")
    p.add_argument("--weights", default="kitchenware")
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args()
    print(json.dumps(child(a.weights, a.rounds)), flush=True)


if __name__ == "__main__":
    main()
