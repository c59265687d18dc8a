"""The federated propensity model: logistic regression on standardised signed-log inputs.

It is the online model's shape (the served ``WindowedLogistic`` of ``online.models.learners``,
and ``SignedLogScaler | LogisticRegression``, ``online.models.contributor``'s
``default_propensity_model``, which a federated model is installed into): inputs
``z = sign(x) log1p(|x|)``, standardised by a mean and a scale, then
``p = sigmoid(w . z_std + b)``; ``WindowedLogistic.warm_start`` takes the same four parts.
Everything a tenant sends is one of two flat float64 vectors: ``moments`` (per-user averaged
``z / B`` and ``(z / B)^2`` plus a user count, round 0) and an update of ``theta = [w, b]``
(every later round).  Inputs are clipped to ``|z| <= B`` (``Z_BOUND``) so that one user's
share of either vector is bounded, which is what the privacy accounting needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_BOUND = 20.0  # |sign(x) log1p(|x|)| is clipped here: log1p(4.8e8), beyond any count or spend
MIN_SCALE = 1e-6


def signed_log(X: np.ndarray) -> np.ndarray:
    """``clip(sign(x) log1p(|x|), -Z_BOUND, Z_BOUND)``; NaN (no value) reads as 0."""
    X = np.nan_to_num(np.asarray(X, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.sign(X) * np.log1p(np.abs(X)), -Z_BOUND, Z_BOUND)


@dataclass(frozen=True)
class Standardiser:
    """Mean and scale of the signed-log inputs (what the online scaler would have learnt)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_moments(cls, moments: np.ndarray, d: int, *,
                     var_floor: float = 0.0) -> Standardiser:
        """From summed per-user moments ``[sum z/B (d), sum (z/B)^2 (d), users]``.

        ``var_floor`` (in units of ``(z/B)^2``) bounds each variance from below: under DP
        the moments are noised and a tiny or negative variance would blow a feature up.
        """
        users = max(float(moments[2 * d]), 1.0)
        m1 = np.clip(moments[:d] / users, -1.0, 1.0)
        m2 = np.clip(moments[d:2 * d] / users, 0.0, 1.0)
        var = np.maximum(m2 - m1 * m1, var_floor)
        return cls(mean=m1 * Z_BOUND, scale=np.maximum(np.sqrt(var) * Z_BOUND, MIN_SCALE))

    @classmethod
    def fit(cls, Z: np.ndarray) -> Standardiser:
        """Plain mean and standard deviation of signed-log rows (the local and central fits)."""
        if not len(Z):
            return cls(np.zeros(Z.shape[1]), np.ones(Z.shape[1]))
        return cls(Z.mean(axis=0), np.maximum(Z.std(axis=0), MIN_SCALE))

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return (Z - self.mean) / self.scale


def user_moments(Z: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Per-user averaged ``[z/B, (z/B)^2, 1]`` summed over users: L2 norm <= sqrt(2d + 1) each."""
    d = Z.shape[1]
    codes, n_users = _codes(users)
    counts = np.bincount(codes, minlength=n_users).astype(np.float64)
    U = Z / Z_BOUND
    per_user = np.zeros((n_users, 2 * d + 1))
    np.add.at(per_user[:, :d], codes, U)
    np.add.at(per_user[:, d:2 * d], codes, U * U)
    per_user[:, :2 * d] /= counts[:, None]
    per_user[:, 2 * d] = 1.0
    return per_user.sum(axis=0)


def moments_sensitivity(d: int) -> float:
    """Largest L2 norm of one user's moment vector (the Gaussian mechanism's sensitivity)."""
    return float(np.sqrt(2 * d + 1))


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # stable for large |a|


def predict(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """P(y = 1) for standardised rows ``X`` under ``theta = [w, b]``."""
    return sigmoid(X @ theta[:-1] + theta[-1])


def gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Gradient of the mean log loss plus ``l2 / 2 * |w|^2``."""
    r = predict(theta, X) - y
    g = np.empty_like(theta)
    g[:-1] = X.T @ r / max(len(y), 1) + l2 * theta[:-1]
    g[-1] = r.mean() if len(y) else 0.0
    return g


