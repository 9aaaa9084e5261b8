"""The targets each figure is compared with, and the one table `python -m bench.run` prints."""

from __future__ import annotations

from typing import Any

TARGETS = {  # name: (comparison, threshold, what)
    "forward_vs_keras_predict": ("<=", 0.6, "app forward / keras model.predict (batch 1)"),
    "forward_vs_onnxruntime": ("<=", 1.0, "app forward / ONNX Runtime on a tf2onnx export"),
    "explorer_vs_app_forward": ("<=", 1.1, "explorer all-blocks compute (cache miss) / app forward"),
    "activations_first_vs_warm": ("<=", 1.5, "first /activations of a server / a warm miss"),
    "plain_api_p50_vs_forward_150": ("<=", 1.2, "POST /api/v1/classify p50 / bare forward, 150 px"),
    "plain_api_p50_vs_forward_299": ("<=", 1.2, "POST /api/v1/classify p50 / bare forward, 299 px"),
    "browser_classify_minus_forward_ms": ("<=", 100.0, "Chromium click → classify result − forward (ms)"),
    "cached_activation_view_server_ms": ("<=", 50.0, "/activations cache hit, server time (ms)"),
    "throughput_8_vs_1": (">=", 1.3, "8-client / 1-client throughput"),
    "cold_start_s": ("<=", 6.0, "python app.py to first classify, HTTP API (s)"),
    "serving_peak_rss_gb": ("<=", 1.5, "serving process VmHWM, one weight set (GB)"),
    "two_weights_peak_rss_gb": ("<=", 1.6, "serving process VmHWM, two weight sets (GB)"),
    "lesion_sweep_vs_classify": ("<=", 6.0, "eight-block lesion sweep on one photo / a classify"),
}


def _gb(mb: float | None) -> float | None:
    return None if mb is None else round(mb / 1024, 2)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    fwd, act, srv = results.get("forward", {}), results.get("activations", {}), results.get("server", {})
    two = results.get("two_weights", {})
    browser = srv.get("browser", {})
    classify_click = browser.get("classify_median_ms")
    bare = srv.get("bare_forward", {}).get("median_ms")
    values = {
        "forward_vs_keras_predict": fwd.get("ratios", {}).get("app_vs_keras_predict"),
        "forward_vs_onnxruntime": fwd.get("ratios", {}).get("app_vs_onnxruntime"),
        "explorer_vs_app_forward": act.get("ratios", {}).get("explorer_vs_app_forward"),
        "activations_first_vs_warm": srv.get("activations_http", {}).get("first_vs_warm"),
        "plain_api_p50_vs_forward_150": srv.get("classify_http", {}).get("plain_p50_vs_bare_forward"),
        "plain_api_p50_vs_forward_299": two.get("plain_p50_vs_bare_forward_299"),
        "browser_classify_minus_forward_ms": None if classify_click is None or bare is None
        else round(classify_click - bare, 1),
        "cached_activation_view_server_ms": srv.get("activations_http", {}).get("cached_server_ms"),
        "throughput_8_vs_1": srv.get("throughput", {}).get("ratios_vs_1", {}).get("8"),
        "cold_start_s": srv.get("cold_start", {}).get("first_classify_s"),
        "serving_peak_rss_gb": _gb(srv.get("memory", {}).get("peak_rss_mb")),
        "two_weights_peak_rss_gb": _gb(two.get("memory", {}).get("peak_rss_mb")),
        "lesion_sweep_vs_classify": results.get("knockouts", {}).get("ratios", {}).get("sweep_vs_classify"),
    }
    out = {}
    for name, (cmp, threshold, what) in TARGETS.items():
        v = values[name]
        met = None if v is None else (v <= threshold if cmp == "<=" else v >= threshold)
        out[name] = {"value": v, "target": f"{cmp} {threshold}", "met": met, "what": what}
    return out


