"""xfr.experiments.cms: sampling, working frames and warps, face preparation, the CMS paper's
score functions (eq. 1, eq. 8 and its sign), the Grad-CAM wrapper, summaries of canonical maps."""
import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from xfr.canonical import canonical_face, cis
from xfr.data import Pair
from xfr.experiments import cms as C


# ----------------------------------------------------------------------------- toy models
class MeanColour(torch.nn.Module):
    """Embedding = mean RGB of 4 quadrants (12-d): deterministic, sensitive to occlusion."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


class BrightSquareNet(torch.nn.Module):
    """Logit of class 1 = mean ReLU activation of a conv channel that fires on bright pixels;
    class 0 = its negative. Grad-CAM on ``conv`` must peak where the image is bright."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.0 / 27
            self.conv.bias[:] = torch.tensor([-0.5, 0.0])

    def forward(self, x):
        a = torch.relu(self.conv(x))
        s = a[:, 0].mean(dim=(1, 2))
        return torch.stack([-s, s], dim=1)


# ----------------------------------------------------------------------------- sampling
def test_sample_rows_stratified_and_reproducible():
    table = pd.DataFrame({"g": [0] * 50 + [1] * 10, "v": range(60)})
    a = C.sample_rows(table, 16, seed=3, stratify=["g"])
    b = C.sample_rows(table, 16, seed=3, stratify=["g"])
    assert a.equals(b)
    assert len(a) == 16 and (a.g == 0).sum() == 8 and (a.g == 1).sum() == 8
    assert len(C.sample_rows(table, 30, seed=0, stratify=["g"])) == 30  # small group exhausted
    assert len(C.sample_rows(table, None, seed=0)) == 60
    with pytest.raises(ValueError, match="n must be"):
        C.sample_rows(table, 0)


def test_sample_pairs_half_genuine():
    pairs = [Pair(f"a{i}", f"b{i}", i % 3 == 0) for i in range(30)]
    got = C.sample_pairs(pairs, 10, seed=1)
    assert len(got) == 10 and sum(p.same for p in got) == 5
    assert C.sample_pairs(pairs, 10, seed=1) == got


