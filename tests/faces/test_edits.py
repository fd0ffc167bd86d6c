"""xfr.faces.edits: the luminance edit (only inside its soft mask, in [0,1], factor 1 = identity),
its variants, the equal-area control region, the canonical eye ring and its control, and the
reprojection of the masks through a mesh."""
import pytest
import torch

from xfr.faces import edits as E


def test_luminance_edit_only_inside_the_soft_mask_and_in_range():
    torch.manual_seed(0)
    img = torch.rand(3, 40, 30)
    alpha = torch.zeros(40, 30)
    alpha[10:20, 5:15] = 1.0
    alpha[20:24, 5:15] = torch.linspace(0.8, 0.1, 4)[:, None]  # feathered edge
    for factor in (0.6, 1.3, 3.0, 0.0):
        out = E.luminance_edit(img, alpha, factor)
        assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
        outside = alpha == 0
        assert torch.equal(out[:, outside], img[:, outside])
        inside = alpha == 1
        assert torch.allclose(out[:, inside], (img[:, inside] * factor).clamp(0, 1), atol=1e-6)
        edge = (alpha > 0) & (alpha < 1)
        want = (1 - alpha[edge]) * img[:, edge] + alpha[edge] * (img[:, edge] * factor).clamp(0, 1)
        assert torch.allclose(out[:, edge], want, atol=1e-6)
    dark = E.luminance_edit(img, alpha, 0.6)
    assert (dark[:, alpha > 0] <= img[:, alpha > 0] + 1e-7).all()
    assert torch.equal(E.luminance_edit(img, alpha, 1.0), img)  # factor 1 is the identity
    assert torch.equal(E.luminance_edit(img, torch.zeros(40, 30), 0.2), img)


@pytest.mark.parametrize("args", [
    (torch.rand(3, 8, 8), torch.zeros(8, 9), 0.5),      # mask size
    (torch.rand(3, 8, 8), torch.full((8, 8), 1.5), 0.5),  # mask out of [0,1]
    (torch.rand(3, 8, 8), torch.zeros(8, 8), -1.0),     # negative factor
    (torch.rand(3, 8, 8), torch.zeros(8, 8), float("nan")),
    (torch.rand(8, 8), torch.zeros(8, 8), 0.5),         # not [C,H,W]
])
def test_luminance_edit_bad_input(args):
    with pytest.raises(ValueError):
        E.luminance_edit(*args)


def test_edited_variants_keys_and_order():
    img = torch.rand(3, 10, 10)
    masks = {"eyes": torch.zeros(10, 10), "control": torch.ones(10, 10)}
    keys, var = E.edited_variants(img, masks, {"dark": 0.5, "light": 1.5})
    assert keys == [("eyes", "dark"), ("eyes", "light"), ("control", "dark"), ("control", "light")]
    assert torch.equal(var[0], img) and torch.allclose(var[2], img * 0.5)
    with pytest.raises(ValueError):
        E.edited_variants(img, masks, {})


def test_equal_area_mask_grows_and_shrinks_exactly():
    region = torch.zeros(50, 50, dtype=torch.bool)
    region[20:30, 20:30] = True  # 100 px
    small = E.equal_area_mask(region, 36)
    assert int(small.sum()) == 36 and not (small & ~region).any()  # eroded: inside the region
    big = E.equal_area_mask(region, 200)
    assert int(big.sum()) == 200 and (big & region).sum() == 100  # grown: contains the region
    allowed = torch.ones(50, 50, dtype=torch.bool)
    allowed[:, :25] = False
    part = E.equal_area_mask(region, 80, allowed)
    assert int(part.sum()) == 80 and not (part & ~allowed).any()
    with pytest.raises(ValueError):
        E.equal_area_mask(torch.zeros(5, 5, dtype=torch.bool), 3)
    with pytest.raises(ValueError):
        E.equal_area_mask(region, 0)
    with pytest.raises(ValueError):
        E.equal_area_mask(region.float(), 10)


def test_edit_regions_equal_area_disjoint_on_the_face():
    regions = E.edit_regions(eye_dilate=6, control="cheeks", feather=2.0)
    eyes, ctrl = regions.hard["eyes"], regions.hard["control"]
    assert regions.areas["eyes"] == regions.areas["control"] > 100
    assert not (eyes & ctrl).any()
    assert not (eyes & regions.face.region_mask("eyes")).any()  # a ring: eye openings left out
    assert not (ctrl & ~regions.face.face_mask).any()
    for soft in regions.soft.values():
        assert soft.min() >= 0 and soft.max() <= 1
    full = E.edit_regions(eye_dilate=6, eye_ring=False)
    assert (full.hard["eyes"] & regions.face.region_mask("eyes")).any()
    with pytest.raises(ValueError):
        E.edit_regions(control="eyes")
    with pytest.raises(ValueError):
        E.edit_regions(eye_dilate=0, eye_ring=True)


def test_image_masks_follow_the_mesh():
    # a mesh that maps the canonical canvas 1:1 onto a 192x192 image reprojects the masks as is
    regions = E.edit_regions()
    mesh = regions.face.points.clone()
    m = E.image_masks(regions, mesh, (192, 192))
    for name in ("eyes", "control"):
        assert m[name].shape == (192, 192)
        inter = (m[name] * regions.soft[name]).sum() / regions.soft[name].pow(2).sum()
        assert float(inter) == pytest.approx(1.0, abs=0.05)
    # the same face at half the size: supersampled masks keep the total mask area / 4
    half = E.image_masks(regions, mesh / 2, (96, 96), supersample=2)
    assert float(half["eyes"].sum()) == pytest.approx(float(m["eyes"].sum()) / 4, rel=0.05)
