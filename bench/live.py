"""Talking to a running app for the benchmark: the plain HTTP API (`POST /api/v1/classify`),
Gradio's raw API for `/activations`, the cold start, and the app serving two weight sets.

Everything here measures; nothing asserts a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROUTE = "api/v1/classify"


def api_classify(http, url: str, data: bytes, **params: Any) -> tuple[float, dict[str, Any]]:
    """One `POST /api/v1/classify` with the image as the body: (seconds, answer)."""
    t = time.perf_counter()
    r = http.post(url + ROUTE, content=data, params=params, headers={"Content-Type": "image/jpeg"})
    seconds = time.perf_counter() - t
    r.raise_for_status()
    return seconds, r.json()


def wait_first_classify(url: str, data: bytes, t0: float, deadline: float, proc: subprocess.Popen) -> dict[str, Any]:
    """Polls the plain HTTP API from process start until a classify succeeds.

    Returns:
        {'http_up_s': first answer of any kind (503 while loading), 'first_classify_s',
         'first_result'}: seconds since `t0`.
    """
    import httpx

    http_up = None
    with httpx.Client(timeout=30) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}")
            if time.perf_counter() > deadline:
                raise TimeoutError("no classify over the HTTP API in time")
            try:
                r = http.post(url + ROUTE, content=data, headers={"Content-Type": "image/jpeg"})
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            now = time.perf_counter() - t0
            http_up = http_up if http_up is not None else now
            if r.status_code == 200:
                return {"http_up_s": round(http_up, 2), "first_classify_s": round(now, 2), "first_result": r.json()}
            time.sleep(0.05)


def raw_gradio_call(http, url: str, api: str, image: Path, *extra: Any) -> dict[str, Any]:
    """One call of a Gradio endpoint taking an image over its plain HTTP API (upload, POST
    /call, read the SSE result) on a persistent connection: no gradio_client polling.

    Returns:
        {'seconds': total, 'upload': upload seconds, 'call': call seconds, 'data': the endpoint's
        first output}.
    """
    t0 = time.perf_counter()
    with open(image, "rb") as f:
        r = http.post(url + "gradio_api/upload", files={"files": (image.name, f, "image/jpeg")})
    r.raise_for_status()
    path = r.json()[0]
    t1 = time.perf_counter()
    r = http.post(url + f"gradio_api/call/{api}",
                  json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, *extra]})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    done, data = False, None
    with http.stream("GET", url + f"gradio_api/call/{api}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: complete"):
                done = True
            elif line.startswith("event: error"):
                raise RuntimeError(f"{api} failed: {line}")
            elif done and line.startswith("data:"):
                data = json.loads(line[5:])
                break
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "upload": t1 - t0, "call": t2 - t1,
            "data": data[0] if isinstance(data, list) and data else data}


def activations_first_and_warm(url: str, images: list[Path], block: str = "block4") -> dict[str, Any]:
    """`/activations` of a server that has not run it yet: the first image (a miss), other images
    (warm misses), then the first again (a hit). Client times over Gradio's raw API."""
    import httpx

    views = []
    with httpx.Client(timeout=120) as http:
        for image in [*images, images[0]]:
            r = raw_gradio_call(http, url, "activations", image, block, 1)  # image, block, top_n
            answer = r["data"] or {}
            views.append({"image": image.name, "client_ms": round(r["seconds"] * 1000, 1),
                          "server_ms": answer.get("server_ms"), "forward_ms": answer.get("forward_ms"),
                          "cache_hit": answer.get("cache_hit")})
    first, warm = views[0], [v for v in views[1:-1] if not v["cache_hit"]]
    warm_ms = sorted(v["client_ms"] for v in warm)[len(warm) // 2] if warm else None
    warm_server = sorted(v["server_ms"] for v in warm)[len(warm) // 2] if warm else None
    return {"views": views, "first_ms": first["client_ms"], "warm_miss_ms": warm_ms,
            "first_vs_warm": round(first["client_ms"] / warm_ms, 3) if warm_ms else None,
            "first_vs_warm_server": round(first["server_ms"] / warm_server, 3) if warm_server else None,
            "cached_server_ms": views[-1]["server_ms"] if views[-1]["cache_hit"] else None}


def write_imagenet_layout_file(path: Path) -> Path:
    """An official-layout (legacy HDF5) Xception weights file with top, 299×299: the kitchenware
    preset's base weights (= the official ImageNet no-top weights) and a random 1000-class top.
    What the app reads when `XCEPTION_WEIGHTS` names the official file; latency and memory do not
    depend on the top's values."""
    import h5py
    import keras
    import numpy as np

    from xception_core.model import load_model

    if path.is_file():
        return path
    reference = keras.applications.Xception(weights=None)
    base = load_model("kitchenware", include_top=False).model
    by_name = {layer.name: layer for layer in base.layers if layer.weights}
    for layer in reference.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in reference.layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.1.3"
        for layer in reference.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.path.split('/')[-1]}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, w in zip(names, layer.weights):
                group.create_dataset(name.decode(), data=np.asarray(w.numpy()))
    tmp.replace(path)
    return path


def serve_two(port: int, first: str, second: str) -> None:
    """`python -m bench.live PORT FIRST SECOND`: the real app (create_app, uvicorn) with a store
    that loads two weight sets, as it does when the ImageNet weights are reachable."""
    import uvicorn

    from demo.server import create_app
    from demo.store import ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    store = ModelStore(settings, [first, second]).start()
    uvicorn.run(create_app(settings, store), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    serve_two(int(sys.argv[1]), sys.argv[2], sys.argv[3])
