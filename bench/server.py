"""Sections 3 and 4: `python app.py` as a subprocess (cold start, latency over the plain HTTP API,
gradio_client and Gradio's raw API, click to result, throughput, peak RSS), and the app serving two
weight sets."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.appserver import app_env, free_port, stop
from bench.browser import click_to_result
from bench.common import REPO, _say, example_path, interleaved, load, ratio, summarize
from bench.live import (
    activations_first_and_warm,
    api_classify,
    raw_gradio_call,
    wait_first_classify,
    write_imagenet_layout_file,
)
from bench.procstats import CpuMeter, cpu_seconds, proc_memory


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except Exception:  # noqa: BLE001 - not up yet
        return None


def raw_classify(http, url: str, image: Path) -> dict[str, float]:
    """One classify over Gradio's plain HTTP API with a persistent connection: what the protocol
    costs without gradio_client's 50 ms polling."""
    r = raw_gradio_call(http, url, "classify", image, None)
    return {"total": r["seconds"], "upload": r["upload"], "call": r["call"]}


def throughput(url: str, image: Path, clients: int, seconds: float, pid: int) -> dict[str, Any]:
    """`clients` gradio_client clients, each classifying in a loop for `seconds`."""
    from gradio_client import Client, handle_file

    pool = [Client(url, verbose=False) for _ in range(clients)]
    for c in pool:
        c.predict(handle_file(str(image)), api_name="/classify")
    barrier = threading.Barrier(clients + 1)
    done: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_box: dict[str, float] = {}

    def worker(i: int) -> None:
        barrier.wait()
        end = start_box["t"] + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                pool[i].predict(handle_file(str(image)), api_name="/classify")
            except Exception as exc:  # noqa: BLE001 - counted, not fatal
                errors.append(str(exc))
                continue
            done[i].append((time.perf_counter(), time.perf_counter() - t))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    meter = CpuMeter(pid)
    start_box["t"] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    finished = [end for d in done for end, _ in d]
    latencies = [lat for d in done for _, lat in d]
    cpu = meter.per_request(len(latencies))
    wall = (max(finished) - start_box["t"]) if finished else float("nan")
    for c in pool:
        with contextlib.suppress(Exception):
            c.close()
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 2) if finished else None,
            "latency": summarize(latencies), "cpu": cpu}


