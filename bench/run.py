"""The Xception Explorer benchmark: one command, one table, one JSON file.

    python -m bench.run [--quick] [--out bench/results/latest.json] [--weights kitchenware|imagenet]

Sections (each figure is explained in bench/README.md):
1. forward      batch-1 latency, in THIS process, interleaved round by round: the app's inference
                path (`Classifier.forward`, both backends), a BatchNorm-folded tf.function,
                `keras.applications.Xception.predict`, and ONNX Runtime on a tf2onnx export of that
                same Keras model — all with the same weights. Medians, ratios.
2. activations  the explorer's all-blocks pass (`ActivationExplorer.compute`) vs a plain forward,
                and the cached second view.
3. server       `python app.py` as a subprocess: cold start to the first successful classify,
                end-to-end classify latency over HTTP with gradio_client (p50/p95) as a ratio to
                the bare forward, the same request over the raw HTTP API (no client polling), the
                cached `/activations` view's server time, throughput with 1/4/8 concurrent
                clients, and the serving process's peak RSS (VmHWM).
4. precision    reduced precision on the served model: int8 (ONNX Runtime static quantization) and
                bf16 (Keras mixed precision): speed-up over fp32 and top-1 agreement with fp32 on
                real photos (the kitchenware wheel's photos and assets/examples).

Figures, not pass/fail: nothing here asserts a timing. The `targets` block only records whether
each figure met the issue's target on this run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.appserver import app_env, free_port, stop

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"
EXAMPLE = "coffee.jpg"  # the photo every latency figure runs on (assets/examples, CC0)
SCHEMA = 1
SECTIONS = ("forward", "activations", "server", "precision")

TARGETS = {  # name: (comparison, threshold, what)
    "forward_vs_keras_predict": ("<=", 0.6, "app forward / keras model.predict (batch 1)"),
    "forward_vs_onnxruntime": ("<=", 1.0, "app forward / ONNX Runtime on a tf2onnx export"),
    "activations_vs_plain_forward": ("<=", 1.3, "all-blocks pass / plain TF forward"),
    "http_classify_p50_vs_forward": ("<=", 1.3, "gradio_client classify p50 / bare forward"),
    "cached_activation_view_server_ms": ("<=", 50.0, "/activations cache hit, server time (ms)"),
    "throughput_8_vs_1": (">=", 1.3, "8-client / 1-client throughput"),
    "cold_start_s": ("<=", 15.0, "python app.py to first classify (s)"),
    "serving_peak_rss_gb": ("<=", 1.5, "serving process VmHWM (GB)"),
}


# ------------------------------------------------------------------------------------------ helpers


def summarize(seconds: list[float]) -> dict[str, Any]:
    """Latency statistics in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1000.0
    if ms.size == 0:
        return {"runs": 0, "median_ms": None, "p10_ms": None, "p90_ms": None, "p95_ms": None, "min_ms": None,
                "max_ms": None, "mean_ms": None}
    return {
        "runs": int(ms.size),
        "median_ms": round(float(np.median(ms)), 2),
        "p10_ms": round(float(np.percentile(ms, 10)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "min_ms": round(float(ms.min()), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Times each function `repeats` times, one call of each per round, the order rotating every
    round, so that load from other processes falls on all paths alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return times


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def load() -> dict[str, Any]:
    """Load averages (1, 5, 15 min) and when they were read."""
    one, five, fifteen = os.getloadavg()
    return {"time": datetime.now(UTC).isoformat(timespec="seconds"), "loadavg": [one, five, fifteen]}


def machine() -> dict[str, Any]:
    """CPU, cores, the SIMD features that matter for fp32/bf16/int8, memory, versions."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
        flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
        info["cpu"] = model
        info["simd"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")}
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["mem_total_gb"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        info["cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cpus"] = os.cpu_count()
    versions = {}
    for name in ("tensorflow", "keras", "onnxruntime", "onnx", "tf2onnx", "gradio", "gradio_client", "numpy"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            versions[name] = None
    info["versions"] = versions
    return info


def example_path() -> Path:
    from xception.io.assets import example_images

    for e in example_images():
        if e.path.name == EXAMPLE:
            return e.path
    return example_images()[0].path


def photo(size: int) -> np.ndarray:
    """The benchmark photo, preprocessed: (1, size, size, 3) float32."""
    from xception.io.images import load_image
    from xception.io.preprocessing import preprocess

    return preprocess(load_image(example_path()), size)[None]


def calibration(size: int) -> list[np.ndarray]:
    """The photos the app calibrates int8 on (the kitchenware wheel's unlabelled photos, else the
    examples), preprocessed at `size`; with their paths."""
    return [a for _, a in calibration_photos(size)]


def calibration_photos(size: int) -> list[tuple[Path, np.ndarray]]:
    from xception.io.assets import example_images
    from xception.io.preprocessing import preprocess
    from xception.settings import Settings
    from xception.weights.fetch import preset_samples

    try:
        paths = [s.path for s in preset_samples("kitchenware", Settings.from_env().cache_dir) if not s.label]
    except Exception:  # noqa: BLE001 - no kitchenware package: the examples
        paths = [e.path for e in example_images()]
    return [(p, preprocess(p, size)) for p in paths]


def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ 1. forward


def _fill_forward_weights(model, choice: str) -> str:
    """Weights of the 299×299 forward model; latency does not depend on their values."""
    from xception.model import build_xception

    if choice == "random":
        return "random initialisation"
    if choice == "imagenet":
        source = build_xception(weights="imagenet", input_shape=model.input_shape[1:])
        model.set_weights(source.get_weights())
        return "ImageNet (official Keras weights)"
    base = build_xception(weights="kitchenware", include_top=False)  # its base = ImageNet no-top weights
    by_name = {layer.name: layer for layer in base.layers if layer.weights}
    copied = 0
    for layer in model.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    del base
    return (f"ImageNet architecture with the kitchenware preset's base weights copied in ({copied} layers: the "
            "official ImageNet no-top weights); the 1000-class classifier is random")


def bench_forward(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 1. Returns (JSON section, objects reused by section 2)."""
    import keras
    import tensorflow as tf

    from xception.arch.names import reference_layer_name
    from xception.model import load_model
    from xception.runtime import onnx as onnx_backend
    from xception.runtime.classifier import Classifier
    from xception.runtime.folding import fold_batchnorm, max_abs_difference
    from xception.settings import Settings

    size = args.size
    before = load()
    loaded = load_model(None, input_shape=(size, size, 3))
    model = loaded.model
    weights_note = _fill_forward_weights(model, args.forward_weights)
    ref = keras.applications.Xception(weights=None, input_shape=(size, size, 3))
    for layer in ref.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(reference_layer_name(layer)).get_weights())
    x = photo(size)

    app_backend = args.app_env.get("XCEPTION_BACKEND") or ("onnx" if onnx_backend.available() else "tf")
    paths: dict[str, Callable[[], Any]] = {}
    notes: dict[str, str] = {}
    ours_tf = Classifier(loaded, backend="tf", precision="fp32")
    paths["ours_tf"] = lambda: ours_tf.forward(x)
    start = time.perf_counter()
    ours_onnx = Classifier(loaded, backend="onnx", precision="fp32")
    onnx_build_s = time.perf_counter() - start
    int8_build_s = None
    classifiers = {"ours_tf": ours_tf}
    if ours_onnx.backend == "onnx":
        paths["ours_onnx"] = lambda: ours_onnx.forward(x)
        classifiers["ours_onnx"] = ours_onnx
        # The XCEPTION_PRECISION=int8 switch on the same model (calibrated on real photos).
        start = time.perf_counter()
        ours_int8 = Classifier(loaded, backend="onnx", precision="int8", calibration=calibration(size))
        int8_build_s = time.perf_counter() - start
        if ours_int8.precision == "int8":
            paths["ours_onnx_int8"] = lambda: ours_int8.forward(x)
            classifiers["ours_onnx_int8"] = ours_int8
    app_precision = args.app_env.get("XCEPTION_PRECISION") or "fp32"
    app_key = "ours_tf" if app_backend != "onnx" else "ours_onnx_int8" if app_precision == "int8" else "ours_onnx"
    app_key = app_key if app_key in classifiers else "ours_tf"
    app = classifiers[app_key]

    folded = fold_batchnorm(model).model
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    folded_fn = tf.function(lambda t: folded(t, training=False), input_signature=[spec])
    paths["ours_tf_bn_folded"] = lambda: folded_fn(tf.constant(x))
    paths["keras_predict"] = lambda: ref.predict(x, verbose=0)

    ort_convert_s = None
    try:
        import onnxruntime as ort
        import tf2onnx

        ref_fn = tf.function(lambda t: ref(t, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="input")])
        start = time.perf_counter()
        proto, _ = tf2onnx.convert.from_function(ref_fn, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="input")], opset=17)
        ort_convert_s = time.perf_counter() - start
        options = ort.SessionOptions()
        # Same threads and no spin-waiting, as in our backend, so the two ORT rows differ only by graph.
        options.intra_op_num_threads = Settings().onnx_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        del proto
        paths["onnxruntime_tf2onnx"] = lambda: session.run(None, {input_name: x})
    except Exception as exc:  # noqa: BLE001 - tf2onnx/onnxruntime missing or failing
        notes["onnxruntime_tf2onnx"] = f"unavailable: {exc}"

    _say(f"forward: {len(paths)} paths × {args.repeats} interleaved runs at {size}×{size}")
    times = interleaved(paths, args.repeats)
    stats = {k: summarize(v) for k, v in times.items()}
    med = {k: s["median_ms"] for k, s in stats.items()}
    app_ms = med[app_key]

    # Numerical agreement of the app's path with Keras's own model, same weights, same photo.
    probs_ref = ref.predict(x, verbose=0)
    feats_app, probs_app = app.forward(x)
    feats_tf, _ = ours_tf.forward(x)
    errors = {
        "app_vs_keras_predict_probabilities": float(np.abs(probs_app - probs_ref).max()),
        "app_vs_tf_features": float(np.abs(feats_app - feats_tf).max()),
        "bn_folded_vs_original_output": max_abs_difference(model, folded, x),
        "features_abs_max": float(np.abs(feats_tf).max()),
    }
    profile = onnx_profile(ours_onnx, x) if ours_onnx.backend == "onnx" else None
    errors["app_vs_keras_predict_top1_same"] = bool(probs_app.argmax() == probs_ref.argmax())
    macs = _macs(model)
    section = {
        "input_size": size,
        "batch": 1,
        "weights": weights_note,
        "app_backend": app.backend,
        "app_precision": app.precision,
        "app_path": app_key,
        "repeats": args.repeats,
        "load_before": before,
        "load_after": load(),
        "paths": stats,
        "notes": notes,
        "ratios": {
            "app_vs_keras_predict": ratio(app_ms, med.get("keras_predict")),
            "app_vs_onnxruntime": ratio(app_ms, med.get("onnxruntime_tf2onnx")),
            "ours_tf_vs_keras_predict": ratio(med.get("ours_tf"), med.get("keras_predict")),
            "ours_onnx_vs_ours_tf": ratio(med.get("ours_onnx"), med.get("ours_tf")),
            "int8_vs_onnxruntime": ratio(med.get("ours_onnx_int8"), med.get("onnxruntime_tf2onnx")),
            "int8_vs_keras_predict": ratio(med.get("ours_onnx_int8"), med.get("keras_predict")),
            "bn_folded_tf_vs_ours_tf": ratio(med.get("ours_tf_bn_folded"), med.get("ours_tf")),
        },
        "max_abs_error": errors,
        "setup_s": {"onnx_backend_build": round(onnx_build_s, 2),
                    "onnx_int8_build": None if int8_build_s is None else round(int8_build_s, 2),
                    "tf2onnx_convert": None if ort_convert_s is None else round(ort_convert_s, 2)},
        "macs_per_image": macs,
        "achieved_gflops_app": round(2 * macs / (app_ms / 1000) / 1e9, 1) if app_ms else None,
        "onnx_profile": profile,
    }
    keep = {"model": model, "loaded": loaded, "x": x, "ours_tf": ours_tf, "app": app, "app_key": app_key}
    return section, keep


