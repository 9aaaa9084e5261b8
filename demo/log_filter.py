"""Keeps TensorFlow's native start-up chatter out of the server log.

TensorFlow 2.21 writes its start-up lines ("oneDNN custom operations are on", "Could not find cuda
drivers", "failed call to cuInit", each after "All log messages before absl::InitializeLog() is
called are written to STDERR") from C++ before its logging is set up, so TF_CPP_MIN_LOG_LEVEL
cannot silence them. `drop_native_startup_lines` routes file descriptor 2 through a pipe and
forwards every line except those: nothing else is lost, Python's tracebacks and the app's own log
included, and child processes (pip) inherit the same filter.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl's pre-init notice, and INFO/WARNING/ERROR lines of TensorFlow's platform probes.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWE]\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_dnn\.cc"
    rb"|cuda_fft\.cc|cuda_blas\.cc|cpu_feature_guard\.cc|gpu_device\.cc):\d+\] .*)\r?\n?$")

_started = threading.Lock()


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


def drop_native_startup_lines() -> None:
    """From now on, stderr (fd 2, for this process and its children) without TensorFlow's start-up
    lines. Call once, before TensorFlow is imported; later calls do nothing."""
    if not _started.acquire(blocking=False):
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
                if kept:
                    os.write(real, kept)
            if pending and not is_noise(pending):
                os.write(real, pending)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        """At exit (after a last traceback is printed): give fd 2 back and forward what is left."""
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's write end: the reader sees its end once children exit
        thread.join(timeout=2.0)

    atexit.register(drain)
