"""The capacity model's arithmetic (bench.scale.capacity) on made-up figures: no Ray, no timing."""

from __future__ import annotations

import math

from bench.scale import RATES_PER_MIN, UTILISATION_CAP, capacity


def forward(ms: dict[tuple[int, str], tuple[float, float]]) -> dict:
    return {f"{size}_{precision}_b{batch}": {"cpu_ms_per_image": cpu[i], "wall_ms_per_batch": cpu[i] * batch}
            for (size, precision), cpu in ms.items() for i, batch in enumerate((1, 8))}


FORWARD = forward({(150, "fp32"): (20.0, 20.0), (150, "int8"): (8.0, 7.0),
                   (299, "fp32"): (100.0, 100.0), (299, "int8"): (30.0, 30.0)})
# The API route: the replica pays 10 ms around the 20 ms forward, the front and Ray 14 ms; the
# page route: the replica 5 ms around it, the page process and Ray 70 ms.
SERVING = {"rest_serve_2": {"cpu": {"replica_cpu_ms_per_request": 30.0, "api_cpu_ms_per_request": 6.0,
                                    "ray_cpu_ms_per_request": 8.0}},
           "serve_2": {"cpu": {"replica_cpu_ms_per_request": 25.0, "page_cpu_ms_per_request": 50.0,
                               "ray_cpu_ms_per_request": 20.0}}}


def rows(**where) -> list[dict]:
    return [r for r in capacity(FORWARD, SERVING) if all(r[k] == v for k, v in where.items())]


def test_a_replica_runs_at_the_cap_when_p95_allows_it():
    # 150 px fp32, API: s = 20 + 10 ms, ln(20)·s = 0.09 → ρ = cap 0.7; 0.7 / 0.030 s = 23.3 req/s per replica.
    (row,) = rows(per_min=10_000, size=150, precision="fp32")
    rate = 10_000 / 60
    assert row["replica_rps_api"] == 23.3
    assert row["api_replicas"] == math.ceil(rate / (0.7 / 0.030)) == 8
    # front + Ray: 14 ms per request at 0.7 of a core.
    assert row["api_front_vcpus"] == round(rate * 0.014 / UTILISATION_CAP, 2) == 3.33
    assert row["api_machines"] == math.ceil((8 + 3.33) / 7) == 2
    # page route: replicas pay 25 ms a request (0.7 / 0.025 = 28 req/s); a page process 70 ms.
    assert row["page_replicas"] == math.ceil(rate / 28.0) == 6
    assert row["page_processes"] == math.ceil(rate * 0.070 / UTILISATION_CAP) == 17
    assert row["page_machines"] == math.ceil((6 + 17) / 7) == 4


def test_the_p95_term_lowers_a_slow_replicas_share():
    # 299 px fp32, API: s = 110 ms → ρ = 1 − ln(20)·0.110 = 0.670 < cap; c = 110 ms → 6.1 req/s.
    (row,) = rows(per_min=1_000, size=299, precision="fp32")
    assert row["replica_rps_api"] == round((1 - math.log(20) * 0.110) / 0.110, 1) == 6.1


def test_more_traffic_never_needs_less_and_int8_never_needs_more():
    for size in (150, 299):
        for precision in ("fp32", "int8"):
            for key in ("api_replicas", "page_replicas", "page_processes", "api_machines", "page_machines"):
                needed = [rows(per_min=r, size=size, precision=precision)[0][key] for r in RATES_PER_MIN]
                assert needed == sorted(needed) and needed[0] >= 1, key
        for rate in RATES_PER_MIN:
            fp32, int8 = (rows(per_min=rate, size=size, precision=p)[0] for p in ("fp32", "int8"))
            assert int8["api_replicas"] <= fp32["api_replicas"] and int8["page_replicas"] <= fp32["page_replicas"]
    assert rows(per_min=10_000, size=299, precision="fp32")[0]["api_replicas"] > rows(
        per_min=10_000, size=150, precision="fp32")[0]["api_replicas"]
