"""Section 5: int8 and bf16 against fp32 on real photos: speed-up, top-1 agreement, per labelled class."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, _say, calibration, calibration_photos, interleaved, machine, ratio, summarize


def _photos(size: int, quick: bool) -> list[tuple[str, Path, str | None, str]]:
    """Real photos: (set, path, label or None, 'calibration' | 'held_out'): the kitchenware wheel's
    photos and the app's examples; those `calibration_photos` picks calibrate int8, the rest are
    held out."""
    from xception_core.io.assets import example_images
    from xception_core.settings import Settings

    calibrating = {Path(p).resolve() for p, _ in calibration_photos(size)}
    candidates: list[tuple[str, Path, str | None]] = []
    try:
        from xception_core.weights.fetch import preset_samples

        candidates += [("kitchenware", s.path, s.label)
                       for s in preset_samples("kitchenware", Settings.from_env().cache_dir)]
    except Exception as exc:  # noqa: BLE001 - no kitchenware package: the examples alone
        _say(f"precision: no kitchenware photos ({exc})")
    candidates += [("assets", e.path, None) for e in example_images()]
    photos = [(g, p, label, "calibration" if p.resolve() in calibrating else "held_out") for g, p, label in candidates]
    if quick:
        photos = photos[:: max(len(photos) // 6, 1)]
    return photos


def _agreement(rows: list[dict], key: str) -> dict[str, Any]:
    same = sum(r["fp32_top1"] == r[key] for r in rows)
    return {"agree": same, "photos": len(rows), "rate": round(same / len(rows), 3) if rows else None}


def _per_class(rows: list[dict], names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per labelled class: photos, fp32 correct, int8 correct, int8 top-1 = fp32 top-1 (all, and
    held out from calibration)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        c = out.setdefault(r["label"], {"photos": 0, "held_out": 0, "fp32_correct": 0, "int8_correct": 0,
                                        "int8_agrees": 0, "int8_agrees_held_out": 0})
        agrees = r["int8_top1"] == r["fp32_top1"]
        c["photos"] += 1
        c["held_out"] += r["role"] == "held_out"
        c["fp32_correct"] += names[r["fp32_top1"]] == r["label"]
        c["int8_correct"] += names[r["int8_top1"]] == r["label"]
        c["int8_agrees"] += agrees
        c["int8_agrees_held_out"] += agrees and r["role"] == "held_out"
    return dict(sorted(out.items()))


def bench_precision(args: argparse.Namespace) -> dict[str, Any]:
    """Section 4: reduced precision on the served model, against its own fp32 path, on real photos:
    int8 (ONNX Runtime static quantization) and bf16 (Keras mixed_bfloat16 on TensorFlow)."""
    import keras
    import tensorflow as tf

    from xception_core.io.labels import load_labels
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.model import build_xception, load_model
    from xception_core.runtime.classifier import Classifier, softmax

    loaded = load_model(args.weights)
    model, info = loaded.model, loaded.info
    photos = _photos(loaded.input_size, args.quick)
    names = load_labels(info.labels) if info.labels else None

    def probs(out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, np.float32)
        return softmax(out) if info.outputs == "logits" else out

    # ---- int8 (the app's XCEPTION_PRECISION=int8 switch) against fp32, both on ONNX Runtime
    _say(f"precision: int8 quantization ({sum(p[3] == 'calibration' for p in photos)} calibration photos here)")
    fp32_clf = Classifier(loaded, backend="onnx", precision="fp32")
    start = time.perf_counter()
    int8_clf = Classifier(loaded, backend="onnx", precision="int8", calibration=calibration(loaded.input_size))
    quantize_s = time.perf_counter() - start
    if int8_clf.precision != "int8" or fp32_clf.backend != "onnx":
        raise RuntimeError("the int8 path did not build (see the warnings above)")
    size = fp32_clf.input_size
    arrays = [preprocess(p[1], size) for p in photos]

    # ---- bf16 (TensorFlow, Keras mixed precision) against fp32 TensorFlow
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    fp32_tf = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16_model = build_xception(weights=args.weights)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    bf16_tf = tf.function(lambda t: tf.cast(bf16_model(t, training=False), tf.float32), input_signature=[spec])

    x = arrays[0][None]
    times = interleaved({"fp32_onnx": lambda: fp32_clf.forward(x), "int8_onnx": lambda: int8_clf.forward(x),
                         "fp32_tf": lambda: fp32_tf(tf.constant(x)), "bf16_tf": lambda: bf16_tf(tf.constant(x))},
                        args.repeats)
    stats = {k: summarize(v) for k, v in times.items()}
    rows = []
    for (group, path, label, role), a in zip(photos, arrays):
        p32 = fp32_clf.forward(a[None])[1][0]
        p8 = int8_clf.forward(a[None])[1][0]
        p16 = probs(bf16_tf(tf.constant(a[None])).numpy())[0]
        rows.append({"set": group, "photo": path.name, "role": role, "label": label,
                     "fp32_top1": int(p32.argmax()), "int8_top1": int(p8.argmax()), "bf16_top1": int(p16.argmax()),
                     "int8_max_prob_diff": round(float(np.abs(p32 - p8).max()), 4),
                     "bf16_max_prob_diff": round(float(np.abs(p32 - p16).max()), 4)})
    by_eye = json.loads((REPO / "bench" / "photo_labels.json").read_text())["labels"]
    for r in rows:
        r["label_by"] = "train.csv" if r["label"] else "eye" if r["photo"] in by_eye else None
        r["label"] = r["label"] or by_eye.get(r["photo"])
    labelled = [r for r in rows if r["label"]]
    accuracy = None
    if names and labelled:
        accuracy = {k: sum(names[r[f"{k}_top1"]] == r["label"] for r in labelled) for k in ("fp32", "int8", "bf16")}
        accuracy["photos"] = len(labelled)
    held_out = [r for r in rows if r["role"] == "held_out"]
    return {
        "weights": args.weights, "input_size": size, "paths": stats, "photos": rows, "label_accuracy": accuracy,
        "int8_per_class": _per_class(labelled, names) if names else None,
        "int8": {
            "method": "XCEPTION_PRECISION=int8: ONNX Runtime static quantization (QDQ), uint8 activations "
                      "with min/max ranges from the app's calibration photos (demo.store), int8 weights per "
                      "output channel",
            "build_s": round(quantize_s, 2),
            "speedup_vs_fp32_onnx": ratio(stats["fp32_onnx"]["median_ms"], stats["int8_onnx"]["median_ms"]),
            "top1_agreement": {"all": _agreement(rows, "int8_top1"), "held_out": _agreement(held_out, "int8_top1")},
            "max_prob_diff": max(r["int8_max_prob_diff"] for r in rows),
        },
        "bf16": {
            "method": "Keras mixed_bfloat16 policy (bf16 compute, fp32 weights) on TensorFlow",
            "cpu_has_native_bf16": bool({k for k, v in machine().get("simd", {}).items() if v}
                                        & {"avx512_bf16", "amx_bf16"}),
            "speedup_vs_fp32_tf": ratio(stats["fp32_tf"]["median_ms"], stats["bf16_tf"]["median_ms"]),
            "top1_agreement": {"all": _agreement(rows, "bf16_top1"), "held_out": _agreement(held_out, "bf16_top1")},
            "max_prob_diff": max(r["bf16_max_prob_diff"] for r in rows),
        },
    }
