"""Section 6 (issue 18): serving without TensorFlow, before and after side by side in one run.

Two checkouts run the same measurements, interleaved round by round so that the load of a shared
machine falls on both alike: `--before DIR` (a checkout of the earlier version) and this one. For each:
- a warm restart (every cache already filled by an untimed first start: weights extracted, and in
  this checkout the translation cached) of `python app.py` as the README starts it (no
  XCEPTION_WEIGHTS: ImageNet tried first, then kitchenware; offline here, so ImageNet fails) to
  the first successful `POST /api/v1/classify`;
- the first 200 of `/` (the page: since issue 25 the plain HTTP API answers before it is built);
- then a Grad-CAM, an `/activations` and an `/operation` in each wiring (paper, then article;
  Gradio's raw API), and the process's RSS (VmRSS) and peak (VmHWM), and whether /proc/PID/maps
  holds a TensorFlow library; the `/operation` click times, first and warm (other photos);
- classify p50 over the plain HTTP API, and `/activations` with 8 maps (cache misses: other
  photos) p50 and its ratio to classify;
- the same app serving two weight sets (an official-layout ImageNet file at 299 px and
  kitchenware, `bench.live`): RSS after a classify, a Grad-CAM and an `/activations` on each;
- the model replica's load in a process of its own (what `scale.deployment.XceptionModel.__init__`
  does: the app's store, wait for the default weights, one answer; `ray` and `scale.deployment`
  imported, no Serve scheduling): seconds from process start to the first answer, and RSS.

Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.appserver import app_env, free_port, stop
from bench.common import REPO, _say, load
from bench.live import api_classify, raw_gradio_call, wait_first_classify, write_imagenet_layout_file
from demo.store import weights_key

REPLICA = """
import os, sys, time, resource
import numpy as np
import scale.deployment  # noqa: F401 - what a replica process imports
from demo.store import ModelStore
from xception_core.settings import Settings
store = ModelStore(Settings.from_env()).start()
served = store.get(None, timeout=900)
served.predict(np.zeros((served.input_size, served.input_size, 3), np.float32))
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
maps = open("/proc/self/maps").read()
print("LEAN", time.time(), int(status["VmRSS"].split()[0]) // 1024, "tensorflow" in maps, flush=True)
"""


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}


def _tf_mapped(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def _photos() -> list[Path]:
    return sorted((REPO / "assets" / "examples").glob("*.jpg"))


# Inside one operation's click: block, layer, row, col, channel (then the wiring and the top count).
OPERATION = ("block5", "block5_sepconv2", 2, 3, 7)

# The README's start: `python app.py` with no XCEPTION_WEIGHTS (the presets in their automatic order).
DEFAULT: list[str | None] = [None]


def _serve(cwd: Path, port: int, weights: list[str | None], log: Path) -> subprocess.Popen:
    """`python app.py` (one weight set; `DEFAULT`: no XCEPTION_WEIGHTS) or `python -m bench.live`
    (two) in checkout `cwd`."""
    cmd = [sys.executable, "app.py"] if len(weights) == 1 else [sys.executable, "-m", "bench.live", str(port), *weights]
    env = app_env(port, weights[0] or "")
    if weights[0] is None:
        del env["XCEPTION_WEIGHTS"]
    out = open(log, "ab")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _session(cwd: Path, weights: list[str | None], log: Path, timeout: float, *, timed: bool) -> dict[str, Any]:
    """One start of the app in `cwd`: first classify, the page, then Grad-CAM and activations on
    every weight set (one weight set: `/operation` in both wirings too), memory, and (timed, one
    weight set) classify and 8-map activations p50."""
    import httpx

    port = free_port()
    photos = _photos()
    data = photos[0].read_bytes()
    t0 = time.perf_counter()
    proc = _serve(cwd, port, weights, log)
    url = f"http://127.0.0.1:{port}/"
    try:
        first = wait_first_classify(url, data, t0, t0 + timeout, proc)
        out: dict[str, Any] = {"first_classify_s": first["first_classify_s"]}
        with httpx.Client(timeout=300) as http:
            while http.get(url).status_code != 200:  # 503 while the page is built
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError("the page never served")
                time.sleep(0.05)
            out["page_s"] = round(time.perf_counter() - t0, 2)
            for source in weights:
                # A file's weights are known by a key from its stem since issue 21, and by their path before;
                # the default start's default weights by no key at all.
                names = list(dict.fromkeys([weights_key(source), source])) if source else [None]
                while True:  # the second weight set may still be loading
                    for key in names:
                        r = http.post(url + "api/v1/classify", content=data, params={"weights": key} if key else {},
                                      headers={"Content-Type": "image/jpeg"})
                        if r.status_code == 200:
                            break
                    if r.status_code == 200:
                        break
                    if time.perf_counter() - t0 > timeout:
                        raise RuntimeError(f"weights {key} not served: {r.status_code} {r.text[:200]}")
                    time.sleep(0.2)
                raw_gradio_call(http, url, "gradcam", photos[0], "", key or r.json()["weights"])
            raw_gradio_call(http, url, "activations", photos[0], "block4", 8)
            if len(weights) == 1:  # the four calls: Inside one operation in both wirings too
                for variant in ("paper", "article"):
                    clicks = [raw_gradio_call(http, url, "operation", p, *OPERATION, variant, 4)["seconds"]
                              for p in photos[:4]]
                    out[f"operation_{variant}_first_s"] = round(clicks[0], 3)
                    out[f"operation_{variant}_warm_s"] = round(statistics.median(clicks[1:]), 3)
            out.update(_status(proc.pid), tf_mapped=_tf_mapped(proc.pid))
            if timed:
                classify = [api_classify(http, url, data)[0] for _ in range(15)]
                # Both over Gradio's API (upload, queue, event stream), alternated: the ratio the issue
                # names is the pictures' cost over the same route, not the route's cost over REST.
                gradio_classify, maps = [], []
                for p in photos[1:]:
                    gradio_classify.append(raw_gradio_call(http, url, "classify", p, "")["seconds"])
                    maps.append(raw_gradio_call(http, url, "activations", p, "block4", 8)["seconds"])
                out["classify_p50_ms"] = round(statistics.median(classify) * 1000, 1)
                out["gradio_classify_p50_ms"] = round(statistics.median(gradio_classify) * 1000, 1)
                out["activations8_p50_ms"] = round(statistics.median(maps) * 1000, 1)
                out["activations8_vs_classify"] = round(out["activations8_p50_ms"] / out["gradio_classify_p50_ms"], 2)
                out["activations8_vs_rest_classify"] = round(out["activations8_p50_ms"] / out["classify_p50_ms"], 2)
        return out
    finally:
        stop(proc)


def _replica(cwd: Path, log: Path, timeout: float) -> dict[str, Any]:
    """The replica's load in a process of its own: seconds to its first answer, RSS then."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", REPLICA], cwd=cwd, env=app_env(0, "kitchenware"),
                         capture_output=True, text=True, timeout=timeout)
    with log.open("a") as f:
        f.write(out.stdout[-2000:] + out.stderr[-4000:])
    line = next((x for x in out.stdout.splitlines() if x.startswith("LEAN ")), None)
    if line is None:
        return {"error": f"exit {out.returncode}"}
    _, done, rss, tf = line.split()
    return {"first_answer_s": round(float(done) - t0, 2), "rss_mb": int(rss), "tf_mapped": tf == "True"}


