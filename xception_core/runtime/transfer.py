"""Transfer learning on frozen Xception features: a softmax head fitted in NumPy, its
cross-validated accuracy, a 2-D map of the features, and class activation maps through the head.

Numbers only: arrays in, arrays out. No labels, no images, no UI. The features are pooled
block outputs (N, D), e.g. the 2,048-d global average of the exit flow.

The head is multinomial logistic regression on centred features scaled to unit mean square,
L2-regularised and class-balanced, fitted full-batch with L-BFGS (strictly convex, so one
optimum: the result does not depend on the start or on the optimiser, once the fit has reached it:
the stopping rule bounds the weights' distance to the optimum relative to their size, so a weak
penalty does not stop the fit early). The centring and scaling
are folded into the returned weights, so the head acts on raw pooled features and exports as one
Dense layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CrossValidation", "FeatureMap", "SoftmaxHead", "class_activation_map", "cross_validate", "fit_softmax_head",
    "pca_2d", "row_space",
]

DEFAULT_L2 = 1e-2
DEFAULT_MAX_ITER = 300
DEFAULT_TOL = 1e-4  # the weights' distance to the optimum, as a share of their size
LOO_MAX_PHOTOS = 40  # leave-one-out up to this many photos, k-fold above (each fold is one fit)
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class SoftmaxHead:
    """A linear softmax classifier on raw pooled features.

    Attributes:
        weights: (D, K) float32.
        bias: (K,) float32.
        iterations: L-BFGS iterations the fit took.
        converged: Whether the gradient fell below the tolerance within the iteration budget.
    """

    weights: np.ndarray
    bias: np.ndarray
    iterations: int = 0
    converged: bool = True

    @property
    def classes(self) -> int:
        return int(self.bias.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N, K) float32."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.weights.shape[0]:
            raise ValueError(f"features must have shape (N, {self.weights.shape[0]}), got {features.shape}")
        return features @ self.weights + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N, K) float32 softmax probabilities."""
        return _softmax(self.logits(features))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check(features: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must have shape (N, D) with N ≥ 1, got {x.shape}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be ({x.shape[0]},) integers, got {y.shape} {y.dtype}")
    if classes < 2 or y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) with classes ≥ 2; got range [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinity")
    return x, y.astype(np.int64)


def _objective(params: np.ndarray, x: np.ndarray, onehot: np.ndarray, sample_w: np.ndarray,
               l2: float) -> tuple[float, np.ndarray]:
    """Weighted mean cross-entropy + l2/2·|W|² (bias not penalised) and its gradient."""
    d, k = x.shape[1], onehot.shape[1]
    w, b = params[: d * k].reshape(d, k), params[d * k :]
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -float(np.sum(sample_w * np.sum(onehot * log_p, axis=1))) + 0.5 * l2 * float(np.sum(w * w))
    delta = (np.exp(log_p) - onehot) * sample_w[:, None]  # (N, K): d loss / d logits
    grad_w = x.T @ delta + l2 * w
    return loss, np.concatenate([grad_w.ravel(), delta.sum(axis=0)])


def _lbfgs(fun, x0: np.ndarray, done, *, max_iter: int, memory: int = 10) -> tuple[np.ndarray, int, bool]:
    """Minimises a smooth convex `fun(x) -> (f, grad)`: L-BFGS two-loop recursion with a
    backtracking (Armijo) line search, until `done(x, grad)`. Returns (x, iterations, converged);
    it also stops, unconverged, when a step no longer lowers f by what float64 can register."""
    x = x0.copy()
    f, g = fun(x)
    s_list: list[np.ndarray] = []
    y_list: list[np.ndarray] = []
    for it in range(max_iter):
        if done(x, g):
            return x, it, True
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list)):
            a = s @ q / (y @ s)
            alphas.append(a)
            q -= a * y
        if s_list:
            q *= (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
        for (s, y), a in zip(zip(s_list, y_list), reversed(alphas)):
            q += s * (a - y @ q / (y @ s))
        direction = -q
        slope = g @ direction
        if slope >= 0:  # not a descent direction (lost curvature): restart from the gradient
            s_list.clear(), y_list.clear()
            direction, slope = -g, -(g @ g)
        step = 1.0 if s_list else 1.0 / max(np.linalg.norm(g), 1e-12)
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if s @ y > 1e-12:
            s_list.append(s), y_list.append(y)
            if len(s_list) > memory:
                s_list.pop(0), y_list.pop(0)
        stalled = f - f_new <= 1e-14 * abs(f)
        x, f, g = x_new, f_new, g_new
        if stalled:
            return x, it + 1, done(x, g)
    return x, max_iter, done(x, g)


def row_space(features: np.ndarray) -> np.ndarray | None:
    """(D, r) orthonormal basis of the span of the rows of (N, D) features, r ≤ N; None when
    D ≤ N (nothing to gain). An L2-penalised linear head's optimal weights lie in this span (a
    component outside it changes no logit and only adds to the penalty), so fitting in these r
    coordinates is the same problem, ~D/N times cheaper: 300 photos × 2,048 features → 300."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] <= x.shape[0]:
        return None
    q, _ = np.linalg.qr(x.T)  # (D, N): reduced QR of the features' transpose
    return q


def fit_softmax_head(features: np.ndarray, labels: np.ndarray, classes: int, *, l2: float = DEFAULT_L2,
                     balanced: bool = True, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL,
                     init: SoftmaxHead | None = None, basis: np.ndarray | None = None) -> SoftmaxHead:
    """Fits a softmax head.

    Args:
        features: (N, D) pooled features.
        labels: (N,) class indices in [0, classes).
        classes: K ≥ 2 (a class may have no photo: it then gets a low bias and is never chosen).
        l2: Penalty on the weights of the scaled features (larger = smoother, less confident).
        balanced: Weigh each class equally whatever its photo count (sample weight ∝ 1/count).
        max_iter: L-BFGS iteration budget.
        tol: Stop when the weights are within this share of their size from the optimum
            (|gradient| ≤ tol·l2·|W|, which bounds |W - W*| ≤ tol·|W|).
        init: A head to start from (e.g. the full fit when fitting cross-validation folds).
        basis: `row_space` of these features or of a superset of them (cross-validation passes
            the whole set's); default: computed here when D > N.

    Returns:
        The fitted `SoftmaxHead` on raw features.
    """
    x, y = _check(features, labels, classes)
    n, d = x.shape
    mean = x.mean(axis=0)
    # One scale for all features, not one per feature: the pretrained features' relative sizes
    # carry meaning, and scaling each of 2,048 sparse ReLU features to unit variance blows up
    # the ones that fire on a single photo (what a tiny training set overfits to).
    rms = float(np.sqrt(np.mean((x - mean) ** 2))) or 1.0
    basis = row_space(x) if basis is None else np.asarray(basis, np.float64)
    xs = (x - mean) / rms
    if basis is not None:
        if basis.shape[0] != d:
            raise ValueError(f"basis must have {d} rows, got {basis.shape}")
        xs = xs @ basis  # (N, r): the same problem in the features' own span
    r = xs.shape[1]
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    sample_w = (1.0 / counts[y]) if balanced else np.ones(n)
    sample_w = sample_w / sample_w.sum()
    onehot = np.eye(classes)[y]
    if init is not None:  # the given raw-feature head in the scaled (and projected) space
        w0 = np.asarray(init.weights, np.float64) * rms
        b0 = np.asarray(init.bias, np.float64) + mean @ np.asarray(init.weights, np.float64)
        if basis is not None:
            w0 = basis.T @ w0
        params0 = np.concatenate([w0.ravel(), b0])
    else:
        params0 = np.zeros(r * classes + classes)
    def done(p: np.ndarray, g: np.ndarray) -> bool:
        # The penalty makes the objective λ-strongly convex in W, so |W - W*| ≤ |grad|/λ: a
        # gradient below tol·λ·|W| puts W within a share `tol` of the optimum, at any λ and
        # any feature scale (an absolute bound stops a weakly penalised fit after a step or two).
        return float(np.linalg.norm(g)) <= tol * max(l2 * float(np.linalg.norm(p[: r * classes])), 1e-9)

    params, iterations, converged = _lbfgs(lambda p: _objective(p, xs, onehot, sample_w, l2), params0, done,
                                           max_iter=max_iter)
    w_scaled, b_scaled = params[: r * classes].reshape(r, classes), params[r * classes :]
    if basis is not None:
        w_scaled = basis @ w_scaled
    w = w_scaled / rms  # fold the scaling in: head(x) = ((x - mean)/rms) W + b
    b = b_scaled - mean @ w
    return SoftmaxHead(w.astype(np.float32), b.astype(np.float32), iterations, converged)


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold results.

    Attributes:
        predicted: (N,) class each photo got from a head that never saw it.
        probabilities: (N, K) those heads' probabilities.
        confusion: (K, K) counts, row = true class, column = predicted.
        scheme: 'leave-one-out' or 'k-fold'.
        folds: Number of fits.
        seen: (N,) photos of its own class in the training set of the head that classified each
            photo (what a small class was judged on: a class of 2 under leave-one-out gives 1).
        log_loss: Mean -log of the probability each photo's head gave its true class (lower =
            surer of the right answers; it tells equal accuracies apart).
    """

    predicted: np.ndarray
    probabilities: np.ndarray
    confusion: np.ndarray
    scheme: str
    folds: int
    seen: np.ndarray
    log_loss: float

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.confusion.sum(), 1))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index of each photo: each class dealt round-robin over the folds, after a seeded
    shuffle, so every fold holds a share of every class."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (offset + np.arange(len(idx))) % folds
        offset += len(idx)
    return fold


