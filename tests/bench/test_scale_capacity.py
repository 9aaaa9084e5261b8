"""The capacity model's arithmetic (bench.scale.capacity) on made-up figures: no Ray, no timing."""

from __future__ import annotations

import math

from bench.scale import RATES_PER_MIN, UTILISATION_CAP, capacity


def forward(ms: dict[tuple[int, str], tuple[float, float]]) -> dict:
    return {f"{size}_{precision}_b{batch}": {"cpu_ms_per_image": cpu[i], "wall_ms_per_batch": cpu[i] * batch}
            for (size, precision), cpu in ms.items() for i, batch in enumerate((1, 8))}


FORWARD = forward({(150, "fp32"): (20.0, 20.0), (150, "int8"): (8.0, 7.0),
                   (299, "fp32"): (100.0, 100.0), (299, "int8"): (30.0, 30.0)})
SERVING = {"serve_2": {"cpu": {"ingress_cpu_ms_per_request": 50.0, "ray_cpu_ms_per_request": 20.0}}}


def rows(**where) -> list[dict]:
    return [r for r in capacity(FORWARD, SERVING) if all(r[k] == v for k, v in where.items())]


def test_a_replica_runs_at_the_cap_when_p95_allows_it():
    # 150 px fp32: s = 20 ms, ln(20)·s = 0.06 → ρ = cap 0.7; 0.7 / 0.020 s = 35 req/s per replica.
    (row,) = rows(per_min=10_000, size=150, precision="fp32")
    assert row["replica_rps"] == 35.0
    assert row["replicas"] == math.ceil((10_000 / 60) / 35.0) == 5
    # ingress: 70 ms per request at 0.7 of a core → 10 req/s per process.
    assert row["ingresses"] == math.ceil((10_000 / 60) * 0.070 / UTILISATION_CAP) == 17
    assert row["vcpus"] == 22 and row["machines_8vcpu"] == math.ceil(22 / 7)


def test_more_traffic_never_needs_less_and_int8_never_needs_more():
    for size in (150, 299):
        for precision in ("fp32", "int8"):
            needed = [rows(per_min=r, size=size, precision=precision)[0]["replicas"] for r in RATES_PER_MIN]
            assert needed == sorted(needed) and needed[0] >= 1
        for rate in RATES_PER_MIN:
            fp32, int8 = rows(per_min=rate, size=size, precision="fp32")[0], rows(per_min=rate, size=size,
                                                                                   precision="int8")[0]
            assert int8["replicas"] <= fp32["replicas"]
    assert rows(per_min=10_000, size=299, precision="fp32")[0]["replicas"] > rows(
        per_min=10_000, size=150, precision="fp32")[0]["replicas"]
