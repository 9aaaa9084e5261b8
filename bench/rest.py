"""The plain HTTP API under load a public URL can see (issue 21, items 1 and 2). Not run in CI.

    python -m bench.rest burst --n 24                # 24 concurrent 48 MP JPEGs: peak RSS added
    python -m bench.rest burst --n 10 --kind png     # 10 concurrent 7000×7000 PNGs
    python -m bench.rest hangup --n 10               # 10 clients send a 48 MP JPEG and hang up at once
    python -m bench.rest slow --n 64 --every 5       # 64 bodies trickling a byte every 5 s, then normal calls

Each starts `python app.py` (kitchenware weights) on a free loopback port (bench.soak.start_app),
talks to `POST /api/v1/classify` over plain sockets or httpx, and samples the server's VmRSS from
/proc every 20 ms (VmHWM, reset before each burst, is printed beside it). Figures go in
bench/README.md ("The plain HTTP API under load").
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.appserver import stop
from bench.procstats import cpu_seconds
from bench.soak import App, photo_jpeg, png_7000, read_status, request_bytes, start_app

ROUTE = "/api/v1/classify"
SAMPLE_S = 0.02


class RssSampler:
    """Samples a process's VmRSS every `SAMPLE_S` seconds in a thread; `peak` is the highest seen."""

    def __init__(self, app: App):
        self.app, self.peak, self._stop = app, app.rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, self.app.rss_mb())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def settle(app: App, quiet_s: float = 2.0, timeout_s: float = 120.0) -> float:
    """Waits until the server has used no CPU for `quiet_s` (its work is over); returns the CPU
    seconds it spent meanwhile."""
    start = last = cpu_seconds(app.proc.pid)
    deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(app.proc.pid)
        if now - last > 0.02:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
        last = now
    return cpu_seconds(app.proc.pid) - start


def warm(app: App) -> None:
    r = httpx.post(app.url + ROUTE, content=photo_jpeg(640, 480), headers={"Content-Type": "image/jpeg"}, timeout=120)
    r.raise_for_status()


def big_input(kind: str) -> tuple[str, bytes, str]:
    if kind == "png":
        return "7000×7000 PNG", png_7000(), "image/png"
    return "8000×6000 JPEG", photo_jpeg(8000, 6000, 1, quality=80), "image/jpeg"


# ------------------------------------------------------------------------------------------ modes


def burst(app: App, args: argparse.Namespace) -> None:
    """`n` concurrent requests with one big image each; peak RSS added, statuses, wall time."""
    name, data, mime = big_input(args.kind)
    for round_ in range(args.repeats):
        settle(app)
        base = app.rss_mb()
        app.reset_peak()
        barrier = threading.Barrier(args.n)
        statuses: Counter = Counter()
        seconds: list[float] = []
        lock = threading.Lock()

        def one() -> None:
            with httpx.Client(timeout=600) as http:
                barrier.wait()
                t = time.perf_counter()
                r = http.post(app.url + ROUTE, content=data, headers={"Content-Type": mime})
                with lock:
                    statuses[r.status_code] += 1
                    seconds.append(time.perf_counter() - t)

        with RssSampler(app) as rss:
            start = time.perf_counter()
            threads = [threading.Thread(target=one) for _ in range(args.n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        print(f"{args.n} concurrent {name} ({len(data) / 2**20:.2f} MB each), round {round_ + 1}: "
              f"RSS {base:.0f} MB before, sampled peak {rss.peak:.0f} MB (+{rss.peak - base:.0f} MB), "
              f"VmHWM {app.peak_mb():.0f} MB (+{app.peak_mb() - base:.0f} MB); answers {dict(statuses)}; "
              f"all done in {wall:.1f} s (slowest {max(seconds):.1f} s)", flush=True)


def hangup(app: App, args: argparse.Namespace) -> None:
    """`n` clients send a whole 48 MP JPEG and close their socket without reading the answer:
    the RSS added and the server CPU seconds spent afterwards (work nobody will read)."""
    name, data, mime = big_input(args.kind)
    port = int(app.url.rsplit(":", 1)[1])
    settle(app)
    base = app.rss_mb()
    app.reset_peak()
    with RssSampler(app) as rss:
        cpu0 = cpu_seconds(app.proc.pid)
        for _ in range(args.n):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request_bytes(port, data, mime))
        sent = time.perf_counter()
        settle(app)
        cpu = cpu_seconds(app.proc.pid) - cpu0
    print(f"{args.n} clients sent a {name} and hung up: server CPU {cpu:.1f} s until idle "
          f"({time.perf_counter() - sent:.1f} s), sampled peak RSS +{rss.peak - base:.0f} MB "
          f"(VmHWM +{app.peak_mb() - base:.0f} MB over {base:.0f} MB)", flush=True)
    # The same burst, answers read: what the work costs when someone waits for it.
    cpu0 = cpu_seconds(app.proc.pid)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.n)]
    for sock in socks:
        sock.sendall(request_bytes(port, data, mime))
    statuses = Counter(read_status(sock)[0] for sock in socks)
    for sock in socks:
        sock.close()
    print(f"  for comparison, {args.n} that wait for their answers ({dict(statuses)}): server CPU "
          f"{cpu_seconds(app.proc.pid) - cpu0:.1f} s", flush=True)


