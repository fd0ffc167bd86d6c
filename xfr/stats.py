"""General statistics of the experiments: percentile bootstrap (Efron & Tibshirani 1993, ch. 13)
distributions and confidence intervals of a statistic of one sample or of the difference of two
independent samples, the joint (paired) bootstrap of several columns measured on the same items
and the ranking test built on it, the verdict on a claim "statistic > / < threshold" from its
interval (:class:`Claim`, :func:`verdict`), the two-sided Mann-Whitney U and Wilcoxon signed-rank
tests (scipy), the logit and ordinary least squares."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLAIM_COLUMNS", "VERDICTS", "ClaimStatement", "Claim", "RankingTest", "abs_interval", "bootstrap_ci",
    "bootstrap_diff_ci", "bootstrap_distribution", "bootstrap_paired_diff_ci", "joint_bootstrap",
    "logit", "mann_whitney_p", "ols", "percentile_interval", "ranking_margin", "ranking_test",
    "verdict", "wilcoxon_p",
]


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


# ----------------------------------------------------------------------------- claims and verdicts
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "inconclusive (n too small)")


def verdict(ci_low: float, ci_high: float, direction: str, threshold: float,
            n: float | None = None, n_required: float | None = None) -> str:
    """The verdict on the claim "statistic ``direction`` threshold" (direction ``'>'`` or
    ``'<'``) from the statistic's confidence interval: 'reproduced' when the whole interval lies
    strictly on the claim's side of ``threshold``, 'not reproduced' when it lies strictly on the
    other side, 'inconclusive' otherwise (it contains the threshold, or is undefined: NaN).
    Whenever ``n < n_required`` the verdict is 'inconclusive (n too small)', whatever the
    interval: a percentile interval from too few items is about the sample's range and
    under-covers. ``n`` None or NaN (unknown) skips that check."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    if n is not None and n_required is not None and not (isinstance(n, float) and math.isnan(n)):
        if float(n) < float(n_required):
            return VERDICTS[3]
    lo, hi = float(ci_low), float(ci_high)
    if math.isnan(lo) or math.isnan(hi):
        return VERDICTS[2]
    if lo > hi:
        raise ValueError(f"ci_low {lo} > ci_high {hi}")
    above, below = lo > threshold, hi < threshold
    if above or below:
        return VERDICTS[0] if above == (direction == ">") else VERDICTS[1]
    return VERDICTS[2]


CLAIM_COLUMNS = ("claim_id", "paper", "where", "claim", "paper_value", "statistic", "ours", "ci_low",
                 "ci_high", "n", "n_required", "verdict", "source", "direction", "threshold", "note")


@dataclass(frozen=True)
class ClaimStatement:
    """What a paper claims, as "``statistic`` ``direction`` ``threshold``", and how many items
    (``n_required``) a verdict on it needs."""

    claim_id: str
    paper: str
    where: str
    claim: str
    statistic: str
    direction: str
    threshold: float
    n_required: int


@dataclass(frozen=True)
class Claim(ClaimStatement):
    """A :class:`ClaimStatement` with our value, its confidence interval and the number of items
    ``n`` it rests on; :attr:`verdict` follows from them (:func:`verdict`). ``row()`` gives the
    claims-table row (:data:`CLAIM_COLUMNS`)."""

    source: str
    paper_value: str = ""
    ours: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n: int | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.ci_low, self.ci_high, self.direction, self.threshold, self.n, self.n_required)

    def row(self) -> dict:
        values = {k: getattr(self, k) for k in CLAIM_COLUMNS}
        values["n"] = float("nan") if self.n is None else self.n
        return values


