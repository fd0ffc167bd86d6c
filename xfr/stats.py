"""General statistics of the experiments: percentile bootstrap (Efron & Tibshirani 1993, ch. 13)
distributions and confidence intervals of a statistic of one sample or of the difference of two
independent samples, the two-sided Mann-Whitney U and Wilcoxon signed-rank tests (scipy), the
logit and ordinary least squares."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _values(values, name: str = "values") -> np.ndarray:
    """``values`` as a flat float64 array, checked non-empty and finite."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty: a bootstrap needs at least one value")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _stat_fn(stat) -> Callable:
    """The statistic f(x, axis) named by ``stat`` ('mean', 'median') or ``stat`` itself."""
    if callable(stat):
        return stat
    if stat in ("mean", "median"):
        return getattr(np, stat)
    raise ValueError(f"stat must be 'mean', 'median' or a callable f(x, axis=...), got {stat!r}")


def _check_boot(n_boot: int, level: float) -> None:
    """Checks a bootstrap's number of resamples (positive int) and confidence level (0 < level < 1)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def bootstrap_distribution(values, stat="mean", n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` values of ``stat`` on resamples (with replacement, same size) of ``values``."""
    x = _values(values)
    _check_boot(n_boot, 0.5)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return np.asarray(_stat_fn(stat)(x[idx], axis=1), dtype=np.float64)


def _interval(dist: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval: the (1 - level) / 2 and (1 + level) / 2 quantiles of ``dist``."""
    a = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(dist, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_ci(values, stat="mean", n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval (lo, hi) of ``stat`` ('mean', 'median' or
    f(x, axis)) of ``values``. Constant data give a zero-width interval; one value gives (x, x)."""
    _check_boot(n_boot, level)
    return _interval(bootstrap_distribution(values, stat, n_boot, seed), level)


def bootstrap_diff_ci(a, b, stat="mean", n_boot: int = 2000, level: float = 0.95, seed: int = 0
                      ) -> tuple[float, float]:
    """Percentile bootstrap CI of stat(a) - stat(b) for two independent samples (each resampled
    on its own)."""
    _check_boot(n_boot, level)
    da = bootstrap_distribution(_values(a, "a"), stat, n_boot, seed)
    db = bootstrap_distribution(_values(b, "b"), stat, n_boot, seed + 1)
    return _interval(da - db, level)


def mann_whitney_p(a, b) -> float:
    """Two-sided Mann-Whitney U test p-value (scipy); NaN when a sample is empty."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def wilcoxon_p(d) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences ``d`` (scipy); NaN when
    there are fewer than 2 non-zero differences."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, float).ravel()
    if np.count_nonzero(d) < 2:
        return float("nan")
    return float(wilcoxon(d).pvalue)


def logit(p, eps: float = 1e-4) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps] (so saturated outputs stay finite)."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def ols(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of y ~ X (numpy ``lstsq``)."""
    return np.linalg.lstsq(X, y, rcond=None)[0]
