"""Peak memory of a test run: the pytest process's own high-water mark, and the sampled peak of
pytest together with every process it started (the live app, Ray's raylet and workers, Chromium,
Node.js), printed at the end of the session; with `--rss-top N`, the N test modules that left
pytest's resident memory the most grown (what a module's fixtures or caches still hold after it).

Why these figures and not `/usr/bin/time -v`: its "Maximum resident set size" is the largest
single process of the tree (the kernel's `ru_maxrss` of the biggest waited-for child), not their
sum, and it says nothing of which tests held it. Here pytest's own peak is the kernel's exact
high-water mark (`VmHWM` in /proc/self/status, no sampling can miss it); the tree is sampled every
`SAMPLE_S` from /proc: the sum of PSS (each shared page divided among the processes mapping it, so
Ray's shared object store and shared libraries count once) and, as an upper bound, the sum of RSS.
Linux only; elsewhere the plugin says so and does nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SAMPLE_S = 0.5  # a sample reads /proc for every process on the machine: a few ms of one core
PROC = Path("/proc")


def _status_kib(pid: int | str, key: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def resident_kib() -> int:
    """This process's resident memory now (VmRSS), in KiB."""
    return _status_kib("self", "VmRSS")


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, their children, …), from /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: the fields after its last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _rollup_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB from /proc/<pid>/smaps_rollup; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


@dataclass
class Sample:
    own_kib: int  # pytest's RSS
    tree_pss_kib: int  # pytest and every descendant, PSS summed
    tree_rss_kib: int  # the same, RSS summed (shared pages counted once per process)
    processes: int


def sample(root: int) -> Sample:
    own_rss, own_pss = _rollup_kib(root)
    tree_rss, tree_pss, count = own_rss, own_pss, 1
    for pid in descendants(root):
        rss, pss = _rollup_kib(pid)
        tree_rss, tree_pss, count = tree_rss + rss, tree_pss + pss, count + (rss > 0)
    return Sample(own_rss, tree_pss, tree_rss, count)


@dataclass
class ModuleMemory:
    start_kib: int  # pytest's RSS when the module's first test started
    end_kib: int = 0  # … when its last test ended (fixtures of module scope torn down by then)
    peak_kib: int = 0  # the highest sample of pytest's RSS meanwhile
    tree_peak_kib: int = 0  # the highest PSS sum of the tree meanwhile
    seconds: float = 0.0


@dataclass(eq=False)  # a plugin must be hashable: pluggy keeps plugins in sets
class PeakRss:
    """Samples in a daemon thread from `pytest_sessionstart` to the terminal summary."""

    top: int = 0
    log: Path | None = None  # a line per module as it ends: what a run that is killed leaves
    pid: int = field(default_factory=os.getpid)
    peak: Sample = field(default_factory=lambda: Sample(0, 0, 0, 0))
    modules: dict[str, ModuleMemory] = field(default_factory=dict)
    _module: str | None = None
    _started: float = 0.0
    _module_started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._take()

    def _take(self) -> Sample:
        now = sample(self.pid)
        with self._lock:
            self.peak = Sample(max(self.peak.own_kib, now.own_kib), max(self.peak.tree_pss_kib, now.tree_pss_kib),
                               max(self.peak.tree_rss_kib, now.tree_rss_kib),
                               max(self.peak.processes, now.processes))
            if self._module is not None:
                memory = self.modules[self._module]
                memory.peak_kib = max(memory.peak_kib, now.own_kib)
                memory.tree_peak_kib = max(memory.tree_peak_kib, now.tree_pss_kib)
        return now

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session) -> None:
        self._started = time.monotonic()
        threading.Thread(target=self._run, name="peak-rss", daemon=True).start()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        module = nodeid.split("::")[0]
        if module == self._module:
            return
        self._end_module()
        now = _status_kib(self.pid, "VmRSS")
        with self._lock:
            self._module = module
            self.modules.setdefault(module, ModuleMemory(start_kib=now, peak_kib=now))
        self._module_started = time.monotonic()

    def _end_module(self) -> None:
        if self._module is None:
            return
        memory = self.modules[self._module]
        memory.end_kib = _status_kib(self.pid, "VmRSS")
        memory.seconds += time.monotonic() - self._module_started
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(f"{self._module} grown_mib={(memory.end_kib - memory.start_kib) / 1024:+.0f} "
                          f"end_gib={memory.end_kib / 2**20:.2f} peak_gib={memory.peak_kib / 2**20:.2f} "
                          f"tree_pss_peak_gib={memory.tree_peak_kib / 2**20:.2f} s={memory.seconds:.1f}\n")

    def pytest_sessionfinish(self, session) -> None:
        self._end_module()  # the last module's fixtures are torn down by now
        self._stop.set()
        self._take()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        gib = 1024 * 1024
        hwm = _status_kib(self.pid, "VmHWM")
        write = terminalreporter.write_line
        terminalreporter.section("peak memory (tests/peak_rss.py)")
        write(f"pytest process: peak {max(hwm, self.peak.own_kib) / gib:.2f} GiB (VmHWM), "
              f"{_status_kib(self.pid, 'VmRSS') / gib:.2f} GiB at the end")
        write(f"pytest and all its child processes: peak {self.peak.tree_pss_kib / gib:.2f} GiB PSS summed "
              f"({self.peak.tree_rss_kib / gib:.2f} GiB RSS summed; at most {self.peak.processes} processes; "
              f"sampled every {SAMPLE_S} s over {time.monotonic() - self._started:.0f} s)")
        if self.top:
            grown = sorted(self.modules.items(), key=lambda kv: kv[1].end_kib - kv[1].start_kib, reverse=True)
            write(f"test modules by what they left in pytest's RSS (top {self.top}): "
                  "grown MiB, pytest's peak GiB meanwhile, the tree's peak GiB PSS, seconds")
            for module, m in grown[: self.top]:
                write(f"  {(m.end_kib - m.start_kib) / 1024:+8.0f}  {m.peak_kib / gib:6.2f}  "
                      f"{m.tree_peak_kib / gib:6.2f}  {m.seconds:6.1f}  {module}")


def add_option(parser) -> None:
    """`--rss-top N` (the conftest's `pytest_addoption` calls this)."""
    parser.addoption("--rss-top", type=int, default=0, metavar="N",
                     help="list the N test modules that grew the pytest process's resident memory most")
    parser.addoption("--rss-log", type=Path, default=None, metavar="FILE",
                     help="append each test module's memory figures to FILE as the module ends")


def configure(config) -> None:
    """Starts the sampler for this run (the conftest's `pytest_configure` calls this)."""
    if not (PROC / "self" / "smaps_rollup").exists():
        return
    config.pluginmanager.register(PeakRss(top=config.getoption("--rss-top"), log=config.getoption("--rss-log")), "peak-rss-sampler")
