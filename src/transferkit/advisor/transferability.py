"""Transferability scores computed from features (and source-head probabilities) alone.

Pure NumPy / scikit-learn functions, no torch: they take arrays and return floats, so they
can be tested on synthetic data and reused by the advisor, the backbone ranking and the
benchmarks.

- :func:`logme`: LogME (You et al., ICML 2021), the per-class Bayesian linear-regression
  evidence maximised by fixed-point iteration, computed through one SVD of the features;
  normalised by the number of samples N (higher is better; comparable across backbones on
  the same labels, not across datasets).
- :func:`leep`: LEEP (Nguyen et al., ICML 2020) from source-head probabilities.
- :func:`normalized_leep`: LEEP rescaled to [0, 1] by the label entropy.
- :func:`source_entropy`: mean normalised entropy of source-class predictions (0 = always
  sure of one source class, 1 = uniform over the source classes).
- :func:`source_mutual_information`: information the source prediction carries about the image.
- :func:`knn_accuracy`: leave-one-out cosine k-nearest-neighbour accuracy.
- :func:`probe_accuracy`: cross-validated logistic-regression accuracy on standardised features.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..data.roles import stratified_subsample
from ..errors import ConfigError

__all__ = [
    "logme",
    "logme_per_class",
    "leep",
    "normalized_leep",
    "source_entropy",
    "source_mutual_information",
    "knn_accuracy",
    "probe_accuracy",
    "chance_accuracy",
]


def _check_xy(features: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features)
    y = np.asarray(labels)
    if f.ndim != 2:
        raise ConfigError(f"{name}: features must be a 2-D array (N, D); got shape {f.shape}.")
    if y.ndim != 1 or y.shape[0] != f.shape[0]:
        raise ConfigError(
            f"{name}: labels must be a 1-D array with one entry per feature row ({f.shape[0]}); "
            f"got shape {y.shape}."
        )
    if f.shape[0] < 2:
        raise ConfigError(f"{name}: needs at least 2 samples; got {f.shape[0]}.")
    if not np.all(np.isfinite(f)):
        raise ConfigError(f"{name}: features contain NaN or infinite values.")
    return f, y.astype(np.int64)


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class."""
    y = np.asarray(labels)
    if y.size == 0:
        return float("nan")
    return float(np.bincount(y.astype(np.int64)).max() / y.size)


# --------------------------------------------------------------------------------------- LogME


def _logme_evidence(
    y: np.ndarray, u: np.ndarray, s2: np.ndarray, n: int, d: int, max_iter: int = 100, tol: float = 1e-3
) -> tuple[float, float, float]:
    """Maximised log evidence / N of ``y ~ N(F w, 1/beta)``, ``w ~ N(0, 1/alpha I_D)``.

    ``F = U diag(s) V^T`` (thin SVD, k = len(s2) singular values, ``s2 = s**2``). With
    ``x = U^T y`` and ``t = alpha / beta``:

    - ``gamma = sum s2 / (s2 + t)``                (effective number of parameters)
    - ``|m|^2 = sum s2 x^2 / (s2 + t)^2``          (posterior mean norm)
    - ``|y - F m|^2 = sum x^2 t^2 / (s2 + t)^2 + (|y|^2 - |x|^2)``
    - fixed point (MacKay): ``alpha = gamma / |m|^2``, ``beta = (N - gamma) / |y - F m|^2``

    The evidence is
    ``D/2 log alpha + N/2 log beta - 1/2 log det(alpha I + beta F^T F) - beta/2 |y-Fm|^2
    - alpha/2 |m|^2 - N/2 log 2 pi``; the log-determinant runs over all D eigenvalues of
    ``F^T F``, the ``D - k`` zero ones contributing ``log alpha`` each (the reference code
    drops them when N < D; keeping them makes the value the exact evidence).
    """
    x = u.T @ y
    x2 = x**2
    res_x2 = max(float(y @ y - x2.sum()), 0.0)  # part of y outside the span of F
    alpha, beta = 1.0, 1.0
    eps = 1e-5
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((s2 / (s2 + t)).sum())
        m2 = float((s2 * x2 / (s2 + t) ** 2).sum())
        res2 = float((x2 * (t / (s2 + t)) ** 2).sum() + res_x2)
        alpha = gamma / (m2 + eps)
        beta = (n - gamma) / (res2 + eps)
        alpha = max(alpha, 1e-12)
        beta = max(beta, 1e-12)
        t_new = alpha / beta
        if abs(t_new - t) / t <= tol:
            break
    # Recompute the statistics at the final (alpha, beta) so the evidence is self-consistent.
    t = alpha / beta
    m2 = float((s2 * x2 / (s2 + t) ** 2).sum())
    res2 = float((x2 * (t / (s2 + t)) ** 2).sum() + res_x2)
    logdet = float(np.log(alpha + beta * s2).sum()) + (d - s2.size) * np.log(alpha)
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * logdet
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2.0 * np.pi)
    )
    return float(evidence / n), float(alpha), float(beta)