def bench_server(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Section 3: the real app as a subprocess."""
    import httpx
    from gradio_client import Client, handle_file

    from xception_core.inputs.images import load_image
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.model import load_model
    from xception_core.runtime.classifier import Classifier

    image = example_path()
    # The bare forward of the served model, in this process, before the server exists.
    served = load_model(args.weights)
    served_clf = Classifier(served, backend=args.app_env.get("XCEPTION_BACKEND") or None)
    size = served_clf.input_size
    xs = preprocess(load_image(image), size)[None]
    _say(f"server: bare forward of the served model ({args.weights}, {size}×{size}, {served_clf.backend})")
    bare = interleaved({"forward": lambda: served_clf.forward(xs),
                        "preprocess": lambda: preprocess(load_image(image), size)}, args.repeats)
    bare_stats = {k: summarize(v) for k, v in bare.items()}
    backend = served_clf.backend

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = app_env(port, args.weights, **args.app_env)
    section: dict[str, Any] = {"weights": args.weights, "input_size": size, "backend": backend,
                               "app_env": args.app_env, "bare_forward": bare_stats["forward"],
                               "preprocess": bare_stats["preprocess"], "load_before": load()}
    log_path = out_dir / "server.log"
    _say(f"server: starting python app.py on port {port} (log {log_path})")
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # ---- cold start: process start → first successful classify (weights already cached),
            # over the plain HTTP API (no client set-up), then through gradio_client as before
            data = image.read_bytes()
            cold_api = wait_first_classify(url, data, t0, t0 + args.start_timeout, proc)
            cpu_at_first = cpu_seconds(proc.pid)
            memory_at_first = proc_memory(proc.pid)
            client, result = None, None
            while result is None:
                if time.perf_counter() > t0 + args.start_timeout:
                    raise TimeoutError(f"no gradio_client classify within {args.start_timeout} s; see {log_path}")
                try:
                    client = client or Client(url, verbose=False)
                    result = client.predict(handle_file(str(image)), api_name="/classify")
                except Exception:  # noqa: BLE001 - not ready yet
                    time.sleep(0.1)
            cold = time.perf_counter() - t0
            section["cold_start"] = {**cold_api, "first_classify_gradio_client_s": round(cold, 2),
                                     "server_cpu_s_at_first_classify": round(cpu_at_first, 2),
                                     "gradio_client_result": result, "memory_after_first_classify": memory_at_first}
            _say(f"server: first classify {cold_api['first_classify_s']:.1f} s (HTTP API), {cold:.1f} s "
                 f"(gradio_client); {args.requests} sequential classifies")

            # ---- the explorer's /activations of a server that has not run it: first vs warm misses
            section["activations_http"] = activations_first_and_warm(url, activation_photos())

            # ---- end-to-end classify through gradio_client, and over the raw HTTP API
            for _ in range(2):
                client.predict(handle_file(str(image)), api_name="/classify")
            e2e = []
            meter = CpuMeter(proc.pid)
            for _ in range(args.requests):
                t = time.perf_counter()
                client.predict(handle_file(str(image)), api_name="/classify")
                e2e.append(time.perf_counter() - t)
            e2e_cpu = meter.per_request(len(e2e))
            with httpx.Client(timeout=60) as http:
                raw_classify(http, url, image)
                meter = CpuMeter(proc.pid)
                raw = [raw_classify(http, url, image) for _ in range(args.requests)]
                raw_cpu = meter.per_request(len(raw))
                for _ in range(2):
                    api_classify(http, url, data)
                meter = CpuMeter(proc.pid)
                plain = [api_classify(http, url, data) for _ in range(args.requests)]
                plain_cpu = meter.per_request(len(plain))
            plain_stats = summarize([t for t, _ in plain])
            plain_server = summarize([answer["server_ms"] / 1000 for _, answer in plain])
            fwd = bare_stats["forward"]["median_ms"]
            e2e_stats = summarize(e2e)
            raw_stats = {k: summarize([r[k] for r in raw]) for k in ("total", "upload", "call")}
            section["classify_http"] = {
                "plain_http_api": plain_stats,
                "plain_http_api_server_ms": plain_server,
                "plain_p50_vs_bare_forward": ratio(plain_stats["median_ms"], fwd),
                "gradio_client": e2e_stats,
                "raw_http_api": raw_stats,
                "cpu": {"gradio_client": e2e_cpu, "raw_http_api": raw_cpu, "plain_http_api": plain_cpu},
                "p50_vs_bare_forward": ratio(e2e_stats["median_ms"], fwd),
                "p95_vs_bare_forward": ratio(e2e_stats["p95_ms"], fwd),
                "raw_p50_vs_bare_forward": ratio(raw_stats["total"]["median_ms"], fwd),
                "overhead_ms": {
                    "gradio_client_minus_raw_api": round(e2e_stats["median_ms"] - raw_stats["total"]["median_ms"], 1),
                    "raw_api_minus_forward_and_preprocess": round(
                        raw_stats["total"]["median_ms"] - fwd - bare_stats["preprocess"]["median_ms"], 1),
                },
            }

            # ---- click to result in Chromium
            if args.browser:
                _say("server: click to result in Chromium")
                try:
                    section["browser"] = click_to_result(url, activation_photos()[:2], repeats=args.browser_repeats)
                except Exception as exc:  # noqa: BLE001 - no Chromium/Playwright here: recorded
                    section["browser"] = {"error": f"{type(exc).__name__}: {exc}"}

            # ---- throughput with concurrent clients
            levels = {}
            for n in args.clients:
                _say(f"server: throughput with {n} client(s) for {args.throughput_seconds} s")
                levels[str(n)] = throughput(url, image, n, args.throughput_seconds, proc.pid)
            one = levels.get("1", {}).get("throughput_rps")
            section["throughput"] = {"levels": levels, "ratios_vs_1": {
                k: ratio(v.get("throughput_rps"), one) for k, v in levels.items()}}
            section["memory"] = proc_memory(proc.pid)
            section["load_after"] = load()
            with contextlib.suppress(Exception):
                client.close()
        finally:
            stop(proc)
    return section


def activation_photos() -> list[Path]:
    """Up to five different photos: the benchmark photo first."""
    from xception_core.io.assets import example_images

    first = example_path()
    return [first] + [e.path for e in example_images() if e.path != first][:4]


def bench_two_weights(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Section 5: the app serving two weight sets (an official-layout ImageNet file at 299 px and
    kitchenware at 150 px), as when the ImageNet weights are reachable: peak RSS once both are
    loaded and used, and the plain HTTP API at 299 px against that model's bare forward."""
    import httpx

    from xception_core.inputs.preprocessing import preprocess
    from xception_core.model import load_model
    from xception_core.runtime.classifier import Classifier

    weights_file = write_imagenet_layout_file(out_dir / "xception_weights_tf_dim_ordering_tf_kernels.h5")
    # The bare forward of the served 299 px model, in this process, before the server exists.
    big_clf = Classifier(load_model(str(weights_file)), backend=args.app_env.get("XCEPTION_BACKEND") or None)
    xs = preprocess(example_path(), big_clf.input_size)[None]
    bare = summarize(interleaved({"forward": lambda: big_clf.forward(xs)}, args.repeats)["forward"])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = app_env(port, "", **args.app_env)
    section: dict[str, Any] = {"weights": [weights_file.name, "kitchenware"], "load_before": load()}
    log_path = out_dir / "server-two.log"
    _say(f"two weights: starting the app with {weights_file.name} + kitchenware on port {port}")
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bench.live", str(port), str(weights_file), "kitchenware"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            data = example_path().read_bytes()
            with httpx.Client(timeout=120) as http:
                deadline = t0 + args.start_timeout
                while True:
                    if proc.poll() is not None or time.perf_counter() > deadline:
                        raise RuntimeError(f"the two-weights app did not load both; see {log_path}")
                    health = json.loads(_get(url + "healthz") or b"{}")
                    if len(health.get("weights", [])) == 2:
                        break
                    time.sleep(0.2)
                section["both_ready_s"] = round(time.perf_counter() - t0, 2)
                # Weights from a file are known by their key (the file's stem), as /healthz lists them.
                big = next(key for key in health["weights"] if key != "kitchenware")
                for key in (big, "kitchenware"):
                    api_classify(http, url, data, weights=key)
                raw_gradio_call(http, url, "activations", example_path(), "block4", 1)  # the explorer too
                for _ in range(2):
                    api_classify(http, url, data, weights=big)
                times = [api_classify(http, url, data, weights=big)[0] for _ in range(args.requests)]
            fwd = bare["median_ms"]
            stats = summarize(times)
            section.update({
                "memory": proc_memory(proc.pid),
                "plain_http_api_299": stats,
                "bare_forward_299": bare,
                "bare_forward_299_ms": fwd,
                "plain_p50_vs_bare_forward_299": ratio(stats["median_ms"], fwd),
                "load_after": load(),
            })
        finally:
            stop(proc)
    return section
