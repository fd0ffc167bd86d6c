"""Deletion / Insertion (S-RISE §3.3; Petsiuk et al.) on analytic score functions."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid

from xfr.engine import CountingScore
from xfr.metrics import (
    METRICS,
    SaliencyOrderMasks,
    curve_auc,
    decision_flip,
    deletion,
    insertion,
    step_counts,
)

H = W = 112
SQUARE = (slice(40, 60), slice(30, 50))  # 20x20 = 400 pixels


def square_setup():
    """Image 1 on the square, 0 elsewhere; f = mean of channel 0 over the square."""
    image = torch.zeros(3, H, W)
    image[:, SQUARE[0], SQUARE[1]] = 1.0
    region = torch.zeros(H, W, dtype=torch.bool)
    region[SQUARE] = True

    def f(x):
        return x[:, 0][:, region].mean(dim=1)

    gen = torch.Generator().manual_seed(0)
    saliency = torch.rand(H, W, generator=gen) * 0.5  # outside the square: below 0.5
    saliency[SQUARE] += 0.5  # the square is the most salient part
    return image, f, saliency, region


def test_step_counts_one_percent():
    c = step_counts(H * W, 0.01)
    assert len(c) == 101 and c[0] == 0 and c[-1] == H * W
    assert np.all(np.diff(c) > 0)
    assert np.abs(np.diff(c) - H * W / 100).max() <= 1
    c_px = step_counts(10, 3)
    assert c_px.tolist() == [0, 3, 6, 9, 10]
    for bad in (0.0, 1.5, -1, 0):
        with pytest.raises(ValueError):
            step_counts(100, bad)


def test_masks_remove_the_most_salient_pixels():
    sal = torch.rand(9, 7, generator=torch.Generator().manual_seed(1))
    counts = np.array([0, 5, 20, 63])
    dele = SaliencyOrderMasks(sal, counts, "deletion")
    ins = SaliencyOrderMasks(sal, counts, "insertion")
    assert len(dele) == 4
    md, mi = dele[0:4], ins[1:3]
    assert md.shape == (4, 9, 7) and mi.shape == (2, 9, 7)
    top = np.argsort(-sal.numpy().ravel())
    for k, c in enumerate(counts):
        removed = np.flatnonzero(md[k].numpy().ravel() == 0)
        assert sorted(removed) == sorted(top[:c])
    assert torch.equal(mi, 1 - md[1:3])


def test_deletion_flip_matches_closed_form():
    image, f, saliency, region = square_setup()
    mu = image[0].mean().item()  # the mean fill (S-RISE §3.3)
    theta = 0.5
    res = deletion(f, image, saliency, threshold=theta, step=0.01)
    counts = step_counts(H * W, 0.01)
    # after removing r square pixels f = 1 - r (1 - mu) / 400: flips below theta when
    r_star = 400 * (1 - theta) / (1 - mu)
    k = int(np.flatnonzero(counts > r_star)[0])
    assert res.flip_index == k
    assert res.flip_fraction == pytest.approx(counts[k] / (H * W))
    # the curve itself: linear in the removed square pixels, then flat
    removed_in_square = np.minimum(counts, 400)
    np.testing.assert_allclose(res.scores, 1 - removed_in_square * (1 - mu) / 400, atol=1e-5)
    assert res.scores[0] == pytest.approx(1.0)
    assert res.fractions[0] == 0 and res.fractions[-1] == 1


def test_insertion_flip_matches_closed_form():
    image, f, saliency, region = square_setup()
    mu = image[0].mean().item()
    theta = 0.5
    res = insertion(f, image, saliency, threshold=theta, step=0.01)
    counts = step_counts(H * W, 0.01)
    # after adding r square pixels onto the mean image f = mu + r (1 - mu) / 400 >= theta when
    k = int(np.flatnonzero(mu + np.minimum(counts, 400) * (1 - mu) / 400 >= theta)[0])
    assert res.flip_index == k
    assert res.scores[0] == pytest.approx(mu, abs=1e-6)
    assert res.scores[-1] == pytest.approx(1.0, abs=1e-6)


def test_good_map_beats_inverted_map():
    image, f, saliency, region = square_setup()
    good = deletion(f, image, saliency, threshold=0.5)
    bad = deletion(f, image, -saliency, threshold=0.5)
    assert good.flip_fraction < 0.05 < 0.9 < bad.flip_fraction
    assert good.auc < bad.auc
    good_i = insertion(f, image, saliency, threshold=0.5)
    bad_i = insertion(f, image, -saliency, threshold=0.5)
    assert good_i.flip_fraction < bad_i.flip_fraction and good_i.auc > bad_i.auc
    assert METRICS["deletion_auc"].higher_is_better is False
    assert METRICS["insertion_auc"].higher_is_better is True
    assert METRICS["deletion_flip"].higher_is_better is False


def test_forward_passes_one_per_curve_point_and_batch_invariance():
    image, f, saliency, _ = square_setup()
    counted = CountingScore(f)
    res = deletion(counted, image, saliency, threshold=0.5, step=0.01, batch_size=32)
    assert len(res.scores) == 101  # 100 steps of 1 % plus the start point
    assert res.n_forward == counted.n_forward == 101
    assert counted.n_calls == math.ceil(101 / 32)
    res7 = deletion(f, image, saliency, threshold=0.5, step=0.01, batch_size=7)
    np.testing.assert_array_equal(res.scores, res7.scores)


def test_no_flip_gives_nan_and_no_threshold_gives_auc_only():
    image, f, saliency, _ = square_setup()
    res = deletion(f, image, saliency, threshold=-1.0, step=0.1)  # always "match"
    assert res.flip_index is None and math.isnan(res.flip_fraction) and not res.flipped
    res2 = deletion(f, image, saliency, step=0.1)
    assert res2.flip_index is None
    np.testing.assert_allclose(res2.auc, trapezoid(res2.scores, res2.fractions))


def test_decision_flip_and_auc_helpers():
    assert decision_flip([0.9, 0.8, 0.4, 0.7], 0.5, "deletion") == 2
    assert decision_flip([0.1, 0.3, 0.6, 0.9], 0.5, "insertion") == 2
    assert decision_flip([0.6, 0.3, 0.6, 0.9], 0.5, "insertion") == 0
    # a distance score (match when low) flips the same way: only the side of t matters
    assert decision_flip([0.2, 0.3, 0.7], 0.5, "deletion") == 2
    assert curve_auc([0, 0.5, 1], [1, 1, 0]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        decision_flip([1, 0], 0.5, "sideways")


def test_clear_errors():
    image, f, saliency, _ = square_setup()
    with pytest.raises(ValueError, match="must match the image size"):
        deletion(f, image, saliency[:50], threshold=0.5)
    bad = saliency.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        deletion(f, image, bad, threshold=0.5)


def test_directions_are_declared_once_on_the_function_objects():
    from xfr.metrics.base import METRICS as registry

    assert registry["insertion_auc"].function is insertion and registry["deletion_auc"].function is deletion
    # insertion's flip fraction (lower is better) and AUC (higher is better) point different ways,
    # so the function carries one direction per value and no single one
    assert insertion.directions == {"flip_fraction": False, "auc": True}
    assert not hasattr(insertion, "higher_is_better") and deletion.higher_is_better is False
    for info in registry.values():
        assert info.function.directions[info.field] is info.higher_is_better


@pytest.mark.parametrize("curve", [deletion, insertion])
@pytest.mark.parametrize("threshold", [0.5, 0.05, 0.95, 2.0])
def test_stop_at_flip_gives_the_whole_curves_flip_for_fewer_passes(curve, threshold):
    image, f, saliency, _ = square_setup()
    saliency = saliency + 0.3 * torch.rand(H, W, generator=torch.Generator().manual_seed(2))
    whole = curve(f, image, saliency, threshold=threshold, step=0.01, fill=0.0)
    counted = CountingScore(f)
    early = curve(counted, image, saliency, threshold=threshold, step=0.01, fill=0.0, batch_size=7,
                  stop_at_flip=True)
    assert early.flip_index == whole.flip_index
    assert early.flip_fraction == whole.flip_fraction or (math.isnan(early.flip_fraction)
                                                         and math.isnan(whole.flip_fraction))
    scored = ~np.isnan(early.scores)
    np.testing.assert_allclose(early.scores[scored], whole.scores[scored], rtol=1e-6)
    assert early.n_forward == counted.n_forward == scored.sum()
    if whole.flipped and whole.flip_index < len(whole.scores) - 1:
        assert early.n_forward < whole.n_forward and math.isnan(early.auc)
    else:
        assert early.auc == pytest.approx(whole.auc)
    with pytest.raises(ValueError, match="needs a threshold"):
        curve(f, image, saliency, stop_at_flip=True)
