"""Fréchet distance and KVD (unbiased polynomial-kernel MMD^2) between two feature sets, in float64."""

from __future__ import annotations

import numpy as np


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be [N >= 2, d] features, got shape {a.shape}")
    return a


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (divided by N - 1) in float64, as tfgan computes them."""
    f = _as_features(feats, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)`` = sum of sqrt(eig(A S2 A)), ``A = sqrt(S1)``: symmetric, real, rank-safe."""
    w, v = np.linalg.eigh(sigma1)
    a = (v * np.sqrt(_clip_noise(w))) @ v.T
    m = a @ sigma2 @ a
    return float(np.sqrt(_clip_noise(np.linalg.eigvalsh((m + m.T) * 0.5))).sum())


def _clip_noise(ev: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise (|ev| < d * eps * max) set to 0.

    With N < d the covariances are singular; their null eigenvalues come out as +-1e-14-ish noise whose square
    roots (~1e-7 each, hundreds of them) would otherwise add up to a visible error."""
    tol = ev.size * np.finfo(np.float64).eps * max(float(ev.max(initial=0.0)), 0.0)
    return np.where(ev > tol, ev, 0.0)


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2) - 2 tr sqrt(S1 S2)`` (float64)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {mu2.shape}, {s1.shape}, {s2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FVD when the features are I3D's: Fréchet distance of Gaussians fitted to ``[N, d]`` feature sets.

    Only comparable between evaluations with the same sample counts (the estimate is biased upwards,
    strongly at small N).
    """
    mu1, s1 = feature_stats(feats_a)
    mu2, s2 = feature_stats(feats_b)
    return frechet_distance_from_stats(mu1, s1, mu2, s2)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with ``k(a, b) = (a.b / d + 1)^3``: off-diagonal means of Kxx and Kyy, minus 2 mean Kxy."""
    return _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


def kvd(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    n_subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Video Distance: (unbiased MMD^2 of all samples, its standard error from subsets).

    The value uses every sample (the unbiased estimator; it can be slightly negative). The standard error
    comes from ``n_subsets`` random subsets of ``m = subset_size`` samples of each set (drawn without
    replacement, seeded): the spread of the subset estimates, scaled by ``sqrt(m / n)`` to the full sample
    size ``n = min(N_a, N_b)`` (the estimator's variance falls as 1/n when the distributions differ, faster
    when they are equal, so the scaling errs on the large side). ``subset_size`` defaults to
    ``min(1000, n // 2)`` so that the subsets differ from each other. NaN when fewer than 4 samples.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    kaa, kbb, kab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    value = _mmd2_from_kernels(kaa, kbb, kab)
    n = min(len(a), len(b))
    m = min(1000, n // 2) if subset_size is None else min(subset_size, n)
    if n_subsets < 2 or m < 2:
        return value, float("nan")
    # Subsets as 0/1 indicator rows: the kernel sums of a subset are quadratic forms u K v (no gathers).
    rng = np.random.default_rng(seed)
    ua, ub = np.zeros((n_subsets, len(a))), np.zeros((n_subsets, len(b)))
    for i in range(n_subsets):
        ua[i, rng.choice(len(a), m, replace=False)] = 1.0
        ub[i, rng.choice(len(b), m, replace=False)] = 1.0
    saa = ((ua @ kaa) * ua).sum(1) - ua @ np.diag(kaa)
    sbb = ((ub @ kbb) * ub).sum(1) - ub @ np.diag(kbb)
    sab = ((ua @ kab) * ub).sum(1)
    est = (saa + sbb) / (m * (m - 1)) - 2.0 * sab / (m * m)
    return value, float(est.std(ddof=1) * np.sqrt(m / n))