def host_choice(results: dict[str, Any]) -> dict[str, Any]:
    """Which backend and which precision win on the host this ran on, from this run's own figures:
    the faster of the app's two forwards (ONNX Runtime, TensorFlow: section 1, same weights, same
    photo); int8 over fp32 only when it is faster and its top-1 equals fp32's on every labelled
    photo (section 5), since fp32 stays the default unless agreement is shown."""
    out: dict[str, Any] = {"backend": None, "precision": None}
    paths = results.get("forward", {}).get("paths", {})
    timed = {name: paths[key]["median_ms"] for name, key in (("onnx", "ours_onnx"), ("tf", "ours_tf"))
             if paths.get(key, {}).get("median_ms") is not None}
    if timed:
        best = min(timed, key=timed.get)
        out["backend"] = {"winner": best, "median_ms": timed,
                          "why": " vs ".join(f"{k} {v:.1f} ms" for k, v in sorted(timed.items(), key=lambda kv: kv[1]))}
    rp = results.get("reduced_precision", {})
    if rp.get("int8"):
        speedup = rp["int8"].get("speedup_vs_fp32_onnx")
        labelled = [r for r in rp.get("photos", []) if r.get("label")]
        agree = sum(r["int8_top1"] == r["fp32_top1"] for r in labelled)
        faster = speedup is not None and speedup > 1.0
        every = bool(labelled) and agree == len(labelled)
        winner = "int8" if faster and every else "fp32"
        why = (f"int8 ×{speedup} vs fp32, top-1 = fp32 on {agree}/{len(labelled)} labelled photos"
               + ("" if winner == "int8" else "; fp32 stays: " + ("int8 is not faster here" if not faster
                                                                   else "int8 disagrees on some labelled photo")))
        out["precision"] = {"winner": winner, "int8_speedup": speedup, "labelled_agree": agree,
                            "labelled": len(labelled), "why": why}
    return out


def _ms(s: dict[str, Any] | None) -> tuple[str, str]:
    if not s or not s.get("runs"):
        return "", ""
    return f"{s['median_ms']:.1f} ms", f"p10–p90 {s['p10_ms']:.0f}–{s['p90_ms']:.0f}"


