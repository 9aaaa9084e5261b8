"""Running `python app.py` as a user does, on a free loopback port: shared by the benchmark and
the tests that drive the live server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


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


def log_tail(log: Path | None, chars: int = 4000) -> str:
    """The end of a process's log file (what a failure message shows), '' without one."""
    if log is None:
        return ""
    try:
        return "\n--- end of " + log.name + " ---\n" + log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_for(predicate: Callable[[], T], timeout: float, what: str, pause: float = 0.5,
             proc: subprocess.Popen | None = None, log: Path | None = None) -> T:
    """Calls `predicate()` every `pause` seconds until it returns something truthy, and returns
    that. TimeoutError ("`what` not after N s") after `timeout` seconds; RuntimeError if `proc`
    exits first. Either error ends with the tail of `log`, so a failure says why."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {what}" + log_tail(log))
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not after {timeout:.0f} s" + log_tail(log))
        time.sleep(pause)


def health(url: str) -> dict:
    """`url`/healthz's answer, {} while nothing (or half an answer) comes back."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):  # not listening yet, or an answer cut short
        return {}


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0, pause: float = 0.5,
               log: Path | None = None) -> dict:
    """Polls `url`/healthz until it says ready with its page served (`python app.py` answers the
    plain HTTP API before its page is built); its answer. RuntimeError if `proc` exits first,
    TimeoutError after `timeout` seconds (both with the tail of `log`)."""
    return wait_for(lambda: (h := health(url)).get("ready") and h.get("page", True) and h, timeout, f"the app at {url} ready", pause,
                    proc, log)
