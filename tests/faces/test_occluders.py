"""xfr.faces.occluders: occluders land where the landmarks say, cut-and-paste copies the region."""
import numpy as np
import pytest
import torch

from xfr.faces.occluders import cut_and_paste, eye_region, occlude, sunglasses_alpha, surgical_mask_alpha

LANDMARKS = np.array([[38.0, 45.0], [74.0, 45.0], [56.0, 66.0], [42.0, 84.0], [70.0, 84.0]])


def test_occluders_cover_the_right_face_parts():
    hw = (112, 112)
    mask = surgical_mask_alpha(hw, LANDMARKS)
    glasses = sunglasses_alpha(hw, LANDMARKS)
    px = lambda m, p: float(m[int(round(p[1])), int(round(p[0]))])  # noqa: E731
    for nose_or_mouth in LANDMARKS[2:]:
        assert px(mask, nose_or_mouth) == 1.0 and px(glasses, nose_or_mouth) == 0.0
    for eye in LANDMARKS[:2]:
        assert px(glasses, eye) == 1.0 and px(mask, eye) == 0.0
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    img = torch.rand(3, *hw)
    occluded, alpha = occlude(img, LANDMARKS, "sunglasses")
    inside = alpha == 1
    assert torch.allclose(occluded[:, inside], torch.tensor([0.06, 0.06, 0.07])[:, None])
    assert torch.equal(occluded[:, alpha == 0], img[:, alpha == 0])
    with pytest.raises(ValueError, match="mask' or 'sunglasses"):
        occlude(img, LANDMARKS, "hat")


def test_eye_region_and_cut_and_paste():
    region = eye_region((112, 112), LANDMARKS)
    assert region[45, 38] == 1 and region[45, 74] == 1 and region[84, 42] == 0
    t, s = torch.zeros(3, 112, 112), torch.ones(3, 112, 112)
    out = cut_and_paste(t, s, region)
    assert torch.equal(out[0], region)
    with pytest.raises(ValueError, match="differ in shape"):
        cut_and_paste(t, torch.ones(3, 50, 50), region)
