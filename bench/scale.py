"""Scale-out figures (Ray Serve, `scale/`): one command, one table, one JSON file.

    python -m bench.scale [--clients 8] [--seconds 15] [--out bench/results/scale.json]

Needs requirements-scale.txt and the cached kitchenware weights. Sections:
1. serving    the same gradio_client clients against (a) `python app.py` (one process), (b) the
              Serve app with 1 model replica of 2 threads, (c) with 2 replicas of 1 thread, one
              after another in this run: throughput, p50/p95, CPU seconds per request of each
              kind of process (from /proc), resident memory of each replica and of the ingress.
2. cold start a third replica added to the running Serve app (`num_replicas` 2 → 3): seconds
              until Serve reports it running (process start, imports, weights, warm-up).
3. forward    CPU seconds per image of one replica's work at 1 thread (the config's 1 CPU per
              replica), batch 1 and 8, fp32 and int8, 150 px (the kitchenware weights) and
              299 px (the ImageNet architecture; latency does not depend on weight values).
4. capacity   replicas, CPUs and machines for 100 / 1,000 / 10,000 classifies a minute at
              p95 ≤ 1 s, from sections 1 and 3 (the model is in bench/README.md, "Scale out").

Figures, not pass/fail. Ray gets 4 logical CPUs on this 2-core machine so that 1 × 2 and 2 × 1
replica threads can be compared; logical CPUs only book work, the cores stay 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.appserver import app_env, free_port, stop
from bench.common import calibration, load, machine, photo, summarize
from bench.procstats import cpu_seconds, proc_memory
from bench.server import _get

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "scale.json"
P95_TARGET_S = 1.0
RATES_PER_MIN = (100, 1_000, 10_000)
MACHINE_VCPUS = 8  # the capacity table's machine: 8 vCPUs, one of them for Ray's own processes
UTILISATION_CAP = 0.7  # never plan a CPU above this: headroom for bursts and autoscaling delay


def _say(msg: str) -> None:
    print(f"[bench.scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _photo_path() -> Path:
    from xception_core.settings import Settings
    from xception_core.weights.fetch import preset_samples

    return next(s.path for s in preset_samples("kitchenware", Settings.from_env().cache_dir) if s.label)


def ray_processes() -> dict[str, list[int]]:
    """Pids of this machine's Ray processes by role, from their process titles."""
    roles: dict[str, list[int]] = {"replica": [], "ingress": [], "ray": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ServeReplica:xception:XceptionModel" in cmd:
            roles["replica"].append(int(entry.name))
        elif "ServeReplica:xception:XceptionApp" in cmd:
            roles["ingress"].append(int(entry.name))
        elif any(k in cmd for k in ("ServeController", "ProxyActor", "raylet", "gcs_server")):
            roles["ray"].append(int(entry.name))
    return roles


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    """Until `url`/healthz says ready (or the app exits, or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if json.loads(_get(url + "/healthz") or b"{}").get("ready"):
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}


def run_clients(url: str, image: Path, clients: int, seconds: float, pids: dict[str, list[int]]) -> dict[str, Any]:
    """`clients` gradio_client clients classifying `image` in a loop for `seconds`; latency,
    throughput and CPU seconds per request of each role in `pids`."""
    from gradio_client import Client, handle_file

    pool = [Client(url, verbose=False) for _ in range(clients)]
    for c in pool:  # warm: every client's first call, every replica's first batch
        c.predict(handle_file(str(image)), api_name="/classify")
    barrier = threading.Barrier(clients + 1)
    latencies: list[float] = []
    errors: list[str] = []
    box: dict[str, float] = {}

    def worker(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < box["end"]:
            t = time.perf_counter()
            try:
                pool[i].predict(handle_file(str(image)), api_name="/classify")
                latencies.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(str(exc)[:200])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0, client0 = cpu_of(pids), cpu_seconds()
    start = time.perf_counter()
    box["end"] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1, client1 = cpu_of(pids), cpu_seconds()
    for c in pool:
        with contextlib.suppress(Exception):
            c.close()
    n = max(len(latencies), 1)
    cpu = {f"{role}_cpu_ms_per_request": round((cpu1[role] - cpu0[role]) * 1000 / n, 1) for role in pids}
    cpu["total_cpu_ms_per_request"] = round(sum(cpu1[r] - cpu0[r] for r in pids) * 1000 / n, 1)
    cpu["clients_cpu_ms_per_request"] = round((client1 - client0) * 1000 / n, 1)  # gradio_client, this process
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 2), "latency": summarize(latencies), "cpu": cpu}


# ------------------------------------------------------------------------------------------ 1. serving


def bench_single(args: argparse.Namespace, image: Path, out_dir: Path) -> dict[str, Any]:
    port = free_port()
    env = app_env(port, "kitchenware")
    with open(out_dir / "scale-app.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        result = run_clients(f"http://127.0.0.1:{port}/", image, args.clients, args.seconds, {"app": [proc.pid]})
        result["memory_mb"] = proc_memory(proc.pid)
        return result
    finally:
        stop(proc)


def deploy(settings, replicas: int, cpus_per_replica: float) -> None:
    from ray import serve

    from scale.deployment import XceptionModel
    from scale.ingress import XceptionApp

    model = XceptionModel.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica})
    app = XceptionApp.options(ray_actor_options={"num_cpus": 0}).bind(model.bind(settings), settings)
    serve.run(app, name=settings.serve_app, route_prefix="/")


def bench_serve(args: argparse.Namespace, image: Path) -> dict[str, Any]:
    import ray
    from ray import serve

    from xception_core.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), weights="kitchenware", model_store="ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                       "GRADIO_ANALYTICS_ENABLED": "False"}})
    out: dict[str, Any] = {}
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}/"
        for replicas in (1, 2):
            _say(f"Serve, {replicas} replica(s) of {2 // replicas} thread(s)")
            with contextlib.suppress(Exception):
                serve.delete(settings.serve_app)
            deploy(settings, replicas, 2 / replicas)
            pids = ray_processes()
            result = run_clients(url, image, args.clients, args.seconds, pids)
            result["memory_mb"] = {role: [proc_memory(p) for p in ps] for role, ps in pids.items() if role != "ray"}
            out[f"serve_{replicas}"] = result
        _say("cold start: a replica killed, until Serve runs its replacement")
        out["cold_start"] = replacement(settings)
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def replacement(settings) -> dict[str, Any]:
    """SIGKILL one model replica; seconds until Serve reports 2 running again with a new process
    (death noticed, process started, imports, weights, warm-up), and the new replica's own
    constructor time (weights + warm-up)."""
    import signal

    from ray import serve

    from demo.store_remote import MODEL_DEPLOYMENT

    victim = ray_processes()["replica"][0]
    t = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    while time.perf_counter() - t < 300:
        app = serve.status().applications.get(settings.serve_app)
        states = app.deployments[MODEL_DEPLOYMENT].replica_states if app else {}
        running = sum(v for k, v in states.items() if str(getattr(k, "value", k)) == "RUNNING")
        pids = set(ray_processes()["replica"])
        if running == 2 and victim not in pids and len(pids) == 2:
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - t
    handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=settings.serve_app)
    infos = {i["pid"]: i for i in (handle.replica.remote().result(timeout_s=60) for _ in range(16))}
    newest = max(infos.values(), key=lambda i: i["pid"])
    return {"kill_to_running_s": round(seconds, 2), "constructor_s": newest["init_seconds"]}


# ------------------------------------------------------------------------------------------ 3. forward


def bench_forward(args: argparse.Namespace) -> dict[str, Any]:
    """CPU seconds per image of `Classifier.forward` with 1 ONNX Runtime thread (a replica's)."""
    from xception_core.model import load_model
    from xception_core.runtime.classifier import Classifier
    from xception_core.settings import Settings

    settings = Settings.from_env()
    out: dict[str, Any] = {}
    for size in (150, 299):
        loaded = (load_model("kitchenware", settings=settings) if size == 150
                  else load_model(None, input_shape=(299, 299, 3), settings=settings))
        for precision in ("fp32", "int8"):
            classifier = Classifier(loaded, backend="onnx", precision=precision, threads=1,
                                    calibration=calibration(size) if precision == "int8" else ())
            for batch in (1, 8):
                x = np.repeat(photo(size), batch, axis=0)
                classifier.forward(x)
                runs = max(2, args.forward_images // batch)
                cpu0, t0 = cpu_seconds(), time.perf_counter()
                for _ in range(runs):
                    classifier.forward(x)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
                out[f"{size}_{precision}_b{batch}"] = {
                    "cpu_ms_per_image": round(cpu * 1000 / (runs * batch), 1),
                    "wall_ms_per_batch": round(wall * 1000 / runs, 1)}
                _say(f"forward {size} px {precision} batch {batch}: {out[f'{size}_{precision}_b{batch}']}")
    return out


# ------------------------------------------------------------------------------------------ 4. capacity


def capacity(forward: dict[str, Any], serving: dict[str, Any]) -> list[dict[str, Any]]:
    """Replicas (1 CPU each), ingress processes and 8-vCPU machines for each rate, size and
    precision at p95 ≤ 1 s. A replica is an M/M/1 queue whose service time is the batch-1 CPU
    time at 1 thread (`s`, its wall time on a core of its own): its p95 time in system is ln(20)·s/(1 − ρ) ≤ 1 s, so it may be busy
    ρ = min(1 − ln(20)·s, cap) of the time and serves ρ / c images a second, c its CPU seconds per
    image at batch 8 (what a busy replica pays). The ingress (decode, preprocessing, Gradio, the
    hop to a replica) costs the measured CPU seconds per request of the 2-replica run, on one
    core per ingress process, at the same cap."""
    serve2 = serving.get("serve_2", {}).get("cpu", {})
    ingress_s = (serve2.get("ingress_cpu_ms_per_request", 0.0) + serve2.get("ray_cpu_ms_per_request", 0.0)) / 1000
    rows = []
    for size in (150, 299):
        for precision in ("fp32", "int8"):
            s = forward[f"{size}_{precision}_b1"]["cpu_ms_per_image"] / 1000  # on a core of its own
            c = forward[f"{size}_{precision}_b8"]["cpu_ms_per_image"] / 1000
            rho = min(1 - math.log(20) * s / P95_TARGET_S, UTILISATION_CAP)
            per_replica = rho / c
            for per_min in RATES_PER_MIN:
                rate = per_min / 60
                replicas = max(1, math.ceil(rate / per_replica))
                ingresses = max(1, math.ceil(rate * ingress_s / UTILISATION_CAP))
                vcpus = replicas + ingresses
                rows.append({"per_min": per_min, "size": size, "precision": precision,
                             "replica_rps": round(per_replica, 1), "replicas": replicas, "ingresses": ingresses,
                             "vcpus": vcpus, "machines_8vcpu": math.ceil(vcpus / (MACHINE_VCPUS - 1))})
    return rows


def table(result: dict[str, Any]) -> str:
    lines = ["| setup | req/s | p50 ms | p95 ms | CPU ms/request (by process) | memory |", "|---|---|---|---|---|---|"]
    for name in ("single", "serve_1", "serve_2"):
        r = result["serving"].get(name)
        if not r:
            continue
        cpu = ", ".join(f"{k.replace('_cpu_ms_per_request', '')} {v}" for k, v in r["cpu"].items())
        lines.append(f"| {name} | {r['throughput_rps']} | {r['latency']['median_ms']} | {r['latency']['p95_ms']} "
                     f"| {cpu} | {json.dumps(r.get('memory_mb'))} |")
    lines += ["", "| per min | px | precision | replica req/s | replicas | ingresses | vCPUs | 8-vCPU machines |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result.get("capacity", []):
        lines.append(f"| {row['per_min']:,} | {row['size']} | {row['precision']} | {row['replica_rps']} | "
                     f"{row['replicas']} | {row['ingresses']} | {row['vcpus']} | {row['machines_8vcpu']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--forward-images", type=int, default=48)
    parser.add_argument("--sections", default="serving,forward")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    image = _photo_path()
    result: dict[str, Any] = {"meta": {"machine": machine(), "start": load(), "clients": args.clients,
                                       "seconds": args.seconds}, "serving": {}}
    if "serving" in sections:
        _say("single process: python app.py")
        result["serving"]["single"] = bench_single(args, image, args.out.parent)
        result["serving"].update(bench_serve(args, image))
    if "forward" in sections:
        result["forward"] = bench_forward(args)
        result["capacity"] = capacity(result["forward"], result["serving"])
    result["meta"]["end"] = load()
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
