"""Batch k-means steps on a snapshot of standardised rows: Lloyd, k-means++ starts, matching.

`UserSegments.learn_snapshot` runs them on each snapshot of sampled users: Lloyd steps from
the current centres (a warm start) and from fresh k-means++ starts; `choose` picks one of them
(the best separated of those whose inertia is near the lowest), its centres matched to the
current ones so that a segment keeps its id.
"""

from __future__ import annotations

import numpy as np

from online.kernels.kmeans import lloyd_steps, nearer, nearest_two, sq_distances, weighted_pick

__all__ = ["choose", "inertia", "kmeans_pp", "lloyd", "matching", "separation"]


def lloyd(Z: np.ndarray, C: np.ndarray, iterations: int) -> tuple[np.ndarray, int]:
    """Lloyd steps from centres C; an empty centre jumps to the worst-served row."""
    if _compiled(Z, C):  # the same steps, compiled (`online.kernels.kmeans`)
        return C, int(lloyd_steps(Z, C, iterations))
    reseeded, before = 0, None
    for _ in range(iterations):
        d = ((Z[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
        nearest = d.argmin(axis=1)
        if before is not None and np.array_equal(nearest, before):
            break  # converged: no row changes centre
        before = nearest
        for c in range(len(C)):
            members = Z[nearest == c]
            if len(members):
                C[c] = members.mean(axis=0)
            elif len(Z) > len(C):
                # the row worst served by the other centres; ties: the first
                far = int(np.argmax(d[np.arange(len(Z)), nearest]))
                C[c] = Z[far]
                d[far] = 0.0
                reseeded += 1
    return C, reseeded


def _compiled(Z: np.ndarray, C: np.ndarray) -> bool:
    """Whether the compiled steps give numpy's result bit for bit here: C-ordered float64
    rows of 2 dims or more (one dim: numpy sums a centre's members pairwise)."""
    return bool(Z.ndim == C.ndim == 2 and Z.shape[1] == C.shape[1] >= 2 and len(Z) and len(C)
            and Z.dtype == C.dtype == np.float64 and Z.flags.c_contiguous
            and C.flags.c_contiguous and C.flags.writeable)


def _sq_distances(Z: np.ndarray, C: np.ndarray) -> np.ndarray:
    if _compiled(Z, C):
        return sq_distances(Z, C)
    return ((Z[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)


def inertia(Z: np.ndarray, C: np.ndarray) -> float:
    return float(_sq_distances(Z, C).min(axis=1).sum())


def separation(Z: np.ndarray, C: np.ndarray) -> float:
    """Mean simplified silhouette of the rows of Z under centres C: (b - a) / max(a, b) with a
    the distance to the nearest centre and b to the second nearest (1 when k = 1)."""
    if len(C) < 2:
        return 1.0
    d = np.sqrt(np.partition(_sq_distances(Z, C), 1, axis=1)[:, :2])
    a, b = d[:, 0], d[:, 1]
    return float(np.mean((b - a) / np.maximum(b, 1e-12)))


def choose(Z: np.ndarray, candidates: list[np.ndarray], tolerance: float) -> int:
    """Index of the candidate centres to keep: of those whose inertia is within `tolerance`
    (relative) of the lowest, the best separated (`separation`); ties go to the first.

    Two partitions a fraction of a percent apart in inertia trade places from one snapshot
    to the next (a few hours of event time shift every recency), so inertia alone flips a
    segmentation on noise; among partitions that fit about equally well, the one whose
    segments stand apart is the one worth naming.
    """
    pairs = [_nearest_two(Z, C) for C in candidates]
    costs = [float(a.sum()) for a, _ in pairs]
    bound = min(costs) * (1.0 + tolerance) + 1e-9
    near = [i for i, c in enumerate(costs) if c <= bound]
    scores = [_separation(*pairs[i]) for i in near]
    return near[int(np.argmax(scores))]


def _nearest_two(Z: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Squared distances of each row to its nearest centre and (k >= 2) its second nearest:
    what `inertia` and `separation` read, from one pass."""
    if len(C) >= 2 and _compiled(Z, C):
        return nearest_two(Z, C)
    d = _sq_distances(Z, C)
    if len(C) < 2:
        return d.min(axis=1), None
    two = np.partition(d, 1, axis=1)
    return two[:, 0], two[:, 1]


def _separation(a2: np.ndarray, b2: np.ndarray | None) -> float:
    """`separation` from `_nearest_two`'s distances (1 when k = 1: no second centre)."""
    if b2 is None:
        return 1.0
    a, b = np.sqrt(a2), np.sqrt(b2)
    return float(np.mean((b - a) / np.maximum(b, 1e-12)))


def kmeans_pp(Z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starting centres drawn from the rows of Z."""
    if not _compiled(Z, Z[:1]):
        return _kmeans_pp_numpy(Z, k, rng)
    # The numpy form's draws and sums, compiled (a test holds them equal): each round updates
    # every row's distance to its nearest centre so far, then ``rng.choice(p=d / d.sum())``
    # is its one uniform draw and a search of the normalised running sums.
    picked = [int(rng.integers(len(Z)))]
    d = np.full(len(Z), np.inf)
    for _ in range(1, k):
        nearer(Z, picked[-1], d)
        total = d.sum()
        picked.append(int(weighted_pick(d, total, rng.random())) if total > 0
                      else int(rng.integers(len(Z))))
    return Z[picked]


def _kmeans_pp_numpy(Z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [Z[int(rng.integers(len(Z)))]]
    for _ in range(1, k):
        d = _sq_distances(Z, np.array(centres)).min(axis=1)
        total = d.sum()
        i = int(rng.choice(len(Z), p=d / total)) if total > 0 else int(rng.integers(len(Z)))
        centres.append(Z[i])
    return np.array(centres, dtype=np.float64)


def matching(old: np.ndarray, new: np.ndarray) -> list[int]:
    """order such that new[order[c]] is the new centre matched to old centre c (greedy on
    distance, closest pairs first), so a segment keeps its id across a restart."""
    d = ((old[:, None, :] - new[None, :, :]) ** 2).sum(axis=2)
    order = [-1] * len(old)
    taken: set[int] = set()
    for flat in np.argsort(d, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(new))
        if order[i] < 0 and j not in taken:
            order[i] = j
            taken.add(j)
    return order