def _macs(model) -> int:
    from xception.runtime.introspection import describe

    return int(describe(model).total_macs)


def onnx_profile(classifier, x: np.ndarray, runs: int = 5) -> dict[str, Any] | None:
    """Where ONNX Runtime spends the forward: share of node time by kernel kind, from ORT's own
    profiler on a separate session of the same graph."""
    try:
        import onnxruntime as ort

        from xception.runtime.onnx import to_onnx
        from xception.settings import Settings

        proto = to_onnx(classifier.model, classifier.info.features_layer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = Settings().onnx_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            options.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for _ in range(runs + 1):
                session.run(None, {"input": x})
            trace = json.loads(Path(session.end_profiling()).read_text())
        kinds: dict[str, float] = {}
        for event in trace:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            args_ = event.get("args", {})
            op = args_.get("op_name", "?")
            name = event["name"]
            if op in ("Conv", "FusedConv", "NchwcConv", "QLinearConv"):
                kind = "depthwise conv" if "/depthwise" in name else "pointwise (1×1) conv" if (
                    "sepconv" in name or "residual" in name) else "full conv (stem)"
            else:
                kind = op
            kinds[kind] = kinds.get(kind, 0.0) + float(event.get("dur", 0))
        total = sum(kinds.values()) or 1.0
        return {"runs": runs, "share_by_kind": {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
                "node_ms_per_run": round(total / 1000 / (runs + 1), 2)}
    except Exception as exc:  # noqa: BLE001 - profiling is a nicety
        return {"error": str(exc)}


# ------------------------------------------------------------------------------------------ 2. activations


def bench_activations(args: argparse.Namespace, keep: dict[str, Any]) -> dict[str, Any]:
    """Section 2: the explorer's all-blocks pass vs the plain forward, and the cache hit."""
    loaded, model, x, ours_tf, app = keep["loaded"], keep["model"], keep["x"], keep["ours_tf"], keep["app"]
    section: dict[str, Any] = {"input_size": int(x.shape[1]), "load_before": load()}
    try:
        from xception.runtime.activations import ActivationExplorer

        explorer = ActivationExplorer(max_entries=4)
        image = x[0]
        pass_seconds: list[float] = []

        def miss() -> None:
            explorer.clear()
            record, _ = explorer.compute(loaded, image, weights_key="bench")
            pass_seconds.append(record.forward_seconds)

        def view() -> None:
            explorer.compute(loaded, image, weights_key="bench")

        fns = {"all_blocks_compute": miss, "plain_tf": lambda: ours_tf.forward(x), "app_forward": lambda: app.forward(x)}
        try:  # the same all-blocks pass on ONNX Runtime: what the explorer would cost on the app's backend
            from xception.arch.names import block_output_layer
            from xception.arch.spec import XCEPTION_SPEC
            from xception.runtime.onnx import OnnxForward

            info = loaded.info
            block_layers = [block_output_layer(b, info.variant) for b in XCEPTION_SPEC.blocks]
            all_onnx = OnnxForward(model, block_layers[-1], extra_outputs=block_layers[:-1])
            fns["all_blocks_onnx"] = lambda: all_onnx.run(x)
        except Exception as exc:  # noqa: BLE001 - no onnxruntime
            section["all_blocks_onnx_error"] = str(exc)
        _say(f"activations: {args.repeats} interleaved runs")
        times = interleaved(fns, args.repeats)
        pass_seconds = pass_seconds[-args.repeats:]
        miss()
        hits = interleaved({"cached_view": view}, max(args.repeats, 10))["cached_view"]
        stats = {k: summarize(v) for k, v in times.items()}
        stats["all_blocks_pass"] = summarize(pass_seconds)
        stats["cached_view"] = summarize(hits)
        plain = stats["plain_tf"]["median_ms"]
        section.update({
            "paths": stats,
            "ratios": {
                "all_blocks_pass_vs_plain_tf": ratio(stats["all_blocks_pass"]["median_ms"], plain),
                "all_blocks_compute_vs_plain_tf": ratio(stats["all_blocks_compute"]["median_ms"], plain),
                "all_blocks_compute_vs_app_forward": ratio(stats["all_blocks_compute"]["median_ms"],
                                                           stats["app_forward"]["median_ms"]),
                "all_blocks_onnx_vs_app_forward": ratio(stats.get("all_blocks_onnx", {}).get("median_ms"),
                                                        stats["app_forward"]["median_ms"]),
            },
            "forward_calls": explorer.forward_calls,
        })
    except Exception as exc:  # noqa: BLE001 - the explorer is optional for this harness
        section.update({"error": f"{type(exc).__name__}: {exc}", "paths": {}, "ratios": {
            "all_blocks_pass_vs_plain_tf": None, "all_blocks_compute_vs_plain_tf": None,
            "all_blocks_compute_vs_app_forward": None, "all_blocks_onnx_vs_app_forward": None}})
    section["load_after"] = load()
    return section


# ------------------------------------------------------------------------------------------ 3. server


def proc_memory(pid: int) -> dict[str, float | None]:
    """VmHWM (peak) and VmRSS of a process, in MB, from /proc (psutil is not needed)."""
    out: dict[str, float | None] = {"peak_rss_mb": None, "rss_mb": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads); this process when `pid` is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class CpuMeter:
    """CPU seconds spent by the server and by this (client) process between start and stop."""

    def __init__(self, pid: int):
        self.pid = pid
        self.server0, self.client0, self.wall0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()

    def per_request(self, requests: int) -> dict[str, float | None]:
        server, client = cpu_seconds(self.pid) - self.server0, cpu_seconds() - self.client0
        wall = time.perf_counter() - self.wall0
        n = max(requests, 1)
        return {"server_cpu_ms_per_request": round(server * 1000 / n, 1),
                "client_cpu_ms_per_request": round(client * 1000 / n, 1),
                "server_cpu_utilisation": round(server / wall, 2) if wall > 0 else None,
                "client_cpu_utilisation": round(client / wall, 2) if wall > 0 else None}


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except Exception:  # noqa: BLE001 - not up yet
        return None


def raw_classify(http, url: str, image: Path) -> dict[str, float]:
    """One classify over Gradio's plain HTTP API (upload, POST /call, read the SSE result) with a
    persistent connection: what the protocol costs without gradio_client's 50 ms polling."""
    t0 = time.perf_counter()
    with open(image, "rb") as f:
        r = http.post(url + "gradio_api/upload", files={"files": (image.name, f, "image/jpeg")})
    r.raise_for_status()
    path = r.json()[0]
    t1 = time.perf_counter()
    r = http.post(url + "gradio_api/call/classify",
                  json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None]})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    done = False
    with http.stream("GET", url + f"gradio_api/call/classify/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: complete"):
                done = True
            elif line.startswith("event: error"):
                raise RuntimeError(f"classify failed: {line}")
            elif done and line.startswith("data:"):
                break
    t2 = time.perf_counter()
    return {"total": t2 - t0, "upload": t1 - t0, "call": t2 - t1}


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

    from xception.io.images import load_image
    from xception.io.preprocessing import preprocess
    from xception.model import load_model
    from xception.runtime.classifier import Classifier

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
            # ---- cold start: process start → first successful classify (weights already cached)
            t_http = None
            client = None
            result = None
            deadline = t0 + args.start_timeout
            while result is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}; see {log_path}")
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no classify within {args.start_timeout} s; see {log_path}")
                if t_http is None:
                    if _get(url + "healthz", timeout=1.0) is None:
                        time.sleep(0.05)
                        continue
                    t_http = time.perf_counter() - t0
                try:
                    client = client or Client(url, verbose=False)
                    result = client.predict(handle_file(str(image)), api_name="/classify")
                except Exception:  # noqa: BLE001 - not ready yet
                    time.sleep(0.1)
            cold = time.perf_counter() - t0
            section["cold_start"] = {"first_classify_s": round(cold, 2), "http_up_s": round(t_http or 0, 2),
                                     "first_result": result, "memory_after_first_classify": proc_memory(proc.pid)}
            _say(f"server: cold start {cold:.1f} s; {args.requests} sequential classifies")

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
            fwd = bare_stats["forward"]["median_ms"]
            e2e_stats = summarize(e2e)
            raw_stats = {k: summarize([r[k] for r in raw]) for k in ("total", "upload", "call")}
            section["classify_http"] = {
                "gradio_client": e2e_stats,
                "raw_http_api": raw_stats,
                "cpu": {"gradio_client": e2e_cpu, "raw_http_api": raw_cpu},
                "p50_vs_bare_forward": ratio(e2e_stats["median_ms"], fwd),
                "p95_vs_bare_forward": ratio(e2e_stats["p95_ms"], fwd),
                "raw_p50_vs_bare_forward": ratio(raw_stats["total"]["median_ms"], fwd),
                "overhead_ms": {
                    "gradio_client_minus_raw_api": round(e2e_stats["median_ms"] - raw_stats["total"]["median_ms"], 1),
                    "raw_api_minus_forward_and_preprocess": round(
                        raw_stats["total"]["median_ms"] - fwd - bare_stats["preprocess"]["median_ms"], 1),
                },
            }

            # ---- the explorer's /activations: first (forward) and second (cached) view
            section["activations_http"] = activations_over_http(client, image)

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


