"""Section 2: the explorer's all-blocks pass against the app's forward, the cached view, and warm-up."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench.common import _say, interleaved, load, ratio, summarize


def bench_activations(args: argparse.Namespace, keep: dict[str, Any]) -> dict[str, Any]:
    """Section 2: the explorer's all-blocks pass (on the app's backend, and on TF, its fallback)
    vs the plain forward; a first view (pass + one block's statistics); the cache hit; and what
    the first pass of a fresh explorer costs with and without its warm-up."""
    loaded, x, ours_tf, app = keep["loaded"], keep["x"], keep["ours_tf"], keep["app"]
    section: dict[str, Any] = {"input_size": int(x.shape[1]), "load_before": load()}
    try:
        from xception_core.runtime.activations import ActivationExplorer

        image = x[0]
        # First use of a fresh explorer: building the ORT session (or tracing) + the pass.
        cold = ActivationExplorer(max_entries=2, backend=app.backend)
        start = time.perf_counter()
        cold.compute(loaded, image, weights_key="bench")
        first_unwarmed_s = time.perf_counter() - start
        warmed = ActivationExplorer(max_entries=2, backend=app.backend)
        start = time.perf_counter()
        warmed.warm_up(loaded)
        warm_up_s = time.perf_counter() - start
        start = time.perf_counter()
        warmed.compute(loaded, image, weights_key="bench")
        first_warmed_s = time.perf_counter() - start

        explorers = {"onnx": ActivationExplorer(max_entries=4, backend="onnx"),
                     "tf": ActivationExplorer(max_entries=4, backend="tf")}
        passes: dict[str, list[float]] = {k: [] for k in explorers}

        def miss(kind: str) -> Callable[[], None]:
            def run() -> None:
                explorers[kind].clear()
                record, _ = explorers[kind].compute(loaded, image, weights_key="bench")
                passes[kind].append(record.forward_seconds)
            return run

        def first_view() -> None:  # what a page's first look at a block costs: pass + its stats + tiles
            explorers["onnx"].clear()
            record, _ = explorers["onnx"].compute(loaded, image, weights_key="bench")
            record.stats["block4"]
            record.top_channels("block4", 16)

        fns = {"explorer_onnx": miss("onnx"), "explorer_tf": miss("tf"), "explorer_first_view": first_view,
               "plain_tf": lambda: ours_tf.forward(x), "app_forward": lambda: app.forward(x)}
        backends = {k: e.backend_for(loaded) for k, e in explorers.items()}
        _say(f"activations: {args.repeats} interleaved runs (explorer backends {backends})")
        times = interleaved(fns, args.repeats)
        explorers["onnx"].compute(loaded, image, weights_key="bench")
        hits = interleaved({"cached_view": lambda: explorers["onnx"].compute(loaded, image, weights_key="bench")},
                           max(args.repeats, 10))["cached_view"]
        stats = {k: summarize(v) for k, v in times.items()}
        for kind in explorers:
            stats[f"pass_{kind}"] = summarize(passes[kind][-args.repeats:])
        stats["cached_view"] = summarize(hits)
        fwd, plain = stats["app_forward"]["median_ms"], stats["plain_tf"]["median_ms"]
        section.update({
            "backends": backends,
            "paths": stats,
            "ratios": {
                "explorer_vs_app_forward": ratio(stats["explorer_onnx"]["median_ms"], fwd),
                "explorer_pass_vs_app_forward": ratio(stats["pass_onnx"]["median_ms"], fwd),
                "explorer_first_view_vs_app_forward": ratio(stats["explorer_first_view"]["median_ms"], fwd),
                "explorer_tf_vs_app_forward": ratio(stats["explorer_tf"]["median_ms"], fwd),
                "explorer_tf_vs_plain_tf": ratio(stats["explorer_tf"]["median_ms"], plain),
            },
            "first_use_ms": {"unwarmed": round(first_unwarmed_s * 1000, 1), "warm_up": round(warm_up_s * 1000, 1),
                             "after_warm_up": round(first_warmed_s * 1000, 1)},
            "forward_calls": explorers["onnx"].forward_calls,
        })
    except Exception as exc:  # noqa: BLE001 - the explorer is optional for this harness
        section.update({"error": f"{type(exc).__name__}: {exc}", "paths": {}, "ratios": {}})
    section["load_after"] = load()
    return section
