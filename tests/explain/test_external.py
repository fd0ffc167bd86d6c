"""External checks: our occlusion against captum's Occlusion, our RISE against a direct
implementation of the RISE formula on the same masks (and of Petsiuk et al.'s mask recipe)."""
import numpy as np
import pytest
import torch
from torch import nn

from xfr.explain import lime_explain, occlusion, rise
from xfr.explain.masks import RiseMasks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    ).eval()


@pytest.mark.parametrize("hw,patch,stride,baseline", [
    ((20, 20), 6, 4, 0.0),   # (20-6)/4 not an integer: captum clips the last window
    ((24, 18), 5, 5, 0.3),
    ((16, 22), 4, 2, 1.0),
])
def test_occlusion_equals_captum(hw, patch, stride, baseline):
    from captum.attr import Occlusion

    model = small_cnn()
    x = torch.rand(3, *hw, generator=torch.Generator().manual_seed(1))
    target = 1
    with torch.no_grad():
        ref = Occlusion(model).attribute(
            x[None], sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
            baselines=baseline, target=target, perturbations_per_eval=16)[0]
    # the window spans all channels: captum gives the same attribution to every channel
    assert torch.allclose(ref[0], ref[1]) and torch.allclose(ref[0], ref[2])
    f = lambda imgs: model(imgs)[:, target]
    ours = occlusion(f, x, patch=patch, stride=stride, fill=baseline, batch_size=7)
    torch.testing.assert_close(ours, ref[0].float(), rtol=1e-4, atol=1e-5)


def test_rise_equals_direct_formula_on_the_same_masks():
    model = small_cnn()
    x = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(2))
    n, s, p, fill = 60, 5, 0.4, 0.25
    masks = RiseMasks((20, 24), n, s=s, p=p, seed=7).all().double().numpy()
    xn = x.double().numpy()
    sal = np.zeros((20, 24))
    with torch.no_grad():
        for m in masks:  # S = 1/(N p) sum_k f(X o M_k + (1 - M_k) fill) M_k, one image at a time
            xk = xn * m[None] + (1.0 - m[None]) * fill
            score = float(torch.softmax(model(torch.from_numpy(xk).float()[None]), 1)[0, 2])
            sal += score * m
    sal /= n * p
    f = lambda imgs: torch.softmax(model(imgs), 1)[:, 2]
    ours = rise(f, x, n_masks=n, s=s, p=p, fill=fill, seed=7, batch_size=16, scoring="raw")
    np.testing.assert_allclose(ours.double().numpy(), sal, rtol=1e-5, atol=1e-6)
    # centred scoring: the same sum without the mean score times the mask density
    with torch.no_grad():
        scores = f(torch.from_numpy(xn[None] * masks[:, None] + (1.0 - masks[:, None]) * fill).float()).double().numpy()
    centred = ((scores - scores.mean())[:, None, None] * masks).sum(0) / (n * p)
    ours = rise(f, x, n_masks=n, s=s, p=p, fill=fill, seed=7, batch_size=16)
    np.testing.assert_allclose(ours.double().numpy(), centred, rtol=1e-4, atol=1e-6)


def test_rise_masks_follow_petsiuk_recipe():
    """Mask k = bilinear upsampling of its s x s binary grid to (s+1)*cell, cropped at its shift:
    compared with scikit-image's order-1 resize (Petsiuk et al.'s code) away from the canvas
    border, where the two differ only in border mode."""
    from skimage.transform import resize

    hw, s, p = (40, 36), 6, 0.5
    gen = RiseMasks(hw, 20, s=s, p=p, seed=3)
    cell = (int(np.ceil(hw[0] / s)), int(np.ceil(hw[1] / s)))
    up = ((s + 1) * cell[0], (s + 1) * cell[1])
    masks = gen.all().numpy()
    for k in range(20):
        grid, dy, dx = gen.draw(k)
        ref = resize(grid, up, order=1, mode="reflect", anti_aliasing=False)[dy:dy + hw[0], dx:dx + hw[1]]
        rows = np.arange(hw[0]) + dy
        cols = np.arange(hw[1]) + dx
        band = (up[0] / s / 2, up[1] / s / 2)  # half a grid cell, in canvas pixels
        ok_r = (rows >= band[0]) & (rows < up[0] - band[0])
        ok_c = (cols >= band[1]) & (cols < up[1] - band[1])
        np.testing.assert_allclose(masks[k][np.ix_(ok_r, ok_c)], ref[np.ix_(ok_r, ok_c)], atol=1e-5)
    assert abs(masks.mean() - p) < 0.1
    assert masks.min() >= 0 and masks.max() <= 1


def test_lime_linear_model_matches_sklearn_ridge_on_the_samples():
    """The LIME coefficients are lime's kernel-weighted Ridge fit of the recorded scores."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    from xfr.explain.masks import SuperpixelMasks

    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(4))
    seg = np.repeat(np.repeat(np.arange(9).reshape(3, 3), 4, axis=0), 4, axis=1)
    w = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(5))
    f = lambda imgs: (imgs * w).sum(dim=(1, 2, 3))
    e = lime_explain(f, x, n_samples=80, num_features=4, segments=seg, seed=11)
    gen = SuperpixelMasks(seg, 80, seed=11)
    z = gen.z(np.arange(80)).numpy().astype(float)
    y = np.array([float(f((x * m)[None])[0]) for m in gen.all()])
    d = pairwise_distances(z, np.ones((1, 9)), metric="cosine").ravel()
    ridge = Ridge(alpha=1.0).fit(z, y, sample_weight=np.sqrt(np.exp(-d ** 2 / 0.25 ** 2)))
    np.testing.assert_allclose(e.coef.numpy(), ridge.coef_, rtol=1e-4, atol=1e-5)
    # f is linear in the superpixels: the fitted coefficients are the superpixel contributions
    contrib = np.array([float(((x * w)[:, seg == i]).sum()) for i in range(9)])
    assert np.corrcoef(e.coef.numpy(), contrib)[0, 1] > 0.95
    top = set(e.top.tolist())
    positive = [i for i in np.argsort(-ridge.coef_) if ridge.coef_[i] > 0]
    assert top == set(positive[:4])