def smoothness(X: np.ndarray, l2: float) -> float:
    """An upper bound L of the log loss's curvature on ``X``: 1/L is a step that cannot diverge.

    ``L = lambda_max(X^T X / n) / 4 + l2`` (the logistic loss's second derivative is at most
    1/4), with the intercept's column of ones included.
    """
    if not len(X):
        return 1.0
    A = np.hstack([X, np.ones((len(X), 1))])
    top = np.linalg.eigvalsh(A.T @ A / len(X))[-1]
    return float(top / 4.0 + l2)


def local_steps(theta: np.ndarray, X: np.ndarray, y: np.ndarray, *, steps: int, lr: float,
                l2: float) -> np.ndarray:
    """``steps`` of full-batch gradient descent from ``theta``; returns the update (delta)."""
    t = theta.copy()
    for _ in range(steps):
        t -= lr * gradient(t, X, y, l2)
    return t - theta


def clipped_user_gradients(theta: np.ndarray, X: np.ndarray, y: np.ndarray, users: np.ndarray,
                           clip: float) -> tuple[np.ndarray, int]:
    """Sum over users of each user's mean log-loss gradient, clipped to L2 norm ``clip``.

    Adding or removing one user (all their rows) moves the sum by at most ``clip``: the
    user-level sensitivity of DP-FedAvg (McMahan et al., 2018).  The L2 penalty is not in it
    (it depends on no data); the coordinator applies it.
    """
    codes, n_users = _codes(users)
    r = predict(theta, X) - y
    per_user = np.zeros((n_users, len(theta)))
    np.add.at(per_user[:, :-1], codes, X * r[:, None])
    np.add.at(per_user[:, -1], codes, r)
    per_user /= np.bincount(codes, minlength=n_users)[:, None]
    norms = np.linalg.norm(per_user, axis=1)
    per_user *= np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
    return per_user.sum(axis=0), n_users


def _codes(users: np.ndarray) -> tuple[np.ndarray, int]:
    uniques, codes = np.unique(np.asarray(users), return_inverse=True)
    return codes, len(uniques)


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when one class is missing."""
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    ranks = _average_ranks(np.asarray(p, np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float | None:
    if not len(y):
        return None
    p = np.clip(p, 1e-12, 1 - 1e-12)
    y = np.asarray(y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the average of their ranks."""
    uniques, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """AUC from per-bin counts of positive and negative scores (ties within a bin count half).

    Tenants share these counts, not scores, for the pooled figure; with ``SCORE_BINS`` bins
    the result differs from the exact AUC by at most the mass of scores sharing a bin.
    """
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if not n_pos or not n_neg:
        return None
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float(((below + 0.5 * neg) * pos).sum() / (n_pos * n_neg))


SCORE_BINS = 10_000


def score_histogram(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of positive and negative scores in ``SCORE_BINS`` equal bins of [0, 1]."""
    b = np.minimum((np.asarray(p) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
    y = np.asarray(y, bool)
    return (np.bincount(b[y], minlength=SCORE_BINS).astype(np.float64),
            np.bincount(b[~y], minlength=SCORE_BINS).astype(np.float64))


def fit_exact(X: np.ndarray, y: np.ndarray, l2: float, *, iterations: int = 50) -> np.ndarray:
    """The minimiser of the mean log loss + ``l2 / 2 * |w|^2`` by Newton's method.

    The local-only and central baselines use it: the optimum of the same objective that
    federated averaging approaches round by round.
    """
    d = X.shape[1]
    theta = np.zeros(d + 1)
    if not len(y):
        return theta
    A = np.hstack([X, np.ones((len(y), 1))])
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-9  # the intercept is not penalised (a tiny ridge keeps the system solvable)
    for _ in range(iterations):
        p = sigmoid(A @ theta)
        g = A.T @ (p - y) / len(y) + reg * theta
        H = (A * (p * (1 - p))[:, None]).T @ A / len(y) + np.diag(reg)
        step = np.linalg.solve(H, g)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta
