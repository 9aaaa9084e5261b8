"""TensorFlow's native start-up lines are dropped from the server log; every other line is kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from demo.log_filter import is_noise

ROOT = Path(__file__).resolve().parents[2]
NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796210739.298319    1679 port.cc:153] oneDNN custom operations are on. You may see",
    b"I0000 00:00:1796210739.298680    1679 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    b"E0000 00:00:1796210748.733699    1784 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
]


def test_only_tensorflows_startup_lines_are_noise():
    assert all(is_noise(line) for line in NOISE)
    for kept in (b"2026-12-02 11:26:09,217 INFO demo.store: weights 'kitchenware' ready in 21.0 s",
                 b"Traceback (most recent call last):", b"E0000 something else.cc:1] a real error elsewhere",
                 b"WARNING: something the app says"):
        assert not is_noise(kept)


def test_a_process_keeps_its_own_stderr_and_its_last_traceback():
    noise = b"".join(line + b"\n" for line in NOISE)
    script = ("import os, sys\nfrom demo.log_filter import drop_native_startup_lines\n"
              "drop_native_startup_lines()\n"
              f"os.write(2, {noise!r})\n"
              "print('kept line', file=sys.stderr)\n"
              "raise SystemExit('the last words')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.stderr.decode().splitlines() == ["kept line", "the last words"]
