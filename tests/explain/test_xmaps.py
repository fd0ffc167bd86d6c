"""xfr.explain.xmaps: the one-occluder X-Map (xmap_single) equals X-Maps method III, occluder
variants change it, and the occluder kind of xmaps_methods is the one xmap_single uses."""
import pytest
import torch

from tests.helpers import TinyEmbedder, _images
from xfr.explain import xmaps
from xfr.explain.xmaps import xmap_single


@pytest.mark.parametrize("patch,stride", [(7, 5), (5, 3)])
def test_xmap_single_square_equals_xmaps_method3(patch, stride):
    a, b = _images(1)
    emb = TinyEmbedder(2)
    raw, d = xmap_single(emb, a, b, patch, stride, blur=False, batch_size=7)
    ref = xmaps(emb, a, b, method=3, patch_sizes=(patch,), stride=stride, blur=False)
    torch.testing.assert_close(raw, ref.raw1, rtol=1e-4, atol=1e-7)
    assert d == pytest.approx(ref.distance, abs=1e-6)
    blurred, _ = xmap_single(emb, a, b, patch, stride, blur=True)
    ref_b = xmaps(emb, a, b, method=3, patch_sizes=(patch,), stride=stride, blur=True)
    torch.testing.assert_close(blurred, ref_b.map1, rtol=1e-4, atol=1e-6)


def test_xmap_single_occluder_variants_change_the_map():
    a, b = _images(2)
    emb = TinyEmbedder(3)
    black, _ = xmap_single(emb, a, b, 7, 5)
    white, _ = xmap_single(emb, a, b, 7, 5, fill=1.0)
    gauss, _ = xmap_single(emb, a, b, 7, 5, kind="gaussian", std=3.0)
    assert not torch.allclose(black, white)
    assert not torch.allclose(black, gauss)
    with pytest.raises(ValueError, match="does not fit"):
        xmap_single(emb, a, b, 22, 5)


def test_xmaps_occluder_kind_matches_xmap_single():
    """xmaps_methods with a Gaussian occluder uses the occluded embeddings xmap_single uses
    (the maps agree up to the float32 / float64 difference d_i - d_orig)."""
    a, b = _images(3)
    emb = TinyEmbedder(4)
    raw, d = xmap_single(emb, a, b, 7, 5, kind="gaussian", std=2.5, fill=0.5)
    ref = xmaps(emb, a, b, method=3, patch_sizes=(7,), stride=5, blur=False, fill=0.5,
                kind="gaussian", std=2.5)
    torch.testing.assert_close(raw, ref.raw1, rtol=1e-4, atol=1e-7)
    assert d == pytest.approx(ref.distance, abs=1e-6)
    square = xmaps(emb, a, b, method=3, patch_sizes=(7,), stride=5, blur=False, fill=0.5)
    assert not torch.allclose(square.raw1, ref.raw1)
    with pytest.raises(ValueError, match="patch kind"):
        xmaps(emb, a, b, patch_sizes=(7,), kind="hexagon")


def test_scale_signed_keeps_zero_and_sign():
    from xfr.explain.xmaps import scale_signed

    s = torch.tensor([[-2.0, 1.0], [0.0, 0.5]], dtype=torch.float64)
    out = scale_signed(s)
    assert out.dtype == torch.float32 and float(out.abs().max()) == 1.0
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.5], [0.0, 0.25]]))
    assert torch.equal(scale_signed(torch.zeros(2, 2)), torch.zeros(2, 2))
