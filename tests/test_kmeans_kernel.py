"""The compiled Lloyd steps (`online.kernels.kmeans`) give numpy's result bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from online.kernels.kmeans import lloyd_steps, sq_distances
from online.models import kmeans


def _numpy_lloyd(Z, C, iterations):
    """`online.models.kmeans.lloyd`'s numpy form (its fallback), on a copy of C."""
    Z = np.asfortranarray(Z)  # rows not C-ordered: the numpy path runs
    assert not kmeans._compiled(Z, C)
    out, reseeded = kmeans.lloyd(Z, np.array(C), iterations)
    return np.ascontiguousarray(out), reseeded


@pytest.mark.parametrize("seed", range(40))
def test_compiled_lloyd_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    n, k, dims = int(rng.integers(2, 1500)), int(rng.integers(1, 8)), int(rng.integers(2, 7))
    Z = rng.normal(size=(n, dims)) * [1.0, 1e-3, 1e3][seed % 3]
    if seed % 4 == 0:
        Z = np.round(Z, 1)  # ties between centres
    if seed % 5 == 0:
        C = rng.normal(size=(k, dims)) * 50.0  # far centres: empty ones are re-seeded
    else:
        C = Z[rng.integers(0, n, k)] + rng.normal(size=(k, dims)) * 0.01
    expected, reseeded = _numpy_lloyd(Z, C, 50)
    compiled = C.copy()
    assert lloyd_steps(Z, compiled, 50) == reseeded
    assert compiled.tobytes() == expected.tobytes()
    assert sq_distances(Z, C).tobytes() == ((Z[:, None, :] - C[None]) ** 2).sum(axis=2).tobytes()


def test_lloyd_uses_the_kernel_in_place_and_reports_reseeds():
    Z = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    C = np.array([[0.0, 0.5], [100.0, 100.0], [200.0, 200.0]])
    out, reseeded = kmeans.lloyd(Z, C, 10)
    assert out is C and reseeded >= 1
    assert sorted(map(tuple, out.round(3))) == sorted(map(tuple, _numpy_lloyd(
        Z, np.array([[0.0, 0.5], [100.0, 100.0], [200.0, 200.0]]), 10)[0].round(3)))


def test_one_dimension_keeps_numpy():
    Z = np.random.default_rng(3).normal(size=(500, 1))
    C = Z[:3].copy()
    assert not kmeans._compiled(Z, C)


def _numpy_choose(Z, candidates, tolerance):
    """`kmeans.choose` written with `inertia` and `separation` (their numpy forms)."""
    Zf = np.asfortranarray(Z)
    costs = [kmeans.inertia(Zf, C) for C in candidates]
    bound = min(costs) * (1.0 + tolerance) + 1e-9
    near = [i for i, c in enumerate(costs) if c <= bound]
    return near[int(np.argmax([kmeans.separation(Zf, candidates[i]) for i in near]))]


@pytest.mark.parametrize("seed", range(30))
def test_compiled_kmeans_pp_and_choose_match_numpy(seed):
    rng = np.random.default_rng(seed)
    n, k, dims = int(rng.integers(1, 1200)), int(rng.integers(1, 8)), int(rng.integers(2, 6))
    Z = rng.normal(size=(n, dims)) * [1.0, 1e-3, 1e3][seed % 3]
    if seed % 4 == 0:
        Z = np.round(Z, 0)  # repeated rows: zero distances, ties, a zero total
    if seed % 7 == 0:
        Z[:] = Z[0]  # every row the same: the draws fall back to integers()
    a, b = np.random.default_rng((seed, 1)), np.random.default_rng((seed, 1))
    fresh = [kmeans.kmeans_pp(Z, k, a) for _ in range(4)]
    numpy_form = [kmeans._kmeans_pp_numpy(Z, k, b) for _ in range(4)]
    assert [C.tobytes() for C in fresh] == [C.tobytes() for C in numpy_form]
    assert a.random() == b.random()  # the same draws were consumed
    candidates = fresh + [Z[rng.integers(0, n, k)] + rng.normal(size=(k, dims))]
    for tolerance in (0.0, 0.02, 0.5):
        assert kmeans.choose(Z, candidates, tolerance) == _numpy_choose(Z, candidates,
                                                                         tolerance)
