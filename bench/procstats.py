"""Process figures from /proc (no psutil): peak and current RSS, CPU seconds, CPU per request."""

from __future__ import annotations

import os
import time
from pathlib import Path


def proc_memory(pid: int) -> dict[str, float | None]:
    """VmHWM (peak) and VmRSS of a process, in MB, from /proc (psutil is not needed)."""
    out: dict[str, float | None] = {"peak_rss_mb": None, "rss_mb": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads); this process when `pid` is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class CpuMeter:
    """CPU seconds spent by the server and by this (client) process between start and stop."""

    def __init__(self, pid: int):
        self.pid = pid
        self.server0, self.client0, self.wall0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()

    def per_request(self, requests: int) -> dict[str, float | None]:
        server, client = cpu_seconds(self.pid) - self.server0, cpu_seconds() - self.client0
        wall = time.perf_counter() - self.wall0
        n = max(requests, 1)
        return {"server_cpu_ms_per_request": round(server * 1000 / n, 1),
                "client_cpu_ms_per_request": round(client * 1000 / n, 1),
                "server_cpu_utilisation": round(server / wall, 2) if wall > 0 else None,
                "client_cpu_utilisation": round(client / wall, 2) if wall > 0 else None}