def bench_lean(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Section 6: before (`args.before`) and after (this checkout), interleaved; this checkout
    alone without `--before`."""
    before, after = (Path(args.before) if args.before is not None else None), REPO
    if before is not None and not (before / "app.py").is_file():
        return {"skipped": True, "reason": f"no checkout at {before}"}
    out_dir = out_dir.resolve()  # the 'before' app runs in its own checkout: every path absolute
    log = out_dir / "lean.log"
    log.write_text("")
    two = [str(write_imagenet_layout_file(out_dir / "xception_weights_tf_dim_ordering_tf_kernels.h5")), "kitchenware"]
    rounds = 1 if args.quick else 2
    section: dict[str, Any] = {"before": str(before), "after": str(after), "load_before": load(), "rounds": rounds,
                               "note": "the machine's CPUs are shared: before and after alternate round by round"}
    sides = {"before": before, "after": after} if before is not None else {"after": after}
    for name, cwd in sides.items():  # untimed first starts: every cache filled (translations made here)
        _say(f"lean: filling caches ({name})")
        _session(cwd, DEFAULT, log, args.start_timeout, timed=False)
        _session(cwd, two, log, args.start_timeout, timed=False)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"one": [], "two": [], "replica": []} for n in sides}
    for i in range(rounds):
        for name, cwd in sides.items():
            _say(f"lean: round {i + 1}/{rounds} ({name})")
            runs[name]["one"].append(_session(cwd, DEFAULT, log, args.start_timeout, timed=True))
            runs[name]["two"].append(_session(cwd, two, log, args.start_timeout, timed=False))
            runs[name]["replica"].append(_replica(cwd, log, args.start_timeout))
    section["runs"] = runs
    section["load_after"] = load()

    def med(name: str, kind: str, key: str) -> float | None:
        values = [r[key] for r in runs.get(name, {}).get(kind, []) if r.get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    def any_tf(name: str, kinds: tuple[str, ...] = ("one", "two", "replica")) -> str:
        if name not in runs:
            return "-"
        return "yes" if any(r.get("tf_mapped") for kind in kinds for r in runs[name][kind]) else "no"

    rows = []
    for what, kind, key, unit in (("warm restart, README's start (no XCEPTION_WEIGHTS) → first POST /api/v1/classify",
                                   "one", "first_classify_s", "s"),
                                  ("warm restart, README's start → the page served (`/` 200)", "one", "page_s", "s"),
                                  ("RSS after classify + Grad-CAM + activations + /operation in both wirings, "
                                   "README's start", "one", "VmRSS", "MB"),
                                  ("first /operation click (paper) after the start", "one", "operation_paper_first_s", "s"),
                                  ("warm /operation click (paper), median of 3 other photos", "one",
                                   "operation_paper_warm_s", "s"),
                                  ("first /operation click (article)", "one", "operation_article_first_s", "s"),
                                  ("warm /operation click (article)", "one", "operation_article_warm_s", "s"),
                                  ("RSS after classify + Grad-CAM + activations, 2 weight sets", "two", "VmRSS", "MB"),
                                  ("peak RSS (VmHWM), README's start", "one", "VmHWM", "MB"),
                                  ("classify p50 over REST", "one", "classify_p50_ms", "ms"),
                                  ("/activations 8 maps p50 (cache misses)", "one", "activations8_p50_ms", "ms"),
                                  ("classify p50 over Gradio's API", "one", "gradio_classify_p50_ms", "ms"),
                                  ("/activations 8 maps / classify, both over Gradio's API", "one",
                                   "activations8_vs_classify", "×"),
                                  ("/activations 8 maps / classify over REST", "one", "activations8_vs_rest_classify", "×"),
                                  ("replica: process start → first answer", "replica", "first_answer_s", "s"),
                                  ("replica: RSS after its first answer", "replica", "rss_mb", "MB")):
        b, a = med("before", kind, key), med("after", kind, key)
        rows.append({"what": what, "before": f"{b} {unit}", "after": f"{a} {unit}", "note": f"median of {rounds}"})
    rows.append({"what": "TensorFlow library in /proc/PID/maps, README's start", "before": any_tf("before", ("one",)),
                 "after": any_tf("after", ("one",)), "note": "after classify, Grad-CAM and activations"})
    rows.append({"what": "TensorFlow library in /proc/PID/maps", "before": any_tf("before"), "after": any_tf("after"),
                 "note": "any process of the side"})
    section["rows"] = rows
    return section