def slow(app: App, args: argparse.Namespace) -> None:
    """`n` connections each declare a 100 kB body and send one byte every `every` seconds; while
    they are open, normal classifies on fresh connections: status and latency of each."""
    port = int(app.url.rsplit(":", 1)[1])
    small = photo_jpeg(640, 480, 3)
    stop_event = threading.Event()
    slow_socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.n)]
    opened = time.perf_counter()
    answered: dict[int, tuple[float, int, str]] = {}

    def trickle() -> None:
        for sock in slow_socks:
            sock.sendall(request_bytes(port, b"\xff", length=100_000))
        while not stop_event.wait(args.every):
            for i, sock in enumerate(slow_socks):
                if i in answered:
                    continue
                try:
                    sock.sendall(b"\xd8")
                except OSError:
                    pass

    def watch(i: int, sock: socket.socket) -> None:
        sock.settimeout(args.seconds + 60)
        try:
            status, body = read_status(sock)
        except OSError:
            status, body = -1, {}
        answered[i] = (time.perf_counter() - opened, status, str(body.get("detail", body))[:80])

    threading.Thread(target=trickle, daemon=True).start()
    for i, sock in enumerate(slow_socks):
        threading.Thread(target=watch, args=(i, sock), daemon=True).start()
    time.sleep(1.0)  # let every slow request reach the route before the probes
    probes: list[tuple[int, float]] = []
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        try:
            status = httpx.post(app.url + ROUTE, content=small, headers={"Content-Type": "image/jpeg"},
                                timeout=30).status_code
        except httpx.HTTPError:
            status = -1
        probes.append((status, time.perf_counter() - t))
        time.sleep(args.probe_every)
    stop_event.set()
    codes = Counter(s for s, _ in probes)
    ok = sorted(t for s, t in probes if s == 200)
    print(f"{args.n} slow bodies (1 byte every {args.every:g} s) open; {len(probes)} normal classifies over "
          f"{args.seconds:g} s: answers {dict(codes)}; 200s in p50 {ok[len(ok) // 2] if ok else float('nan'):.2f} s, "
          f"max {ok[-1] if ok else float('nan'):.2f} s", flush=True)
    slow_codes = Counter(status for _, status, _ in answered.values())
    times = sorted(t for t, _, _ in answered.values())
    print(f"  the slow connections were answered {dict(slow_codes)} ({len(answered)} of {args.n} by the end; "
          f"first after {times[0] if times else float('nan'):.1f} s, last after {times[-1] if times else float('nan'):.1f} s)"
          + (f"; e.g. {next(iter(answered.values()))[2]!r}" if answered else ""), flush=True)
    for sock in slow_socks:
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("burst", help="n concurrent big images: peak RSS added")
    b.add_argument("--n", type=int, default=24)
    b.add_argument("--kind", choices=("jpeg", "png"), default="jpeg")
    b.add_argument("--repeats", type=int, default=2)
    h = sub.add_parser("hangup", help="n clients send a big image and hang up")
    h.add_argument("--n", type=int, default=10)
    h.add_argument("--kind", choices=("jpeg", "png"), default="jpeg")
    s = sub.add_parser("slow", help="n trickling bodies, then normal classifies")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--every", type=float, default=5.0, help="seconds between the bytes of a slow body")
    s.add_argument("--seconds", type=float, default=30.0, help="how long to send normal classifies")
    s.add_argument("--probe-every", type=float, default=0.5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix=f"xception-rest-{args.mode}-"))
    app = start_app(work)
    try:
        warm(app)
        {"burst": burst, "hangup": hangup, "slow": slow}[args.mode](app, args)
        tracebacks = app.log.read_text(errors="replace").count("Traceback")
        print(f"server log: {tracebacks} tracebacks; healthy at the end: "
              f"{httpx.get(app.url + '/healthz', timeout=30).json()['ready']}")
    finally:
        stop(app.proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
