"""What a test run spends on Keras: every translation (`xception_core.runtime.translated.translate`,
the step of serving that imports TensorFlow) and every Xception it builds
(`xception_core.arch.builder.build_architecture`, which loading, rewiring and the reference
description all go through), counted per test module and printed at the end of the run with their
seconds; with `--builds-log FILE`, one line per call (test, what, input size, seconds).

Why: a module that serves a tiny model once pays a translation (two Keras models, five ONNX graphs,
two `.keras` files) of several seconds; repeats of the same model are what the session-wide
fixtures of tests/conftest.py (`tiny_translation`) exist to remove, and this is how a new repeat is
seen. Both functions are wrapped where they are defined and where `demo.store.cache` and
`xception_core.weights.load` imported them by name (a test module that imports one by name
before it is wrapped calls it uncounted, and so does the first build of a run in which no
module imported the builder at collection: it is wrapped as the next test starts).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# (module defining or importing the name, the name): every place a caller looks it up.
WRAPPED = {
    "translate": [("xception_core.runtime.translated", "translate"), ("demo.store.cache", "translate")],
    "build": [("xception_core.arch.builder", "build_architecture"), ("xception_core.weights.load", "build_architecture")],
}


@dataclass(eq=False)  # a plugin must be hashable
class BuildLog:
    log: Path | None = None
    counts: Counter = field(default_factory=Counter)  # (what, module) → calls
    seconds: defaultdict = field(default_factory=lambda: defaultdict(float))
    _test: str = "(collection)"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _depth: threading.local = field(default_factory=threading.local)

    _counted_fns: dict = field(default_factory=dict)  # what → its counting wrapper

    def wrap(self) -> None:
        """Wraps each place imported by now. The builder imports Keras (TensorFlow, seconds): it
        is wrapped once something else imported it, checked as each test starts, so a run that
        never builds never imports it."""
        for what, places in WRAPPED.items():
            home, name = places[0]
            if what not in self._counted_fns:
                if home not in sys.modules:
                    continue
                self._counted_fns[what] = self._counted(what, getattr(sys.modules[home], name))
            counted = self._counted_fns[what]
            for module, name in places:
                if module in sys.modules and getattr(sys.modules[module], name) is counted.__wrapped__:
                    setattr(sys.modules[module], name, counted)

    def _counted(self, what: str, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            # A build inside a translation (its rewiring, the reference) counts as a build too;
            # the seconds of the outer call are the translation's.
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                self._record(what, time.monotonic() - started, args, kwargs)

        return counted

    def _record(self, what: str, seconds: float, args, kwargs) -> None:
        size = None
        if what == "translate" and args:
            size = getattr(args[0], "input_size", None)
        elif what == "build":
            shape = kwargs.get("input_shape") or (args[0] if args else None)
            size = shape[0] if isinstance(shape, (tuple, list)) and shape else None
        test = self._test
        with self._lock:
            module = test.split("::")[0]
            self.counts[what, module] += 1
            self.seconds[what, module] += seconds
            if self.log is not None:
                with self.log.open("a") as out:
                    out.write(f"{what}\tsize={size}\t{seconds:.2f}s\tthread={threading.current_thread().name}\t{test}\n")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        self._test = nodeid
        self.wrap()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("Keras work (tests/build_log.py)")
        for what in WRAPPED:
            rows = [(m, n, self.seconds[w, m]) for (w, m), n in self.counts.items() if w == what]
            total, secs = sum(n for _, n, _ in rows), sum(s for *_, s in rows)
            write(f"{what}: {total} calls, {secs:.0f} s" + ("; most by module:" if rows else ""))
            for module, n, s in sorted(rows, key=lambda r: -r[2])[:12]:
                write(f"  {n:4d}  {s:7.1f} s  {module}")


def add_option(parser) -> None:
    parser.addoption("--builds-log", type=Path, default=None, metavar="FILE",
                     help="append a line per translation and Xception build to FILE (test, size, seconds)")


def configure(config) -> None:
    """Wraps the counted functions for this run (the conftest's `pytest_configure` calls this)."""
    plugin = BuildLog(log=config.getoption("--builds-log"))
    for module in ("xception_core.runtime.translated", "demo.store.cache"):  # NumPy only: cheap
        importlib.import_module(module)
    plugin.wrap()
    config.pluginmanager.register(plugin, "build-log")
