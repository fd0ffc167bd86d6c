"""xfr.explain.srise.srise_prefix_maps: the maps of several mask counts from one run equal
separate S-RISE runs, and the centered maps equal their explicit sums."""
import pytest
import torch

from tests.helpers import TinyEmbedder, _images
from xfr.explain import srise
from xfr.explain.srise import srise_prefix_maps
from xfr.score import verification_score


def test_srise_prefix_maps_equal_separate_srise_runs():
    a, b = _images()
    emb = TinyEmbedder()
    f = verification_score(emb, b)
    kw = dict(n_patches=5, kernel=9, sigma=2.0, seed=3)
    pm = srise_prefix_maps(f, a, [3, 10, 17], batch_size=4, **kw)
    assert pm.n_forward == 17
    for n in (3, 10, 17):
        ref = srise(f, a, n_masks=n, normalize=False, batch_size=5, scoring="raw", **kw)
        torch.testing.assert_close(pm.maps[n], ref, rtol=1e-5, atol=1e-6)
        ref = srise(f, a, n_masks=n, normalize=False, batch_size=5, **kw)  # default: centred
        torch.testing.assert_close(pm.centered[n], ref, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(pm.maps[3], pm.maps[17])


def test_srise_prefix_centered_maps_by_explicit_sum():
    from xfr.explain.masks import SRiseMasks

    a, b = _images(5)
    f = verification_score(TinyEmbedder(1), b)
    pm = srise_prefix_maps(f, a, [4, 9], n_patches=5, kernel=9, sigma=2.0, seed=1, batch_size=3)
    masks = SRiseMasks((24, 24), 9, 5, 9, 2.0, seed=1).all().double()  # keep masks [9, H, W]
    scores = f(masks[:, None].float() * a[None]).double()  # black fill: x * m
    for n in (4, 9):
        w = scores[:n] - scores[:n].mean()
        ref = (w[:, None, None] * masks[:n]).sum(0) / n
        torch.testing.assert_close(pm.centered[n].double(), ref, rtol=1e-4, atol=1e-7)
        raw = (scores[:n, None, None] * masks[:n]).sum(0) / n
        torch.testing.assert_close(pm.maps[n].double(), raw, rtol=1e-4, atol=1e-7)


def test_srise_prefix_maps_rejects_bad_counts():
    a, b = _images()
    f = verification_score(TinyEmbedder(), b)
    with pytest.raises(ValueError, match="positive"):
        srise_prefix_maps(f, a, [0, 5])
