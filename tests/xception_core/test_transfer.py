"""The softmax head, cross-validation, PCA map and class activation maps of transfer learning,
checked against independent references on synthetic features."""

import numpy as np
import pytest

from xception_core.runtime.transfer import (
    _objective,
    class_activation_map,
    cross_validate,
    fit_softmax_head,
    pca_2d,
    stratified_folds,
)


def blobs(n_per=10, k=3, d=64, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    x = np.concatenate([centres[c] + rng.normal(size=(n_per, d)) for c in range(k)])
    y = np.repeat(np.arange(k), n_per)
    return np.abs(x).astype(np.float32), y  # pooled ReLU features are non-negative


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    w = rng.random(7)
    w /= w.sum()
    p = rng.normal(size=5 * 3 + 3)
    f, g = _objective(p, x, np.eye(3)[y], w, 0.3)
    eps = 1e-6
    num = np.array([(_objective(p + eps * e, x, np.eye(3)[y], w, 0.3)[0] - _objective(p - eps * e, x, np.eye(3)[y], w, 0.3)[0]) / (2 * eps)
                    for e in np.eye(len(p))])
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


def test_fit_reaches_the_optimum_plain_gradient_descent_reaches():
    x, y = blobs(n_per=6, k=3, d=8, sep=1.0)
    head = fit_softmax_head(x, y, 3, l2=0.1)
    assert head.converged
    # Independent reference: plain gradient descent on the same (standardised) objective.
    xc = x - x.mean(0)
    xs = xc / np.sqrt(np.mean(xc**2))
    counts = np.bincount(y)
    sw = 1.0 / counts[y]
    sw /= sw.sum()
    p = np.zeros(8 * 3 + 3)
    for _ in range(20000):
        p -= 0.5 * _objective(p, xs, np.eye(3)[y], sw, 0.1)[1]
    ref = (xs @ p[:24].reshape(8, 3) + p[24:])
    np.testing.assert_allclose(head.logits(x), ref, atol=2e-3)


def test_separable_classes_are_learnt_and_random_labels_are_not():
    x, y = blobs(n_per=10, k=4, d=128)
    cv = cross_validate(x, y, 4)
    assert cv.scheme == "leave-one-out" and cv.folds == 40
    assert cv.accuracy >= 0.95
    shuffled = np.random.default_rng(3).permutation(y)
    noise = cross_validate(np.random.default_rng(4).random((40, 128)).astype(np.float32), shuffled, 4)
    assert noise.accuracy < 0.6
    assert cv.confusion.sum() == 40 and np.all(cv.confusion.sum(axis=1) == 10)


def test_kfold_is_stratified_above_the_loo_limit():
    x, y = blobs(n_per=20, k=3, d=32)
    cv = cross_validate(x, y, 3)
    assert cv.scheme == "k-fold" and cv.folds == 5
    folds = stratified_folds(y, 5)
    for f in range(5):
        assert np.all(np.bincount(y[folds == f], minlength=3) == 4)


def test_balanced_weights_stop_a_big_class_from_swallowing_a_small_one():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(1.2, 1, (4, 2))]).astype(np.float32)
    y = np.array([0] * 40 + [1] * 4)
    small = lambda h: (h.probabilities(x[y == 1]).argmax(1) == 1).mean()
    assert small(fit_softmax_head(x, y, 2, balanced=True)) > small(fit_softmax_head(x, y, 2, balanced=False))


