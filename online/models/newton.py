"""The weighted ridge logistic fit behind `WindowedLogistic`: Newton steps with backtracking
on standardised columns, sample weights of mean 1, BLAS on one thread."""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["forward_ridge", "newton", "newton_grid", "normalised", "one_blas_thread",
           "sigmoid_array", "weighted_moments"]


_BLAS: ThreadpoolController | None = None


def one_blas_thread():
    """BLAS on one thread for a refit: its products are a few ms on one core, while OpenBLAS's
    threads, contending with the server's (and a shared machine's) other work, made them 10 to
    100 times slower; and the rounding of a product depends on how many threads split it, so
    on one thread the same examples give the same model on every machine."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def normalised(sw: np.ndarray) -> np.ndarray:
    """Sample weights scaled to a mean of 1: the ridge keeps its meaning per example."""
    total = float(sw.sum())
    return sw * (len(sw) / total) if total > 0.0 else np.ones(len(sw))


def weighted_moments(Z: np.ndarray, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column mean and deviation under weights `sw` (mean 1); a constant column's
    deviation reads 1."""
    mean = sw @ Z / len(sw)
    std = np.sqrt(sw @ (Z - mean) ** 2 / len(sw))
    std[std < 1e-12] = 1.0
    return mean, std


def newton(A: np.ndarray, y: np.ndarray, sw: np.ndarray, theta: np.ndarray, l2: float,
            iterations: int) -> np.ndarray:
    """`iterations` Newton steps with backtracking on the weighted mean log loss of rows `A`
    (the last column the intercept's ones; weights `sw` of mean 1) + ``l2 / 2 |w|^2``, from
    `theta`."""
    return newton_grid(A, y, sw, theta, (l2,), iterations)[0]


def newton_grid(A: np.ndarray, y: np.ndarray, sw: np.ndarray, theta: np.ndarray,
                l2s, iterations: int) -> list[np.ndarray]:
    """`newton` from the same `theta` for each ridge of `l2s`, bit for bit: the first step's
    data gradient and Hessian (the loss's, at `theta`, the same for every ridge) are computed
    once, the costly part of a step (a refit's ridge validation runs four)."""
    theta = np.array(theta, dtype=np.float64)
    a = A @ theta
    first = (a, *_data_products(A, y, sw, a))
    return [_newton(A, y, sw, theta, l2, iterations, first) for l2 in l2s]


def _data_products(A: np.ndarray, y: np.ndarray, sw: np.ndarray,
                   a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean log loss's gradient and Hessian at logits `a`, times the row count (before
    the ridge): the costly part of a Newton step."""
    p = sigmoid_array(a)
    return A.T @ (sw * (p - y)), (A * (sw * p * (1.0 - p))[:, None]).T @ A


def _newton(A: np.ndarray, y: np.ndarray, sw: np.ndarray, theta: np.ndarray, l2: float,
            iterations: int, first: tuple) -> np.ndarray:
    m, d1 = A.shape
    reg = np.full(d1, l2)
    reg[-1] = 1e-9
    a = first[0]
    loss = _objective(a, y, sw, theta, reg)
    for step_number in range(iterations):
        grad, hess = first[1:] if step_number == 0 else _data_products(A, y, sw, a)
        g = grad / m + reg * theta
        H = hess / m + np.diag(reg)
        step = np.linalg.solve(H, g)
        # backtracking: a full Newton step can overshoot where classes nearly separate
        t, along = 1.0, float(g @ step)
        while True:
            trial = theta - t * step
            a_trial = A @ trial
            trial_loss = _objective(a_trial, y, sw, trial, reg)
            if trial_loss <= loss - 1e-4 * t * along or t < 1e-3:
                break
            t *= 0.5
        if trial_loss > loss:
            break
        theta, a, loss = trial, a_trial, trial_loss
    return theta


def sigmoid_array(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _objective(a: np.ndarray, y: np.ndarray, sw: np.ndarray, theta: np.ndarray,
               reg: np.ndarray) -> float:
    """Weighted mean log loss of logits `a` on labels `y`, plus ``reg / 2 * theta^2``."""
    return float(sw @ (np.logaddexp(0.0, a) - y * a) / len(a) + 0.5 * reg @ (theta * theta))


def forward_ridge(Z: np.ndarray, y: np.ndarray, sw: np.ndarray, slope: np.ndarray,
                  offset: float, l2_grid, iterations: int, min_class: int) -> int | None:
    """Index of the ridge of `l2_grid` whose fit on the older 80% of rows `Z` (signed logs,
    oldest first; labels `y`, weights `sw`) predicts the newest 20% best (weighted log loss):
    a forward validation, as the model is used. Each fit runs `iterations` Newton steps from
    the previous fit (`slope`, `offset` in raw units), standardised by the older part. None
    when either part holds fewer than `min_class` examples of a class."""
    m = len(y)
    cut = int(0.8 * m)
    y_old, y_new = y[:cut], y[cut:]
    if min(y_old.sum(), cut - y_old.sum(), y_new.sum(), m - cut - y_new.sum()) < min_class:
        return None
    Z_old, w_old, w_new = Z[:cut], normalised(sw[:cut]), normalised(sw[cut:])
    mean, std = weighted_moments(Z_old, w_old)
    A_old = np.hstack([(Z_old - mean) / std, np.ones((cut, 1))])
    A_new = np.hstack([(Z[cut:] - mean) / std, np.ones((m - cut, 1))])
    start = np.r_[slope * std, offset + float(slope @ mean)]
    losses = []
    for theta in newton_grid(A_old, y_old, w_old, start, [l2 / cut for l2 in l2_grid],
                             iterations):
        a = A_new @ theta
        losses.append(float(np.mean(w_new * (np.logaddexp(0.0, a) - y_new * a))))
    return int(np.argmin(losses))
