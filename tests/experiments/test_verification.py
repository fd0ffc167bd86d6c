"""Logic of xfr.experiments.verification: prefix S-RISE equals S-RISE, the one-size X-Map equals
X-Maps method III, occluders land where the landmarks say, triplets and failure picks obey their
rules, and the Table 1 trend reading."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xfr.experiments import verification as V
from xfr.explain import srise, xmaps
from xfr.score import verification_score


class TinyEmbedder:
    """A fixed random linear embedding of a 4x4-pooled image (any size works)."""

    def __init__(self, seed=0, dim=6):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(3 * 4 * 4, dim, generator=g)

    def __call__(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return pooled @ self.w + 0.1


def _images(seed=0, size=24):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)


def test_srise_prefix_maps_equal_separate_srise_runs():
    a, b = _images()
    emb = TinyEmbedder()
    f = verification_score(emb, b)
    kw = dict(n_patches=5, kernel=9, sigma=2.0, seed=3)
    pm = V.srise_prefix_maps(f, a, [3, 10, 17], batch_size=4, **kw)
    assert pm.n_forward == 17
    for n in (3, 10, 17):
        ref = srise(f, a, n_masks=n, normalize=False, batch_size=5, **kw)
        torch.testing.assert_close(pm.maps[n], ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pm.maps[3], pm.maps[17])


def test_srise_prefix_centered_maps_by_explicit_sum():
    from xfr.explain.masks import SRiseMasks

    a, b = _images(5)
    f = verification_score(TinyEmbedder(1), b)
    pm = V.srise_prefix_maps(f, a, [4, 9], n_patches=5, kernel=9, sigma=2.0, seed=1, batch_size=3)
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
        V.srise_prefix_maps(f, a, [0, 5])


@pytest.mark.parametrize("patch,stride", [(7, 5), (5, 3)])
def test_xmap_single_square_equals_xmaps_method3(patch, stride):
    a, b = _images(1)
    emb = TinyEmbedder(2)
    raw, d = V.xmap_single(emb, a, b, patch, stride, blur=False, batch_size=7)
    ref = xmaps(emb, a, b, method=3, patch_sizes=(patch,), stride=stride, blur=False)
    torch.testing.assert_close(raw, ref.raw1, rtol=1e-4, atol=1e-7)
    assert d == pytest.approx(ref.distance, abs=1e-6)
    blurred, _ = V.xmap_single(emb, a, b, patch, stride, blur=True)
    ref_b = xmaps(emb, a, b, method=3, patch_sizes=(patch,), stride=stride, blur=True)
    torch.testing.assert_close(blurred, ref_b.map1, rtol=1e-4, atol=1e-6)


def test_xmap_single_occluder_variants_change_the_map():
    a, b = _images(2)
    emb = TinyEmbedder(3)
    black, _ = V.xmap_single(emb, a, b, 7, 5)
    white, _ = V.xmap_single(emb, a, b, 7, 5, fill=1.0)
    gauss, _ = V.xmap_single(emb, a, b, 7, 5, kind="gaussian", std=3.0)
    assert not torch.allclose(black, white)
    assert not torch.allclose(black, gauss)
    with pytest.raises(ValueError, match="does not fit"):
        V.xmap_single(emb, a, b, 22, 5)


LANDMARKS = np.array([[38.0, 45.0], [74.0, 45.0], [56.0, 66.0], [42.0, 84.0], [70.0, 84.0]])


def test_occluders_cover_the_right_face_parts():
    hw = (112, 112)
    mask = V.surgical_mask_alpha(hw, LANDMARKS)
    glasses = V.sunglasses_alpha(hw, LANDMARKS)
    px = lambda m, p: float(m[int(round(p[1])), int(round(p[0]))])  # noqa: E731
    for nose_or_mouth in LANDMARKS[2:]:
        assert px(mask, nose_or_mouth) == 1.0 and px(glasses, nose_or_mouth) == 0.0
    for eye in LANDMARKS[:2]:
        assert px(glasses, eye) == 1.0 and px(mask, eye) == 0.0
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    img = torch.rand(3, *hw)
    occluded, alpha = V.occlude(img, LANDMARKS, "sunglasses")
    inside = alpha == 1
    assert torch.allclose(occluded[:, inside], torch.tensor([0.06, 0.06, 0.07])[:, None])
    assert torch.equal(occluded[:, alpha == 0], img[:, alpha == 0])
    with pytest.raises(ValueError, match="mask' or 'sunglasses"):
        V.occlude(img, LANDMARKS, "hat")


def test_eye_region_and_cut_and_paste():
    region = V.eye_region((112, 112), LANDMARKS)
    assert region[45, 38] == 1 and region[45, 74] == 1 and region[84, 42] == 0
    t, s = torch.zeros(3, 112, 112), torch.ones(3, 112, 112)
    out = V.cut_and_paste(t, s, region)
    assert torch.equal(out[0], region)
    with pytest.raises(ValueError, match="differ in shape"):
        V.cut_and_paste(t, torch.ones(3, 50, 50), region)


def _table():
    rows = [("A_1", "A_2", True, 0.95), ("B_1", "B_2", True, 0.70), ("C_1", "C_2", True, 0.96),
            ("A_3", "D_1", False, 0.94), ("B_3", "E_1", False, 0.50), ("F_1", "G_1", False, 0.97)]
    df = pd.DataFrame(rows, columns=["a", "b", "same", "similarity"])
    df["a"] = df["a"].map(lambda s: Path(f"/x/{s.split('_')[0]}_000{s.split('_')[1]}.jpg"))
    df["b"] = df["b"].map(lambda s: Path(f"/x/{s.split('_')[0]}_000{s.split('_')[1]}.jpg"))
    df["distance"] = 1 - df["similarity"]
    return df


def test_make_triplets_rules_and_determinism():
    df = _table()
    images = sorted(set(df.a) | set(df.b))
    trip = V.make_triplets(df, images, 2, seed=4, threshold=0.9, accepted_only=True)
    assert trip == V.make_triplets(df, images, 2, seed=4, threshold=0.9, accepted_only=True)
    for p, m, n in trip:
        assert V.identity_of(p) == V.identity_of(m) != V.identity_of(n)
        assert V.identity_of(p) in ("A", "C")  # B's genuine pair is rejected at 0.9
    with pytest.raises(ValueError, match="only 2 triplets"):
        V.make_triplets(df, images, 3, threshold=0.9, accepted_only=True)


def test_failed_verification_prefers_false_accept_with_a_mate():
    df = _table()
    images = sorted(set(df.a) | set(df.b))
    kind, (p, m, n), sim = V.failed_verification(df, images, threshold=0.9)
    # F-G (0.97) is the strongest false accept but neither F nor G has a second image
    assert kind == "false_accept" and sim == pytest.approx(0.94)
    assert V.identity_of(p) == V.identity_of(m) == "A" and V.identity_of(n) == "D" and p != m
    kind, (p, m, n), sim = V.failed_verification(df, images, threshold=0.99)
    assert kind == "false_reject" and sim == pytest.approx(0.70) and V.identity_of(n) != "B"
    no_err = df[df.same | (df.similarity < 0.9)].assign(similarity=lambda d: d.similarity.where(~d.same, 0.99))
    kind, (p, m, n), sim = V.failed_verification(no_err, images, threshold=0.9)
    assert kind == "no_error_closest_imposter" and sim == pytest.approx(0.50)


def test_trend_holds_on_the_paper_numbers_and_fails_otherwise():
    paper = pd.DataFrame([(k, d, i) for k, (d, i) in V.PAPER_SRISE_TABLE1.items()],
                         columns=["masks", "deletion", "insertion"])
    assert V.trend_holds(paper)["trend_holds"]
    flat = paper.assign(deletion=[0.2, 0.3, 0.35, 0.4])
    res = V.trend_holds(flat)
    assert not res["trend_holds"] and not res["deletion_fewest_masks_worst"]


def test_overlay_fixed_keeps_the_joint_scale():
    img = torch.zeros(3, 8, 8)
    low, high = torch.full((8, 8), 0.2), torch.full((8, 8), 0.9)
    a, b = V.overlay_fixed(img, low), V.overlay_fixed(img, high)
    assert not np.array_equal(a, b)  # xfr.viz.overlay would scale both constant maps alike
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8


def test_accuracy_at_and_pearson():
    assert V.accuracy_at([0.9, 0.2, 0.5], [True, False, True], 0.5) == 1.0
    assert V.accuracy_at([0.9, 0.2, 0.5], [True, False, True], 0.6) == pytest.approx(2 / 3)
    x = torch.rand(10, 10)
    assert V.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert V.pearson(x, -x) == pytest.approx(-1.0)


@pytest.mark.slow
def test_align_faces_on_real_lfw_images():
    from xfr.data import lfw_pairs
    from xfr.models import load
    from xfr.models.align import TEMPLATES
    from xfr.models.detect import MTCNNDetector

    pairs = lfw_pairs()
    same = next(p for p in pairs if p.same)
    other = next(p for p in pairs if not p.same and V.identity_of(p.a) != V.identity_of(same.a))
    faces = V.align_faces([same.a, same.b, other.a], MTCNNDetector(min_face_size=50).eval())
    assert faces.missing == [] and faces.chips.shape == (3, 3, 150, 150)
    tpl = TEMPLATES["dlib150"].array()
    # the similarity transform maps the detected landmarks close to the template positions
    err = np.linalg.norm(faces.landmarks.numpy() - tpl[None], axis=-1).mean()
    assert err < 6.0
    emb = V.embed_chips(load("dlib-resnet"), faces.chips_at(112))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])
