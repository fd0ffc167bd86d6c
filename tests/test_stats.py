"""xfr.stats: percentile bootstrap CIs (zero width on constant data, ~ mean +- 1.96 SE on normal
data, shift-equivariant, seeded) and their input checks."""
import numpy as np
import pytest

from xfr import stats as S


def test_bootstrap_ci_constant_data_has_zero_width():
    lo, hi = S.bootstrap_ci(np.full(50, 0.3), n_boot=500)
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    assert S.bootstrap_ci([0.7], n_boot=50) == pytest.approx((0.7, 0.7))
    assert S.bootstrap_diff_ci(np.full(10, 0.8), np.full(7, 0.5), n_boot=200) == pytest.approx((0.3, 0.3))


def test_bootstrap_ci_known_answers():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 400)
    lo, hi = S.bootstrap_ci(x, n_boot=3000, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    # percentile interval ~ mean +- 1.96 SE for a mean of normal data
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.12)
    # shifting the sample shifts the interval by the same amount (same seed, same resamples)
    lo2, hi2 = S.bootstrap_ci(x + 5.0, n_boot=3000, seed=0)
    assert (lo2 - lo, hi2 - hi) == pytest.approx((5.0, 5.0))
    # a difference of two samples shifted by 1: interval around 1, not containing 0
    dlo, dhi = S.bootstrap_diff_ci(x + 1.0, rng.normal(0.0, 1.0, 400), n_boot=2000)
    assert dlo < 1.0 < dhi and dlo > 0.5
    # seeded: same seed, same interval; the median works too
    assert S.bootstrap_ci(x, n_boot=500, seed=3) == S.bootstrap_ci(x, n_boot=500, seed=3)
    mlo, mhi = S.bootstrap_ci(x, stat="median", n_boot=1000)
    assert mlo < np.median(x) < mhi


@pytest.mark.parametrize("bad", [dict(values=[]), dict(values=[1.0, np.nan]), dict(values=[1, 2], n_boot=0),
                                 dict(values=[1, 2], level=1.0), dict(values=[1, 2], stat="mode")])
def test_bootstrap_bad_input(bad):
    with pytest.raises(ValueError):
        S.bootstrap_ci(**bad)