def table(results: dict[str, Any]) -> str:
    """The one table: every path's median, then every target."""
    lines = []
    meta = results["meta"]
    m = meta["machine"]
    simd = " ".join(k for k, v in m.get("simd", {}).items() if v) or "?"
    lines.append(f"Xception Explorer benchmark — {meta['date']} — {m.get('cpu', '?')}, {m.get('cpus')} CPUs "
                 f"({simd}) — load {meta['load_before']['loadavg'][0]:.2f} → {meta['load_after']['loadavg'][0]:.2f}"
                 f"{' — QUICK' if meta['quick'] else ''}")
    fwd = results.get("forward", {})
    rows: list[tuple[str, str, str, str]] = []
    for k, s in fwd.get("paths", {}).items():
        mark = " (app)" if k == fwd.get("app_path") else ""
        rows.append((f"forward {fwd['input_size']}px b1: {k}{mark}", *_ms(s), ""))
    act = results.get("activations", {})
    for k in ("app_forward", "explorer_onnx", "pass_onnx", "explorer_first_view", "explorer_tf", "pass_tf",
              "plain_tf", "cached_view"):
        s = act.get("paths", {}).get(k)
        if s:
            rows.append((f"activations {act['input_size']}px: {k}", *_ms(s), ""))
    if act.get("first_use_ms"):
        f = act["first_use_ms"]
        rows.append(("activations: fresh explorer, first compute", f"{f['unwarmed']:.0f} ms",
                     f"after warm_up ({f['warm_up']:.0f} ms): {f['after_warm_up']:.0f} ms", ""))
    srv = results.get("server", {})
    if srv.get("cold_start"):
        c = srv["cold_start"]
        rows.append(("server: cold start, first classify (HTTP API)", f"{c['first_classify_s']} s",
                     f"HTTP up {c['http_up_s']} s; gradio_client {c['first_classify_gradio_client_s']} s",
                     f"server CPU {c['server_cpu_s_at_first_classify']} s"))
    if srv.get("classify_http"):
        h = srv["classify_http"]
        rows.append((f"server {srv['input_size']}px: bare forward ({srv['backend']})",
                     f"{srv['bare_forward']['median_ms']:.1f} ms", f"preprocess {srv['preprocess']['median_ms']:.1f} ms", ""))
        for name, s in (("POST /api/v1/classify", h["plain_http_api"]), ("gradio_client /classify", h["gradio_client"]),
                        ("Gradio raw API /classify", h["raw_http_api"]["total"])):
            rows.append((f"server: {name}", f"p50 {s['median_ms']:.0f} ms", f"p95 {s['p95_ms']:.0f} ms", ""))
    a = srv.get("activations_http", {})
    if a.get("first_ms") is not None:
        rows.append(("server: /activations first / warm miss / hit", f"{a['first_ms']:.0f} ms",
                     f"warm {a['warm_miss_ms']} ms", f"hit server {a['cached_server_ms']} ms"))
    b = srv.get("browser", {})
    for k in ("classify", "gradcam_other_class", "activations_other_block", "activations_new_image"):
        if b.get(f"{k}_median_ms") is not None:
            rows.append((f"Chromium click → result: {k}", f"{b[f'{k}_median_ms']:.0f} ms",
                         " ".join(f"{v:.0f}" for v in b[f"{k}_ms"]), ""))
    if b.get("error"):
        rows.append(("Chromium click → result", "error", b["error"][:60], ""))
    for k, lv in srv.get("throughput", {}).get("levels", {}).items():
        rows.append((f"server: throughput, {k} client(s)", f"{lv['throughput_rps']} req/s",
                     f"p50 {lv['latency']['median_ms']} ms", f"{lv['requests']} req"))
    two = results.get("two_weights", {})
    if two.get("memory"):
        rows.append(("two weight sets: peak RSS", f"{two['memory']['peak_rss_mb']:.0f} MB",
                     f"both ready {two['both_ready_s']} s", ""))
        s = two["plain_http_api_299"]
        rows.append(("two weight sets: POST /api/v1/classify 299 px", f"p50 {s['median_ms']:.0f} ms",
                     f"p95 {s['p95_ms']:.0f} ms", f"bare forward {two['bare_forward_299_ms']} ms"))
    rp = results.get("reduced_precision", {})
    if rp.get("paths"):
        for key, path, base, speed in (("int8", "int8_onnx", "fp32_onnx", "speedup_vs_fp32_onnx"),
                                       ("bf16", "bf16_tf", "fp32_tf", "speedup_vs_fp32_tf")):
            agree = rp[key]["top1_agreement"]["all"]
            rows.append((f"{key} {rp['input_size']}px b1 ({path})", f"{rp['paths'][path]['median_ms']:.1f} ms",
                         f"{base} {rp['paths'][base]['median_ms']:.1f} ms, ×{rp[key][speed]}",
                         f"top-1 = fp32 on {agree['agree']}/{agree['photos']} photos"))
        for label, c in (rp.get("int8_per_class") or {}).items():
            rows.append((f"int8 per class: {label}", f"{c['int8_agrees']}/{c['photos']} = fp32",
                         f"correct fp32 {c['fp32_correct']}, int8 {c['int8_correct']}",
                         f"held out {c['int8_agrees_held_out']}/{c['held_out']}"))
    choice = results.get("host_choice") or host_choice(results)
    if choice.get("backend"):
        rows.append(("on this host, backend", choice["backend"]["winner"], choice["backend"]["why"], ""))
    if choice.get("precision"):
        rows.append(("on this host, precision", choice["precision"]["winner"], choice["precision"]["why"], ""))
    lean = results.get("lean", {})
    for row in lean.get("rows", []):
        rows.append((f"lean: {row['what']}", row["before"], row["after"], row.get("note", "")))
    ko = results.get("knockouts", {})
    for k, s in ko.get("paths", {}).items():
        rows.append((f"knockouts {ko['input_size']}px: {k}", *_ms(s), ""))
    if ko.get("ratios"):
        rows.append(("knockouts: intact chain pass / classify", f"{ko['ratios']['intact_chain_vs_classify']}×",
                     f"sessions built in {ko['sessions_built_ms']:.0f} ms", ""))
    if "compare" in results and not results["compare"].get("skipped"):
        from bench.compare import rows as compare_rows

        rows.extend(compare_rows(results["compare"]))
    rows.append(("", "", "", ""))
    for t in results.get("targets", {}).values():
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        rows.append((f"target: {t['what']}", str(t["value"]), t["target"], met))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip())
    return "\n".join(lines)
