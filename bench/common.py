"""Helpers every benchmark section shares: timing summaries, interleaved runs, machine and load facts,
the benchmark photo and the int8 calibration photos."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "coffee.jpg"  # the photo every latency figure runs on (assets/examples, CC0)


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
    from xception_core.io.assets import example_images

    for e in example_images():
        if e.path.name == EXAMPLE:
            return e.path
    return example_images()[0].path


def photo(size: int) -> np.ndarray:
    """The benchmark photo, preprocessed: (1, size, size, 3) float32."""
    from xception_core.inputs.images import load_image
    from xception_core.inputs.preprocessing import preprocess

    return preprocess(load_image(example_path()), size)[None]


def calibration(size: int) -> list[np.ndarray]:
    """The photos the app calibrates int8 on (the kitchenware wheel's unlabelled photos, else the
    examples), preprocessed at `size`."""
    return [a for _, a in calibration_photos(size)]


def calibration_photos(size: int) -> list[tuple[Path, np.ndarray]]:
    """The app's own choice of calibration photos (`demo.store.calibration_paths`) for the
    kitchenware preset, preprocessed at `size`."""
    from demo.store import calibration_paths
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.settings import Settings

    return [(p, preprocess(p, size)) for p in calibration_paths("kitchenware", Settings.from_env())]


def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


