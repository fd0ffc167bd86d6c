"""C-Score: confidence of a face verification decision (Knoche et al., X-Maps §3.1, eqs. 1-3).

1. Cosine distance of two embeddings, eq. 1: ``d = 1 - f1.f2 / (|f1| |f2|)`` in [0, 2]; a pair is
   predicted genuine when ``d <= t``. The threshold t of a fold maximizes the verification
   accuracy on the other folds (10-fold protocol).
2. Histogram of the genuine and imposter distances with 400 bins; the bin-wise ratio
   ``genuine / (genuine + imposter)`` falls from 1 (d << t) to 0 (d >> t).
3. A logistic curve is fitted to the ratios with ``scipy.optimize.curve_fit(method="dogbox")``,
   eq. 2: ``c(d) = L / (1 + exp(-k (d - d0))) + b``, and clipped to [0, 1]. Left of t, c is the
   probability that a genuine prediction is correct; right of t, the improbability that an
   imposter prediction is correct, so eq. 3: ``C = c(d)`` for d <= t and ``C = 1 - c(d)`` for
   d > t, a probability of correctness in [0.5, 1].

Fold-wise as in the paper (threshold *and* curve from the other 9 folds, as the authors' code
github.com/martlgap/x-face-verification does), so every pair's C comes from parameters fitted
without it. Where the fitted midpoint d0 differs from t, eq. 3 can fall slightly below 0.5 next to
t; like the authors' code, C is clipped to [0.5, 1] (``C_raw`` keeps the unclipped value).
Choices the paper leaves open, with the defaults: histogram range (0, 2) (all possible cosine
distances, as in the authors' code); empty bins are left out of the fit (``empty_bins="drop"``;
``"fill"`` sets them to 1 left of t and 0 right of it as the authors' code does); ratios of counts
(``class_balanced=True`` divides by the class sizes first, as the authors' density histograms).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

from .base import declares


def cosine_distance(a, b) -> np.ndarray:
    """Eq. 1 row-wise for embeddings [N,D] x [N,D] (or [D] x [D]) -> [N] (or scalar array)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    if np.any(den == 0):
        raise ValueError("cosine distance of a zero embedding is undefined")
    return 1.0 - num / den


def logistic(d, L: float, k: float, d0: float, b: float):
    """Eq. 2: L / (1 + exp(-k (d - d0))) + b (overflow-safe)."""
    return L * expit(k * (np.asarray(d, dtype=np.float64) - d0)) + b