def _thin_svd(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors U (N, k) and squared singular values (k,) of F, k = rank.

    One decomposition serves every class. Computed from the smaller Gram matrix (F^T F when
    N > D, else F F^T) with ``eigh``: the same numbers as ``np.linalg.svd`` at a fraction of
    the cost for tall feature matrices (as the reference implementation's truncated SVD).
    """
    n, d = f.shape
    if n > d:
        s2, v = np.linalg.eigh(f.T @ f)
    else:
        s2, u = np.linalg.eigh(f @ f.T)
    keep = s2 > max(float(s2.max()), 0.0) * 1e-10
    s2 = s2[keep]
    if n > d:
        u = (f @ v[:, keep]) / np.sqrt(s2)
    else:
        u = u[:, keep]
    return u, s2


def logme_per_class(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LogME evidence / N for each class's one-vs-rest indicator target (array of length C)."""
    f, y = _check_xy(features, labels, "logme")
    f = f.astype(np.float64)
    n, d = f.shape
    u, s2 = _thin_svd(f)
    classes = np.unique(y)
    out = np.empty(classes.size)
    for i, c in enumerate(classes):
        target = (y == c).astype(np.float64)
        out[i], _, _ = _logme_evidence(target, u, s2, n, d)
    return out


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score (You et al., "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021) of ``features`` (N, D) for integer ``labels`` (N,).

    For every class c, a Bayesian linear regression of the indicator ``1[y == c]`` on the
    features has its evidence (marginal likelihood) maximised over the prior precision
    alpha and noise precision beta by MacKay's fixed-point iteration, using one SVD of the
    feature matrix shared by all classes. The score is the mean over classes of the
    maximised log evidence divided by N. Higher means the features explain the labels
    linearly with less complexity; it is comparable between backbones on the same data.
    """
    return float(np.mean(logme_per_class(features, labels)))


# ---------------------------------------------------------------------------------- LEEP / H


def _check_probs(probs: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ConfigError(f"{name}: source probabilities must be (N, Z); got shape {p.shape}.")
    if np.any(p < -1e-6) or not np.all(np.isfinite(p)):
        raise ConfigError(f"{name}: source probabilities must be finite and non-negative.")
    p = np.clip(p, 0.0, None)
    rows = p.sum(axis=1, keepdims=True)
    if np.any(np.abs(rows - 1.0) > 1e-3):
        raise ConfigError(
            f"{name}: each row of source probabilities must sum to 1 (got sums between "
            f"{rows.min():.3f} and {rows.max():.3f}); pass softmax(logits), not logits."
        )
    return p / rows


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020).

    ``source_probs`` (N, Z) are the source head's softmax outputs on the target images,
    ``labels`` (N,) the target labels. With the empirical joint
    ``P(y, z) = 1/N sum_i theta_i(z) 1[y_i = y]`` and ``P(y | z) = P(y, z) / P(z)``,
    ``LEEP = 1/N sum_i log(sum_z P(y_i | z) theta_i(z))`` (<= 0; closer to 0 is better).
    """
    p = _check_probs(source_probs, "leep")
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (p.shape[0],):
        raise ConfigError(f"leep: labels must have shape ({p.shape[0]},); got {y.shape}.")
    _, y_idx = np.unique(y, return_inverse=True)
    n_classes = int(y_idx.max()) + 1
    onehot = np.zeros((p.shape[0], n_classes))
    onehot[np.arange(p.shape[0]), y_idx] = 1.0
    joint = onehot.T @ p / p.shape[0]  # (C, Z)
    pz = joint.sum(axis=0, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = (p @ cond.T)[np.arange(p.shape[0]), y_idx]  # EEP probability of the true label
    return float(np.mean(np.log(np.clip(eep, 1e-12, None))))


def normalized_leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP mapped to [0, 1]: ``1 + LEEP / H(Y)`` clipped, H(Y) the label entropy (nats).

    A source head that carries no information about the labels gives the EEP the label
    marginal, whose LEEP is ``-H(Y)`` -> 0; a head whose source classes determine the
    target label gives LEEP = 0 -> 1. So it reads as the fraction of the label
    uncertainty the source head's predictions remove.
    """
    y = np.asarray(labels).astype(np.int64)
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    py = counts / counts.sum()
    h = float(-(py * np.log(py)).sum())
    if h <= 0:
        return float("nan")
    return float(np.clip(1.0 + leep(source_probs, labels) / h, 0.0, 1.0))


def source_entropy(source_probs: np.ndarray) -> float:
    """Mean normalised entropy ``H(theta_i) / log Z`` of source-class predictions, in [0, 1].

    Low values: the source head recognises the target images as its own classes (similar
    data); values near 1: it spreads its belief over many source classes (foreign data).
    """
    p = _check_probs(source_probs, "source_entropy")
    z = p.shape[1]
    if z < 2:
        return float("nan")
    h = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
    return float(np.mean(h) / np.log(z))


def source_mutual_information(source_probs: np.ndarray) -> float:
    """Mutual information between image and source prediction, normalised by ``log Z``.

    ``(H(mean_i theta_i) - mean_i H(theta_i)) / log Z`` in [0, 1]: high when the source head
    makes confident and *different* predictions for different images, low when it spreads its
    belief (high entropy) or puts every image into the same few source classes.
    """
    p = _check_probs(source_probs, "source_mutual_information")
    z = p.shape[1]
    if z < 2:
        return float("nan")
    marginal = p.mean(axis=0)
    h_marg = float(-(marginal * np.log(np.clip(marginal, 1e-12, None))).sum())
    h_cond = float(np.mean(-(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)))
    return max(0.0, h_marg - h_cond) / float(np.log(z))


# ------------------------------------------------------------------------------ kNN and probe


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, k: int = 10, max_samples: int = 4000, seed: int = 0
) -> float:
    """Leave-one-out k-nearest-neighbour accuracy with cosine similarity.

    Each sample is classified by a majority vote of its k most similar other samples
    (ties broken by the summed similarity). Above ``max_samples`` rows a stratified
    random subset of that size is used (cost O(max_samples^2 D)).
    """
    f, y = _check_xy(features, labels, "knn_accuracy")
    if k < 1:
        raise ConfigError(f"knn_accuracy: k must be >= 1; got {k}.")
    if f.shape[0] > max_samples:
        idx = stratified_subsample(y, max_samples, seed)
        f, y = f[idx], y[idx]
    f = f.astype(np.float32)
    f = f - f.mean(axis=0, keepdims=True)  # centre: cosine on centred codes is less dominated by the mean
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.clip(norms, 1e-12, None)
    n = f.shape[0]
    k = min(k, n - 1)
    _, y_idx = np.unique(y, return_inverse=True)
    n_classes = int(y_idx.max()) + 1
    correct = 0
    for start in range(0, n, 1024):
        sims = f[start : start + 1024] @ f.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # leave one out
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        nn_sims = np.take_along_axis(sims, nn, axis=1)
        votes = np.zeros((sims.shape[0], n_classes))
        np.add.at(votes, (rows[:, None], y_idx[nn]), 1.0)
        tie = np.zeros_like(votes)
        np.add.at(tie, (rows[:, None], y_idx[nn]), nn_sims)
        pred = np.argmax(votes + 1e-3 * tie / (k + 1), axis=1)
        correct += int((pred == y_idx[start : start + 1024]).sum())
    return correct / n


def _make_probe(c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = 3,
    c: float = 0.1,
    max_samples: int = 3000,
    max_iter: int = 300,
    seed: int = 0,
) -> float:
    """Stratified k-fold cross-validated accuracy of a logistic regression on standardised features.

    A cheap stand-in for the ``linear`` strategy: L2-regularised (``C``) multinomial
    logistic regression after per-feature standardisation. ``folds`` is reduced to the size
    of the smallest class when that is smaller; with fewer than 2 samples in some class the
    result is NaN (cannot cross-validate). Above ``max_samples`` rows a stratified random
    subset is used.
    """
    from sklearn.model_selection import StratifiedKFold

    f, y = _check_xy(features, labels, "probe_accuracy")
    if f.shape[0] > max_samples:
        idx = stratified_subsample(y, max_samples, seed)
        f, y = f[idx], y[idx]
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    if counts.size < 2:
        return float("nan")
    n_folds = int(min(folds, counts.min()))
    if n_folds < 2:
        return float("nan")
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = [
        holdout_probe_accuracy(f[tr], y[tr], f[te], y[te], c=c, max_iter=max_iter)
        for tr, te in cv.split(f, y)
    ]
    return float(np.mean(scores))


def holdout_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    c: float = 0.1,
    max_iter: int = 300,
) -> float:
    """Accuracy on (eval_x, eval_y) of the probe of :func:`probe_accuracy` fitted on the train part."""
    from sklearn.exceptions import ConvergenceWarning

    from ..strategies._probe import one_blas_thread

    if np.unique(train_y).size < 2:
        return float(np.mean(eval_y == train_y[0])) if len(train_y) else float("nan")
    # One BLAS thread: these problems are small, and the machine is shared (oversubscribed
    # BLAS threads made a 300 x 64 fit 4x slower).
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _make_probe(c, max_iter).fit(train_x, train_y)
    return float((model.predict(eval_x) == eval_y).mean())
