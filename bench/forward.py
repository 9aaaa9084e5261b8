"""Section 1: batch-1 latency of the app's forward against Keras and a tf2onnx ONNX Runtime export, in
this process, interleaved, with the same weights."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import _say, calibration, interleaved, load, photo, ratio, summarize


def _fill_forward_weights(model, choice: str) -> str:
    """Weights of the 299×299 forward model; latency does not depend on their values."""
    from xception_core.model import build_xception

    if choice == "random":
        return "random initialisation"
    if choice == "imagenet":
        source = build_xception(weights="imagenet", input_shape=model.input_shape[1:])
        model.set_weights(source.get_weights())
        return "ImageNet (official Keras weights)"
    base = build_xception(weights="kitchenware", include_top=False)  # its base = ImageNet no-top weights
    by_name = {layer.name: layer for layer in base.layers if layer.weights}
    copied = 0
    for layer in model.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    del base
    return (f"ImageNet architecture with the kitchenware preset's base weights copied in ({copied} layers: the "
            "official ImageNet no-top weights); the 1000-class classifier is random")


def bench_forward(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 1. Returns (JSON section, objects reused by section 2)."""
    import keras
    import tensorflow as tf

    from xception_core.arch.names import reference_layer_name
    from xception_core.model import load_model
    from xception_core.runtime import onnx as onnx_backend
    from xception_core.runtime.classifier import Classifier
    from xception_core.runtime.folding import fold_batchnorm, max_abs_difference
    from xception_core.settings import Settings

    size = args.size
    before = load()
    loaded = load_model(None, input_shape=(size, size, 3))
    model = loaded.model
    weights_note = _fill_forward_weights(model, args.forward_weights)
    ref = keras.applications.Xception(weights=None, input_shape=(size, size, 3))
    for layer in ref.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(reference_layer_name(layer)).get_weights())
    x = photo(size)

    app_backend = args.app_env.get("XCEPTION_BACKEND") or ("onnx" if onnx_backend.available() else "tf")
    paths: dict[str, Callable[[], Any]] = {}
    notes: dict[str, str] = {}
    ours_tf = Classifier(loaded, backend="tf", precision="fp32")
    paths["ours_tf"] = lambda: ours_tf.forward(x)
    start = time.perf_counter()
    ours_onnx = Classifier(loaded, backend="onnx", precision="fp32")
    onnx_build_s = time.perf_counter() - start
    int8_build_s = None
    classifiers = {"ours_tf": ours_tf}
    if ours_onnx.backend == "onnx":
        paths["ours_onnx"] = lambda: ours_onnx.forward(x)
        classifiers["ours_onnx"] = ours_onnx
        # The XCEPTION_PRECISION=int8 switch on the same model (calibrated on real photos).
        start = time.perf_counter()
        ours_int8 = Classifier(loaded, backend="onnx", precision="int8", calibration=calibration(size))
        int8_build_s = time.perf_counter() - start
        if ours_int8.precision == "int8":
            paths["ours_onnx_int8"] = lambda: ours_int8.forward(x)
            classifiers["ours_onnx_int8"] = ours_int8
    app_precision = args.app_env.get("XCEPTION_PRECISION") or "fp32"
    app_key = "ours_tf" if app_backend != "onnx" else "ours_onnx_int8" if app_precision == "int8" else "ours_onnx"
    app_key = app_key if app_key in classifiers else "ours_tf"
    app = classifiers[app_key]

    folded = fold_batchnorm(model).model
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    folded_fn = tf.function(lambda t: folded(t, training=False), input_signature=[spec])
    paths["ours_tf_bn_folded"] = lambda: folded_fn(tf.constant(x))
    paths["keras_predict"] = lambda: ref.predict(x, verbose=0)

    ort_convert_s = None
    try:
        import onnxruntime as ort
        import tf2onnx

        ref_fn = tf.function(lambda t: ref(t, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="input")])
        start = time.perf_counter()
        proto, _ = tf2onnx.convert.from_function(ref_fn, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="input")], opset=17)
        ort_convert_s = time.perf_counter() - start
        options = ort.SessionOptions()
        # Same threads and no spin-waiting, as in our backend, so the two ORT rows differ only by graph.
        options.intra_op_num_threads = Settings().onnx_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        del proto
        paths["onnxruntime_tf2onnx"] = lambda: session.run(None, {input_name: x})
    except Exception as exc:  # noqa: BLE001 - tf2onnx/onnxruntime missing or failing
        notes["onnxruntime_tf2onnx"] = f"unavailable: {exc}"

    _say(f"forward: {len(paths)} paths × {args.repeats} interleaved runs at {size}×{size}")
    times = interleaved(paths, args.repeats)
    stats = {k: summarize(v) for k, v in times.items()}
    med = {k: s["median_ms"] for k, s in stats.items()}
    app_ms = med[app_key]

    # Numerical agreement of the app's path with Keras's own model, same weights, same photo.
    probs_ref = ref.predict(x, verbose=0)
    feats_app, probs_app = app.forward(x)
    feats_tf, _ = ours_tf.forward(x)
    errors = {
        "app_vs_keras_predict_probabilities": float(np.abs(probs_app - probs_ref).max()),
        "app_vs_tf_features": float(np.abs(feats_app - feats_tf).max()),
        "bn_folded_vs_original_output": max_abs_difference(model, folded, x),
        "features_abs_max": float(np.abs(feats_tf).max()),
    }
    profile = onnx_profile(ours_onnx, x) if ours_onnx.backend == "onnx" else None
    errors["app_vs_keras_predict_top1_same"] = bool(probs_app.argmax() == probs_ref.argmax())
    macs = _macs(model)
    section = {
        "input_size": size,
        "batch": 1,
        "weights": weights_note,
        "app_backend": app.backend,
        "app_precision": app.precision,
        "app_path": app_key,
        "repeats": args.repeats,
        "load_before": before,
        "load_after": load(),
        "paths": stats,
        "notes": notes,
        "ratios": {
            "app_vs_keras_predict": ratio(app_ms, med.get("keras_predict")),
            "app_vs_onnxruntime": ratio(app_ms, med.get("onnxruntime_tf2onnx")),
            "ours_tf_vs_keras_predict": ratio(med.get("ours_tf"), med.get("keras_predict")),
            "ours_onnx_vs_ours_tf": ratio(med.get("ours_onnx"), med.get("ours_tf")),
            "int8_vs_onnxruntime": ratio(med.get("ours_onnx_int8"), med.get("onnxruntime_tf2onnx")),
            "int8_vs_keras_predict": ratio(med.get("ours_onnx_int8"), med.get("keras_predict")),
            "bn_folded_tf_vs_ours_tf": ratio(med.get("ours_tf_bn_folded"), med.get("ours_tf")),
        },
        "max_abs_error": errors,
        "setup_s": {"onnx_backend_build": round(onnx_build_s, 2),
                    "onnx_int8_build": None if int8_build_s is None else round(int8_build_s, 2),
                    "tf2onnx_convert": None if ort_convert_s is None else round(ort_convert_s, 2)},
        "macs_per_image": macs,
        "achieved_gflops_app": round(2 * macs / (app_ms / 1000) / 1e9, 1) if app_ms else None,
        "onnx_profile": profile,
    }
    keep = {"model": model, "loaded": loaded, "x": x, "ours_tf": ours_tf, "app": app, "app_key": app_key}
    return section, keep


