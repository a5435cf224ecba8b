"""Fréchet distance and KVD on synthetic features (no I3D)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from vidgan.fvd import frechet_distance, kvd
from vidgan.fvd.distance import frechet_distance_from_stats, trace_sqrt_product


def test_closed_form_for_known_gaussians() -> None:
    # Diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    d = 50
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # A rotated pair (non-diagonal, commuting) gives the same value.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = frechet_distance_from_stats(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_samples_converge_to_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) * 2.0 + 1.0
    # |mu|^2 = 4, sum (1 - 2)^2 = 4
    assert frechet_distance(x, y) == pytest.approx(8.0, abs=0.15)


def test_trace_sqrt_agrees_with_scipy_for_general_pair() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(80, 30)), rng.normal(size=(90, 30)) @ rng.normal(size=(30, 30))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-7)


def test_fvd_of_a_set_with_itself_is_zero_even_rank_deficient() -> None:
    x = np.random.default_rng(3).normal(size=(64, 400))  # N < d: rank-deficient covariance
    assert abs(frechet_distance(x, x)) < 1e-8


def test_kvd_same_distribution_near_zero_different_clearly_positive() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(500, 400)), rng.normal(size=(500, 400))
    z = rng.normal(size=(500, 400)) * 1.3 + 0.3
    same, same_se = kvd(x, y)
    diff, diff_se = kvd(x, z)
    assert abs(same) < 3 * same_se + 1e-3
    assert diff > 0.05 and diff > 10 * diff_se
    assert same_se > 0 and diff_se > 0


def test_kvd_is_deterministic_and_refuses_mismatch() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    assert kvd(x, y, seed=1) == kvd(x, y, seed=1)
    with pytest.raises(ValueError):
        kvd(x, rng.normal(size=(30, 9)))
    with pytest.raises(ValueError):
        frechet_distance(x[:1], y)
