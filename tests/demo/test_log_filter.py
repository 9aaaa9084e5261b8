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


def test_no_line_reaches_the_log_whole_past_the_cap():
    """A 5 MB line written to stderr in pieces (as a traceback quoting a client's value is) comes
    out as its first MAX_LINE bytes and a count; the lines around it are whole (issue 21 item 6)."""
    from demo.log_filter import MAX_LINE

    script = ("import os, sys\nfrom demo.log_filter import drop_native_startup_lines\n"
              "drop_native_startup_lines()\n"
              "print('before', file=sys.stderr, flush=True)\n"
              "for _ in range(50): os.write(2, b'x' * 100_000)\n"
              "os.write(2, b'\\nafter\\n' + b'y' * 3000)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "before" and lines[2] == "after" and len(lines) == 4
    assert lines[1] == "x" * MAX_LINE + f" … [{5_000_000 - MAX_LINE:,} more bytes cut]"
    assert lines[3] == "y" * MAX_LINE + " … [1,000 more bytes cut]"


def test_log_records_are_capped_by_the_handlers_filter():
    import logging

    from demo.log_filter import MAX_LINE, CappedLines

    record = logging.LogRecord("gradio", logging.INFO, __file__, 1, "value %s refused", ("z" * 5_000_000,), None)
    assert CappedLines().filter(record)
    message = record.getMessage()
    assert len(message) < MAX_LINE + 60 and message.startswith("value zzz") and "more characters cut" in message
