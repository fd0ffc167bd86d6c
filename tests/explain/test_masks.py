"""Mask generators: each mask against a direct (dense, loop) construction; mask k depends only on
(seed, k); coverage properties the aggregators rely on."""
import numpy as np
import pytest
import torch

from xfr.explain.common import gaussian_smooth, window_offsets
from xfr.explain.masks import (
    GaussianBlobMasks,
    GaussianMasks,
    PatchMasks,
    RiseMasks,
    SRiseMasks,
    SuperpixelMasks,
    sliding_positions,
    xmaps_positions,
)


def _truncated_gaussian(hw, cy, cx, std, offsets):
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    dy, dx = yy - cy, xx - cx
    inside = (dy >= offsets[0]) & (dy <= offsets[-1]) & (dx >= offsets[0]) & (dx <= offsets[-1])
    return np.exp(-0.5 * (dy ** 2 + dx ** 2) / std ** 2) * inside


def test_minplus_gaussian_masks_are_the_reference_define_gaussian_mask():
    """1 - G: a width x width window (std width/8.5, peak 1) centred at (i, j), 1 elsewhere."""
    hw, width = (30, 26), 13
    centers = np.array([[4, 4], [15, 20], [29, 0]])
    removal = GaussianMasks(hw, centers, width, invert=True).all().double().numpy()
    agg = GaussianMasks(hw, centers, width, invert=False).all().double().numpy()
    for k, (cy, cx) in enumerate(centers):
        g = _truncated_gaussian(hw, cy, cx, width / 8.5, window_offsets(width))
        np.testing.assert_allclose(removal[k], 1 - g, atol=1e-6)
        np.testing.assert_allclose(agg[k], g, atol=1e-6)
        assert agg[k][cy, cx] == pytest.approx(1.0)


def test_srise_masks_are_clipped_sums_of_gaussian_patches_with_uniform_coverage():
    gen = SRiseMasks((40, 36), 3000, n_patches=12, kernel=8, sigma=2.0, seed=1)
    masks = gen.all().double().numpy()
    off = window_offsets(8)
    for k in (0, 7, 2999):
        ref = sum(_truncated_gaussian((40, 36), cy, cx, 2.0, off) for cy, cx in gen.draw(k))
        np.testing.assert_allclose(masks[k], np.clip(ref, 0, 1), atol=1e-6)
    cov = masks.mean(axis=0)  # stationary: borders covered as often as the centre
    assert cov.min() > 0.85 * cov.mean() and cov.max() < 1.15 * cov.mean()


def test_gaussian_blob_masks_are_unions_of_truncated_gaussians():
    gen = GaussianBlobMasks((24, 30), 5, n_blobs=6, width_range=(5, 21), seed=2)
    masks = gen.all().double().numpy()
    for k in range(5):
        centers, widths = gen.draw(k)
        keep_out = np.ones((24, 30))
        for (cy, cx), w in zip(centers, widths):
            yy, xx = np.mgrid[0:24, 0:30]
            half = (w - 1) / 2
            inside = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
            g = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / (w / 8.5) ** 2) * inside
            keep_out *= 1 - g
        np.testing.assert_allclose(masks[k], 1 - keep_out, atol=1e-6)


@pytest.mark.parametrize("gen", [
    RiseMasks((20, 24), 30, s=4, p=0.3, seed=9),
    GaussianBlobMasks((20, 24), 30, n_blobs=4, width_range=(5, 15), seed=9),
    SRiseMasks((20, 24), 30, n_patches=5, kernel=6, sigma=1.5, seed=9),
    SuperpixelMasks(np.arange(20 * 24).reshape(20, 24) // 40, 30, seed=9),
], ids=["rise", "rise-gauss", "s-rise", "superpixels"])
def test_mask_k_depends_only_on_seed_and_k(gen):
    full = gen.all()
    assert full.shape == (30, 20, 24) and full.dtype == torch.float32
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0
    for start, stop in ((0, 1), (5, 12), (29, 30)):
        torch.testing.assert_close(gen[start:stop], full[start:stop], rtol=0, atol=0)
    torch.testing.assert_close(gen[17], full[17], rtol=0, atol=0)
    assert not torch.equal(full[0], full[1])


def test_superpixel_masks_switch_whole_superpixels():
    seg = np.repeat(np.arange(6), 8).reshape(6, 8)  # 6 row-superpixels
    gen = SuperpixelMasks(seg, 50, seed=0)
    z = gen.z(np.arange(50))
    assert torch.equal(z[0], torch.ones(6))  # sample 0 is the original
    masks = gen.all()
    for k in range(50):
        assert torch.equal(masks[k], z[k][torch.from_numpy(seg)])
    assert 0.35 < float(z[1:].mean()) < 0.65


def test_window_positions():
    # captum: ceil((size - window) / stride) + 1 positions, the last clipped at the border
    np.testing.assert_array_equal(sliding_positions(20, 6, 4), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(sliding_positions(20, 5, 5), [0, 5, 10, 15])
    # X-Maps eq. 4: floor((112 - p) / s) positions per axis
    assert len(xmaps_positions(112, 7, 5)) == 21
    assert len(xmaps_positions(112, 14, 5)) == 19
    assert len(xmaps_positions(112, 28, 5)) == 16
    masks = PatchMasks((20, 20), sliding_positions(20, 6, 4), sliding_positions(20, 6, 4), 6)
    covered = (1 - masks.all()).sum(dim=0)
    assert float(covered.min()) >= 1  # every pixel is occluded at least once


def test_gaussian_smooth_is_cv2_filter2d():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    h = np.zeros((40, 34))
    h[5::6, 3::5] = rng.random(h[5::6, 3::5].shape)
    for width in (9, 21, 71):  # 71 > image: the reflect-101 border folds several times
        x = np.arange(-(width // 2), width // 2 + 1)
        k1 = np.exp(-0.5 * (x / (width / 8.5)) ** 2)
        ref = cv2.filter2D(h, -1, np.outer(k1, k1), borderType=cv2.BORDER_REFLECT_101)
        got = gaussian_smooth(torch.from_numpy(h), width).double().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
