"""Keeps TensorFlow's native start-up chatter out of the server log, and every log line short.

TensorFlow 2.21 writes its start-up lines ("oneDNN custom operations are on", "Could not find cuda
drivers", "failed call to cuInit", each after "All log messages before absl::InitializeLog() is
called are written to STDERR") from C++ before its logging is set up, so TF_CPP_MIN_LOG_LEVEL
cannot silence them. `drop_native_startup_lines` routes file descriptor 2 through a pipe and
forwards every line except those: nothing else is lost, Python's tracebacks and the app's own log
included, and child processes (pip) inherit the same filter.

Every line is also capped (`MAX_LINE`): a client's huge value that reaches a message (a library's
exception text, a traceback) must not become a megabyte line in the log. `CappedLines` caps the
app's own logging records the same way, wherever they are written.
"""

from __future__ import annotations

import atexit
import logging
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

MAX_LINE = 2000  # characters (bytes on stderr) of one log line; the rest is cut and counted


def capped(line: bytes, limit: int = MAX_LINE, already_cut: int = 0) -> bytes:
    """`line` (without its newline) cut to `limit` bytes, saying how much was cut (with
    `already_cut` bytes of it dropped before)."""
    extra = max(len(line) - limit, 0) + already_cut
    return line if not extra else line[:limit] + f" … [{extra:,} more bytes cut]".encode()


class CappedLines(logging.Filter):
    """Cuts each record's message to `limit` characters (a handler filter: records of every logger)."""

    def __init__(self, limit: int = MAX_LINE):
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > self.limit:
            cut = len(message) - self.limit
            record.msg, record.args = f"{message[: self.limit]} … [{cut:,} more characters cut]", None
        return True


def cap_log_lines(logger: logging.Logger | None = None) -> None:
    """Caps every record written by `logger`'s handlers (the root logger's by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, CappedLines) for f in handler.filters):
            handler.addFilter(CappedLines())


def configure_logging() -> None:
    """The server's log format at INFO, every line capped. Called by the entry point before the
    weights start loading (a translation cached loads in well under a second, before Gradio is
    imported) so that no record is written before there is a handler for it; later calls keep it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cap_log_lines()  # a client's huge value never becomes a huge log line


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


def drop_native_startup_lines() -> None:
    """From now on, stderr (fd 2, for this process and its children) without TensorFlow's start-up
    lines, and no line longer than `MAX_LINE` bytes. Call once, before TensorFlow is imported;
    later calls do nothing."""
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
            cut = 0  # bytes of the current line dropped so far: a huge line is never held whole
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = []
                for line in lines:
                    if not is_noise(line):
                        kept.append(capped(line, MAX_LINE, cut) + b"\n")
                    cut = 0
                if kept:
                    os.write(real, b"".join(kept))
                if len(pending) > MAX_LINE:  # the line goes on: keep its head, count the rest
                    cut += len(pending) - MAX_LINE
                    pending = pending[:MAX_LINE]
            if pending and not is_noise(pending):
                os.write(real, capped(pending, MAX_LINE, cut))

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        """At exit (after a last traceback is printed): give fd 2 back and forward what is left."""
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's write end: the reader sees its end once children exit
        thread.join(timeout=2.0)

    atexit.register(drain)