def _macs(model) -> int:
    from xception_core.runtime.introspection import describe

    return int(describe(model).total_macs)


def onnx_profile(classifier, x: np.ndarray, runs: int = 5) -> dict[str, Any] | None:
    """Where ONNX Runtime spends the forward: share of node time by kernel kind, from ORT's own
    profiler on a separate session of the same graph."""
    try:
        import onnxruntime as ort

        from xception_core.runtime.onnx import to_onnx
        from xception_core.settings import Settings

        proto = to_onnx(classifier.model, classifier.info.features_layer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = Settings().onnx_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            options.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for _ in range(runs + 1):
                session.run(None, {"input": x})
            trace = json.loads(Path(session.end_profiling()).read_text())
        kinds: dict[str, float] = {}
        for event in trace:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            args_ = event.get("args", {})
            op = args_.get("op_name", "?")
            name = event["name"]
            if op in ("Conv", "FusedConv", "NchwcConv", "QLinearConv"):
                kind = "depthwise conv" if "/depthwise" in name else "pointwise (1×1) conv" if (
                    "sepconv" in name or "residual" in name) else "full conv (stem)"
            else:
                kind = op
            kinds[kind] = kinds.get(kind, 0.0) + float(event.get("dur", 0))
        total = sum(kinds.values()) or 1.0
        return {"runs": runs, "share_by_kind": {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
                "node_ms_per_run": round(total / 1000 / (runs + 1), 2)}
    except Exception as exc:  # noqa: BLE001 - profiling is a nicety
        return {"error": str(exc)}
