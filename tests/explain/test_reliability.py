"""Scorings of the RISE family (raw / centred / coverage), S-RISE's two mask readings and the
reliability tools (prefix maps, split-half reliability, masks needed): known answers on
analytic score functions and invariances."""
import numpy as np
import pytest
import torch

from xfr.explain import lime, lime_map, rise, rise_gauss, srise
from xfr.explain.common import GroupedMaskSums
from xfr.explain.masks import SRiseMasks
from xfr.explain.reliability import (
    explain_with_reliability,
    masks_needed,
    prefix_maps,
    spearman_brown,
)

H = W = 24
REGION = (slice(6, 12), slice(8, 16))


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed)) * 0.5 + 0.25


def region_mean(x: torch.Tensor) -> torch.Tensor:
    return x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))


def _region() -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[REGION] = True
    return m


def test_grouped_sums_known_answers():
    masks = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])  # 3 masks of 1 x 2 pixels
    scores = torch.tensor([1.0, 2.0, 6.0])
    acc = GroupedMaskSums((1, 2))
    acc(masks, scores, 0)
    torch.testing.assert_close(acc.map("raw"), torch.tensor([[3.0 / 3, 8.0 / 3]], dtype=torch.float64))
    # centred: weights minus the mean score 3
    torch.testing.assert_close(acc.map("centred"), torch.tensor([[(-2 - 1) / 3, (-1 + 3) / 3]], dtype=torch.float64))
    # coverage: mean score of the masks keeping the pixel minus the mean score
    torch.testing.assert_close(acc.map("coverage"), torch.tensor([[1.5 - 3, 4.0 - 3]], dtype=torch.float64))
    assert acc.mean_mask_value() == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="scoring must be one of"):
        acc.map("mean")


def test_groups_add_up_to_the_whole():
    masks = torch.rand(10, 4, 5, generator=torch.Generator().manual_seed(1))
    scores = torch.rand(10, generator=torch.Generator().manual_seed(2))
    whole, halves = GroupedMaskSums((4, 5)), GroupedMaskSums((4, 5), 2, lambda idx: idx % 2)
    for start in (0, 3, 7):
        stop = {0: 3, 3: 7, 7: 10}[start]
        whole(masks[start:stop], scores[start:stop], start)
        halves(masks[start:stop], scores[start:stop], start)
    for scoring in ("raw", "centred", "coverage"):
        torch.testing.assert_close(halves.map(scoring), whole.map(scoring))
    even = GroupedMaskSums((4, 5))
    even(masks[::2], scores[::2], 0)
    torch.testing.assert_close(halves.map("centred", [0]), even.map("centred"))


@pytest.mark.parametrize("explainer", [
    lambda f, x, **k: rise(f, x, n_masks=60, s=4, **k),
    lambda f, x, **k: rise_gauss(f, x, n_masks=60, n_blobs=5, **k),
    lambda f, x, **k: srise(f, x, n_masks=60, n_patches=6, kernel=7, sigma=2.0, normalize=False, **k),
    lambda f, x, **k: lime_map(f, x, n_samples=60, kernel_size=2, max_dist=6, **k),
], ids=["rise", "rise-gauss", "s-rise", "lime-map"])
def test_a_score_that_ignores_the_image_gives_an_empty_centred_map(explainer):
    """With a constant score the raw map is the mask density (pure noise of the draw); the centred
    map removes it exactly."""
    f = lambda x: torch.full((x.shape[0],), 0.9)  # noqa: E731
    x = _image()
    raw = explainer(f, x, scoring="raw")
    assert float(raw.std()) > 0
    centred = explainer(f, x)
    assert float(centred.abs().max()) < 1e-6


def test_centred_maps_find_the_region_with_fewer_masks_than_raw_ones():
    """A score in a narrow band (like a verification cosine 0.9 +- 0.02): the raw map's ranking is
    dominated by the mask density, the centred map's by the region."""
    f = lambda x: 0.9 + 0.02 * region_mean(x)  # noqa: E731
    x = _image(3)
    m = _region()
    auc = {}
    for scoring in ("raw", "centred"):
        smap = rise(f, x, n_masks=200, s=4, seed=0, scoring=scoring)
        inside, outside = smap[m], smap[~m]
        auc[scoring] = float((inside[:, None] > outside[None, :]).double().mean())
    assert auc["centred"] > 0.95
    assert auc["raw"] < auc["centred"] - 0.1


