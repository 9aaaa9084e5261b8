"""Scale-out figures (Ray Serve, `scale/`): one command, one table, one JSON file.

    python -m bench.scale [--clients 8] [--seconds 15] [--out bench/results/scale.json]

Needs requirements-scale.txt and the cached kitchenware weights. Sections:
1. serving    `python app.py` (one process): the page's classify with gradio_client clients, then
              POST /api/v1/classify with keep-alive HTTP clients (http.client). Then the shipped
              `scale/serve_config.yaml` on a local Ray: the plain API (proxy → API front → model
              replica) at 1, 4 and 2 model replicas of 1 thread; at 2, the page (gradio_client)
              and the plain API through a page process (`python app.py`, XCEPTION_MODEL_STORE=ray:
              the route every API request took before issue 19). Throughput, p50/p95, CPU seconds
              per request of each kind of process (from /proc), resident memory.
2. cold start a model replica SIGKILLed: seconds until Serve runs its replacement.
3. forward    CPU seconds per image of one replica's work at 1 thread (the config's 1 CPU per
              replica), batch 1 and 8, fp32 and int8, 150 px (the kitchenware weights) and
              299 px (the ImageNet architecture; latency does not depend on weight values).
4. capacity   model replicas, API front, page processes and 8-vCPU machines for 100 / 1,000 /
              10,000 classifies a minute at p95 ≤ 1 s, from sections 1 and 3 (bench/README.md,
              "Scale out").

Figures, not pass/fail. Ray gets 4 logical CPUs on this 2-core machine so that 4 replicas of 1
thread can be booked; logical CPUs only book work, the cores stay 2.
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
from typing import Any, Callable

import numpy as np

from bench.appserver import app_env, free_port, stop, wait_ready
from bench.common import calibration, load, machine, photo, summarize
from bench.procstats import cpu_seconds, proc_memory
from demo.store_remote import MODEL_DEPLOYMENT
from scale.api import API_DEPLOYMENT, API_PREFIX
from scale.ingress import INGRESS_DEPLOYMENT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "scale.json"
SERVE_CONFIG = REPO / "scale" / "serve_config.yaml"
API_ROUTE = API_PREFIX + "/classify"

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
    """Pids of this machine's Ray processes by role, from their process titles: model replicas,
    the API's front, the page's replica, and Ray's own (proxy, controller, raylet, GCS)."""
    roles: dict[str, list[int]] = {"replica": [], "api": [], "page": [], "ray": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f":{MODEL_DEPLOYMENT}" in cmd and "ServeReplica" in cmd:
            roles["replica"].append(int(entry.name))
        elif f":{API_DEPLOYMENT}" in cmd and "ServeReplica" in cmd:
            roles["api"].append(int(entry.name))
        elif f":{INGRESS_DEPLOYMENT}" in cmd and "ServeReplica" in cmd:
            roles["page"].append(int(entry.name))
        elif any(k in cmd for k in ("ServeController", "ProxyActor", "raylet", "gcs_server")):
            roles["ray"].append(int(entry.name))
    return roles


def deploy_config(port: int, replicas: int | None = None, host: str = "127.0.0.1") -> None:
    """What `serve run scale/serve_config.yaml` does once Ray runs: Serve started with the file's
    proxy options and the file's applications deployed (validated by Serve's own schema), with
    the proxy on `host`:`port`; `replicas`, when given, fixes the model replicas' number (no
    autoscaling). Called again, it updates the running applications in place."""
    import yaml
    from ray.serve._private.api import serve_start
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(SERVE_CONFIG.read_text())
    if replicas is not None:
        for app in raw["applications"]:
            for d in app["deployments"]:
                if d["name"] == MODEL_DEPLOYMENT:
                    d.pop("autoscaling_config", None)
                    d["num_replicas"] = replicas
    config = ServeDeploySchema.model_validate(raw)
    http = {**config.http_options.model_dump(), "host": host, "port": port}
    client = serve_start(http_options=http, proxy_location=config.proxy_location,
                         grpc_options=gRPCOptions(**config.grpc_options.model_dump()))
    client.deploy_apps(config, _blocking=False)


def running_replicas(app_name: str) -> int:
    """RUNNING model replicas of `app_name`, from Serve's controller."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    deployment = app.deployments.get(MODEL_DEPLOYMENT) if app else None
    states = deployment.replica_states if deployment else {}
    return sum(v for k, v in states.items() if str(getattr(k, "value", k)) == "RUNNING")


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}


def drive(call: Callable[[int], None], clients: int, seconds: float, pids: dict[str, list[int]],
          fail: Callable[[int], None] = lambda i: None) -> dict[str, Any]:
    """`clients` threads, each calling `call(i)` in a loop for `seconds` (an exception is an error,
    after which `fail(i)`); latency, throughput and CPU seconds per request of each role in `pids`
    and of this process (the clients)."""
    barrier = threading.Barrier(clients + 1)
    latencies: list[float] = []
    errors: list[str] = []
    box: dict[str, float] = {}

    def worker(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < box["end"]:
            t = time.perf_counter()
            try:
                call(i)
                latencies.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(str(exc)[:200])
                fail(i)

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
    n = max(len(latencies), 1)
    cpu = {f"{role}_cpu_ms_per_request": round((cpu1[role] - cpu0[role]) * 1000 / n, 1) for role in pids}
    cpu["total_cpu_ms_per_request"] = round(sum(cpu1[r] - cpu0[r] for r in pids) * 1000 / n, 1)
    cpu["clients_cpu_ms_per_request"] = round((client1 - client0) * 1000 / n, 1)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 2), "latency": summarize(latencies), "cpu": cpu}


def run_clients(url: str, image: Path, clients: int, seconds: float, pids: dict[str, list[int]]) -> dict[str, Any]:
    """`clients` gradio_client clients classifying `image` in a loop for `seconds` (`drive`)."""
    from gradio_client import Client, handle_file

    pool = [Client(url, verbose=False) for _ in range(clients)]
    for c in pool:  # warm: every client's first call, every replica's first batch
        c.predict(handle_file(str(image)), api_name="/classify")
    try:
        return drive(lambda i: pool[i].predict(handle_file(str(image)), api_name="/classify"), clients, seconds, pids)
    finally:
        for c in pool:
            with contextlib.suppress(Exception):
                c.close()


def run_rest_clients(url: str, data: bytes, clients: int, seconds: float, pids: dict[str, list[int]]
                     ) -> dict[str, Any]:
    """`clients` threads, each POSTing `data` to `url` (…/api/v1/classify) in a loop for
    `seconds` on one kept-alive connection (http.client); as `run_clients`."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)

    def post(conn: http.client.HTTPConnection) -> None:
        conn.request("POST", parts.path, body=data, headers={"Content-Type": "image/jpeg"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")

    pool = [http.client.HTTPConnection(parts.hostname, parts.port, timeout=120) for _ in range(clients)]
    for conn in pool:  # warm: the connection, every replica's first batch
        post(conn)
    try:
        return drive(lambda i: post(pool[i]), clients, seconds, pids, fail=lambda i: pool[i].close())
    finally:
        for conn in pool:
            conn.close()


# ------------------------------------------------------------------------------------------ 1. serving


def start_app(port: int, log: Path, **env: str) -> subprocess.Popen:
    """`python app.py` on 127.0.0.1:`port` with the kitchenware weights, once /healthz says ready."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=app_env(port, "kitchenware", **env),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    except Exception:
        stop(proc)
        raise
    return proc


def bench_single(args: argparse.Namespace, image: Path, out_dir: Path) -> dict[str, Any]:
    """`python app.py`: the page (gradio_client) and the plain API (keep-alive HTTP), one after the other."""
    port = free_port()
    proc = start_app(port, out_dir / "scale-app.log")
    try:
        url, pids = f"http://127.0.0.1:{port}", {"app": [proc.pid]}
        out = {"single": run_clients(url + "/", image, args.clients, args.seconds, pids),
               "rest_single": run_rest_clients(url + API_ROUTE, image.read_bytes(), args.clients, args.seconds, pids)}
        out["single"]["memory_mb"] = proc_memory(proc.pid)
        return out
    finally:
        stop(proc)


def settle(url: str, app_name: str, replicas: int) -> dict[str, list[int]]:
    """Waits until `replicas` model replicas run (and no others) and the page answers; the pids."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pids = ray_processes()
        if running_replicas(app_name) == replicas and len(pids["replica"]) == replicas and pids["api"]:
            wait_ready(url)
            return pids
        time.sleep(1)
    raise TimeoutError(f"{replicas} replicas not running after 300 s")


def bench_serve(args: argparse.Namespace, image: Path, out_dir: Path) -> dict[str, Any]:
    """The shipped config on a local Ray of 4 logical CPUs: the plain API at 1, 4 and 2 model
    replicas (1 thread each); at 2, also the page (gradio_client) and the API through a page
    process (`python app.py`, XCEPTION_MODEL_STORE=ray: the image decoded there, arrays sent to
    the replicas, as every API request went before); then a replica killed and replaced."""
    import ray
    from ray import serve

    from xception_core.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), weights="kitchenware", model_store="ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, namespace="serve", runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    out: dict[str, Any] = {}
    data = image.read_bytes()
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        for replicas in (1, 4, 2):
            _say(f"Serve, {replicas} model replica(s) of 1 thread: the plain API")
            deploy_config(port, replicas)
            pids = settle(url, settings.serve_app, replicas)
            out[f"rest_serve_{replicas}"] = run_rest_clients(url + API_ROUTE, data, args.clients, args.seconds, pids)
        _say("Serve, 2 replicas: the page (gradio_client)")
        result = run_clients(url + "/", image, args.clients, args.seconds, pids)
        result["memory_mb"] = {role: [proc_memory(p) for p in ps] for role, ps in pids.items() if role != "ray"}
        out["serve_2"] = result
        _say("Serve, 2 replicas: the plain API through a page process (the route before)")
        page_port = free_port()
        page = start_app(page_port, out_dir / "scale-page.log", XCEPTION_MODEL_STORE="ray",
                         RAY_ADDRESS=ray.get_runtime_context().gcs_address)
        try:
            roles = {**pids, "page_process": [page.pid]}
            out["rest_page_process_2"] = run_rest_clients(f"http://127.0.0.1:{page_port}{API_ROUTE}", data,
                                                          args.clients, args.seconds, roles)
            out["rest_page_process_2"]["memory_mb"] = proc_memory(page.pid)
        finally:
            stop(page)
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

    victim = ray_processes()["replica"][0]
    t = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    while time.perf_counter() - t < 300:
        running = running_replicas(settings.serve_app)
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
    """Processes and 8-vCPU machines for each rate, size and precision at p95 ≤ 1 s, for the two
    routes a classify can take: the plain API (proxy → API front → model replica) and the page
    (a page process, then a model replica).

    A model replica (1 CPU) is an M/M/1 queue whose service time `s` is its CPU per request at
    batch 1 (the forward at 1 thread plus what the replica pays around it: decode, preprocessing
    and Ray, measured at 2 replicas): its p95 time in system is ln(20)·s/(1 − ρ) ≤ 1 s, so it may
    be busy ρ = min(1 − ln(20)·s, cap) of the time and serves ρ / c requests a second, `c` the
    same with the batch-8 forward. The API's front and Ray's proxy and bookkeeping, and a page
    process (Gradio, decode, preprocessing, the hop to a replica), cost their measured CPU per
    request at the same cap; a page process is one Python process, so at most one core."""
    rest2, page2 = serving.get("rest_serve_2", {}).get("cpu", {}), serving.get("serve_2", {}).get("cpu", {})
    b8_150 = forward["150_fp32_b8"]["cpu_ms_per_image"]
    # What a replica pays around the forward (measured at 150 px fp32), by route.
    around = {"api": max(rest2.get("replica_cpu_ms_per_request", b8_150) - b8_150, 0.0) / 1000,
              "page": max(page2.get("replica_cpu_ms_per_request", b8_150) - b8_150, 0.0) / 1000}
    front_s = (rest2.get("api_cpu_ms_per_request", 0.0) + rest2.get("ray_cpu_ms_per_request", 0.0)) / 1000
    page_s = (page2.get("page_cpu_ms_per_request", 0.0) + page2.get("ray_cpu_ms_per_request", 0.0)) / 1000
    rows = []
    for size in (150, 299):
        for precision in ("fp32", "int8"):
            b1 = forward[f"{size}_{precision}_b1"]["cpu_ms_per_image"] / 1000
            b8 = forward[f"{size}_{precision}_b8"]["cpu_ms_per_image"] / 1000
            per_replica = {}
            for route, extra in around.items():
                rho = min(1 - math.log(20) * (b1 + extra) / P95_TARGET_S, UTILISATION_CAP)
                per_replica[route] = rho / (b8 + extra)
            for per_min in RATES_PER_MIN:
                rate = per_min / 60
                api_replicas = max(1, math.ceil(rate / per_replica["api"]))
                api_vcpus = api_replicas + rate * front_s / UTILISATION_CAP
                page_replicas = max(1, math.ceil(rate / per_replica["page"]))
                pages = max(1, math.ceil(rate * page_s / UTILISATION_CAP))
                rows.append({
                    "per_min": per_min, "size": size, "precision": precision,
                    "replica_rps_api": round(per_replica["api"], 1), "api_replicas": api_replicas,
                    "api_front_vcpus": round(rate * front_s / UTILISATION_CAP, 2),
                    "api_machines": math.ceil(api_vcpus / (MACHINE_VCPUS - 1)),
                    "page_processes": pages, "page_replicas": page_replicas,
                    "page_machines": math.ceil((page_replicas + pages) / (MACHINE_VCPUS - 1))})
    return rows


def table(result: dict[str, Any]) -> str:
    lines = ["| setup | req/s | p50 ms | p95 ms | CPU ms/request (by process) | errors |", "|---|---|---|---|---|---|"]
    for name in ("single", "serve_2", "rest_single", "rest_page_process_2", "rest_serve_1", "rest_serve_2",
                 "rest_serve_4"):
        r = result["serving"].get(name)
        if not r:
            continue
        cpu = ", ".join(f"{k.replace('_cpu_ms_per_request', '')} {v}" for k, v in r["cpu"].items())
        lines.append(f"| {name} | {r['throughput_rps']} | {r['latency']['median_ms']} | {r['latency']['p95_ms']} "
                     f"| {cpu} | {r['errors']} |")
    lines += ["", "| per min | px | precision | API: replica req/s | model replicas | front+proxy vCPUs | machines "
              "| page: processes | model replicas | machines |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result.get("capacity", []):
        lines.append(f"| {row['per_min']:,} | {row['size']} | {row['precision']} | {row['replica_rps_api']} | "
                     f"{row['api_replicas']} | {row['api_front_vcpus']} | {row['api_machines']} | "
                     f"{row['page_processes']} | {row['page_replicas']} | {row['page_machines']} |")
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
        result["serving"].update(bench_single(args, image, args.out.parent))
        result["serving"].update(bench_serve(args, image, args.out.parent))
    if "forward" in sections:
        result["forward"] = bench_forward(args)
        result["capacity"] = capacity(result["forward"], result["serving"])
    result["meta"]["end"] = load()
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
