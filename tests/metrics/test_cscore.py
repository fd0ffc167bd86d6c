"""C-Score (X-Maps §3.1, eqs. 1-3) on distances from known Gaussians."""
import numpy as np
import pytest
from scipy.spatial.distance import cosine
from scipy.stats import norm

from xfr.metrics import (
    best_threshold,
    cosine_distance,
    cscore,
    fit_cscore,
    higher_is_better,
    logistic,
    ratio_histogram,
    stratified_folds,
)

MU_G, MU_I, SIGMA = 0.40, 0.70, 0.08  # genuine / imposter cosine distances


def gaussian_pairs(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    d = np.r_[rng.normal(MU_G, SIGMA, n), rng.normal(MU_I, SIGMA, n)]
    same = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return d, same


def true_posterior(d):
    """P(genuine | d) for equal priors: the ratio the histogram estimates."""
    g, i = norm.pdf(d, MU_G, SIGMA), norm.pdf(d, MU_I, SIGMA)
    return g / (g + i)


def test_cosine_distance_eq1():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
    np.testing.assert_allclose(cosine_distance(a, b), [cosine(x, y) for x, y in zip(a, b)])
    assert cosine_distance(a[0], a[0]) == pytest.approx(0, abs=1e-12)
    assert cosine_distance(a[0], -a[0]) == pytest.approx(2)
    with pytest.raises(ValueError):
        cosine_distance(np.zeros(3), np.ones(3))


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    d = np.round(rng.random(300), 2)  # with ties
    same = rng.random(300) < 1 - d
    t = best_threshold(d, same)
    grid = np.linspace(-0.01, 1.01, 2001)
    acc = [np.mean((d <= g) == same) for g in grid]
    assert np.mean((d <= t) == same) == pytest.approx(max(acc))


def test_histogram_ratio():
    hist = ratio_histogram([0.1, 0.1, 0.12, 1.5], [True, False, True, False], bins=400)
    assert len(hist.centers) == 400 and hist.edges[0] == 0 and hist.edges[-1] == 2
    k = np.searchsorted(hist.edges, 0.1, side="right") - 1
    assert hist.genuine[k] == 1 and hist.imposter[k] == 1 and hist.ratio[k] == 0.5
    assert np.isnan(hist.ratio).sum() == 400 - 3


@pytest.mark.parametrize("empty_bins", ["drop", "fill"])
def test_fit_recovers_true_posterior(empty_bins):
    d, same = gaussian_pairs()
    fit = fit_cscore(d, same, empty_bins=empty_bins)
    assert fit.threshold == pytest.approx((MU_G + MU_I) / 2, abs=0.01)  # Bayes threshold
    central = np.linspace(MU_G, MU_I, 61)
    assert np.abs(fit.curve(central) - true_posterior(central)).max() < 0.05


def test_foldwise_cscore():
    d, same = gaussian_pairs(n=5000, seed=1)
    res = cscore(d, same, n_folds=10)
    assert len(res.fits) == 10
    assert np.all((res.C >= 0.5) & (res.C <= 1.0))
    central = np.linspace(MU_G, MU_I, 61)
    for fit in res.fits:
        assert np.abs(fit.curve(central) - true_posterior(central)).max() < 0.05
    # eq. 3: C = c(d) on the genuine side, 1 - c(d) on the imposter side
    left = res.distances <= res.threshold
    np.testing.assert_allclose(res.C_raw[left], res.c[left])
    np.testing.assert_allclose(res.C_raw[~left], 1 - res.c[~left])
    # C is a calibrated probability of correctness: its mean matches the accuracy
    assert res.accuracy == pytest.approx(norm.cdf(0.15 / SIGMA), abs=0.01)
    assert res.C.mean() == pytest.approx(res.accuracy, abs=0.02)
    # confident where far from the threshold, unsure close to it
    far = np.abs(res.distances - res.threshold) > 0.2
    near = np.abs(res.distances - res.threshold) < 0.01
    assert res.C[far].min() > 0.99 and res.C[near].max() < 0.65
    assert res.C[res.correct].mean() > res.C[~res.correct].mean()
    assert higher_is_better("cscore")


def test_folds_are_held_out():
    d, same = gaussian_pairs(n=300, seed=3)
    folds = stratified_folds(same, 10)
    assert np.bincount(folds).tolist() == [60] * 10
    res = cscore(d, same, folds=folds)
    d2 = d.copy()
    d2[folds == 0] = np.random.default_rng(9).random((folds == 0).sum()) * 2  # scramble fold 0
    res2 = cscore(d2, same, folds=folds)
    np.testing.assert_allclose(res2.fits[0].params, res.fits[0].params)  # fold 0 never saw itself
    assert res2.fits[0].threshold == res.fits[0].threshold
    assert not np.allclose(res2.fits[1].params, res.fits[1].params)


def test_logistic_eq2_and_errors():
    assert logistic(0.3, 1.0, -10.0, 0.3, 0.0) == pytest.approx(0.5)
    assert logistic(np.array([-1e4, 1e4]), 2.0, 1.0, 0.0, -0.5).tolist() == [-0.5, 1.5]  # no overflow
    with pytest.raises(ValueError, match="both genuine and imposter"):
        fit_cscore(np.random.rand(50), np.ones(50, bool))
    with pytest.raises(ValueError, match="empty_bins"):
        fit_cscore(*gaussian_pairs(200), empty_bins="zero")
