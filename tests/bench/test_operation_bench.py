"""`python -m bench.operation` end to end on the kitchenware weights: every figure is there and a
number (timings are printed, never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_checked

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_operation_bench_reports_every_figure():
    out = run_checked([sys.executable, "-m", "bench.operation", "--sizes", "150", "--clicks", "26"], cwd=ROOT,
                      timeout=900)
    (run,) = json.loads(out.stdout)["runs"]
    assert run["input_size"] == 150 and run["click"]["runs"] == 26 and len(run["per_block"]) == 13
    for figure in ("store_ready_s", "pass_build_left_s", "first_click_fresh_ms", "first_click_warm_ms",
                   "first_over_warm", "search_first_s", "search_again_ms", "cache_mb"):
        assert isinstance(run[figure], (int, float)), figure
    assert run["click"]["median_ms"] > 0 and run["first_click_in_block"]["median_ms"] > 0
    assert run["search_passes"] == run["search_photos"] > 0
