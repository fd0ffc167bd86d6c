"""Run-to-run stability (MinPlus Fig. 4) against scipy's correlations."""
import numpy as np
import pytest
import torch
from scipy import stats

from xfr.metrics import higher_is_better, pearson, spearman, stability


def test_identical_and_affine_maps_are_perfectly_stable():
    a = np.random.default_rng(0).random((12, 10))
    res = stability([a, a, a])
    assert res.mean_pearson == pytest.approx(1) and res.mean_spearman == pytest.approx(1)
    assert res.mean_std == pytest.approx(0, abs=1e-12) and np.allclose(res.std_map, 0, atol=1e-12)
    res2 = stability(np.stack([a, 2 * a + 1]))
    assert res2.mean_pearson == pytest.approx(1) and res2.mean_spearman == pytest.approx(1)
    assert stability([a, -a]).mean_spearman == pytest.approx(-1)
    assert higher_is_better("stability_pearson") and not higher_is_better("stability_std")


def test_matches_scipy_and_numpy():
    rng = np.random.default_rng(1)
    base = rng.random((16, 16))
    maps = torch.tensor(np.stack([base + 0.5 * rng.random((16, 16)) for _ in range(4)]))
    res = stability(maps)
    flat = maps.numpy().reshape(4, -1)
    for i in range(4):
        for j in range(i + 1, 4):
            assert res.pearson[i, j] == pytest.approx(stats.pearsonr(flat[i], flat[j])[0])
            assert res.spearman[j, i] == pytest.approx(stats.spearmanr(flat[i], flat[j])[0])
    iu = np.triu_indices(4, 1)
    assert res.mean_pearson == pytest.approx(res.pearson[iu].mean())
    np.testing.assert_allclose(res.std_map, flat.std(axis=0).reshape(16, 16))
    np.testing.assert_allclose(res.mean_map, flat.mean(axis=0).reshape(16, 16))
    # noisier runs are less stable
    noisy = stability(np.stack([base + 3 * rng.random((16, 16)) for _ in range(4)]))
    assert noisy.mean_pearson < res.mean_pearson and noisy.mean_std > res.mean_std


def test_pairwise_helpers_and_errors():
    a = np.arange(20.0).reshape(4, 5)
    b = a ** 3  # monotone: Spearman 1, Pearson < 1
    assert spearman(a, b) == pytest.approx(1.0)
    assert pearson(a, b) < 0.99
    assert np.isnan(pearson(a, np.ones((4, 5))))
    with pytest.raises(ValueError, match="at least 2"):
        stability([a])
