"""Figures for the Teach tab: extraction cost, training time, and cross-validated accuracy by block.

    python -m bench.teach [--weights kitchenware] [--rounds 5] [--out bench/results/teach.json]

1. extraction  per photo, interleaved round by round on the same preprocessed real photos: the
               app's bare forward (`Classifier.forward`, the Classify path) against the Teach
               extractor's pass (`FeatureExtractor`: six pooled blocks and the exit-flow map), at
               batch 1 and at the batch the service uses; and the service's whole add
               (`TeachService.add_photos`: decode, preprocess, hash, extract, thumbnail) per photo.
2. training    10 classes × 30 photos (300 distinct crops/flips/turns of the real photos, features
               extracted for real): the head's fit on the 2,048-d features, and `train` as the
               button runs it (that fit plus 5-fold cross-validation and a PCA map on all 6 blocks).
3. accuracy    cross-validated accuracy by block on honestly labelled photos: the starter set (the
               kitchenware package's 9 labelled photos + the 5 bundled examples: cup, plate,
               cutlery, not kitchenware; labels from the package's CSV and the examples' subjects),
               and the same plus 8 of the package's unlabelled photos labelled by eye (the one glass
               left out: a class of one cannot be cross-validated); and the starter set's head on
               those 8 photos, held out.

Figures, not pass/fail. Medians over rounds; the machine's other load shows in the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as app.py runs it (set before NumPy loads BLAS)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Labels given by eye to the kitchenware package's unlabelled photos (file stem → label); each is
# an unambiguous single object (see bench/README.md, "Teach").
EYE_LABELS = {"0000": "cup", "0001": "spoon", "0002": "plate", "0024": "spoon", "0192": "plate", "0199": "knife",
              "0385": "plate", "0422": "cup"}


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def _augment(image, i: int):
    """A distinct variant of a photo: a crop, maybe mirrored, maybe turned."""
    from PIL import Image

    w, h = image.size
    rng = np.random.default_rng(i)
    f = rng.uniform(0.6, 0.95)
    cw, ch = int(w * f), int(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch))
    if i % 2:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out.rotate(90 * (i // 2 % 4), expand=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import tempfile

    from demo.services.teach import TeachService
    from demo.store import ModelStore
    from xception_core.io.assets import example_images
    from xception_core.io.images import load_image
    from xception_core.io.preprocessing import preprocess
    from xception_core.runtime.extractor import TRANSFER_BLOCKS
    from xception_core.runtime.transfer import cross_validate, fit_softmax_head
    from xception_core.settings import Settings
    from xception_core.weights.fetch import preset_samples
    from xception_core.weights.presets import KITCHENWARE

    env = Settings.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="bench-teach-"))
    settings = Settings(weights=args.weights, cache_dir=env.cache_dir, keras_home=env.keras_home,
                        upload_dir=tmp / "uploads", backend=env.backend, onnx_threads=env.onnx_threads)
    store = ModelStore(settings).start()
    served = store.get(timeout=900)
    teach = TeachService(store, tmp / "teach")
    extractor = teach.extractor(served)
    samples = preset_samples("kitchenware", settings.cache_dir)
    examples = example_images()
    photos = [load_image(s.path) for s in samples] + [load_image(e.path) for e in examples]
    size = served.input_size
    x = np.stack([preprocess(p, size) for p in photos])
    report: dict[str, Any] = {"weights": served.title, "input_size": size, "backend": extractor.backend,
                              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                              "photos": len(photos)}

    # 1. extraction vs bare forward -------------------------------------------------------------
    # Interleaved call by call (bare, extract, bare, ... with the order flipped every round), so
    # the load other processes put on the shared cores falls on both alike.
    batch = teach.limits.batch
    paths = {"bare": served.classifier.forward, "extract": extractor}
    times: dict[str, list[float]] = {}
    for size_b in (1, batch):
        chunks = [x[i : i + size_b] for i in range(0, len(x) - size_b + 1, size_b)]
        for fn in paths.values():
            fn(chunks[0])  # warm-up
        for r in range(args.rounds):
            order = list(paths.items()) if r % 2 == 0 else list(paths.items())[::-1]
            for chunk in chunks:
                for name, fn in order:
                    start = time.perf_counter()
                    fn(chunk)
                    times.setdefault(f"{name}_b{size_b}", []).append((time.perf_counter() - start) / size_b)
    per_photo = {k: _median_ms(v) for k, v in times.items()}
    add_times = []
    for r in range(args.rounds):
        teach.end("bench")
        variants = [_augment(p, 1000 + r) for p in photos]  # new pixels: no cache hits
        start = time.perf_counter()
        teach.add_photos("bench", "all", variants[:30])
        add_times.append((time.perf_counter() - start) / min(len(variants), 30))
    bare_e2e = []
    for r in range(args.rounds):
        variants = [_augment(p, 2000 + r) for p in photos]
        start = time.perf_counter()
        for v in variants:
            served.classifier.forward(preprocess(v, size)[None])
        bare_e2e.append((time.perf_counter() - start) / len(variants))
    report["extraction_ms_per_photo"] = per_photo
    report["extraction_vs_bare"] = {"batch 1": round(per_photo["extract_b1"] / per_photo["bare_b1"], 3),
                                    f"batch {batch}": round(per_photo[f"extract_b{batch}"] / per_photo[f"bare_b{batch}"], 3)}
    report["add_photos_ms_per_photo"] = _median_ms(add_times)
    report["decode_preprocess_forward_ms_per_photo"] = _median_ms(bare_e2e)

    # 2. training: 10 classes × 30 photos --------------------------------------------------------
    teach.end("bench")
    for c in range(10):
        group = [_augment(photos[(c * 30 + j) % len(photos)], c * 30 + j) for j in range(30)]
        teach.add_photos("bench", f"class {c}", group)
    trained = None
    fit_s, train_s = [], []
    for _ in range(max(args.rounds, 3)):
        t0 = time.perf_counter()
        trained = teach.train("bench")
        train_s.append(time.perf_counter() - t0)
        fit_s.append(trained.fit_seconds)
    report["train_10x30"] = {"fit_ms": _median_ms(fit_s), "train_button_ms": _median_ms(train_s),
                             "cv": trained.blocks["block14"].cv.scheme + f" ({trained.blocks['block14'].cv.folds} folds)",
                             "lbfgs_iterations": trained.head.iterations}
    teach.end("bench")

    # 3. accuracy by block on honestly labelled photos --------------------------------------------
    uses = KITCHENWARE.samples  # the starter set's classes, as the preset declares them
    labelled = []  # (photo index, class, source)
    for i, s in enumerate(samples):
        if s.label:
            labelled.append((i, uses.starter_class(s.label), "package"))
        elif s.path.stem in EYE_LABELS:
            labelled.append((i, uses.starter_class(EYE_LABELS[s.path.stem]), "eye"))
    for j, e in enumerate(examples):
        labelled.append((len(samples) + j, uses.example_class(e.path.name), "example"))
    feats = extractor(x)
    accuracy: dict[str, Any] = {}
    for set_name, keep in (("starter (14: package + examples)", {"package", "example"}),
                           ("starter + 8 by eye (22)", {"package", "example", "eye"})):
        rows = [(i, c) for i, c, src in labelled if src in keep]
        names = sorted({c for _, c in rows})
        y = np.array([names.index(c) for _, c in rows])
        idx = [i for i, _ in rows]
        per_block = {}
        for block in TRANSFER_BLOCKS:
            f = feats.pooled[block][idx]
            per_block[block] = {str(l2): round(cross_validate(f, y, len(names), l2=l2).accuracy, 3)
                                for l2 in (1e-3, 1e-2, 1e-1)}
        accuracy[set_name] = {"classes": {n: int((y == k).sum()) for k, n in enumerate(names)},
                              "chance": round(float(np.bincount(y).max() / len(y)), 3),
                              "leave-one-out accuracy by block (by l2)": per_block}
    # The starter set's head (what the Train button fits) on the 8 photos labelled by eye: held out.
    train_rows = [(i, c) for i, c, src in labelled if src != "eye"]
    test_rows = [(i, c) for i, c, src in labelled if src == "eye"]
    names = sorted({c for _, c in train_rows})
    y_train = np.array([names.index(c) for _, c in train_rows])
    y_test = np.array([names.index(c) for _, c in test_rows])
    held_out = {}
    for block in TRANSFER_BLOCKS:
        head = fit_softmax_head(feats.pooled[block][[i for i, _ in train_rows]], y_train, len(names))
        predicted = head.probabilities(feats.pooled[block][[i for i, _ in test_rows]]).argmax(axis=1)
        held_out[block] = round(float((predicted == y_test).mean()), 3)
    accuracy["starter head on the 8 by-eye photos (held out)"] = held_out
    report["accuracy"] = accuracy

    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