# ----------------------------------------------------------------------------- frames
def test_frame_matrix_modes_map_known_points():
    full = C.frame_matrix("full", (48, 48), size=224)
    np.testing.assert_allclose(C.transform_continuous(full, [[0, 0], [48, 48], [24, 12]]),
                               [[0, 0], [224, 224], [112, 56]], atol=1e-9)
    crop = C.frame_matrix("crop", (100, 100), box=(20, 30, 60, 90), crop_scale=1.0, size=224)
    # square of side 60 around the box centre (40, 60): x in [10, 70], y in [30, 90]
    np.testing.assert_allclose(C.transform_continuous(crop, [[10, 30], [70, 90], [40, 60]]),
                               [[0, 0], [224, 224], [112, 112]], atol=1e-9)
    from xfr.models.align import get_template

    tpl = get_template("dlib150")
    dst = (tpl.array() + 0.5) * 224 / 150 - 0.5
    src = (dst - 7.0) / 1.3  # a scaled, shifted copy of the template
    mat = C.frame_matrix("align", (300, 300), landmarks5=src, size=224)
    np.testing.assert_allclose(src @ mat[:, :2].T + mat[:, 2], dst, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        C.frame_matrix("warp", (10, 10))
    with pytest.raises(ValueError, match="box"):
        C.frame_matrix("crop", (10, 10))


def test_warp_replicate_identity_and_edges():
    img = torch.rand(3, 20, 20)
    same = C.warp_replicate(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 20)
    torch.testing.assert_close(same, img, atol=1e-5, rtol=0)
    # shift by 5 px to the right: the left 5 columns replicate the image's first column
    shifted = C.warp_replicate(img, np.array([[1.0, 0, 5], [0, 1.0, 0]]), 20)
    torch.testing.assert_close(shifted[:, :, 5:], img[:, :, :15], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[:, :, :5], img[:, :, :1].expand(-1, -1, 5), atol=1e-5, rtol=0)


def test_batched_warp_and_warp_map_invert_each_other():
    x = torch.rand(2, 3, 32, 32)
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(C.batched_warp(x, eye, 32), x, atol=1e-5, rtol=0)
    mat = np.array([[1.0, 0, 4], [0, 1.0, -3]])  # A -> B: shift
    warped = C.batched_warp(x, mat, 32)
    # pixel (u, v) of the warped batch is pixel (u - 4, v + 3) of the source
    torch.testing.assert_close(warped[:, :, 0:29, 4:], x[:, :, 3:, :28], atol=1e-5, rtol=0)
    smap = torch.rand(32, 32)
    back = C.warp_map(smap, mat, (32, 32))  # frame A map from a frame B map: out(p) = smap(mat p)
    torch.testing.assert_close(back[3:, :28], smap[:29, 4:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="N,C,H,W"):
        C.batched_warp(torch.rand(3, 8, 8), eye, 8)


def test_frame_to_chip_composes_with_the_face_matrix():
    mat = C.frame_matrix("crop", (100, 80), box=(20, 30, 60, 70), crop_scale=1.4, size=224)
    face = C.PreparedFace("x", "d", torch.zeros(3, 224, 224), torch.zeros(468, 2), torch.zeros(5, 2),
                          torch.zeros(4), mat, 0, 0.0)
    raw_to_chip = C.frame_to_chip(face, (100, 80), 224)
    raw = C.transform_continuous(C.frame_matrix("full", (100, 80), size=224), [[33.0, 41.0]])
    np.testing.assert_allclose(C.transform_continuous(raw_to_chip, raw),
                               C.transform_continuous(mat, [[33.0, 41.0]]), atol=1e-9)


# ----------------------------------------------------------------------------- meshes
def _mesh_with_five(five: np.ndarray) -> torch.Tensor:
    mesh = np.random.default_rng(0).uniform(0, 100, (468, 2))
    for pt, idx in zip(five, C.MESH5):
        for i in idx:
            mesh[i] = pt
    return torch.from_numpy(mesh).float()


def test_mesh_error_zero_when_consistent_and_scales_with_iod():
    five = np.array([[30.0, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    mesh = _mesh_with_five(five)
    np.testing.assert_allclose(C.mesh_five(mesh), five, atol=1e-4)
    assert C.mesh_error(mesh, five) == pytest.approx(0.0, abs=1e-5)
    assert C.mesh_error(mesh, five + [4.0, 0.0]) == pytest.approx(4.0 / 40, abs=1e-5)


def test_pair_canvas_and_mesh():
    a, b = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    canvas = C.pair_canvas(a, b)
    assert canvas.shape == (3, 8, 16) and canvas[:, :, 8:].eq(1).all()
    m = torch.rand(468, 2) * 8
    pm = C.pair_mesh(m, m, 8)
    assert pm.shape == (2, 468, 2)
    torch.testing.assert_close(pm[1, :, 0] - pm[0, :, 0], torch.full((468,), 8.0))
    with pytest.raises(ValueError, match="two"):
        C.pair_canvas(a, torch.zeros(3, 8, 9))


def test_spread_landmarks_cover_more_than_every_kth():
    face = canonical_face(192)
    pts = C.spread_landmarks(120, face)
    assert len(pts) == 120 and len(set(pts.tolist())) == 120 and 1 in pts.tolist()
    assert torch.equal(pts, torch.sort(pts).values)
    strided = torch.arange(0, 468, 4)[:120]
    assert C.canvas_coverage(pts, 16, face) > C.canvas_coverage(strided, 16, face) + 0.1
    assert torch.equal(C.spread_landmarks(468, face), torch.arange(468))
    with pytest.raises(ValueError, match="n must be"):
        C.spread_landmarks(0, face)


def test_cis_with_explicit_points_costs_one_pass_each():
    face = canonical_face(64)
    img = torch.rand(3, 64, 64)
    mesh = face.points.clone() * (48 / 64) + 8  # a face filling the middle of the image
    pts = C.spread_landmarks(30, face)
    f = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    res = cis(f, img, mesh, patch=5, points=pts, face=face)
    assert res.n_forward == 31 and torch.equal(res.points, pts)
    assert (res.drops > 0).all()  # black patches lower the mean brightness
    with pytest.raises(ValueError, match="points must be landmark indices"):
        cis(f, img, mesh, patch=5, points=[0, 468], face=face)


# ----------------------------------------------------------------------------- scores
def test_pair_confidence_sign_eq8():
    emb = MeanColour()
    a = torch.rand(3, 16, 16)
    b = torch.rand(3, 16, 16) * 0.2
    b[0] += 0.8  # another "identity"
    same_pair = C.pair_canvas(a, a)[None]
    tau = 0.5
    assert float(C.pair_confidence(emb, tau, True)(same_pair)) == pytest.approx(0.5, abs=1e-5)
    assert float(C.pair_confidence(emb, tau, False)(same_pair)) == pytest.approx(-0.5, abs=1e-5)
    # mate_confidence (one face perturbed, the mate fixed) equals the pair score
    diff = C.pair_canvas(a, b)[None]
    assert float(C.mate_confidence(emb, b, tau, False)(a[None])) == pytest.approx(
        float(C.pair_confidence(emb, tau, False)(diff)), abs=1e-5)
    with pytest.raises(ValueError, match="even width"):
        C.pair_confidence(emb, tau, True)(torch.rand(1, 3, 8, 15))


def test_verification_target_matches_mate_confidence():
    emb = MeanColour()
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    target = C.VerificationTarget(emb(b[None])[0], 0.9, False)
    assert float(target(emb(a[None])[0])) == pytest.approx(
        float(C.mate_confidence(emb, b, 0.9, False)(a[None])), abs=1e-5)


def test_cosine_tau_separates_and_class_score():
    sims = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3])
    same = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    tau = C.cosine_tau(sims, same)
    assert 0.3 < tau < 0.7 and ((sims > tau) == same).all()
    net = BrightSquareNet().eval()
    x = torch.zeros(1, 3, 12, 12)
    x[..., 3:9, 3:9] = 1.0
    f = C.class_score(net, 1)
    torch.testing.assert_close(f(x), torch.softmax(net(x), 1)[:, 1])
    assert C.decided_correctly(f, x[0]) and not C.decided_correctly(C.class_score(net, 0), x[0])
    assert C.decided_correctly(C.mate_confidence(MeanColour(), x[0], 0.5, True), x[0])


def test_context_padded_pads_before_the_model():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return torch.zeros(x.shape[0], 2)

    C.ContextPadded(Probe(), 0.25)(torch.rand(2, 3, 40, 40))
    assert seen == [(2, 3, 60, 60)]
    assert isinstance(C.classifier_net(Probe(), 0.0), Probe)
    with pytest.raises(ValueError, match="margin"):
        C.ContextPadded(Probe(), -0.1)


# ----------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("method", C.CAM_METHODS)
def test_cam_maps_shape_range_and_location(method):
    net = BrightSquareNet().eval()
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 4:12, 4:12] = 1.0
    x[1, :, 18:28, 20:30] = 1.0
    maps = C.cam_maps(method, C.CamNet(net), net.conv, x, [ClassifierOutputTarget(1)] * 2)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    for m, (y0, y1, x0, x1) in zip(maps, [(4, 12, 4, 12), (18, 28, 20, 30)]):
        inside = np.zeros_like(m, dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert m[inside].mean() > m[~inside].mean() + 0.3
    padded = C.cam_maps(method, C.CamNet(net), net.conv, x[:1], [ClassifierOutputTarget(1)], context=0.25)
    assert padded.shape == (1, 32, 32)
    assert padded[0, 4:12, 4:12].mean() > padded[0, 16:, 16:].mean() + 0.3  # cropped back in place
    with pytest.raises(ValueError, match="method"):
        C.cam_maps("lime", C.CamNet(net), net.conv, x, [ClassifierOutputTarget(1)] * 2)
    with pytest.raises(ValueError, match="targets"):
        C.cam_maps(method, C.CamNet(net), net.conv, x, [ClassifierOutputTarget(1)])


def test_layer_channels():
    net = BrightSquareNet()
    assert C.layer_channels(net, net.conv, torch.rand(1, 3, 8, 8)) == 2


# ----------------------------------------------------------------------------- summaries
def test_images_to_converge():
    curve = pd.DataFrame({"n_images": [1, 2, 5, 10, 20],
                          "pearson_with_final": [0.5, 0.96, 0.94, 0.97, 1.0]})
    assert C.images_to_converge(curve, 0.95) == 10  # the dip at 5 counts
    assert C.images_to_converge(curve, 0.9) == 2
    assert C.images_to_converge(curve, 0.999) is None  # only the trivial last point


def test_spearman_brown_n_known_answers():
    # two halves of 50 correlate at 0.5: reliability 0.95 needs 50 * 0.95 * 0.5 / (0.5 * 0.05)
    assert C.spearman_brown_n(0.5, 50, 0.95) == pytest.approx(950.0)
    assert C.spearman_brown_n(0.95, 50, 0.95) == pytest.approx(50.0)
    assert C.spearman_brown_n(-0.1, 50, 0.95) == float("inf")
    # simulated: map + noise, the projected n reproduces the measured split-half correlation
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    maps = truth + rng.normal(scale=3.0, size=(400, 400))
    r = np.corrcoef(maps[:20].mean(0), maps[20:40].mean(0))[0, 1]
    n = C.spearman_brown_n(r, 20, 0.9)
    big = int(round(n))
    r_big = np.corrcoef(maps[:big].mean(0), maps[big:2 * big].mean(0))[0, 1] if 2 * big <= 400 else None
    assert r_big is not None and r_big == pytest.approx(0.9, abs=0.04)
    with pytest.raises(ValueError, match="target"):
        C.spearman_brown_n(0.5, 10, 1.0)


def test_region_mass_known_answers():
    face = canonical_face(96)
    masks = {"eyes": face.region_mask("eyes"), "mouth": face.region_mask("mouth")}
    on_eyes = masks["eyes"].double()
    t = C.region_mass(on_eyes, face, masks).set_index("region")
    assert t.loc["eyes", "mass_share"] == pytest.approx(1.0)
    assert t.loc["mouth", "mass_share"] == pytest.approx(0.0)
    assert t.loc["eyes", "enrichment"] == pytest.approx(1 / t.loc["eyes", "area_share"])
    uniform = C.region_mass(torch.ones(96, 96), face, masks).set_index("region")
    np.testing.assert_allclose(uniform.enrichment, 1.0)
    negative_only = C.region_mass(-on_eyes, face, masks)
    assert negative_only.mass_share.isna().all()
    full = C.region_masks(face)
    assert {"eye_corners", "glabella", "eye_nose_triangle", "nose"} <= set(full)
    assert all(m.any() and not (m & ~face.face_mask).any() for m in full.values())
    with pytest.raises(ValueError, match="cmap"):
        C.region_mass(torch.ones(10, 10), face, masks)


def test_masked_spearman_ignores_outside():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    b = a.copy()
    b[~mask] = rng.random((~mask).sum())  # differ only outside
    assert C.masked_spearman(a, b, mask) == pytest.approx(1.0)
    assert C.masked_spearman(a, b, np.ones((8, 8), dtype=bool)) < 0.99


def test_confidence_table_pools_per_image_results():
    from xfr.metrics import confidence_metrics

    top = np.zeros((8, 8))
    top[:4] = 1
    imgs = [torch.rand(3, 8, 8) for _ in range(3)]
    for im in imgs:
        im[:, :4] += 1.0  # bright top half: darkening it lowers the mean brightness most
    f = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    per_image = [confidence_metrics(f, [im], {"top": [top], "bottom": [1 - top]}) for im in imgs]
    pooled = confidence_metrics(f, imgs, {"top": [top] * 3, "bottom": [1 - top] * 3})
    t = C.confidence_table("t", per_image, {"top": (3, 0.5)}).set_index("method")
    for m, vals in pooled.summary().items():
        for col, v in vals.items():
            assert t.loc[m, col] == pytest.approx(v)
    assert t.loc["top", "win"] == 100 and t.loc["top", "forward_passes"] == 3
    assert np.isnan(t.loc["bottom", "forward_passes"]) and t.loc["top", "n_images"] == 3
    with pytest.raises(ValueError, match="same methods"):
        C.confidence_table("t", [per_image[0], confidence_metrics(f, [imgs[0]], {"x": [top]})], {})


# ----------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_prepare_faces_real_celeba_and_lfw(data_dir):
    from xfr import data, models

    mtcnn = models.load("mtcnn")
    rows = data.celeba().head(3)
    ps = C.prepare_faces(list(rows.path), list(rows.Male.astype(int)), "celeba", "crop", mtcnn,
                         crop_scale=1.4)
    assert ps.n_input == 3 and len(ps.faces) + sum(ps.dropped.values()) == 3 and ps.faces
    for f in ps.faces:
        assert f.image.shape == (3, 224, 224) and 0 <= float(f.image.min()) <= float(f.image.max()) <= 1
        assert f.mesh.shape == (468, 2) and f.mesh_error <= 0.25
        assert (f.mesh >= 0).all() and (f.mesh <= 224).all()
    pair = [p for p in data.lfw_pairs() if p.same][0]
    pl = C.prepare_faces([pair.a, pair.b], [0, 0], "lfw", "align", mtcnn, template="dlib150")
    assert len(pl.faces) == 2
    from xfr.models.align import get_template

    tpl = (get_template("dlib150").array() + 0.5) * 224 / 150  # continuous chip coordinates
    for f in pl.faces:  # least-squares similarity fit: same centroid, small residuals
        lm = f.landmarks5.numpy().astype(np.float64)
        np.testing.assert_allclose(lm.mean(0), tpl.mean(0), atol=1e-3)
        iod = np.linalg.norm(tpl[1] - tpl[0])  # 87 px at 224
        assert np.linalg.norm(lm - tpl, axis=1).max() < 0.25 * iod
    # eq. 8 sign on a real genuine pair: positive confidence with the data's threshold range
    dlib = models.load("dlib-resnet")
    a, b = pl.faces
    score = float(C.pair_confidence(dlib, 0.5, True)(C.pair_canvas(a.image, b.image)[None]))
    assert score > 0


@pytest.mark.slow
def test_cam_setup_real_models_and_tapped_faceres():
    from xfr import models

    x = torch.rand(1, 3, 224, 224)
    faceres = models.load("faceres-gender")
    net, layer, name = C.cam_setup("faceres-gender", faceres)
    with torch.no_grad():
        torch.testing.assert_close(net(x), faceres(x))
    assert name.startswith("conv_pw_11") and C.layer_channels(net, layer, x) == 512
    gm = C.cam_maps("gradcam", net, layer, x, [ClassifierOutputTarget(0)])
    assert gm.shape == (1, 224, 224) and gm.min() >= 0 and gm.max() <= 1
    fer = models.load("mini-xception-fer2013")
    net, layer, name = C.cam_setup("mini-xception-fer2013", fer)
    assert layer is fer.target_layer
    maps = C.cam_maps("gradcam++", net, layer, x.expand(2, -1, -1, -1),
                      [ClassifierOutputTarget(3), ClassifierOutputTarget(3)])
    assert maps.shape == (2, 224, 224)
    with pytest.raises(ValueError, match="expected the faceres-gender"):
        C.TappedFaceResGender(fer)
