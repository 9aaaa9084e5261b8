"""`python -m bench.teach` runs end to end and writes every Teach figure as a number (timings
are never asserted)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.conftest import run_checked

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_teach_bench_writes_every_figure(tmp_path):
    out = tmp_path / "teach.json"
    run_checked([sys.executable, "-m", "bench.teach", "--rounds", "1", "--out", str(out)], cwd=REPO, timeout=900)
    r = json.loads(out.read_text())
    number = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    assert set(r["extraction_ms_per_photo"]) == {"bare_b1", "extract_b1", "bare_b4", "extract_b4"}
    assert all(number(v) and v > 0 for v in r["extraction_ms_per_photo"].values())
    assert all(number(v) for v in r["extraction_vs_bare"].values())
    assert number(r["add_photos_ms_per_photo"]) and number(r["train_10x30"]["train_button_ms"])
    blocks = ["block2", "block4", "block8", "block12", "block13", "block14"]
    held_out = r["accuracy"].pop("starter head on the 7 by-eye photos of its classes (held out)")
    assert list(held_out) == blocks and all(0 <= a <= 1 for a in held_out.values())
    assert list(r["accuracy"]) == ["starter", "independent", "wheel regrouped"]
    for name, result in r["accuracy"].items():
        by_block = result["leave-one-out accuracy by block"]
        assert list(by_block) == blocks, name
        for row in by_block.values():
            figures = {k: v for k, v in row.items() if k != "l2 picks"}
            assert {"ours l2=0.01", "ours, l2 nested", "sklearn l2=0.01"} <= set(figures)
            assert all(v is None or 0 <= v <= 1 for v in figures.values())  # None: no scikit-learn
        shown, accuracy = result["best block (picked by the same cross-validation)"]
        assert shown in blocks and accuracy == by_block[shown]["ours l2=0.01"]
        assert 0 <= result["best block picked inside each fold (nested)"] <= 1
    assert r["accuracy"]["starter"]["classes"] == {"cup": 5, "cutlery": 3, "not kitchenware": 4, "plate": 2}
    assert r["accuracy"]["independent"]["classes"] == {"big cat": 4, "cutlery": 3, "drinkware": 3, "plate": 2}