def test_srise_remove_reading_is_the_complement_of_keep():
    keep = SRiseMasks((H, W), 5, 6, 7, 2.0, seed=4).all()
    remove = SRiseMasks((H, W), 5, 6, 7, 2.0, seed=4, patches="remove").all()
    torch.testing.assert_close(remove, 1.0 - keep)
    assert float(keep.mean()) > 0 and float(remove.mean()) > 0
    with pytest.raises(ValueError, match="patches must be one of"):
        SRiseMasks((H, W), 5, patches="both")
    with pytest.raises(ValueError, match="patches must be one of"):
        srise(region_mean, _image(), n_masks=4, kernel=7, patches="kept")


@pytest.mark.parametrize("patches", ["keep", "remove"])
def test_srise_both_readings_find_the_region(patches):
    x = _image(5)
    smap = srise(region_mean, x, n_masks=300, n_patches=8, kernel=8, sigma=2.0, patches=patches, seed=1)
    m = _region()
    assert smap[m].mean() > smap[~m].mean()


CASES = [
    ("rise", rise, dict(n_masks=50, s=4)),
    ("rise-gauss", rise_gauss, dict(n_masks=40, n_blobs=5)),
    ("s-rise", srise, dict(n_masks=40, n_patches=6, kernel=7, sigma=2.0)),
    ("lime", lime, dict(n_samples=40, kernel_size=2, max_dist=6)),
    ("lime-map", lime_map, dict(n_samples=40, kernel_size=2, max_dist=6)),
]


@pytest.mark.parametrize("method,explainer,kw", CASES, ids=[c[0] for c in CASES])
def test_explain_with_reliability_returns_the_explainers_map(method, explainer, kw):
    x = _image(1)
    ref = explainer(region_mean, x, seed=2, batch_size=7, **kw)
    ours, rho = explain_with_reliability(region_mean, x, method, seed=2, batch_size=16, **kw)
    torch.testing.assert_close(ours, ref)
    assert -1.0 <= rho <= 1.0


@pytest.mark.parametrize("method,explainer,kw", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_prefix_maps_equal_runs_with_fewer_masks(method, explainer, kw):
    x = _image(2)
    kw = {k: v for k, v in kw.items() if k != "n_masks"}
    maps, n_forward = prefix_maps(region_mean, x, method, [10, 25], seed=3, scorings=("raw", "centred"),
                                  batch_size=6, **kw)
    assert n_forward == 25
    for n in (10, 25):
        for scoring in ("raw", "centred"):
            ref = explainer(region_mean, x, n_masks=n, seed=3, scoring=scoring, **kw)
            torch.testing.assert_close(maps[(scoring, n)], ref, rtol=1e-4, atol=1e-6)


def test_split_half_reliability_separates_signal_from_noise():
    x = _image(4)
    _, rho_signal = explain_with_reliability(region_mean, x, "rise", n_masks=400, s=4)
    gen = torch.Generator().manual_seed(0)
    noise = lambda imgs: torch.rand(imgs.shape[0], generator=gen)  # noqa: E731
    _, rho_noise = explain_with_reliability(noise, x, "rise", n_masks=400, s=4)
    assert rho_signal > 0.9
    assert rho_noise < 0.6  # 24 x 24 smooth maps: few independent values, a wide null distribution


def test_spearman_brown_and_masks_needed_known_answers():
    assert spearman_brown(0.5, 2.0) == pytest.approx(2 / 3)
    assert spearman_brown(0.9, 1.0) == pytest.approx(0.9)
    assert np.isnan(spearman_brown(float("nan"), 2.0))
    assert masks_needed([100, 200, 400], [0.5, 0.92, 0.95]) == (200.0, True)
    # rho(200) = 0.5 -> one mask r = 0.5 / (200 - 199 * 0.5) = 1/201; rho 0.9 needs 9 * 200 = 1800
    n, measured = masks_needed([100, 200], [0.3, 0.5])
    assert not measured and n == pytest.approx(1800, abs=1)
    assert masks_needed([100], [-0.1]) == (float("inf"), False)


def test_unknown_method_and_parameters_are_clear_errors():
    x = _image()
    with pytest.raises(ValueError, match="unknown random method"):
        explain_with_reliability(region_mean, x, "minplus")
    with pytest.raises(ValueError, match="unknown parameters for rise"):
        explain_with_reliability(region_mean, x, "rise", n_masks=10, n_blobs=3)
    with pytest.raises(ValueError, match="mask counts"):
        prefix_maps(region_mean, x, "rise", [1, 5])
    with pytest.raises(ValueError, match="scoring must be one of"):
        rise(region_mean, x, n_masks=4, scoring="debiased")
