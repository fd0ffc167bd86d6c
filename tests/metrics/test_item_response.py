"""Item-response curves (survey §6): perturbations at strength 0 are the identity, herding, match
rates with Wilson intervals, forward-pass counts, batch-size invariance, errors."""
import numpy as np
import pytest
import torch

from xfr.metrics import higher_is_better, item_response_curves
from xfr.metrics.item_response import (
    RegionOcclusion,
    additive_noise,
    contrast_reduction,
    gaussian_blur,
    herd,
    standard_perturbations,
    wilson_interval,
)


def images(n=4, hw=16, seed=0):
    return torch.rand(n, 3, hw, hw, generator=torch.Generator().manual_seed(seed))


def test_strength_zero_is_identity_and_strength_one_extremes():
    x = images()
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:12] = True
    for name, fn in standard_perturbations({"nose": masks}).items():
        assert torch.equal(fn(x, 0.0, torch.arange(4)), x), name
        y = fn(x, 0.5, torch.arange(4))
        assert y.shape == x.shape and not torch.equal(y, x) and 0 <= float(y.min()) <= float(y.max()) <= 1, name
    flat = contrast_reduction(x, 1.0)
    assert torch.allclose(flat, x.mean((1, 2, 3), keepdim=True).expand_as(x))
    # blur keeps a constant image and the mean of a smooth one; stronger blur = smoother
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.0), const)
    assert gaussian_blur(x, 1.0).diff(dim=-1).abs().mean() < gaussian_blur(x, 0.3).diff(dim=-1).abs().mean()


def test_noise_is_seeded_per_row():
    x = images(6)
    rows = torch.arange(6)
    a = additive_noise(x, 0.3, rows, seed=1)
    b = torch.cat([additive_noise(x[:2], 0.3, rows[:2], seed=1), additive_noise(x[2:], 0.3, rows[2:], seed=1)])
    assert torch.equal(a, b)
    assert not torch.equal(a, additive_noise(x, 0.3, rows, seed=2))


def test_region_occlusion_coverage_and_opacity():
    x = torch.zeros(1, 3, 8, 8)
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 2:6, 2:6] = True  # 16 pixels
    cov = RegionOcclusion(m, "coverage", fill=1.0)
    for s, k in ((0.25, 4), (0.5, 8), (1.0, 16)):
        y = cov(x, s, torch.tensor([0]))
        assert int((y[0, 0] == 1).sum()) == k and not (y[0, 0][~m[0]] != 0).any()
    assert (cov(x, 0.25)[0, 0][3:5, 3:5] == 1).all()  # the centre first
    op = RegionOcclusion(m, "opacity", fill=1.0)
    y = op(x, 0.4)
    assert torch.allclose(y[0, :, m[0]], torch.full((3, 16), 0.4)) and (y[0, :, ~m[0]] == 0).all()
    with pytest.raises(ValueError, match="mode must be"):
        RegionOcclusion(m, "nope")
    with pytest.raises(ValueError, match="masks must be a Tensor"):
        RegionOcclusion(m[0])
    with pytest.raises(ValueError, match="rows must index"):
        cov(x, 0.5, torch.tensor([3]))


def darkness_embed(x):
    """Toy embedder on a 1-d circle: the grey mean m -> (cos, sin) of angle 3 m; similarity falls
    as the two images' brightness differs."""
    m = x.mean((1, 2, 3)) * 3.0
    return torch.stack([torch.cos(m), torch.sin(m)], 1)


def test_herding_and_identity_perturbation():
    g = torch.full((5, 3, 4, 4), 0.5)
    p = g.clone()
    p[3] = 0.0  # pair 3 fails unperturbed
    p[4] = 0.45  # pair 4 is slightly off but matches
    ident = {"identity": lambda x, s, rows: x}
    tau = 0.95
    s0 = torch.cos(torch.tensor([0.0, 0.0, 0.0, 1.5, 0.15])).numpy()
    res = item_response_curves(darkness_embed, (g, p), ident, [0.0, 1.0], tau, herding=False)
    assert res.table.match_rate.tolist() == [pytest.approx(4 / 5)] * 2 and res.table.n.tolist() == [5, 5]
    assert np.allclose(res.s_unperturbed, s0, atol=1e-6)
    res = item_response_curves(darkness_embed, (g, p), ident, [0.0, 0.5], tau, batch_size=2)
    assert res.kept.tolist() == [True, True, True, False, True] and res.n_herded_out == 1
    assert res.table.match_rate.tolist() == [1.0, 1.0] and res.table.n.tolist() == [4, 4]
    assert res.n_forward == 2 * 5 + 2 * 4
    assert (res.table.ci_low.iloc[0], res.table.ci_high.iloc[0]) == pytest.approx(wilson_interval(4, 4))
    kept, dropped = herd(s0, tau, identities=["a", "b", "c", "b", "d"])
    assert kept.tolist() == [True, False, True, False, True] and dropped == ["b"]
    assert higher_is_better("item_response_match_rate")


def test_curves_fall_with_contrast_and_batch_invariance():
    g = images(6, 8, seed=1) * 0.5 + 0.25
    p = g.clone()
    pert = standard_perturbations()
    a = item_response_curves(darkness_embed, (g, p), pert, [0.0, 0.5, 1.0], tau=0.999, batch_size=64)
    b = item_response_curves(darkness_embed, (g, p), pert, [0.0, 0.5, 1.0], tau=0.999, batch_size=4)
    assert a.table.equals(b.table)
    assert a.match_rate.shape == (3, 3) and (a.match_rate[:, 0] == 1.0).all()
    assert set(a.similarity) == {"blur", "noise", "contrast"} and a.similarity["noise"].shape == (3, 6)


def test_errors():
    g = images(2)
    ident = {"identity": lambda x, s, rows: x}
    with pytest.raises(ValueError, match="strength must be in"):
        item_response_curves(darkness_embed, (g, g), ident, [1.5], 0.9)
    with pytest.raises(ValueError, match="pairs must be"):
        item_response_curves(darkness_embed, g, ident, [0.5], 0.9)
    with pytest.raises(ValueError, match="same number"):
        item_response_curves(darkness_embed, (g, g[:1]), ident, [0.5], 0.9)
    with pytest.raises(ValueError, match="perturbations must map"):
        item_response_curves(darkness_embed, (g, g), {}, [0.5], 0.9)
    with pytest.raises(ValueError, match="must return images"):
        item_response_curves(darkness_embed, (g, g), {"bad": lambda x, s, r: x[:, :1]}, [0.5], 0.9)
    with pytest.raises(ValueError, match="identities"):
        herd([0.5, 0.9], 0.8, identities=["a"])
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)
    assert np.isnan(wilson_interval(0, 0)[0])


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)  # textbook value: 0.4902 - 0.9433
    assert (lo, hi) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