def cross_validate(features: np.ndarray, labels: np.ndarray, classes: int, *, folds: int | None = None,
                   l2: float = DEFAULT_L2, balanced: bool = True, max_iter: int = DEFAULT_MAX_ITER,
                   seed: int = 0, init: SoftmaxHead | None = None, tol: float = DEFAULT_TOL) -> CrossValidation:
    """Accuracy of the head on photos it was not fitted on.

    Args:
        features, labels, classes, l2, balanced, max_iter, tol: As for `fit_softmax_head`.
        folds: None for leave-one-out up to `LOO_MAX_PHOTOS` photos and `DEFAULT_FOLDS`
            stratified folds above; N (or more) for leave-one-out; else stratified k-fold.
        seed: Shuffle of the k-fold split.
        init: Start of every fold's fit (the full fit converges in few steps from there).

    Returns:
        `CrossValidation`.
    """
    x, y = _check(features, labels, classes)
    n = len(y)
    if n < 2:
        raise ValueError("cross-validation needs at least 2 photos")
    if folds is None:
        folds = n if n <= LOO_MAX_PHOTOS else DEFAULT_FOLDS
    folds = int(min(max(folds, 2), n))
    fold = np.arange(n) if folds == n else stratified_folds(y, folds, seed)
    probs = np.zeros((n, classes), np.float32)
    seen = np.zeros(n, np.int64)
    basis = row_space(x)  # the whole set's span holds every fold's optimum: one QR for all folds
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        head = fit_softmax_head(x[~test], y[~test], classes, l2=l2, balanced=balanced, max_iter=max_iter, tol=tol,
                                init=init, basis=basis)
        probs[test] = head.probabilities(x[test].astype(np.float32))
        seen[test] = np.bincount(y[~test], minlength=classes)[y[test]]
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    true_p = np.clip(probs[np.arange(n), y].astype(np.float64), 1e-12, 1.0)
    return CrossValidation(predicted, probs, confusion, "leave-one-out" if folds == n else "k-fold", folds, seen,
                           float(-np.mean(np.log(true_p))))


