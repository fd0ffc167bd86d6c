"""AP against a box (MinPlus §3.4): known answers and scikit-learn's average_precision_score."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from xfr.metrics import box_ap, box_mask, higher_is_better
from xfr.metrics.box_ap import box_scores, interpolated_precision

BOX = (20, 10, 50, 40)  # x1, y1, x2, y2 on a 64x80 map


def test_box_mask_pixel_centres():
    m = box_mask(BOX, (64, 80))
    assert m.sum() == 30 * 30
    rows, cols = np.nonzero(m)
    assert rows.min() == 10 and rows.max() == 39 and cols.min() == 20 and cols.max() == 49


def test_perfect_map_has_ap_one():
    gt = box_mask(BOX, (64, 80))
    res = box_ap(gt.astype(float), BOX)
    assert res.ap == pytest.approx(1.0)
    assert box_ap(gt * 0.7 + 0.1, gt).ap == pytest.approx(1.0)  # any scale, mask input
    assert box_ap(gt.astype(float), BOX, levels=50).ap == pytest.approx(1.0)
    assert higher_is_better("box_ap") and box_ap.higher_is_better


@pytest.mark.parametrize("quantize", [False, True])
def test_equals_sklearn_average_precision(quantize):
    rng = np.random.default_rng(0)
    gt = box_mask(BOX, (64, 80))
    sal = rng.random((64, 80)) + 0.6 * gt  # informative but noisy
    if quantize:  # many ties: thresholds are the distinct values
        sal = np.round(sal * 8) / 8
    res = box_ap(sal, BOX)
    ref = average_precision_score(gt.ravel(), sal.ravel())
    assert res.ap == pytest.approx(ref, abs=1e-12)
    p, r, t = precision_recall_curve(gt.ravel(), sal.ravel())
    # sklearn returns increasing thresholds with a final (P=1, R=0) point; ours are decreasing
    np.testing.assert_allclose(res.precision, p[:-1][::-1])
    np.testing.assert_allclose(res.recall, r[:-1][::-1])
    np.testing.assert_allclose(res.thresholds, t[::-1])
    assert np.all(np.diff(res.recall) >= 0) and res.recall[-1] == 1.0


def test_levels_on_the_value_grid_equal_exact_ap():
    rng = np.random.default_rng(1)
    gt = box_mask(BOX, (64, 80))
    sal = np.round((rng.random((64, 80)) * 0.8 + 0.2 * gt) * 10) / 10
    sal[0, 0], sal[-1, -1] = 0.0, 1.0  # the grid 0, 0.1, ..., 1 spans min..max
    exact = box_ap(sal, BOX)
    grid = box_ap(sal, BOX, levels=11)
    assert grid.ap == pytest.approx(exact.ap, abs=1e-12)
    coarse = box_ap(rng.random((64, 80)) + gt, BOX, levels=200)
    ref = average_precision_score(gt.ravel(), (rng.random((64, 80)) + gt).ravel())
    assert abs(coarse.ap - ref) < 0.05  # a fine grid approximates the exact AP


def test_inverted_map_scores_the_box_share():
    gt = box_mask(BOX, (64, 80))
    res = box_ap(1.0 - gt, BOX)  # everything outside first: precision never beats the prior
    assert res.ap == pytest.approx(gt.mean())


def test_empty_region_is_nan_and_bad_shapes_raise():
    assert math.isnan(box_ap(np.random.rand(8, 8), np.zeros((8, 8), bool)).ap)
    with pytest.raises(ValueError, match="shape"):
        box_ap(np.random.rand(8, 8), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="levels"):
        box_ap(np.random.rand(8, 8), (1, 1, 4, 4), levels=1)


def test_interpolated_precision():
    p = np.array([1.0, 0.5, 0.8, 0.4])
    r = np.array([0.1, 0.3, 0.6, 1.0])
    got = interpolated_precision(p, r, np.array([0.0, 0.2, 0.6, 0.7, 1.0]))
    assert np.allclose(got, [1.0, 0.8, 0.8, 0.4, 0.4])
    assert np.allclose(interpolated_precision(p, r * 0.5, np.array([0.9])), [0.0])


def test_box_scores_perfect_and_inverted_maps():
    box = (8, 4, 24, 20)
    inside = np.zeros((32, 32))
    inside[4:20, 8:24] = 1.0
    grid = np.linspace(0, 1, 11)
    good = box_scores(inside, box, grid)
    assert good["ap"] == pytest.approx(1.0) and good["pointing"] == 1.0
    assert np.allclose(good["pr"], 1.0)
    bad = box_scores(1.0 - inside, box, grid)
    # everything outside first (precision 0), then all pixels: AP = the box's share of the image
    assert bad["ap"] == pytest.approx(inside.mean()) and bad["pointing"] == 0.0
