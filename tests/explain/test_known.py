"""Known-answer tests of the explainers on small analytic score functions."""
import numpy as np
import pytest
import torch

from xfr.explain import (
    avg,
    lime,
    lime_map,
    minplus,
    minplus_maps,
    occlusion,
    rise,
    rise_gauss,
    srise,
    srise_pair,
    xmaps,
)

H, W = 24, 32
R = (slice(6, 14), slice(18, 28))  # the known region


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on shared CPUs
    yield
    torch.set_num_threads(n)


def _structured_image():
    """A smooth bluish background with a distinct orange block on R (so superpixels follow R)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    img = torch.stack([0.15 + 0.1 * xx, 0.25 + 0.1 * yy, 0.55 + 0.05 * xx])
    img[:, R[0], R[1]] = torch.tensor([0.95, 0.6, 0.15])[:, None, None]
    return img


def _region_mask():
    m = torch.zeros(H, W, dtype=torch.bool)
    m[R] = True
    return m


def region_mean(x):
    """f(X) = mean intensity of X inside R."""
    return x[:, :, R[0], R[1]].mean(dim=(1, 2, 3))


def region_embedder(x):
    """A 2-d 'embedding' that only sees the region: [mean_R(X), 1]."""
    return torch.stack([region_mean(x), torch.ones(x.shape[0])], dim=1)


def _argmax_in_region(smap, use_abs=False):
    m = smap.abs() if use_abs else smap
    y, x = divmod(int(torch.argmax(m)), W)
    return bool(_region_mask()[y, x]), (y, x)


METHODS = [
    ("occlusion", lambda f, img: occlusion(f, img, patch=4, stride=2)),
    ("occlusion-gauss", lambda f, img: occlusion(f, img, patch=4, stride=2, shape="gaussian")),
    ("minplus", lambda f, img: minplus(f, img, t_max=5)),
    ("avg", lambda f, img: avg(f, img, t_max=5)),
    ("lime", lambda f, img: lime(f, img, n_samples=200, num_features=1, kernel_size=2, max_dist=6)),
    ("lime-map", lambda f, img: lime_map(f, img, n_samples=200, kernel_size=2, max_dist=6)),
    ("rise", lambda f, img: rise(f, img, n_masks=400, s=6)),
    ("rise-gauss", lambda f, img: rise_gauss(f, img, n_masks=400, n_blobs=6)),
    ("s-rise", lambda f, img: srise(f, img, n_masks=400, n_patches=8, kernel=8, sigma=2.0)),
]


@pytest.mark.parametrize("name,method", METHODS, ids=[m[0] for m in METHODS])
def test_maximum_inside_known_region(name, method):
    img = _structured_image()
    smap = method(region_mean, img)
    assert smap.shape == (H, W) and smap.dtype == torch.float32
    inside, where = _argmax_in_region(smap)
    assert inside, f"{name}: maximum at {where}, outside the region {R}"
    # and the region carries clearly more saliency than the rest on average
    m = _region_mask()
    assert smap[m].mean() > smap[~m].mean()


def test_srise_pair_maximum_inside_region():
    img = _structured_image()
    hp, hm = srise_pair(region_embedder, img, img.clone(), n_masks=400, n_patches=8, kernel=8,
                        sigma=2.0)
    assert _argmax_in_region(hp)[0] and _argmax_in_region(hm)[0]
    assert float(torch.stack([hp, hm]).min()) == 0.0 and float(torch.stack([hp, hm]).max()) == 1.0


@pytest.mark.parametrize("method", [1, 2, 3])
def test_xmaps_largest_effect_inside_region(method):
    img1 = _structured_image()
    img2 = img1.clone()
    img2[:, R[0], R[1]] *= 0.6  # a different region brightness, so method III sees a change
    res = xmaps(region_embedder, img1, img2, method=method, patch_sizes=(3, 5), stride=2)
    for smap in (res.map1, res.map2):
        assert float(smap.abs().max()) == pytest.approx(1.0)
        assert _argmax_in_region(smap, use_abs=True)[0]
        if method != 1:  # (method I averages over all occlusions of the other image: an offset)
            # occluders that never touch R leave the distance unchanged: S = 0 far from R
            assert float(smap[:, :8].abs().max()) < 1e-6
    if method == 3:
        assert torch.equal(res.map1, res.map2)  # co-located occlusions: identical maps


# ----------------------------------------------------------------------------- linear f
def _analytic_occlusion(x, w, patch, stride, fill, shape="square", std=None):
    """Independent evaluation of the occlusion map of f(X) = sum(W * X) with explicit loops:
    drop_k = sum over the occluder of W (X - fill) w_k, map = sum_k drop_k w_k / sum_k w_k."""
    c, h, wd = x.shape
    x, w = x.double().numpy(), w.double().numpy()
    num = np.zeros((h, wd))
    den = np.zeros((h, wd))
    ys = np.arange(int(np.ceil((h - patch) / stride)) + 1) * stride
    xs = np.arange(int(np.ceil((wd - patch) / stride)) + 1) * stride
    yy, xx = np.mgrid[0:h, 0:wd]
    for y0 in ys:
        for x0 in xs:
            if shape == "square":
                occ = ((yy >= y0) & (yy < y0 + patch) & (xx >= x0) & (xx < x0 + patch)).astype(float)
            else:
                cy, cx = y0 + (patch - 1) / 2, x0 + (patch - 1) / 2
                occ = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * std ** 2))
            drop = float((w * (x - fill) * occ[None]).sum())
            num += drop * occ
            den += occ
    return np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)


@pytest.mark.parametrize("patch,stride,fill", [(4, 2, 0.0), (5, 3, 0.25), (6, 6, 1.0), (7, 4, 0.5)])
def test_occlusion_of_linear_score_equals_analytic_value(patch, stride, fill):
    g = torch.Generator().manual_seed(patch)
    x = torch.rand(3, 18, 22, generator=g)
    w = torch.randn(3, 18, 22, generator=g)
    f = lambda imgs: (imgs * w).sum(dim=(1, 2, 3))
    got = occlusion(f, x, patch=patch, stride=stride, fill=fill).double().numpy()
    want = _analytic_occlusion(x, w, patch, stride, fill)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gaussian_occlusion_of_linear_score_equals_analytic_value():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 16, 16, generator=g)
    w = torch.randn(3, 16, 16, generator=g)
    f = lambda imgs: (imgs * w).sum(dim=(1, 2, 3))
    got = occlusion(f, x, patch=6, stride=3, fill=0.2, shape="gaussian", std=1.7).double().numpy()
    want = _analytic_occlusion(x, w, 6, 3, 0.2, shape="gaussian", std=1.7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- MinPlus order
BUMPS = [((8, 8), 3.0), ((8, 24), 2.0), ((24, 16), 1.0)]  # centres on the step-2 grid


def bump_score(x):
    """f(X) = sum_j a_j <X, B_j> / <1, B_j>: a known sum of Gaussian bumps of weights a_j."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    total = torch.zeros(x.shape[0])
    for (cy, cx), a in BUMPS:
        b = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
        total = total + a * (x.mean(dim=1) * b).sum(dim=(1, 2)) / b.sum()
    return total / 6.0


def test_minplus_recovers_the_order_of_gaussian_bumps():
    img = torch.full((3, 32, 32), 0.7)
    maps = minplus_maps(bump_score, img, width=9, step=2, theta=1e-4, t_max=12)
    final = minplus(bump_score, img, width=9, step=2, theta=1e-4, t_max=12)
    for partial in (maps.h0_minus, maps.h0_plus):
        vals = [float(partial[c]) for c, _ in BUMPS]
        assert vals[0] > vals[1] > vals[2] > 0
    # the iterative maps remove / add the most important bump first, and reach all three
    for partial in (maps.h1_minus, maps.h1_plus):
        vals = [float(partial[c]) for c, _ in BUMPS]
        assert vals[0] > vals[1] > vals[2] > 0
        assert divmod(int(partial.argmax()), 32) == BUMPS[0][0]
    vals = [float(final[c]) for c, _ in BUMPS]
    assert vals[0] > vals[1] > vals[2]
    assert float(final.max()) == 1.0 and float(final.min()) == 0.0
    y, x = divmod(int(final.argmax()), 32)
    assert abs(y - 8) <= 2 and abs(x - 8) <= 2
