"""Running `python app.py` as a user does, on a free loopback port: shared by the benchmark and
the tests that drive the live server."""

from __future__ import annotations

import os
import socket
import subprocess


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