def activations_over_http(client, image: Path) -> dict[str, Any]:
    from gradio_client import handle_file

    out: dict[str, Any] = {}
    try:
        views = []
        for i in range(3):
            t = time.perf_counter()
            answer, _maps = client.predict(handle_file(str(image)), "block4", 1, api_name="/activations")
            views.append({"client_ms": round((time.perf_counter() - t) * 1000, 1),
                          "server_ms": answer.get("server_ms"), "forward_ms": answer.get("forward_ms"),
                          "cache_hit": answer.get("cache_hit")})
        hits = [v for v in views if v["cache_hit"]]
        out = {"first": views[0], "cached": hits, "cached_server_ms": min(
            (v["server_ms"] for v in hits if v["server_ms"] is not None), default=None)}
    except Exception as exc:  # noqa: BLE001 - endpoint missing or failing: recorded
        out = {"error": f"{type(exc).__name__}: {exc}", "first": None, "cached": [], "cached_server_ms": None}
    return out


# ------------------------------------------------------------------------------------------ 4. precision


def _photos(size: int, quick: bool) -> list[tuple[str, Path, str | None, str]]:
    """Real photos: (set, path, label or None, 'calibration' | 'held_out'): the kitchenware wheel's
    photos and the app's examples; those `calibration_photos` picks calibrate int8, the rest are
    held out."""
    from xception.io.assets import example_images
    from xception.settings import Settings

    calibrating = {Path(p).resolve() for p, _ in calibration_photos(size)}
    candidates: list[tuple[str, Path, str | None]] = []
    try:
        from xception.weights.fetch import preset_samples

        candidates += [("kitchenware", s.path, s.label)
                       for s in preset_samples("kitchenware", Settings.from_env().cache_dir)]
    except Exception as exc:  # noqa: BLE001 - no kitchenware package: the examples alone
        _say(f"precision: no kitchenware photos ({exc})")
    candidates += [("assets", e.path, None) for e in example_images()]
    photos = [(g, p, label, "calibration" if p.resolve() in calibrating else "held_out") for g, p, label in candidates]
    if quick:
        photos = photos[:: max(len(photos) // 6, 1)]
    return photos


def _agreement(rows: list[dict], key: str) -> dict[str, Any]:
    same = sum(r["fp32_top1"] == r[key] for r in rows)
    return {"agree": same, "photos": len(rows), "rate": round(same / len(rows), 3) if rows else None}


def bench_precision(args: argparse.Namespace) -> dict[str, Any]:
    """Section 4: reduced precision on the served model, against its own fp32 path, on real photos:
    int8 (ONNX Runtime static quantization) and bf16 (Keras mixed_bfloat16 on TensorFlow)."""
    import keras
    import tensorflow as tf

    from xception.io.labels import load_labels
    from xception.io.preprocessing import preprocess
    from xception.model import build_xception, load_model
    from xception.runtime.classifier import Classifier, softmax

    loaded = load_model(args.weights)
    model, info = loaded.model, loaded.info
    photos = _photos(loaded.input_size, args.quick)
    names = load_labels(info.labels) if info.labels else None

    def probs(out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, np.float32)
        return softmax(out) if info.outputs == "logits" else out

    # ---- int8 (the app's XCEPTION_PRECISION=int8 switch) against fp32, both on ONNX Runtime
    _say(f"precision: int8 quantization ({sum(p[3] == 'calibration' for p in photos)} calibration photos here)")
    fp32_clf = Classifier(loaded, backend="onnx", precision="fp32")
    start = time.perf_counter()
    int8_clf = Classifier(loaded, backend="onnx", precision="int8", calibration=calibration(loaded.input_size))
    quantize_s = time.perf_counter() - start
    if int8_clf.precision != "int8" or fp32_clf.backend != "onnx":
        raise RuntimeError("the int8 path did not build (see the warnings above)")
    size = fp32_clf.input_size
    arrays = [preprocess(p[1], size) for p in photos]

    # ---- bf16 (TensorFlow, Keras mixed precision) against fp32 TensorFlow
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    fp32_tf = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16_model = build_xception(weights=args.weights)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    bf16_tf = tf.function(lambda t: tf.cast(bf16_model(t, training=False), tf.float32), input_signature=[spec])

    x = arrays[0][None]
    times = interleaved({"fp32_onnx": lambda: fp32_clf.forward(x), "int8_onnx": lambda: int8_clf.forward(x),
                         "fp32_tf": lambda: fp32_tf(tf.constant(x)), "bf16_tf": lambda: bf16_tf(tf.constant(x))},
                        args.repeats)
    stats = {k: summarize(v) for k, v in times.items()}
    rows = []
    for (group, path, label, role), a in zip(photos, arrays):
        p32 = fp32_clf.forward(a[None])[1][0]
        p8 = int8_clf.forward(a[None])[1][0]
        p16 = probs(bf16_tf(tf.constant(a[None])).numpy())[0]
        rows.append({"set": group, "photo": path.name, "role": role, "label": label,
                     "fp32_top1": int(p32.argmax()), "int8_top1": int(p8.argmax()), "bf16_top1": int(p16.argmax()),
                     "int8_max_prob_diff": round(float(np.abs(p32 - p8).max()), 4),
                     "bf16_max_prob_diff": round(float(np.abs(p32 - p16).max()), 4)})
    labelled = [r for r in rows if r["label"]]
    accuracy = None
    if names and labelled:
        accuracy = {k: sum(names[r[f"{k}_top1"]] == r["label"] for r in labelled) for k in ("fp32", "int8", "bf16")}
        accuracy["photos"] = len(labelled)
    held_out = [r for r in rows if r["role"] == "held_out"]
    return {
        "weights": args.weights, "input_size": size, "paths": stats, "photos": rows, "label_accuracy": accuracy,
        "int8": {
            "method": "XCEPTION_PRECISION=int8: ONNX Runtime static quantization (QDQ), uint8 activations "
                      "with min/max ranges from the app's calibration photos (webapp.store), int8 weights per "
                      "output channel",
            "build_s": round(quantize_s, 2),
            "speedup_vs_fp32_onnx": ratio(stats["fp32_onnx"]["median_ms"], stats["int8_onnx"]["median_ms"]),
            "top1_agreement": {"all": _agreement(rows, "int8_top1"), "held_out": _agreement(held_out, "int8_top1")},
            "max_prob_diff": max(r["int8_max_prob_diff"] for r in rows),
        },
        "bf16": {
            "method": "Keras mixed_bfloat16 policy (bf16 compute, fp32 weights) on TensorFlow",
            "cpu_has_native_bf16": bool({k for k, v in machine().get("simd", {}).items() if v}
                                        & {"avx512_bf16", "amx_bf16"}),
            "speedup_vs_fp32_tf": ratio(stats["fp32_tf"]["median_ms"], stats["bf16_tf"]["median_ms"]),
            "top1_agreement": {"all": _agreement(rows, "bf16_top1"), "held_out": _agreement(held_out, "bf16_top1")},
            "max_prob_diff": max(r["bf16_max_prob_diff"] for r in rows),
        },
    }


# ------------------------------------------------------------------------------------------ targets and table


def _gb(mb: float | None) -> float | None:
    return None if mb is None else round(mb / 1024, 2)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    fwd, act, srv = results.get("forward", {}), results.get("activations", {}), results.get("server", {})
    values = {
        "forward_vs_keras_predict": fwd.get("ratios", {}).get("app_vs_keras_predict"),
        "forward_vs_onnxruntime": fwd.get("ratios", {}).get("app_vs_onnxruntime"),
        "activations_vs_plain_forward": act.get("ratios", {}).get("all_blocks_pass_vs_plain_tf"),
        "http_classify_p50_vs_forward": srv.get("classify_http", {}).get("p50_vs_bare_forward"),
        "cached_activation_view_server_ms": srv.get("activations_http", {}).get("cached_server_ms"),
        "throughput_8_vs_1": srv.get("throughput", {}).get("ratios_vs_1", {}).get("8"),
        "cold_start_s": srv.get("cold_start", {}).get("first_classify_s"),
        "serving_peak_rss_gb": _gb(srv.get("memory", {}).get("peak_rss_mb")),
    }
    out = {}
    for name, (cmp, threshold, what) in TARGETS.items():
        v = values[name]
        met = None if v is None else (v <= threshold if cmp == "<=" else v >= threshold)
        out[name] = {"value": v, "target": f"{cmp} {threshold}", "met": met, "what": what}
    return out


def table(results: dict[str, Any]) -> str:
    """The one table: every path's median, then every target."""
    lines = []
    meta = results["meta"]
    m = meta["machine"]
    lines.append(f"Xception Explorer benchmark — {meta['date']} — {m.get('cpu', '?')}, {m.get('cpus')} CPUs — "
                 f"load {meta['load_before']['loadavg'][0]:.2f} → {meta['load_after']['loadavg'][0]:.2f}"
                 f"{' — QUICK' if meta['quick'] else ''}")
    fwd = results.get("forward", {})
    rows: list[tuple[str, str, str, str]] = []
    for k, s in fwd.get("paths", {}).items():
        mark = " (app)" if k == fwd.get("app_path") else ""
        rows.append((f"forward {fwd['input_size']}px b1: {k}{mark}", f"{s['median_ms']:.1f} ms",
                     f"p10–p90 {s['p10_ms']:.0f}–{s['p90_ms']:.0f}", ""))
    act = results.get("activations", {})
    for k in ("all_blocks_pass", "all_blocks_compute", "plain_tf", "app_forward", "all_blocks_onnx", "cached_view"):
        s = act.get("paths", {}).get(k)
        if s:
            rows.append((f"activations {act['input_size']}px: {k}", f"{s['median_ms']:.1f} ms",
                         f"p10–p90 {s['p10_ms']:.0f}–{s['p90_ms']:.0f}", ""))
    srv = results.get("server", {})
    if srv.get("classify_http"):
        h = srv["classify_http"]
        rows.append((f"server {srv['input_size']}px: bare forward ({srv['backend']})",
                     f"{srv['bare_forward']['median_ms']:.1f} ms", f"preprocess {srv['preprocess']['median_ms']:.1f} ms", ""))
        g = h["gradio_client"]
        rows.append(("server: classify via gradio_client", f"p50 {g['median_ms']:.0f} ms", f"p95 {g['p95_ms']:.0f} ms", ""))
        r = h["raw_http_api"]["total"]
        rows.append(("server: classify via raw HTTP API", f"p50 {r['median_ms']:.0f} ms", f"p95 {r['p95_ms']:.0f} ms", ""))
    for k, lv in srv.get("throughput", {}).get("levels", {}).items():
        rows.append((f"server: throughput, {k} client(s)", f"{lv['throughput_rps']} req/s",
                     f"p50 {lv['latency']['median_ms']} ms", f"{lv['requests']} req"))
    rp = results.get("reduced_precision", {})
    if rp.get("paths"):
        for key, path, base, speed in (("int8", "int8_onnx", "fp32_onnx", "speedup_vs_fp32_onnx"),
                                       ("bf16", "bf16_tf", "fp32_tf", "speedup_vs_fp32_tf")):
            agree = rp[key]["top1_agreement"]["all"]
            rows.append((f"{key} {rp['input_size']}px b1 ({path})", f"{rp['paths'][path]['median_ms']:.1f} ms",
                         f"{base} {rp['paths'][base]['median_ms']:.1f} ms, ×{rp[key][speed]}",
                         f"top-1 = fp32 on {agree['agree']}/{agree['photos']} photos"))
    rows.append(("", "", "", ""))
    for t in results.get("targets", {}).values():
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        rows.append((f"target: {t['what']}", str(t["value"]), t["target"], met))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


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
    args = p.parse_args(argv)
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if not args.precision and "precision" in args.sections:
        args.sections.remove("precision")
    q = args.quick
    args.size = args.size or (96 if q else 299)
    args.repeats = args.repeats or (4 if q else 25)
    args.requests = args.requests or (4 if q else 30)
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
    results["reduced_precision"] = bench_precision(args) if "precision" in args.sections else skipped
    results["meta"]["load_after"] = load()
    results["targets"] = targets(results)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results), flush=True)
    print(f"\nJSON: {out}", flush=True)
    return results


def main() -> None:
    run()


if __name__ == "__main__":
    main()
