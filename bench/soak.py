"""Soak and budget figures for a public URL (issue 9). Not run in CI: loopback only, bounded.

    python -m bench.soak run --clients 4 --minutes 15      # mixed traffic on 2 app processes, prints the table
    python -m bench.soak bigphoto                          # one 48 MP photo, then 8 at once
    python -m bench.soak sessions --n 2000                 # RSS after 100 vs N new-session classifies
    python -m bench.soak uploads --n 1000                  # disk after N uploads
    python -m bench.soak echo --n 10 --mb 12               # huge values for a radio: bytes answered, logged

Each starts `python app.py` (kitchenware weights) on a free loopback port with its own
GRADIO_TEMP_DIR and export folder, drives it over Gradio's raw HTTP protocol (upload,
queue/join + queue/data, call/<api>) the way the page and API clients do, and reads the server's
RSS from /proc. Figures go in bench/README.md ("Soak").

`run` starts `--apps` processes (2 by default) on one machine sharing one GRADIO_TEMP_DIR and one
export folder, as a scale-out node runs them; each client talks to its own process (another while
it restarts). The mix includes the plain REST route (`POST /api/v1/classify`: small photos, 48 MP
photos, junk) and, beside the clients, `--slow` connections per process that trickle a request
body a byte every 5 s (each must end in 408 while the rest is served). Halfway, process 0 is
stopped and started again: the others' example photos must keep serving (each client checks the
example files of its process now and then), and what the stopped process wrote must be gone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.appserver import app_env, free_port, stop
from bench.procstats import proc_memory
from demo.runs import folder_bytes

ROOT = Path(__file__).resolve().parents[1]
REST_ROUTE = "/api/v1/classify"


# ------------------------------------------------------------------------------------------ the app


@dataclass
class App:
    proc: subprocess.Popen
    url: str
    temp_dir: Path
    export_dir: Path
    log: Path

    def rss_mb(self) -> float:
        return proc_memory(self.proc.pid)["rss_mb"] or float("nan")

    def peak_mb(self) -> float:
        return proc_memory(self.proc.pid)["peak_rss_mb"] or float("nan")

    def reset_peak(self) -> bool:
        """Resets VmHWM to the current RSS (Linux `clear_refs` 5; needs to own the process)."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def disk_mb(self) -> float:
        return folder_bytes(self.temp_dir) / 2**20


def start_app(work: Path, name: str = "app", temp_dir: Path | None = None, export_dir: Path | None = None,
              root: Path = ROOT, **env: str) -> App:
    """`python app.py` with its folders under `work` (or the `temp_dir` and `export_dir` given, which
    several processes may share), once /healthz says ready."""
    port = free_port()
    temp_dir, export_dir, log = temp_dir or work / "gradio", export_dir or work / "exports", work / f"{name}.log"
    temp_dir.mkdir(parents=True, exist_ok=True)
    environ = app_env(port, "kitchenware", GRADIO_TEMP_DIR=str(temp_dir), XCEPTION_EXPORT_DIR=str(export_dir), **env)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=environ, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).json()["ready"]:
                return App(proc, url, temp_dir, export_dir, log)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    stop(proc)
    raise TimeoutError("app not ready")


# ------------------------------------------------------------------------------------------ protocol