def percentile_interval(dist, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution: its (1 - level) / 2 and
    (1 + level) / 2 quantiles, NaN resamples ignored ((NaN, NaN) when all are NaN)."""
    _check_boot(1, level)
    d = np.asarray(dist, dtype=np.float64).ravel()
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    return _interval(d, level)


def abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """The image of the interval [lo, hi] under |x|: the interval of an absolute deviation
    |statistic - value| from that of the signed deviation (a claim "|ours - paper's| < tol" is
    reproduced when the signed interval lies within (-tol, tol))."""
    if math.isnan(lo) or math.isnan(hi):
        return float("nan"), float("nan")
    if lo > hi:
        raise ValueError(f"lo {lo} > hi {hi}")
    top = max(abs(lo), abs(hi))
    return (0.0, top) if lo <= 0.0 <= hi else (min(abs(lo), abs(hi)), top)


def joint_bootstrap(values, statistic: Callable[[np.ndarray], np.ndarray], n_boot: int = 2000,
                    seed: int = 0, chunk: int = 4_000_000) -> np.ndarray:
    """``n_boot`` values of ``statistic`` on resamples of the rows (items) of ``values``
    [n items, k columns], all columns resampled together: paired data, e.g. k methods scored on
    the same n images. ``statistic`` maps resamples [B, n, k] to [B]. NaN entries are allowed
    (the statistic decides what they mean); the draws are the same for every ``chunk``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"values must be [n items, k columns] with n, k >= 1, got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError("values contains inf")
    _check_boot(n_boot, 0.5)
    n = x.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    step = max(1, int(chunk) // max(1, x.size))
    out = np.concatenate([np.asarray(statistic(x[idx[i:i + step]]), dtype=np.float64).reshape(-1)
                          for i in range(0, n_boot, step)])
    if out.shape != (n_boot,):
        raise ValueError(f"statistic must map [B, n, k] to [B], got {out.shape[0]} values for B = {n_boot}")
    return out


def ranking_margin(means, order: Sequence[int], higher: bool = True, first_only: bool = False) -> np.ndarray:
    """By how much the ranking ``order`` (column indices, best first) holds in ``means``
    [..., k]: the smallest gap between consecutive listed columns, or with ``first_only`` the gap
    between column ``order[0]`` and the best of all other columns; gaps taken in the direction
    of "better" (``higher`` or lower). Positive iff the ranking holds strictly."""
    m = np.asarray(means, dtype=np.float64)
    order = [int(i) for i in order]
    k = m.shape[-1]
    if not order or any(not 0 <= i < k for i in order) or len(set(order)) != len(order):
        raise ValueError(f"order must list distinct column indices in 0..{k - 1}, got {order}")
    sign = 1.0 if higher else -1.0
    if first_only:
        others = [j for j in range(k) if j != order[0]]
        if not others:
            raise ValueError("first_only needs at least two columns")
        best_other = (sign * m[..., others]).max(axis=-1)
        return sign * m[..., order[0]] - best_other
    if len(order) < 2:
        raise ValueError("a ranking needs at least two columns (or first_only)")
    gaps = [sign * (m[..., a] - m[..., b]) for a, b in zip(order[:-1], order[1:])]
    return np.min(np.stack(gaps, axis=-1), axis=-1)


@dataclass(frozen=True)
class RankingTest:
    """A ranking claim tested by the joint bootstrap: the observed ``margin``
    (:func:`ranking_margin` of the column statistics), its percentile interval, the fraction of
    resamples in which the ranking holds (margin > 0) and the number of items."""

    margin: float
    ci_low: float
    ci_high: float
    order_fraction: float
    n: int


_NAN_STATS = {"mean": np.nanmean, "median": np.nanmedian}


def ranking_test(values, order: Sequence[int], higher: bool = True, first_only: bool = False,
                 stat="mean", n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> RankingTest:
    """The ranking ``order`` of the columns of ``values`` [n items, k methods] by ``stat``
    ('mean', 'median': NaN items of a column ignored; or f(x, axis)), tested by resampling the
    items jointly (:func:`joint_bootstrap`) and recomputing :func:`ranking_margin`. Two columns
    with ``first_only`` give the paired difference of column 0 and column 1."""
    _check_boot(n_boot, level)
    fn = _NAN_STATS.get(stat, stat) if isinstance(stat, str) else stat
    if not callable(fn):
        raise ValueError(f"stat must be 'mean', 'median' or a callable f(x, axis=...), got {stat!r}")
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of a resample: NaN margin
        observed = float(ranking_margin(fn(x, axis=0), order, higher, first_only))
        dist = joint_bootstrap(x, lambda r: ranking_margin(fn(r, axis=1), order, higher, first_only),
                               n_boot, seed)
    lo, hi = percentile_interval(dist, level)
    finite = dist[~np.isnan(dist)]
    frac = float((finite > 0).mean()) if finite.size else float("nan")
    return RankingTest(observed, lo, hi, frac, int(x.shape[0]))


def bootstrap_paired_diff_ci(a, b, stat="mean", n_boot: int = 2000, level: float = 0.95, seed: int = 0
                             ) -> tuple[float, float]:
    """Percentile bootstrap CI of stat(a - b) for paired samples (item i measured twice)."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    return bootstrap_ci(a - b, stat, n_boot, level, seed)