def test_head_is_on_raw_features():
    x, y = blobs(n_per=5, k=2, d=16)
    head = fit_softmax_head(x, y, 2)
    assert head.weights.shape == (16, 2) and head.weights.dtype == np.float32
    assert (head.probabilities(x).argmax(1) == y).all()
    np.testing.assert_allclose(head.probabilities(x).sum(1), 1, rtol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        fit_softmax_head(np.zeros((3, 4)), np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError):
        fit_softmax_head(np.full((2, 4), np.nan), np.array([0, 1]), 2)
    with pytest.raises(ValueError):
        fit_softmax_head(np.zeros((3, 4)), np.array([0.0, 1.0, 0.0]), 2)


def test_pca_separates_blobs_and_reports_variance():
    x, y = blobs(n_per=10, k=2, d=50, sep=4.0)
    m = pca_2d(x)
    assert m.points.shape == (20, 2)
    assert 0 < m.explained[1] <= m.explained[0] <= 1
    a, b = m.points[y == 0, 0], m.points[y == 1, 0]
    assert a.max() < b.min() or b.max() < a.min()
    assert pca_2d(x[:1]).points.shape == (1, 2)


def test_cam_equals_gradcam_of_pool_plus_linear():
    rng = np.random.default_rng(7)
    fmap = rng.normal(size=(5, 5, 16)).astype(np.float32)
    x, y = blobs(n_per=5, k=3, d=16)
    head = fit_softmax_head(x, y, 3)
    cam = class_activation_map(fmap, head, 1)
    # Grad-CAM by hand: channel weights = mean gradient of the score wrt each cell.
    grads = np.broadcast_to(head.weights[:, 1] / 25, fmap.shape)
    alpha = grads.mean(axis=(0, 1))
    ref = np.maximum((fmap * alpha).sum(-1), 0)
    assert ref.max() > 0
    np.testing.assert_allclose(cam, ref / ref.max(), rtol=1e-4, atol=1e-6)


def test_fit_in_the_row_space_is_the_full_space_fit():
    """More features than photos: the fit runs in the photos' span; plain gradient descent in
    all D dimensions reaches the same logits."""
    x, y = blobs(n_per=4, k=3, d=40, sep=1.0, seed=2)
    head = fit_softmax_head(x, y, 3, l2=0.1, tol=1e-7)
    xc = x - x.mean(0)
    xs = xc / np.sqrt(np.mean(xc**2))
    sw = np.full(12, 1 / 12)
    p = np.zeros(40 * 3 + 3)
    for _ in range(20000):
        p -= 0.5 * _objective(p, xs, np.eye(3)[y], sw, 0.1)[1]
    np.testing.assert_allclose(head.logits(x), xs @ p[:120].reshape(40, 3) + p[120:], atol=2e-3)
    cv_full = cross_validate(x, y, 3, l2=0.1)
    assert cv_full.confusion.sum() == 12


def relu_features(seed, n_per=(5, 4, 3), d=256):
    """Pooled-ReLU-like features of a small unbalanced set: non-negative, a part every photo
    shares, a sparse part per class, photo noise. Few photos in many dimensions: separable, the
    case where a weak penalty leaves the optimum far from where a loose stopping rule stops."""
    rng = np.random.default_rng(seed)
    shared = rng.gamma(0.5, 1.0, d)
    x, y = [], []
    for k, n in enumerate(n_per):
        own = rng.gamma(0.5, 1.0, d) * (rng.random(d) < 0.2)
        for _ in range(n):
            x.append(np.maximum(shared + 0.6 * own + rng.normal(0, 0.6, d), 0))
            y.append(k)
    return np.array(x, np.float32), np.array(y)


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_fit_and_cross_validation_match_scikit_learn(l2):
    """scikit-learn's `LogisticRegression` (multinomial, L2, class_weight='balanced', lbfgs, a
    tolerance far below ours) on the same centred and scaled features is the same objective with
    C = 1/(N·l2): the same probabilities, on the photos and on others, and the same out-of-fold
    answers on the same folds. With the weak penalty, a fit stopped by an absolute gradient bound
    (this module's rule until it was made relative) was 0.27 off in probability."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = relu_features(seed=1)

    def reference(train_x, train_y):
        train_x = train_x.astype(np.float64)
        mean = train_x.mean(0)
        rms = np.sqrt(np.mean((train_x - mean) ** 2))
        model = linear_model.LogisticRegression(C=1.0 / (len(train_y) * l2), class_weight="balanced", tol=1e-10,
                                                max_iter=100_000).fit((train_x - mean) / rms, train_y)
        return lambda z: model.predict_proba((z - mean) / rms)

    head = fit_softmax_head(x, y, 3, l2=l2)
    assert head.converged
    others = relu_features(seed=2)[0]
    for z in (x, others):
        np.testing.assert_allclose(head.probabilities(z), reference(x, y)(z), atol=2e-3)
    for folds in (None, 3):  # leave-one-out, and our stratified k-fold's own folds
        cv = cross_validate(x, y, 3, l2=l2, folds=folds)
        fold = np.arange(len(y)) if folds is None else stratified_folds(y, folds)
        predicted = np.empty(len(y), np.int64)
        for f in np.unique(fold):
            test = fold == f
            predicted[test] = reference(x[~test], y[~test])(x[test]).argmax(1)
        np.testing.assert_array_equal(cv.predicted, predicted)
        assert cv.accuracy == np.mean(predicted == y)


def test_out_of_fold_counts_say_what_each_photo_was_judged_on():
    x, y = blobs(n_per=5, k=3, d=16)
    keep = np.r_[0:5, 5:7, 10:15]  # a class of 2
    x, y = x[keep], y[keep]
    loo = cross_validate(x, y, 3)
    assert loo.seen.tolist() == [4] * 5 + [1] * 2 + [4] * 5  # leave-one-out: the others of its class
    kfold = cross_validate(x, y, 3, folds=4)
    fold = stratified_folds(y, 4)
    expected = [int(np.sum((y == y[i]) & (fold != fold[i]))) for i in range(len(y))]
    assert kfold.seen.tolist() == expected and kfold.seen[5:7].tolist() == [1, 1]
    p_true = loo.probabilities[np.arange(len(y)), y].astype(np.float64)
    assert loo.log_loss == pytest.approx(-np.mean(np.log(p_true)), rel=1e-6)
