"""The benchmark harness runs end to end on a tiny configuration and writes well-formed JSON with
every figure. Timings are never asserted: only that each figure is there and is a number."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common, report
from bench import run as bench

REPO = Path(__file__).resolve().parents[2]

FORWARD_PATHS = {"ours_tf", "ours_onnx", "ours_onnx_int8", "ours_tf_bn_folded", "keras_predict", "onnxruntime_tf2onnx"}
STAT_KEYS = {"runs", "median_ms", "p10_ms", "p90_ms", "p95_ms", "min_ms", "max_ms", "mean_ms"}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stats(block: dict) -> None:
    assert STAT_KEYS <= set(block), block
    assert block["runs"] >= 1 and all(_number(block[k]) for k in STAT_KEYS), block
    assert block["min_ms"] <= block["median_ms"] <= block["max_ms"]


def check_results(r: dict) -> None:
    """Every field the issue asks for, present and numeric."""
    assert r["schema"] == bench.SCHEMA
    meta = r["meta"]
    assert {"date", "command", "machine", "load_before", "load_after", "config", "quick"} <= set(meta)
    assert len(meta["load_before"]["loadavg"]) == 3 and meta["machine"]["cpus"] >= 1

    # (1) forward: app path vs keras predict vs ONNX Runtime, medians and ratios, one process
    fwd = r["forward"]
    assert FORWARD_PATHS <= set(fwd["paths"]) and fwd["app_path"] in fwd["paths"]
    for s in fwd["paths"].values():
        _stats(s)
    for k in ("app_vs_keras_predict", "app_vs_onnxruntime", "ours_onnx_vs_ours_tf", "bn_folded_tf_vs_ours_tf",
              "int8_vs_onnxruntime"):
        assert _number(fwd["ratios"][k]), k
    assert fwd["max_abs_error"]["app_vs_keras_predict_probabilities"] < 1e-3
    assert fwd["max_abs_error"]["bn_folded_vs_original_output"] < 1e-3
    assert isinstance(fwd["weights"], str) and fwd["batch"] == 1
    assert "pointwise (1×1) conv" in fwd["onnx_profile"]["share_by_kind"]

    # explorer: all blocks on the app's backend and on TF vs the app forward, first view, cache hit
    act = r["activations"]
    assert "error" not in act, act.get("error")
    for k in ("explorer_onnx", "pass_onnx", "explorer_tf", "pass_tf", "explorer_first_view", "plain_tf",
              "app_forward", "cached_view"):
        _stats(act["paths"][k])
    for k in ("explorer_vs_app_forward", "explorer_pass_vs_app_forward", "explorer_tf_vs_app_forward"):
        assert _number(act["ratios"][k]), k
    assert act["backends"] == {"onnx": "onnx", "tf": "tf"}
    assert all(_number(v) for v in act["first_use_ms"].values())

    srv = r["server"]
    # cold start (plain HTTP API and gradio_client) and peak RSS of the serving process
    cold = srv["cold_start"]
    assert cold["http_up_s"] <= cold["first_classify_s"] and cold["first_result"]["top"]
    assert _number(cold["first_classify_gradio_client_s"]) and _number(cold["server_cpu_s_at_first_classify"])
    assert _number(srv["memory"]["peak_rss_mb"]) and srv["memory"]["peak_rss_mb"] > 100
    # classify p50/p95: plain HTTP API, gradio_client, Gradio's raw API, as ratios to the bare forward
    _stats(srv["bare_forward"])
    http = srv["classify_http"]
    for k in ("plain_http_api", "plain_http_api_server_ms", "gradio_client"):
        _stats(http[k])
    _stats(http["raw_http_api"]["total"])
    assert _number(http["plain_p50_vs_bare_forward"]) and _number(http["p50_vs_bare_forward"])
    assert _number(http["cpu"]["plain_http_api"]["server_cpu_ms_per_request"])
    # /activations: first, warm misses, then a hit
    ah = srv["activations_http"]
    assert ah["views"][0]["cache_hit"] is False and ah["views"][-1]["cache_hit"] is True
    assert _number(ah["first_vs_warm"]) and _number(ah["cached_server_ms"])
    # click to result in Chromium
    browser = srv["browser"]
    assert "error" not in browser, browser.get("error")
    for k in ("classify", "gradcam_other_class", "activations_other_block", "activations_new_image"):
        assert _number(browser[f"{k}_median_ms"]), k
    # throughput with 1, 4 and 8 clients
    levels = srv["throughput"]["levels"]
    assert set(levels) == {"1", "4", "8"}
    for n, level in levels.items():
        assert level["clients"] == int(n) and level["requests"] >= 1 and _number(level["throughput_rps"])
    assert _number(srv["throughput"]["ratios_vs_1"]["8"])

    # two weight sets: memory and the plain HTTP API at 299 px
    two = r["two_weights"]
    assert _number(two["memory"]["peak_rss_mb"]) and _number(two["plain_p50_vs_bare_forward_299"])
    _stats(two["plain_http_api_299"])
    _stats(two["bare_forward_299"])

    # reduced precision: speed-up and top-1 agreement with fp32 on real photos
    rp = r["reduced_precision"]
    assert _number(rp["int8"]["speedup_vs_fp32_onnx"]) and _number(rp["bf16"]["speedup_vs_fp32_tf"])
    for key in ("int8", "bf16"):
        agreement = rp[key]["top1_agreement"]["all"]
        assert agreement["photos"] >= 1 and 0 <= agreement["agree"] <= agreement["photos"]
    for k in ("fp32_onnx", "int8_onnx", "fp32_tf", "bf16_tf"):
        _stats(rp["paths"][k])
    assert all({"photo", "fp32_top1", "int8_top1", "bf16_top1"} <= set(row) for row in rp["photos"])
    per_class = rp["int8_per_class"]
    assert per_class and all(0 <= c["int8_agrees"] <= c["photos"] for c in per_class.values())

    # knockouts: the lesion sweep on one photo against a classify
    ko = r["knockouts"]
    for k in ("classify", "intact_chain_pass", "lesion_sweep"):
        _stats(ko["paths"][k])
    assert ko["blocks_swept"] == [f"block{i}" for i in range(5, 13)] and _number(ko["ratios"]["sweep_vs_classify"])

    # compare: both forwards alternated in a fresh process, RSS with Xception alone and with both
    cmp = r["compare"]
    _stats(cmp["xception_forward"])
    _stats(cmp["inception_v3_forward"])
    assert cmp["timings"]["first"][:2] == ["xception", "inception_v3"]
    assert cmp["rss_both"]["rss_mb"] > cmp["rss_xception"]["rss_mb"] > 0

    # every target, with its value
    assert set(r["targets"]) == set(report.TARGETS)
    for name, t in r["targets"].items():
        assert _number(t["value"]) and isinstance(t["met"], bool), name


@pytest.mark.slow
def test_harness_end_to_end_tiny(tmp_path):
    """`python -m bench.run --quick ...` with the smallest settings: real app, kitchenware weights."""
    out = tmp_path / "results" / "bench.json"
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--size", "71", "--repeats", "2", "--requests", "2",
           "--throughput-seconds", "1", "--clients", "1,4,8", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "target:" in proc.stdout and str(out) in proc.stdout  # the one table, and where the JSON went
    check_results(json.loads(out.read_text()))
    assert (out.parent / "server.log").is_file()


def test_summaries_and_ratios():
    s = common.summarize([0.010, 0.020, 0.030])
    assert s["median_ms"] == 20.0 and s["min_ms"] == 10.0 and s["runs"] == 3
    assert common.summarize([])["median_ms"] is None
    assert common.ratio(10.0, 20.0) == 0.5 and common.ratio(None, 1.0) is None and common.ratio(1.0, 0) is None
    calls: list[str] = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # the order rotates round by round


def test_targets_and_table_from_partial_results():
    results = {
        "meta": {"date": "d", "quick": True, "machine": {"cpu": "cpu", "cpus": 2},
                 "load_before": {"loadavg": [0.1, 0, 0]}, "load_after": {"loadavg": [0.2, 0, 0]}},
        "forward": {"ratios": {"app_vs_keras_predict": 0.5, "app_vs_onnxruntime": 1.2}, "paths": {}},
        "server": {"throughput": {"ratios_vs_1": {"8": 1.5}}, "memory": {"peak_rss_mb": 2048.0}},
    }
    t = report.targets(results)
    assert t["forward_vs_keras_predict"]["met"] is True and t["forward_vs_onnxruntime"]["met"] is False
    assert t["throughput_8_vs_1"]["met"] is True and t["serving_peak_rss_gb"] == {
        "value": 2.0, "target": "<= 1.5", "met": False, "what": report.TARGETS["serving_peak_rss_gb"][2]}
    assert t["cold_start_s"]["met"] is None
    results["targets"] = t
    text = report.table(results)
    assert "NOT met" in text and "n/a" in text


def test_host_choice_is_the_faster_backend_and_int8_only_where_it_agrees_on_every_labelled_photo():
    forward = {"paths": {"ours_onnx": {"median_ms": 30.0}, "ours_tf": {"median_ms": 80.0}}}
    photos = [{"label": "cup", "fp32_top1": 1, "int8_top1": 1}, {"label": "fork", "fp32_top1": 2, "int8_top1": 2},
              {"label": None, "fp32_top1": 0, "int8_top1": 3}]  # unlabelled: not counted
    choice = report.host_choice({"forward": forward, "reduced_precision": {"int8": {"speedup_vs_fp32_onnx": 2.5},
                                                                          "photos": photos}})
    assert choice["backend"]["winner"] == "onnx" and choice["precision"]["winner"] == "int8"
    assert (choice["precision"]["labelled_agree"], choice["precision"]["labelled"]) == (2, 2)
    photos[1]["int8_top1"] = 0  # one labelled disagreement keeps fp32, and says why
    choice = report.host_choice({"forward": forward, "reduced_precision": {"int8": {"speedup_vs_fp32_onnx": 2.5},
                                                                          "photos": photos}})
    assert choice["precision"]["winner"] == "fp32" and "disagrees" in choice["precision"]["why"]
    slow = report.host_choice({"reduced_precision": {"int8": {"speedup_vs_fp32_onnx": 0.9}, "photos": photos[:1]}})
    assert slow["precision"]["winner"] == "fp32" and "not faster" in slow["precision"]["why"]
    assert slow["backend"] is None


def test_cli_defaults_and_errors():
    args = bench.parse_args([])
    assert (args.size, args.repeats, args.clients, args.weights) == (299, 25, [1, 4, 8], "kitchenware")
    assert args.forward_weights == "kitchenware-base" and args.sections == list(bench.SECTIONS)
    quick = bench.parse_args(["--quick", "--app-env", "XCEPTION_BACKEND=tf", "--no-precision"])
    assert quick.size == 96 and quick.app_env == {"XCEPTION_BACKEND": "tf"} and "precision" not in quick.sections
    assert "lean" not in quick.sections and "lean" in bench.parse_args(["--quick", "--sections", "lean"]).sections
    assert bench.parse_args(["--weights", "imagenet"]).forward_weights == "imagenet"
    with pytest.raises(SystemExit):
        bench.parse_args(["--app-env", "NOEQUALS"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "forward,gpu"])