def best_threshold(distances, same) -> float:
    """The threshold t maximizing accuracy of "genuine iff d <= t" (first maximum; the midpoint
    between the neighbouring distances)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if d.size == 0:
        raise ValueError("no distances to choose a threshold from")
    order = np.argsort(d, kind="mergesort")
    ds, ys = d[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ds)), ds.size - 1]  # last index of each distinct value
    gen_le = np.cumsum(ys)[last]  # genuine with d <= u_i
    imp_gt = (~y).sum() - np.cumsum(~ys)[last]  # imposters with d > u_i
    acc = np.r_[(~y).sum(), gen_le + imp_gt] / d.size  # candidate 0: below every distance
    i = int(np.argmax(acc))
    u = ds[last]
    if i == 0:
        return float(u[0] - 1e-9)
    if i == len(u):
        return float(u[-1])
    return float((u[i - 1] + u[i]) / 2)


@dataclass
class RatioHistogram:
    edges: np.ndarray  # [bins+1]
    centers: np.ndarray  # [bins]
    genuine: np.ndarray  # [bins] counts
    imposter: np.ndarray  # [bins] counts
    ratio: np.ndarray  # [bins] genuine / (genuine + imposter), NaN in empty bins


def ratio_histogram(distances, same, bins: int = 400, range: tuple[float, float] = (0.0, 2.0),
                    class_balanced: bool = False) -> RatioHistogram:
    """The 400-bin histograms of genuine and imposter distances and their bin-wise ratio (§3.1)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    edges = np.linspace(range[0], range[1], bins + 1)
    g, _ = np.histogram(d[y], bins=edges)
    i, _ = np.histogram(d[~y], bins=edges)
    gw, iw = g.astype(np.float64), i.astype(np.float64)
    if class_balanced:
        gw, iw = gw / max(y.sum(), 1), iw / max((~y).sum(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(gw + iw > 0, gw / (gw + iw), np.nan)
    return RatioHistogram(edges, (edges[:-1] + edges[1:]) / 2, g, i, ratio)


def fit_logistic(hist: RatioHistogram, threshold: float, empty_bins: str = "drop") -> np.ndarray:
    """Fit eq. 2 to the bin ratios with dogbox; returns (L, k, d0, b)."""
    x, y = hist.centers, hist.ratio.copy()
    empty = np.isnan(y)
    if empty_bins == "drop":
        x, y = x[~empty], y[~empty]
    elif empty_bins == "fill":
        y[empty] = np.where(x[empty] <= threshold, 1.0, 0.0)
    else:
        raise ValueError(f"empty_bins must be 'drop' or 'fill', got {empty_bins!r}")
    if x.size < 4:
        raise ValueError(f"only {x.size} non-empty bins: too few to fit the 4-parameter logistic")
    width = hist.edges[-1] - hist.edges[0]
    best, best_err = None, np.inf
    for k0 in (-20.0, -5.0, -80.0):  # the authors' start k = -20 on (0, 2), and two others
        p0 = [1.0, k0 * 2.0 / width, threshold, 0.0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(logistic, x, y, p0=p0, method="dogbox", maxfev=20000)
        except RuntimeError:
            continue
        err = float(np.sum((logistic(x, *p) - y) ** 2))
        if err < best_err:
            best, best_err = p, err
    if best is None:
        raise RuntimeError("the logistic fit of the C-Score did not converge from any start")
    return np.asarray(best, dtype=np.float64)


@dataclass
class CScoreFit:
    """Threshold, histogram and fitted curve from one training set (the other folds)."""

    threshold: float
    params: np.ndarray  # (L, k, d0, b) of eq. 2
    histogram: RatioHistogram

    def curve(self, d) -> np.ndarray:
        """c(d) of eq. 2 clipped to [0, 1]."""
        return np.clip(logistic(d, *self.params), 0.0, 1.0)

    def __call__(self, d) -> tuple[np.ndarray, np.ndarray]:
        """(C_raw, C) of eq. 3 for distances d; C clipped to [0.5, 1]."""
        d = np.asarray(d, dtype=np.float64)
        c = self.curve(d)
        raw = np.where(d <= self.threshold, c, 1.0 - c)
        return raw, np.clip(raw, 0.5, 1.0)


def fit_cscore(distances, same, bins: int = 400, range: tuple[float, float] = (0.0, 2.0),
               class_balanced: bool = False, empty_bins: str = "drop") -> CScoreFit:
    """Threshold (max accuracy), histogram and logistic fit on one set of labelled distances."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if y.all() or (~y).all():
        raise ValueError("the C-Score needs both genuine and imposter pairs")
    t = best_threshold(d, y)
    hist = ratio_histogram(d, y, bins, range, class_balanced)
    return CScoreFit(t, fit_logistic(hist, t, empty_bins), hist)


def stratified_folds(same, n_folds: int = 10) -> np.ndarray:
    """Fold id per pair: the i-th genuine (imposter) pair goes to fold i mod n_folds."""
    y = np.asarray(same, dtype=bool)
    folds = np.empty(y.size, dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


@dataclass
class CScoreResult:
    distances: np.ndarray  # [N]
    same: np.ndarray  # [N] ground truth
    fold: np.ndarray  # [N] fold id of each pair
    threshold: np.ndarray  # [N] threshold used for the pair (its fold's)
    predicted_same: np.ndarray  # [N] d <= t
    c: np.ndarray  # [N] fitted curve c(d) in [0, 1]
    C_raw: np.ndarray  # [N] eq. 3 before clipping
    C: np.ndarray  # [N] C-Score in [0.5, 1]
    fits: list[CScoreFit]  # one per fold (fitted on the other folds)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted_same == self.same

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


@declares('cscore', higher=True, field='C',
          paper='X-Maps eqs. 1-3: probability that the verification decision is correct')
def cscore(distances, same, n_folds: int = 10, folds=None, bins: int = 400,
           range: tuple[float, float] = (0.0, 2.0), class_balanced: bool = False,
           empty_bins: str = "drop") -> CScoreResult:
    """Per-pair C-Scores (eq. 3), fold-wise: fold j's threshold and curve come from the others.

    ``distances`` are cosine distances (eq. 1), ``same`` the ground truth (genuine pair).
    ``folds`` gives a fold id per pair (e.g. the LFW protocol's); default
    :func:`stratified_folds`.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if d.shape != y.shape or d.ndim != 1:
        raise ValueError(f"distances {d.shape} and labels {y.shape} must be equal-length vectors")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or inf")
    fold = stratified_folds(y, n_folds) if folds is None else np.asarray(folds)
    if fold.shape != d.shape:
        raise ValueError(f"folds {fold.shape} must give one fold id per pair {d.shape}")
    ids = np.unique(fold)
    if ids.size < 2:
        raise ValueError("fold-wise C-Score needs at least 2 folds")
    thr = np.empty_like(d)
    c = np.empty_like(d)
    raw = np.empty_like(d)
    fits = []
    for j in ids:
        test = fold == j
        fit = fit_cscore(d[~test], y[~test], bins, range, class_balanced, empty_bins)
        fits.append(fit)
        thr[test] = fit.threshold
        c[test] = fit.curve(d[test])
        raw[test] = fit(d[test])[0]
    return CScoreResult(
        distances=d, same=y, fold=fold, threshold=thr, predicted_same=d <= thr,
        c=c, C_raw=raw, C=np.clip(raw, 0.5, 1.0), fits=fits,
    )
