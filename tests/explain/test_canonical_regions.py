"""xfr.explain.canonical_regions: canonical regions, region mass, spread landmarks and their
coverage, masked rank correlation."""
import numpy as np
import pytest
import torch

from xfr.explain.canonical import canonical_face
from xfr.explain.canonical_regions import canvas_coverage, masked_spearman, region_masks, region_mass, spread_landmarks


def test_spread_landmarks_cover_more_than_every_kth():
    face = canonical_face(192)
    pts = spread_landmarks(120, face)
    assert len(pts) == 120 and len(set(pts.tolist())) == 120 and 1 in pts.tolist()
    assert torch.equal(pts, torch.sort(pts).values)
    strided = torch.arange(0, 468, 4)[:120]
    assert canvas_coverage(pts, 16, face) > canvas_coverage(strided, 16, face) + 0.1
    assert torch.equal(spread_landmarks(468, face), torch.arange(468))
    with pytest.raises(ValueError, match="n must be"):
        spread_landmarks(0, face)


def test_region_mass_known_answers():
    face = canonical_face(96)
    masks = {"eyes": face.region_mask("eyes"), "mouth": face.region_mask("mouth")}
    on_eyes = masks["eyes"].double()
    t = region_mass(on_eyes, face, masks).set_index("region")
    assert t.loc["eyes", "mass_share"] == pytest.approx(1.0)
    assert t.loc["mouth", "mass_share"] == pytest.approx(0.0)
    assert t.loc["eyes", "enrichment"] == pytest.approx(1 / t.loc["eyes", "area_share"])
    uniform = region_mass(torch.ones(96, 96), face, masks).set_index("region")
    np.testing.assert_allclose(uniform.enrichment, 1.0)
    negative_only = region_mass(-on_eyes, face, masks)
    assert negative_only.mass_share.isna().all()
    full = region_masks(face)
    assert {"eye_corners", "glabella", "eye_nose_triangle", "nose"} <= set(full)
    assert all(m.any() and not (m & ~face.face_mask).any() for m in full.values())
    with pytest.raises(ValueError, match="cmap"):
        region_mass(torch.ones(10, 10), face, masks)


def test_masked_spearman_ignores_outside():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    b = a.copy()
    b[~mask] = rng.random((~mask).sum())  # differ only outside
    assert masked_spearman(a, b, mask) == pytest.approx(1.0)
    assert masked_spearman(a, b, np.ones((8, 8), dtype=bool)) < 0.99