class RawGradio:
    """Gradio 6's HTTP protocol as the page speaks it: upload, queue/join, queue/data (SSE)."""

    def __init__(self, url: str, timeout: float = 180.0):
        self.url = url
        self.http = httpx.Client(timeout=timeout)
        config = self.http.get(url + "/config").json()
        self.components = {c["id"]: c for c in config["components"]}
        self.deps = config["dependencies"]

    def _ids(self, **props: Any) -> set[int]:
        return {i for i, c in self.components.items()
                if all(c.get("props", {}).get(k) == v for k, v in props.items())}

    def fn(self, output_elem: str, trigger: str | None = None, target: dict | None = None) -> int:
        """The id of the event whose outputs include `output_elem` (optionally by trigger and target)."""
        outputs = self._ids(elem_id=output_elem)
        targets = self._ids(**target) if target else None
        for dep in self.deps:
            if not outputs & set(dep["outputs"]):
                continue
            if trigger and not any(t[1] == trigger for t in dep["targets"]):
                continue
            if targets is not None and not any(t[0] in targets for t in dep["targets"]):
                continue
            return dep["id"]
        raise KeyError((output_elem, trigger, target))

    def upload(self, name: str, data: bytes) -> dict:
        r = self.http.post(self.url + "/gradio_api/upload", files={"files": (name, data)})
        if r.status_code != 200:
            raise Refused(f"upload {r.status_code}")
        return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def run(self, fn_index: int, data: list, session: str, event_data: Any = None) -> Any:
        """Runs one event; returns its output data or raises `Refused` (an error message or status)."""
        r = self.http.post(self.url + "/gradio_api/queue/join",
                           json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data})
        if r.status_code != 200:
            raise Refused(f"HTTP {r.status_code}")
        result: Any = None
        error: str | None = "stream ended"
        # Read to the server's close_stream, as the page does: a stream left unread keeps the
        # server's stream and its heartbeat task waiting (demo.limits.OrphanHeartbeats).
        with self.http.stream("GET", self.url + "/gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                kind = msg.get("msg")
                if kind == "process_completed":
                    if msg.get("success"):
                        result, error = msg["output"]["data"], None
                    else:
                        error = (msg.get("output") or {}).get("error") or "error"
                elif kind in ("unexpected_error", "queue_full"):
                    error = kind
                    break
                elif kind == "close_stream":
                    break
        if error is not None:
            raise Refused(error)
        return result

    def call(self, api: str, data: list) -> Any:
        r = self.http.post(self.url + f"/gradio_api/call/{api}", json={"data": data})
        if r.status_code != 200:
            raise Refused(f"HTTP {r.status_code}")
        event = r.json()["event_id"]
        kind = None
        with self.http.stream("GET", self.url + f"/gradio_api/call/{api}/{event}") as s:
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    if kind == "complete":
                        return json.loads(line[5:])
                    raise Refused(line[5:].strip()[:200] or "error")
        raise Refused("stream ended")


class Refused(Exception):
    """The server answered with an error (expected for bad inputs)."""


def request_bytes(port: int, body: bytes, content_type: str = "image/jpeg", length: int | None = None) -> bytes:
    """A raw `POST /api/v1/classify` request (its Content-Length may promise more than `body`)."""
    head = (f"POST {REST_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n")
    return head.encode() + body


def read_status(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer on `sock` (0, {} when the server closed without one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"text": body[:200].decode(errors="replace")}
    return int(head.split()[1]), parsed


# ------------------------------------------------------------------------------------------ inputs


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG (smooth shapes plus sensor-like noise) of the given size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    noise = Image.effect_noise((width, height), 12).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@dataclass
class Inputs:
    small: list[bytes]
    big: bytes
    junk: bytes = b"this is not an image at all" * 100
    truncated: bytes = b""

    @classmethod
    def make(cls, big: bool = True) -> "Inputs":
        from xception_core.io.assets import example_images

        small = [Path(e.path).read_bytes() for e in example_images()]
        small += [photo_jpeg(1200, 900, seed) for seed in range(4)]
        big_photo = photo_jpeg(8000, 6000, 1, quality=80) if big else small[0]
        return cls(small, big_photo, truncated=small[0][: len(small[0]) // 3])


# ------------------------------------------------------------------------------------------ soak


@dataclass
class Stats:
    served: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)  # expected refusals (bad inputs)
    errors: Counter = field(default_factory=Counter)  # unexpected: kind -> count
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    error_samples: dict[str, str] = field(default_factory=dict)
    slow_s: list[float] = field(default_factory=list)  # seconds a slow body took to be answered 408
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.served[kind] += 1
            self.latencies[kind].append(seconds)

    def refuse(self, kind: str) -> None:
        with self.lock:
            self.refused[kind] += 1

    def error(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            key = f"{kind}: {type(exc).__name__}"
            self.errors[key] += 1
            self.error_samples.setdefault(key, str(exc)[:160])


class AppPool:
    """The app processes of a soak on one machine. A process being restarted is `down`: clients
    whose own process it is use another meanwhile."""

    def __init__(self, apps: list[App]):
        self.apps = list(apps)
        self.down: set[int] = set()
        self.restarts = 0
        self.lock = threading.Lock()

    def url(self, home: int) -> str:
        with self.lock:
            live = [i for i in range(len(self.apps)) if i not in self.down]
            return self.apps[home if home in live else live[home % len(live)]].url


class Traffic:
    """One client's mix of requests; each `step` is one request (or a pair in one session), sent
    to the client's own app process (`home`) or, while that one restarts, to another."""

    def __init__(self, pool: AppPool, home: int, inputs: Inputs, stats: Stats, seed: int, big_share: float):
        self.pool, self.home = pool, home
        self._clients: dict[str, RawGradio] = {}
        self.g = self.client()
        self.inputs, self.stats, self.rng, self.big_share = inputs, stats, random.Random(seed), big_share
        self.fn_classify = self.g.fn("gradcam", "click")
        self.fn_explain = self.g.fn("gradcam", "input")
        self.fn_image = self.g.fn("explore-gallery", "change")
        self.fn_view = self.g.fn("explore-gallery", "input", {"label": "Most active channels shown"})
        self.fn_channel = self.g.fn("explore-full", "input", {"label": "Channel (full size)"})
        self.fn_compare = self.g.fn("explore-diff", "click")
        gallery = self.g._ids(elem_id="classify-examples")
        self.fn_examples = next(d["id"] for d in self.g.deps if gallery & set(d["outputs"]) and len(d["inputs"]) == 2)
        self.session = uuid.uuid4().hex[:11]
        self.weights = [
            (self.classify_tab, 20), (self.api_classify, 15), (self.explain, 8), (self.explore, 12),
            (self.explore_view, 6), (self.bad_tiles, 4), (self.compare, 4), (self.activations_api, 6),
            (self.data_url_ok, 5), (self.data_url_over_cap, 3), (self.junk, 4), (self.huge_body, 2),
            (self.truncated, 3), (self.big_photo, big_share),
            (self.rest_classify, 12), (self.rest_big, big_share), (self.rest_junk, 3), (self.examples, 3),
            (self.huge_choice, 2),
        ]
        block = self.g._ids(elem_id="teach-block")
        self.fn_choice, self.choice_inputs = next((d["id"], d["inputs"]) for d in self.g.deps
                                                  if block & set(d["inputs"]))
        self.block_id = next(iter(block))

    def client(self) -> RawGradio:
        """The protocol client of the process this step goes to (its page config read once)."""
        url = self.pool.url(self.home)
        if url not in self._clients:
            self._clients[url] = RawGradio(url)
        return self._clients[url]

    def new_session(self) -> str:
        if self.rng.random() < 0.7:  # most requests come from new visitors
            self.session = uuid.uuid4().hex[:11]
        return self.session

    def small(self) -> bytes:
        return self.rng.choice(self.inputs.small)

    def timed(self, kind: str, fn, expect_refusal: bool = False) -> None:
        start = time.perf_counter()
        try:
            fn()
        except Refused as exc:
            if expect_refusal:
                self.stats.refuse(kind)
            else:
                self.stats.error(kind, exc)
            return
        except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
            self.stats.error(kind, exc)
            return
        if expect_refusal:
            self.stats.error(kind, RuntimeError("accepted what should be refused"))
        else:
            self.stats.ok(kind, time.perf_counter() - start)

    def step(self) -> None:
        fns, weights = zip(*self.weights)
        try:
            self.g = self.client()
        except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
            self.stats.error("page config", exc)
            time.sleep(1.0)
            return
        self.rng.choices(fns, weights)[0]()

    # ---------------------------------------------------------------- requests

    def classify_tab(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            out = self.g.run(self.fn_classify, [file, None], self.new_session())
            assert out[0]["label"], out
        self.timed("classify (tab, Grad-CAM)", go)

    def api_classify(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            assert len(self.g.call("classify", [file, None])[0]) == 5
        self.timed("classify (API)", go)

    def explain(self) -> None:
        def go():
            session = uuid.uuid4().hex[:11]
            out = self.g.run(self.fn_classify, [self.g.upload("photo.jpg", self.small()), None], session)
            second = out[0]["confidences"][1]["label"]
            self.g.run(self.fn_explain, [second, None], session)
        self.timed("classify + explain another class", go)

    def explore(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            self.g.run(self.fn_image, [file, "block4", 16, True, True, None], self.new_session())
        self.timed("explore activations", go)

    def explore_view(self) -> None:
        def go():
            session = uuid.uuid4().hex[:11]
            file = self.g.upload("photo.jpg", self.small())
            self.g.run(self.fn_image, [file, "block2", 8, False, True, None], session)
            self.g.run(self.fn_view, [None, file, "block14", 64, True, True, None], session)
            self.g.run(self.fn_channel, [None, file, "block14", 64, 2000, True, True], session)
        self.timed("explore views (64 tiles, channel)", go)

    def bad_tiles(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            self.g.run(self.fn_view, [None, file, "block14", 10**9, True, True, None], self.new_session())
        self.timed("10**9 tiles asked (the page clamps to 64)", go)

    def compare(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            self.g.run(self.fn_compare, [None, file, None], self.new_session())
        self.timed("compare wirings", go)

    def activations_api(self) -> None:
        def go():
            file = self.g.upload("photo.jpg", self.small())
            out = self.g.call("activations", [file, self.rng.choice(["block1", "block7", "block14"]), 8])
            assert out[0]["shape"]
        self.timed("activations (API)", go)

    def data_url_ok(self) -> None:
        def go():
            assert len(self.g.call("classify", [{"url": data_url(self.small())}, None])[0]) == 5
        self.timed("classify (data URL)", go)

    def data_url_over_cap(self) -> None:
        def go():  # 10.5 MB decoded: under the body limit, over the image cap
            self.g.call("classify", [{"url": "data:image/png;base64," + "A" * (14 * 2**20)}, None])
        self.timed("bad: data URL over the cap", go, expect_refusal=True)

    def junk(self) -> None:
        def go():
            self.g.call("classify", [self.g.upload("junk.jpg", self.inputs.junk), None])
        self.timed("bad: not an image", go, expect_refusal=True)

    def truncated(self) -> None:
        def go():
            self.g.call("classify", [self.g.upload("cut.jpg", self.inputs.truncated), None])
        self.timed("bad: truncated JPEG", go, expect_refusal=True)

    def huge_body(self) -> None:
        def go():
            body = {"data": [{"url": "data:image/png;base64," + "A" * (40 * 2**20)}, None], "fn_index": 0,
                    "session_hash": uuid.uuid4().hex[:11]}
            r = self.g.http.post(self.g.url + "/gradio_api/queue/join", json=body)
            if r.status_code == 413:
                raise Refused("413")
        self.timed("bad: 40 MB body", go, expect_refusal=True)

    def big_photo(self) -> None:
        def go():
            file = self.g.upload("big.jpg", self.inputs.big)
            self.g.run(self.fn_classify, [file, None], self.new_session())
        self.timed("48 MP photo (tab)", go)

    def rest(self, body: bytes) -> dict:
        r = self.g.http.post(self.g.url + REST_ROUTE, content=body, headers={"Content-Type": "image/jpeg"})
        if r.status_code != 200:
            raise Refused(f"HTTP {r.status_code}: {r.text[:120]}")
        return r.json()

    def rest_classify(self) -> None:
        def go():
            assert len(self.rest(self.small())["top"]) == 5
        self.timed("classify (REST)", go)

    def rest_big(self) -> None:
        def go():
            assert len(self.rest(self.inputs.big)["top"]) == 5
        self.timed("48 MP photo (REST)", go)

    def rest_junk(self) -> None:
        def go():
            self.rest(self.inputs.junk)
        self.timed("bad: not an image (REST)", go, expect_refusal=True)

    def huge_choice(self) -> None:
        """A 2 MB string for a private radio: refused in a short answer (never echoed whole)."""
        def go():
            data = ["z" * 2_000_000 if i == self.block_id else None for i in self.choice_inputs]
            try:
                self.g.run(self.fn_choice, data, self.new_session())
            except Refused as exc:
                if len(str(exc)) > 200:
                    raise RuntimeError(f"the refusal echoed {len(str(exc)):,} characters") from None
                raise
        self.timed("bad: 2 MB value for a choice", go, expect_refusal=True)

    def examples(self) -> None:
        """The Classify tab's example photos as the page gets them, and each file fetched: a process
        must never lose them to another that stops."""
        def go():
            out = self.g.run(self.fn_examples, [None, None], uuid.uuid4().hex[:11])
            urls = [item["image"]["url"] for item in out[0]] if out and out[0] else []
            assert urls, out
            for url in urls:
                r = self.g.http.get(url)
                assert r.status_code == 200, f"example file answered {r.status_code}"
        self.timed("example photos (page, files fetched)", go)


class SlowBodies:
    """`n` connections per app process that each declare a 100 kB REST body and send one byte
    every `every` seconds: each must be answered 408 (then it reconnects) while other clients are
    served. Answers and their times go to `stats`."""

    def __init__(self, pool: AppPool, n: int, stats: Stats, every: float = 5.0):
        self.pool, self.n, self.stats, self.every = pool, n, stats, every
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._one, args=(i,), daemon=True)
                        for i in range(len(pool.apps)) for _ in range(n)]

    def start(self) -> "SlowBodies":
        for thread in self.threads:
            thread.start()
        return self

    def _one(self, app: int) -> None:
        while not self.stop.is_set():
            if app in self.pool.down:
                self.stop.wait(1.0)
                continue
            port = int(self.pool.apps[app].url.rsplit(":", 1)[1])
            opened = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(request_bytes(port, b"\xff", length=100_000))
                    while not self.stop.is_set() and app not in self.pool.down:
                        ready, _, _ = select.select([sock], [], [], self.every)
                        if ready:
                            sock.settimeout(10)
                            status, _ = read_status(sock)
                            break
                        sock.sendall(b"\xd8")
                    else:  # stopping, or its process is being restarted: closed, not counted
                        continue
            except OSError as exc:
                if app not in self.pool.down:
                    self.stats.error("slow body (REST)", exc)
                continue
            if status == 408:
                self.stats.refuse("slow body (REST) → 408")
                with self.stats.lock:
                    self.stats.slow_s.append(time.monotonic() - opened)
            elif app in self.pool.down or status == 0:  # its process stopped under it (the restart)
                self.stats.refuse("slow body (REST): closed by a process stopping")
            else:
                self.stats.error("slow body (REST)", RuntimeError(f"answered {status}"))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_folders(root: Path) -> list[Path]:
    """The per-process folders (demo.runs) under a shared upload root."""
    from demo.runs import is_run_folder

    return [p for p in root.iterdir() if is_run_folder(p)] if root.is_dir() else []


def max_line(log: Path) -> int:
    """Length of the longest line of a log."""
    with open(log, "rb") as f:
        return max((len(line) for line in f), default=0)


def soak(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="xception-soak-"))
    shared, exports = work / "gradio", work / "exports"
    inputs = Inputs.make()
    started_apps: list[App] = []

    def launch(i: int, generation: int = 0) -> App:
        app = start_app(work, name=f"app{i}-{generation}", temp_dir=shared, export_dir=exports)
        started_apps.append(app)
        return app

    pool = AppPool([None] * args.apps)  # type: ignore[list-item]
    threads = [threading.Thread(target=lambda i=i: pool.apps.__setitem__(i, launch(i))) for i in range(args.apps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(app is None for app in pool.apps):
        for app in started_apps:
            stop(app.proc)
        raise RuntimeError("an app process did not start")
    stats = Stats()
    rss = [{"start": app.rss_mb(), "peak": app.rss_mb()} for app in pool.apps]
    disk = {"start": folder_bytes(shared) / 2**20, "peak": folder_bytes(shared) / 2**20}
    stop_at = time.monotonic() + args.minutes * 60
    restart_at = time.monotonic() + args.minutes * 60 * args.restart_at if args.apps > 1 and args.restart_at else None
    done = threading.Event()
    restart_note: list[str] = []

    def monitor():
        last_disk = 0.0
        while not done.wait(1.0):
            for i, app in enumerate(list(pool.apps)):
                if i not in pool.down:
                    rss[i]["peak"] = max(rss[i]["peak"], app.rss_mb())
            if time.monotonic() - last_disk > 10:
                disk["peak"] = max(disk["peak"], folder_bytes(shared) / 2**20)
                last_disk = time.monotonic()

    def restarter():
        """Process 0 stops (clients move to the others), its folder must go, and it starts again."""
        if restart_at is None or done.wait(max(restart_at - time.monotonic(), 0)):
            return
        with pool.lock:
            pool.down.add(0)
        time.sleep(15.0)  # let its requests in flight finish (a slow body is closed at once, a 48 MP photo takes s)
        old = pool.apps[0]
        folders_before = {p.name for p in run_folders(shared)}
        stop(old.proc)
        gone = folders_before - {p.name for p in run_folders(shared)}
        began = time.monotonic()
        pool.apps[0] = launch(0, generation=1)
        with pool.lock:
            pool.down.discard(0)
            pool.restarts += 1
        restart_note.append(f"process 0 stopped at {(restart_at - started) / 60:.1f} min (its folder removed: "
                            f"{len(gone) == 1}) and was serving again {time.monotonic() - began:.0f} s later")

    def client(i: int):
        try:
            traffic = Traffic(pool, i % args.apps, inputs, stats, seed=i, big_share=args.big_share)
        except Exception as exc:  # noqa: BLE001
            stats.error("client start", exc)
            return
        while time.monotonic() < stop_at:
            traffic.step()

    slow = SlowBodies(pool, args.slow, stats).start() if args.slow else None
    threading.Thread(target=monitor, daemon=True).start()
    restart_thread = threading.Thread(target=restarter, daemon=True)
    started = time.monotonic()
    restart_thread.start()
    try:
        clients = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        elapsed = time.monotonic() - started
        if slow is not None:  # closed before the processes stop: a stop cancels open requests, with tracebacks
            slow.stop.set()
            for thread in slow.threads:
                thread.join(timeout=30)
        restart_thread.join(timeout=600)
        done.set()
        for i, app in enumerate(pool.apps):
            rss[i]["end"] = app.rss_mb()
        disk["end"] = folder_bytes(shared) / 2**20
        healthy = all(httpx.get(app.url + "/healthz", timeout=10).json()["ready"] for app in pool.apps)
        running_folders = len(run_folders(shared))
    finally:
        for app in pool.apps:
            if app is not None and app.proc.poll() is None:
                stop(app.proc)
    logs = {"tracebacks": sum(a.log.read_text(errors="replace").count("Traceback") for a in started_apps),
            "mb": sum(a.log.stat().st_size for a in started_apps) / 2**20,
            "longest": max(max_line(a.log) for a in started_apps)}
    left = len(run_folders(shared))
    notes = restart_note + [f"per-process folders: {running_folders} while {args.apps} ran, "
                            f"{left} left after all stopped"]
    print(report(stats, rss, disk, elapsed, args, healthy, logs, folder_bytes(exports) / 2**20, notes))
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
        for app in started_apps:
            shutil.copy(app.log, args.keep_logs / app.log.name)
    shutil.rmtree(work, ignore_errors=True)


def report(stats: Stats, rss: list[dict], disk: dict, elapsed: float, args, healthy: bool, logs: dict,
           exports_mb: float, notes: list[str]) -> str:
    all_latencies = [x for v in stats.latencies.values() for x in v]
    lines = [f"Soak: {args.clients} clients on {args.apps} app processes × {elapsed / 60:.1f} min, mixed traffic, "
             f"{args.slow} slow REST bodies per process (loopback)", "",
             "| request | served | p50 s | p95 s |", "|---|---|---|---|"]
    for kind in sorted(stats.latencies):
        values = stats.latencies[kind]
        lines.append(f"| {kind} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} |")
    lines.append(f"| **all served** | **{len(all_latencies)}** | **{percentile(all_latencies, 50):.2f}** | "
                 f"**{percentile(all_latencies, 95):.2f}** |")
    lines += ["", "| bad input (refused as expected) | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(stats.refused.items())]
    if stats.slow_s:
        lines += ["", f"Slow bodies answered 408 after {percentile(stats.slow_s, 50):.1f} s (p50), "
                      f"{max(stats.slow_s):.1f} s (max)"]
    lines += ["", f"Unexpected errors: {sum(stats.errors.values())}"]
    lines += [f"- {k}: {v} (e.g. {stats.error_samples[k]!r})" for k, v in sorted(stats.errors.items())]
    lines += ["", "| server | start | peak | end |", "|---|---|---|---|"]
    lines += [f"| RSS of process {i} (MB) | {r['start']:.0f} | {r['peak']:.0f} | {r.get('end', float('nan')):.0f} |"
              for i, r in enumerate(rss)]
    lines += [f"| shared upload/output folder (MB) | {disk['start']:.1f} | {disk['peak']:.1f} | {disk['end']:.1f} |",
              "", f"Exports folder: {exports_mb:.1f} MB · server logs: {logs['mb']:.2f} MB, {logs['tracebacks']} "
                  f"tracebacks, longest line {logs['longest']:,} bytes · healthy at the end: {healthy}"]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ figures


def png_7000() -> bytes:
    """A 7000×7000 PNG that is small on disk (~150 KB) and 147 MB decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (40, 140, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def bigphoto(args: argparse.Namespace) -> None:
    """A 48 MP photo (and a 7000×7000 PNG) through the Classify tab: peak RSS added and time;
    then 8 at once."""
    work = Path(tempfile.mkdtemp(prefix="xception-bigphoto-"))
    app = start_app(work)
    try:
        g = RawGradio(app.url)
        fn = g.fn("gradcam", "click")
        warm = g.upload("small.jpg", photo_jpeg(640, 480))
        g.run(fn, [warm, None], uuid.uuid4().hex[:11])  # first-call costs out of the way
        for name, data in (("8000×6000 JPEG", photo_jpeg(8000, 6000, 1, quality=80)), ("7000×7000 PNG", png_7000())):
            print(f"{name}: {len(data) / 2**20:.2f} MB")
            for _ in range(args.repeats):
                file = g.upload("big", data)
                base = app.rss_mb()
                app.reset_peak()
                start = time.perf_counter()
                g.run(fn, [file, None], uuid.uuid4().hex[:11])
                seconds = time.perf_counter() - start
                print(f"  one through the Classify tab: {seconds:.2f} s, peak RSS {app.peak_mb():.0f} MB "
                      f"(+{app.peak_mb() - base:.0f} MB over {base:.0f} MB)")
            files = [g.upload(f"big{i}", data) for i in range(8)]
            base = app.rss_mb()
            app.reset_peak()
            start = time.perf_counter()
            results: list[Any] = []

            def one(file):
                try:
                    RawGradio(app.url).run(fn, [file, None], uuid.uuid4().hex[:11])
                    results.append("ok")
                except Refused as exc:
                    results.append(f"refused: {exc}")

            threads = [threading.Thread(target=one, args=(f,)) for f in files]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"  8 at once: {time.perf_counter() - start:.1f} s for all, peak RSS {app.peak_mb():.0f} MB "
                  f"(from {base:.0f} MB), results {dict(Counter(results))}")
    finally:
        stop(app.proc)
        shutil.rmtree(work, ignore_errors=True)


def sessions(args: argparse.Namespace) -> None:
    """RSS after 100 vs after N classifies through the Classify tab, each from a new session."""
    work = Path(tempfile.mkdtemp(prefix="xception-sessions-"))
    app = start_app(work)
    try:
        g = RawGradio(app.url)
        fn = g.fn("gradcam", "click")
        photos = [photo_jpeg(800, 600, seed) for seed in range(8)]
        marks = {}
        start = time.perf_counter()
        for i in range(1, args.n + 1):
            file = g.upload("p.jpg", photos[i % len(photos)])
            g.run(fn, [file, None], uuid.uuid4().hex[:11])
            if i in (1, 100, 500, 1000, args.n) or i % 500 == 0:
                time.sleep(args.settle)  # let one housekeeping sweep run, as it does between bursts
                marks[i] = app.rss_mb()
                print(f"after {i:5d} new-session classifies: RSS {marks[i]:.0f} MB "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"RSS after {args.n} minus after 100: {marks[args.n] - marks[100]:+.0f} MB")
    finally:
        stop(app.proc)
        shutil.rmtree(work, ignore_errors=True)


def uploads(args: argparse.Namespace) -> None:
    """Disk held by the app's upload/output folder after N uploads (each one classified)."""
    work = Path(tempfile.mkdtemp(prefix="xception-uploads-"))
    app = start_app(work)
    try:
        g = RawGradio(app.url)
        photos = [photo_jpeg(args.width, args.width * 3 // 4, seed) for seed in range(4)]
        size = sum(len(p) for p in photos) / len(photos) / 2**20
        start = time.perf_counter()
        for i in range(args.n):
            data = photos[i % len(photos)] + os.urandom(16)  # distinct files, as distinct users send
            file = g.upload("p.jpg", data)
            if i % 10 == 0:
                g.call("classify", [file, None])
        print(f"{args.n} uploads of ~{size:.1f} MB ({args.n * size:.0f} MB sent) in {time.perf_counter() - start:.0f} s: "
              f"folder holds {app.disk_mb():.0f} MB right after")
        time.sleep(args.settle)
        print(f"... and {app.disk_mb():.0f} MB {args.settle:.0f} s later (exports {folder_bytes(app.export_dir) / 2**20:.0f} MB)")
    finally:
        stop(app.proc)
        shutil.rmtree(work, ignore_errors=True)


def echo(args: argparse.Namespace) -> None:
    """`n` calls with a `mb` MB string for a private radio (Teach's block) through Gradio's queue:
    bytes answered, bytes the server log grew by, and time. `--root` runs another checkout's
    app.py (the figure before a change)."""
    work = Path(tempfile.mkdtemp(prefix="xception-echo-"))
    app = start_app(work, root=args.root)
    try:
        g = RawGradio(app.url)
        block = next(iter(g._ids(elem_id="teach-block")))
        dep = next(d for d in g.deps if block in d["inputs"])
        value = "z" * int(args.mb * 1e6)
        log_before = app.log.stat().st_size
        answered = 0
        start = time.perf_counter()
        for _ in range(args.n):
            session = uuid.uuid4().hex[:11]
            body = {"data": [value if i == block else None for i in dep["inputs"]], "fn_index": dep["id"],
                    "session_hash": session}
            r = g.http.post(app.url + "/gradio_api/queue/join", json=body)
            answered += len(r.content)
            with g.http.stream("GET", app.url + "/gradio_api/queue/data", params={"session_hash": session}) as stream:
                for chunk in stream.iter_bytes():
                    answered += len(chunk)
        seconds = time.perf_counter() - start
        time.sleep(1.0)  # the log's last lines
        grown = app.log.stat().st_size - log_before
        print(f"{args.n} calls with a {args.mb:g} MB value for a radio: {answered / 1e6:.2f} MB answered, "
              f"log +{grown / 1e6:.2f} MB (longest line {max_line(app.log):,} bytes), {seconds:.2f} s; "
              f"healthy: {httpx.get(app.url + '/healthz', timeout=10).json()['ready']}")
    finally:
        stop(app.proc)
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------ round 3


def _hold(port: int, path: str, content_type: str, start: bytes, size: int) -> socket.socket:
    """A connection that sends a request whose body of `size` bytes stops one byte short."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = start + b"-" * (size - len(start) - 1)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {size}\r\n\r\n").encode() + body)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (whatever it answered first)."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


HELD_ROUTES = (  # path, Content-Type, a well-formed start of the body (the server waits for the rest)
    ("/gradio_api/queue/join", "application/json", b'{"data": ["'),
    ("/gradio_api/upload", "multipart/form-data; boundary=xyz",
     b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'),
    (REST_ROUTE, "image/jpeg", b"\xff\xd8"),
)


def _quiet(call) -> None:
    """Runs `call`, ignoring the refusals and errors an attack expects."""
    with contextlib.suppress(Refused, httpx.HTTPError):
        call()


def attacks(args: argparse.Namespace) -> None:
    """Issue 30's attacks on one `python app.py`, a round every `--every` seconds for `--minutes`
    (40 outlasts Gradio's 30-minute cache lifetime): the examples first fetched must still be
    served at the end; Teach's add given an example's path, the run folder's lock and another
    session's upload deletes none; bodies held one byte short on each route and half-sent headers
    are all closed by the next round (their deadlines are 60 s and 10 s); a 13 MB JSON of `{}`
    is refused without stalling /healthz; another address's 64 heavy events (8 sessions) leave a
    visitor's classify served; 16 strangers' starter sets leave a trained Teach visitor trained; a
    64 px JPEG on the REST route is answered beside 12 big WebPs (peak RSS noted); an upload burst
    from 10 threads never takes the disk past its budget; HTML named .jpg is not sniffed."""
    work = Path(tempfile.mkdtemp(prefix="xception-attacks-"))
    app = start_app(work)
    port = int(app.url.rsplit(":", 1)[1])
    checks: Counter = Counter()
    failures: Counter = Counter()
    notes: dict[str, list[float]] = defaultdict(list)
    inputs = Inputs.make(big=False)

    def check(name: str, ok: bool) -> None:
        (checks if ok else failures)[name] += 1

    g = RawGradio(app.url)
    gallery = g._ids(elem_id="classify-examples")
    fn_examples = next(d["id"] for d in g.deps if gallery & set(d["outputs"]) and len(d["inputs"]) == 2)
    fn_classify = g.fn("gradcam", "click")
    added = g._ids(elem_id="teach-added")
    fn_add = next(d["id"] for d in g.deps if added & set(d["outputs"]) and len(d["inputs"]) == 3)
    fn_starter = next(d["id"] for d in g.deps if added & set(d["outputs"]) and not d["inputs"])
    fn_train = next(d["id"] for d in g.deps if g._ids(elem_id="teach-summary") & set(d["outputs"]))
    fn_teach_classify = g.fn("teach-top", "click", {"elem_id": "teach-classify"})
    webp = io.BytesIO()
    Image.new("RGB", (7000, 7000), (40, 140, 90)).save(webp, "WEBP", quality=50, method=0)
    big_webp, tiny_jpeg = webp.getvalue(), photo_jpeg(64, 64)
    # A visitor who trained a Teach classifier at the start: strangers must never evict it.
    trained_visitor = uuid.uuid4().hex[:11]
    g.run(fn_starter, [], trained_visitor)
    g.run(fn_train, [None], trained_visitor)
    first = g.run(fn_examples, [None, None], uuid.uuid4().hex[:11])
    first_urls = [item["image"]["url"] for item in first[0]]
    first_paths = [Path(item["image"]["path"]) for item in first[0]]
    held: list[socket.socket] = []
    heads: list[socket.socket] = []
    end = time.monotonic() + args.minutes * 60
    rounds = 0
    try:
        while True:
            rounds += 1
            # What the last round left open must be closed by now (deadlines 60 s and 10 s).
            check("bodies held one byte short: closed by the next round", all(_closed(s) for s in held))
            check("half-sent headers: closed by the next round", all(_closed(s) for s in heads))
            for sock in held + heads:
                sock.close()
            if time.monotonic() >= end:
                break
            if time.monotonic() + args.every >= end:  # the last round: its checks wait for the deadlines
                end = time.monotonic() + max(args.every, 65.0)
            # The examples fetched at the start, and the ones the page gives now.
            check("first examples still 200", all(g.http.get(u).status_code == 200 for u in first_urls))
            now = g.run(fn_examples, [None, None], uuid.uuid4().hex[:11])
            check("examples now 200", all(g.http.get(i["image"]["url"]).status_code == 200 for i in now[0]))
            # Teach's add given an example, the lock and another session's upload.
            theirs = g.upload("photo.jpg", inputs.small[rounds % len(inputs.small)])
            upload = Path(theirs["path"])
            lock = upload.parents[2] / ".lock"
            payloads = [{"path": str(first_paths[0]), "orig_name": "example.jpg", "meta": {"_type": "gradio.FileData"}},
                        {"path": str(lock), "orig_name": "lock", "meta": {"_type": "gradio.FileData"}}, theirs]
            with contextlib.suppress(Refused):
                g.run(fn_add, ["red", payloads, None], uuid.uuid4().hex[:11])
            check("Teach's add deleted nothing", lock.is_file() and first_paths[0].is_file() and upload.is_file())
            # Bodies held one byte short and half-sent headers, checked next round.
            held = [_hold(port, path, ctype, start, 100_000) for path, ctype, start in HELD_ROUTES
                    for _ in range(args.held)]
            heads = []
            for _ in range(args.held):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
                heads.append(sock)
            # A 13 MB JSON of {} while /healthz is asked every moment.
            app.reset_peak()
            rss = app.rss_mb()
            body = b'{"data":[' + b"{}," * (13 * 2**20 // 3) + b'{}],"fn_index":0,"session_hash":"abcdefghijk"}'
            answer: list[int] = []

            def send_json() -> None:
                with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                    sock.sendall(f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode())
                    sock.sendall(body)
                    answer.append(read_status(sock)[0])

            quiet = 0.0  # the same calls without the attack, for the machine's own latency
            for _ in range(10):
                t = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(app.url + "/healthz", timeout=5)
                quiet = max(quiet, time.perf_counter() - t)
            notes["/healthz worst, no attack (s)"].append(quiet)
            sender = threading.Thread(target=send_json)
            sender.start()
            worst = 0.0
            while sender.is_alive():
                t = time.perf_counter()
                try:
                    httpx.get(app.url + "/healthz", timeout=5)
                except httpx.HTTPError:
                    pass
                worst = max(worst, time.perf_counter() - t)
            sender.join()
            notes["13 MB JSON: /healthz worst (s)"].append(worst)
            notes["13 MB JSON: peak RSS over before (MB)"].append(app.peak_mb() - rss)
            check("13 MB JSON of {} refused (413)", answer == [413])
            # One address's 64 heavy events from 8 sessions, then a visitor's classify. The
            # attacker's address comes in X-Forwarded-For, which uvicorn trusts from 127.0.0.1
            # (its default FORWARDED_ALLOW_IPS), as a Space's proxy sends it.
            joined = [g.http.post(app.url + "/gradio_api/queue/join", headers={"X-Forwarded-For": "198.51.100.66"},
                                  json={"data": [], "fn_index": fn_starter,
                                        "session_hash": f"attacker{i % 8}{rounds:03d}"}).status_code
                      for i in range(64)]
            notes["heavy events accepted of 64 (one address, 8 sessions)"].append(joined.count(200))
            t = time.perf_counter()
            try:
                file = g.upload("photo.jpg", inputs.small[0])
                g.run(fn_classify, [file, None], uuid.uuid4().hex[:11])
                check("a visitor's classify beside 64 heavy events", True)
            except Refused:
                check("a visitor's classify beside 64 heavy events", False)
            notes["a visitor's classify beside them (s)"].append(time.perf_counter() - t)
            # 16 strangers press "starter set": the trained visitor keeps its classifier.
            strangers = [threading.Thread(target=_quiet, args=(
                lambda: RawGradio(app.url).run(fn_starter, [], uuid.uuid4().hex[:11]),)) for _ in range(16)]
            for thread in strangers:
                thread.start()
            for thread in strangers:
                thread.join(300)
            try:
                said = str(g.run(fn_teach_classify, [g.upload("try.jpg", inputs.small[1 % len(inputs.small)])],
                                 trained_visitor))
            except Refused as exc:
                said = str(exc)
            check("Teach: a trained visitor kept beside 16 strangers' starter sets", "Train first" not in said)
            # 12 big WebPs (7000×7000, ~15 B a pixel to decode) on the REST route at once, and a
            # 64 px JPEG meanwhile: the JPEG waits for no big decode.
            app.reset_peak()
            rss = app.rss_mb()
            webps = [threading.Thread(target=_quiet, args=(lambda: httpx.post(
                app.url + REST_ROUTE, content=big_webp, headers={"Content-Type": "image/webp"}, timeout=300),))
                for _ in range(12)]
            for thread in webps:
                thread.start()
            t = time.perf_counter()
            small = httpx.post(app.url + REST_ROUTE, content=tiny_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=300)
            notes["64 px JPEG beside 12 big WebPs on REST (s)"].append(time.perf_counter() - t)
            check("64 px JPEG beside 12 big WebPs answered", small.status_code == 200)
            for thread in webps:
                thread.join(300)
            notes["12 big WebPs on REST: peak RSS over before (MB)"].append(app.peak_mb() - rss)
            # An upload burst from 10 threads at once: the disk stays under its budget (200 MB).
            peak_disk = 0.0
            blob = os.urandom(2 * 2**20)
            sending = threading.Event()
            page = sum(folder_bytes(f) for f in app.temp_dir.rglob("xception-examples")) / 2**20

            def sample() -> None:
                nonlocal peak_disk
                while sending.is_set():
                    peak_disk = max(peak_disk, app.disk_mb() - page)

            def burst(offset: int) -> None:
                client = RawGradio(app.url)
                for i in range(offset, args.burst, 10):
                    _quiet(lambda: client.upload(f"burst{i}.png", blob[:-1] + bytes([i % 256])))

            sending.set()
            sampler = threading.Thread(target=sample)
            sampler.start()
            senders = [threading.Thread(target=burst, args=(k,)) for k in range(10)]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join(300)
            sending.clear()
            sampler.join()
            peak_disk = max(peak_disk, app.disk_mb() - page)
            notes["upload burst (10 at once): most visitors' files on disk (MB)"].append(peak_disk)
            check("upload burst: visitors' files under the 200 MB budget", peak_disk <= 200)
            # HTML uploaded as .jpg is served with nosniff.
            pwn = g.upload("pwn.jpg", b"<html><script>alert(1)</script></html>")
            served = g.http.get(app.url + "/gradio_api/file=" + pwn["path"])
            check("served files carry nosniff", served.headers.get("x-content-type-options") == "nosniff")
            time.sleep(max(0.0, min(args.every, end - time.monotonic())))
    finally:
        for sock in held + heads:
            sock.close()
        stop(app.proc)
    print(f"\n{rounds} rounds over {args.minutes:g} min, one app process (kitchenware), loopback\n")
    print("| check | passed | failed |\n|---|---:|---:|")
    for name in sorted(set(checks) | set(failures)):
        print(f"| {name} | {checks[name]} | {failures[name]} |")
    print("\n| figure | median | worst |\n|---|---:|---:|")
    for name, values in notes.items():
        print(f"| {name} | {np.median(values):.2f} | {max(values):.2f} |")
    shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="mixed traffic soak")
    run.add_argument("--clients", type=int, default=4)
    run.add_argument("--minutes", type=float, default=15.0)
    run.add_argument("--big-share", type=float, default=1.0, help="weight of 48 MP photos in the mix (of ~100)")
    run.add_argument("--apps", type=int, default=2, help="app processes on this machine, sharing its folders")
    run.add_argument("--slow", type=int, default=8, help="slow REST bodies held open per process")
    run.add_argument("--restart-at", type=float, default=0.5,
                     help="when process 0 is stopped and started again, as a share of the run (0: never)")
    run.add_argument("--keep-logs", type=Path, default=None, help="copy the servers' logs to this folder")
    big = sub.add_parser("bigphoto", help="48 MP photo: peak RSS and time; 8 at once")
    big.add_argument("--repeats", type=int, default=2)
    sess = sub.add_parser("sessions", help="RSS after 100 vs N new-session classifies")
    sess.add_argument("--n", type=int, default=2000)
    sess.add_argument("--settle", type=float, default=12.0, help="seconds idle before each RSS reading")
    up = sub.add_parser("uploads", help="disk after N uploads")
    up.add_argument("--n", type=int, default=1000)
    up.add_argument("--settle", type=float, default=45.0)
    up.add_argument("--width", type=int, default=1600, help="photo width (4:3); 4000 gives ~2 MB JPEGs")
    at = sub.add_parser("attacks", help="issue 30's attacks, a round every --every s for --minutes")
    at.add_argument("--minutes", type=float, default=40.0, help="40 outlasts Gradio's 30-minute cache lifetime")
    at.add_argument("--every", type=float, default=75.0, help="seconds between rounds (past the 60 s body deadline)")
    at.add_argument("--held", type=int, default=20, help="bodies held one byte short per route, half-sent headers")
    at.add_argument("--burst", type=int, default=120, help="2 MB uploads sent at once each round")
    ec = sub.add_parser("echo", help="huge values for a radio: bytes answered and logged")
    ec.add_argument("--n", type=int, default=10)
    ec.add_argument("--mb", type=float, default=12.0)
    ec.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py runs (default: this one)")
    args = parser.parse_args(argv)
    {"run": soak, "bigphoto": bigphoto, "sessions": sessions, "uploads": uploads, "echo": echo,
     "attacks": attacks}[args.mode](args)


if __name__ == "__main__":
    main()
