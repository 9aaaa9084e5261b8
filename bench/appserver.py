"""Running `python app.py` as a user does, on a free loopback port: shared by the benchmark and
the tests that drive the live server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(port: int, weights: str, **extra: str) -> dict[str, str]:
    """The environment for `python app.py` on 127.0.0.1:`port` serving `weights`."""
    return {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "XCEPTION_WEIGHTS": weights, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **extra}


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminates the app, killing it if it has not exited after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0, pause: float = 0.5) -> dict:
    """Polls `url`/healthz until it says ready; its answer. RuntimeError if `proc` exits first,
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                health = json.load(r)
            if health.get("ready"):
                return health
        except (OSError, ValueError):  # not listening yet, or an answer cut short
            pass
        time.sleep(pause)
    raise TimeoutError(f"app at {url} not ready after {timeout:.0f} s")
