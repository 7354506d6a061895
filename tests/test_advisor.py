"""Fast tests of transferkit.advisor: transferability scores on synthetic arrays, and the
similarity / size / plan / rank measurements on a tiny BN network and tiny datasets."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.advisor import transferability as tr
from transferkit.errors import ConfigError

# ------------------------------------------------------------------------- transferability


def _blobs(n=300, d=32, c=3, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = rng.normal(size=(c, d)) * sep
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _naive_evidence(f, y, alpha, beta):
    """Log evidence / N of Bayesian linear regression computed directly with D x D matrices."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * logdet
          - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))
    return ev / n


@pytest.mark.parametrize("n,d", [(200, 16), (40, 64)])  # N > D and N < D (rank-deficient)
def test_logme_evidence_matches_direct_formula_and_is_a_maximum(n, d):
    f, y = _blobs(n=n, d=d, c=2, seed=1)
    f = f.astype(np.float64)
    target = (y == 1).astype(np.float64)
    u, s2 = tr._thin_svd(f)
    ev, alpha, beta = tr._logme_evidence(target, u, s2, n, d, tol=1e-9, max_iter=1000)
    assert ev == pytest.approx(_naive_evidence(f, target, alpha, beta), rel=1e-6, abs=1e-8)
    # The fixed point maximises the evidence: moving alpha or beta lowers it.
    for fa, fb in [(1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5)]:
        assert _naive_evidence(f, target, alpha * fa, beta * fb) < ev


def test_logme_prefers_separating_features_over_noise():
    f, y = _blobs()
    noise = np.random.default_rng(5).normal(size=f.shape).astype(np.float32)
    assert tr.logme(f, y) > tr.logme(noise, y) + 0.5
    per_class = tr.logme_per_class(f, y)
    assert per_class.shape == (3,)
    assert tr.logme(f, y) == pytest.approx(per_class.mean())


def test_logme_wide_features_and_bad_input():
    f, y = _blobs(n=30, d=200)
    assert np.isfinite(tr.logme(f, y))
    with pytest.raises(ConfigError, match="2-D"):
        tr.logme(f[0], y)
    with pytest.raises(ConfigError, match="NaN"):
        tr.logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


def test_leep_and_entropy_on_known_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    # A source head whose first three classes track the labels, and one that ignores them.
    informed = np.full((400, 10), 0.02)
    informed[np.arange(400), y] = 0.82
    uninformed = rng.dirichlet(np.ones(10), 400)
    assert tr.leep(informed, y) > tr.leep(uninformed, y)
    assert tr.leep(informed, y) <= 0
    assert tr.normalized_leep(informed, y) > 0.5
    assert tr.normalized_leep(uninformed, y) < 0.1
    # Deterministic one-to-one source classes: LEEP = 0, normalised 1.
    onehot = np.eye(10)[y]
    assert tr.leep(onehot, y) == pytest.approx(0.0, abs=1e-9)
    assert tr.normalized_leep(onehot, y) == pytest.approx(1.0)
    # Entropy: one-hot 0, uniform 1.
    assert tr.source_entropy(onehot) == pytest.approx(0.0, abs=1e-6)
    assert tr.source_entropy(np.full((5, 10), 0.1)) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="softmax"):
        tr.leep(np.ones((4, 3)), np.array([0, 1, 0, 1]))


def test_knn_and_probe_accuracy():
    f, y = _blobs()
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert tr.knn_accuracy(f, y, k=5) > 0.95
    assert tr.knn_accuracy(noise, y, k=5) < 0.5
    assert tr.probe_accuracy(f, y) > 0.95
    assert tr.probe_accuracy(noise, y) < 0.5
    # Subsampling keeps it bounded and stratified.
    assert tr.knn_accuracy(f, y, k=5, max_samples=100) > 0.9
    # A class with a single sample cannot be cross-validated.
    assert np.isnan(tr.probe_accuracy(f[:5], np.array([0, 0, 1, 1, 2])))
    assert tr.chance_accuracy(np.array([0, 0, 0, 1])) == 0.75