@dataclass(frozen=True)
class FeatureMap:
    """A 2-D principal-component projection.

    Attributes:
        points: (N, 2) float32 coordinates.
        explained: (2,) share of the total variance along each axis.
    """

    points: np.ndarray
    explained: np.ndarray


def pca_2d(features: np.ndarray) -> FeatureMap:
    """Projects (N, D) features on their first two principal components (centred, not scaled).
    Signs are fixed (largest loading positive) so the map does not flip between runs."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"features must have shape (N, D), got {x.shape}")
    x = x - x.mean(axis=0)
    if x.shape[0] < 2 or not np.any(x):
        return FeatureMap(np.zeros((x.shape[0], 2), np.float32), np.zeros(2, np.float32))
    # (N, N) Gram eigendecomposition: N ≤ a few hundred, D up to 2048.
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    points = (u[:, :2] * s[:2]) * signs
    total = float(np.sum(s**2))
    explained = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return FeatureMap(points.astype(np.float32), explained.astype(np.float32))


def class_activation_map(feature_map: np.ndarray, head: SoftmaxHead, class_index: int) -> np.ndarray:
    """Where the head sees a class: ReLU(F · w_k) over the (h, w) grid, scaled to [0, 1].

    For a head that is global-average pooling followed by one linear layer, this is Grad-CAM
    exactly (Selvaraju et al. 2017): the gradient of the class score with respect to every cell
    of channel c is w_kc / (h·w), so the channel weights are w_k up to a positive factor that
    the scaling removes. It is also the CAM of Zhou et al. (2016).

    Args:
        feature_map: (h, w, D) block output whose spatial mean the head was fitted on.
        head: The fitted head.
        class_index: Class to explain.

    Returns:
        (h, w) float32 in [0, 1] (zeros when no cell raises the class score).
    """
    f = np.asarray(feature_map, np.float32)
    if f.ndim != 3 or f.shape[-1] != head.weights.shape[0]:
        raise ValueError(f"feature_map must have shape (h, w, {head.weights.shape[0]}), got {f.shape}")
    if not 0 <= class_index < head.classes:
        raise ValueError(f"class_index must be in [0, {head.classes}), got {class_index}")
    cam = np.maximum(f @ head.weights[:, class_index], 0.0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32)
