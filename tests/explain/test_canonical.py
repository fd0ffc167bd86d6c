"""Canonical Saliency Maps (xfr.explain.canonical): canonical layout, piecewise affine warps, CIS
(Algorithm 1, eqs. 1-5), CMS (eq. 6) and its convergence curve (Fig. 5)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from xfr.engine import CountingScore
from xfr.explain.canonical import (
    N_LANDMARKS,
    CanonicalFace,
    LandmarkPatchMasks,
    canonical_face,
    canonical_to_image,
    cis,
    cms,
    cms_convergence,
    face_mesh,
    image_to_canonical,
    images_needed,
    images_to_converge,
    plot_canonical,
    rasterize_mesh,
    region_means,
    spearman_brown_n,
    square_cover,
)
from xfr.explain.canonical_regions import spread_landmarks

H = W = 224


@pytest.fixture(scope="module")
def face() -> CanonicalFace:
    return canonical_face(192)


def synthetic_mesh(face, scale=0.6, offset=(55.0, 40.0), angle=0.0) -> torch.Tensor:
    """The canonical points under a similarity transform: a frontal face in a 224 x 224 image."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return (face.points.double() * scale) @ rot.T + torch.tensor(offset, dtype=torch.float64)


def disc_score(centre, radius, hw=(H, W)):
    """f(X) = mean intensity of X inside a disc (pixel centres within ``radius`` of ``centre``)."""
    yy, xx = torch.meshgrid(torch.arange(hw[0]) + 0.5, torch.arange(hw[1]) + 0.5, indexing="ij")
    disc = ((xx - float(centre[0])) ** 2 + (yy - float(centre[1])) ** 2 <= radius ** 2).float()

    def f(x):
        return (x.mean(1) * disc).sum((1, 2)) / disc.sum()

    return f


# ----------------------------------------------------------------------------- layout
def test_layout_is_upright_and_mirrored_like_an_image(face):
    p = face.points
    assert p.shape == (N_LANDMARKS, 2) and face.tri.shape == (880, 3)
    # forehead (10) above the eyes (33, 263) above the nose tip (1) above the lips (13/14), chin (152) lowest
    assert p[10, 1] < p[33, 1] < p[1, 1] < p[13, 1] <= p[14, 1] < p[152, 1]
    # the subject's right eye (33/133) appears on the left of the canvas, as in a photograph
    assert p[33, 0] < p[133, 0] < face.size / 2 < p[362, 0] < p[263, 0]


def test_canvas_rasterization_covers_the_mesh_once(face):
    tri_index, bary = face.tri_index, face.bary
    inside = tri_index >= 0
    assert torch.equal(inside, face.face_mask)
    assert torch.allclose(bary[inside].sum(-1), torch.ones(()).double(), atol=1e-9)
    assert bary[inside].min() >= -1e-8
    # covered pixel count matches the total triangle area (up to boundary pixels)
    t = face.points.double()[face.tri]
    area = 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                  - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])).abs().sum()
    assert abs(int(inside.sum()) - float(area)) < 0.01 * float(area)


def test_rasterize_depth_picks_nearest_triangle():
    verts = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    verts = torch.cat([verts, verts])  # two identical triangles on top of each other
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    idx, _ = rasterize_mesh(verts, tri, (10, 10))
    assert set(idx[idx >= 0].tolist()) == {0}  # no depth: the first triangle
    depth = torch.tensor([5.0, 5, 5, 1, 1, 1])  # the second one is nearer
    idx, bary = rasterize_mesh(verts, tri, (10, 10), depth=depth)
    assert set(idx[idx >= 0].tolist()) == {1}
    assert int((idx >= 0).sum()) == 55  # centres (i+.5, j+.5) with i + j + 1 <= 10 (edge included)
    assert torch.allclose(bary[2, 3], torch.tensor([1 - 0.35 - 0.25, 0.35, 0.25], dtype=torch.float64))


@pytest.mark.parametrize("name", ["left_eye", "right_eye", "eyes", "eyebrows", "nose", "mouth", "cheeks"])
def test_regions_are_on_the_face_where_expected(face, name):
    m = face.region_mask(name)
    assert m.dtype == torch.bool and m.shape == (face.size, face.size)
    assert 50 < int(m.sum()) < 0.1 * face.size ** 2
    assert (m & ~face.region_mask("face_oval", dilate=1)).sum() == 0
    cy, cx = torch.nonzero(m).double().mean(0) + 0.5
    p = face.points.double()
    if name == "left_eye":  # the subject's left eye: right half of the canvas
        assert cx > face.size / 2 and abs(cy - p[[362, 263], 1].mean()) < 5
    if name == "right_eye":
        assert cx < face.size / 2 and abs(cy - p[[33, 133], 1].mean()) < 5
    if name == "mouth":
        assert m[int(p[[13, 14], 1].mean()), int(p[13, 0])]
    assert m.sum() <= face.region_mask(name, dilate=2).sum()


def test_template_is_an_image(face):
    t = face.template()
    assert t.shape == (3, face.size, face.size) and t.min() >= 0 and t.max() <= 1
    assert t[:, ~face.face_mask].abs().max() == 0 and t[:, face.face_mask].mean() > 0.3
    # eyes are drawn darker than the cheeks
    assert t[0][face.region_mask("eyes")].mean() < t[0][face.region_mask("cheeks")].mean() - 0.2


# ----------------------------------------------------------------------------- warps
def test_warp_of_a_linear_ramp_is_exact_for_an_affine_mesh(face):
    mesh = synthetic_mesh(face, scale=0.7, angle=0.2, offset=(60.0, 20.0))
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    ramp = torch.stack([xx / W, yy / H, 0.5 * torch.ones(H, W)]).float()
    tex = image_to_canonical(ramp, mesh, face)
    # canvas pixel centre u maps to the image point A(u); the bilinear sample of a ramp is exact
    c, s = math.cos(0.2), math.sin(0.2)
    v, u = torch.meshgrid(torch.arange(face.size) + 0.5, torch.arange(face.size) + 0.5, indexing="ij")
    x = 0.7 * (c * u - s * v) + 60.0
    y = 0.7 * (s * u + c * v) + 20.0
    m = face.face_mask
    assert (tex[0][m] - (x / W)[m]).abs().max() < 1e-4
    assert (tex[1][m] - (y / H)[m]).abs().max() < 1e-4
    assert tex[:, ~m].abs().max() == 0


def test_round_trip_on_a_synthetic_mesh(face):
    mesh = synthetic_mesh(face, scale=0.9, offset=(30.0, 20.0))
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 14, 14, generator=g), size=(H, W),
                                             mode="bicubic", align_corners=False)[0].clamp(0, 1)
    back = canonical_to_image(image_to_canonical(smooth, mesh, face), mesh, (H, W), face)
    inside = back.abs().sum(0) > 0
    assert inside.sum() > 0.3 * H * W
    assert (back - smooth).abs()[:, inside].mean() < 0.01
    # a canonical map goes to the image and back
    cmap = image_to_canonical(smooth, mesh, face)[0]
    again = image_to_canonical(canonical_to_image(cmap, mesh, (H, W), face)[None], mesh, face)[0]
    assert (again - cmap).abs()[face.face_mask].mean() < 0.02


def test_canonical_to_image_stacks_channels_and_faces(face):
    left = synthetic_mesh(face, scale=0.45, offset=(10.0, 40.0))
    right = synthetic_mesh(face, scale=0.45, offset=(120.0, 40.0))
    cmap = torch.ones(face.size, face.size)
    both = canonical_to_image(cmap, torch.stack([left, right]), (H, W), face)
    one = canonical_to_image(cmap, left, (H, W), face)
    assert both.shape == (H, W) and (both > 0).sum() > 1.8 * (one > 0).sum()
    three = canonical_to_image(torch.stack([cmap, 2 * cmap, 3 * cmap]), left, (H, W), face)
    assert three.shape == (3, H, W) and torch.allclose(three[2], 3 * three[0])


# ----------------------------------------------------------------------------- CIS
def test_patch_masks_are_exact_squares(face):
    mesh = synthetic_mesh(face)
    masks = LandmarkPatchMasks((H, W), mesh[None], torch.tensor([1, 13]), patch=15)
    removal = masks.removal(np.array([0, 1]))
    assert removal.sum((1, 2)).tolist() == [225.0, 225.0]
    ys, xs = torch.nonzero(removal[0], as_tuple=True)
    # centred on the landmark to within half a pixel
    assert abs((xs.double() + 0.5).mean() - mesh[1, 0]) <= 0.5
    assert abs((ys.double() + 0.5).mean() - mesh[1, 1]) <= 0.5
    assert torch.equal(square_cover(torch.tensor([10.5]), 15, 30)[0].nonzero().flatten(), torch.arange(3, 18))


def test_cis_known_answer_mouth(face):
    """f looks only at a disc around the mouth: the CIS maximum lies on the canvas mouth."""
    mesh = synthetic_mesh(face)
    centre = mesh[[13, 14, 61, 291]].mean(0)
    f = disc_score(centre, radius=8.0)
    g = torch.Generator().manual_seed(1)
    image = 0.5 + 0.3 * torch.rand(3, H, W, generator=g)
    res = cis(f, image, mesh, patch=9, stride=1, face=face)
    mouth = face.region_mask("mouth")
    peak = torch.nonzero(res.canonical == res.canonical.max())
    assert mouth[peak[:, 0], peak[:, 1]].all()
    assert res.canonical[mouth].mean() > 5 * res.canonical[~face.region_mask("mouth", dilate=15)].abs().mean()
    # the image-space map peaks on the disc
    iy, ix = divmod(int(res.image_map.argmax()), W)
    assert (ix + 0.5 - centre[0]) ** 2 + (iy + 0.5 - centre[1]) ** 2 < 8.0 ** 2


def test_density_normalization_flattens_a_constant_drop(face):
    """eq. 5: with every occlusion dropping f by the same amount, P = P*/N is flat where N > 0,
    although P* (and N) follow the landmark density."""
    mesh = synthetic_mesh(face)
    res = cis(lambda x: x.mean((1, 2, 3)), torch.ones(3, H, W), mesh, patch=11, face=face)
    covered = res.count > 0
    expected = 121.0 / (H * W)
    assert torch.allclose(res.drops, torch.full_like(res.drops, expected), rtol=1e-5)
    assert torch.allclose(res.canonical[covered], torch.full((int(covered.sum()),), expected), rtol=1e-5)
    assert res.canonical[~covered].abs().max() == 0
    assert res.total[covered].max() > 3 * res.total[covered].min()  # unnormalized P* is not flat
    assert covered[face.region_mask("nose")].all() and covered[face.region_mask("cheeks")].all()


def test_cis_forward_passes_and_batch_size_invariance(face):
    mesh = synthetic_mesh(face)
    g = torch.Generator().manual_seed(2)
    # dyadic values: every partial sum is exact in float32, so f itself cannot depend on the
    # batch size or the order of summation
    weights = torch.randint(0, 3, (3, H, W), generator=g).float()
    image = torch.randint(0, 3, (3, H, W), generator=g).float() / 2
    counted = CountingScore(lambda x: (x * weights).sum((1, 2, 3)))
    ref = cis(counted, image, mesh, patch=15, stride=1, face=face, batch_size=64)
    assert ref.n_forward == N_LANDMARKS + 1 == counted.n_forward
    assert counted.n_calls == math.ceil(N_LANDMARKS / 64) + 1  # the engine batches every occlusion
    assert ref.points.tolist() == list(range(N_LANDMARKS)) and ref.drops.shape == (N_LANDMARKS,)
    for bs in (1, 7):
        other = cis(counted, image, mesh, patch=15, stride=1, face=face, batch_size=bs)
        assert torch.equal(other.drops, ref.drops)
        assert torch.equal(other.canonical, ref.canonical)
        assert torch.equal(other.image_map, ref.image_map)
    for stride in (2, 5):
        r = cis(counted, image, mesh, stride=stride, face=face)
        assert r.n_forward == math.ceil(N_LANDMARKS / stride) + 1
        assert torch.allclose(r.drops, ref.drops[::stride])


def test_cis_canvas_patch_follows_face_scale(face):
    f = lambda x: x.mean((1, 2, 3))  # noqa: E731
    small = cis(f, torch.ones(3, H, W), synthetic_mesh(face, scale=0.5), patch=10, stride=8, face=face)
    large = cis(f, torch.ones(3, H, W), synthetic_mesh(face, scale=1.0, offset=(10.0, 10.0)), patch=10,
                stride=8, face=face)
    assert small.canvas_patch == 20 and large.canvas_patch == 10  # fsz = sz * H_F / H_I
    fixed = cis(f, torch.ones(3, H, W), synthetic_mesh(face), patch=10, stride=8, face=face, canvas_patch=7)
    assert fixed.canvas_patch == 7


def test_cis_occludes_k_faces_together(face):
    left = synthetic_mesh(face, scale=0.45, offset=(10.0, 40.0))
    right = synthetic_mesh(face, scale=0.45, offset=(120.0, 40.0))
    f = disc_score(right[1], radius=6.0)  # only the nose tip of the right face matters
    res = cis(f, torch.ones(3, H, W), torch.stack([left, right]), patch=7, stride=1, face=face)
    assert res.n_forward == N_LANDMARKS + 1
    assert int(res.drops.argmax()) in torch.nonzero(
        (face.points - face.points[1]).norm(dim=1) < 10).flatten().tolist()
    # both faces' squares are occluded together, so both get the drop: the image map of the left
    # face is the right one's, shifted (the faces are 110 px apart and their squares never meet)
    assert res.image_map[:, 110:220].max() > 0
    assert torch.allclose(res.image_map[:, :110], res.image_map[:, 110:220], atol=1e-6)


@pytest.mark.parametrize("shift", [None, 3.0, 150.0])
def test_image_map_is_the_occluder_weighted_mean_drop(face, shift):
    """image_map = sum_n d_n w_n / sum_n w_n over the actual occluders w_n (union of the K
    squares), for one face, two overlapping faces and two far-apart faces."""
    mesh = synthetic_mesh(face, scale=0.4, offset=(20.0, 30.0))
    if shift is not None:
        mesh = torch.stack([mesh, mesh + shift * torch.tensor([1.0, 0.0], dtype=torch.float64)])
    g = torch.Generator().manual_seed(5)
    weights = torch.rand(3, H, W, generator=g)
    res = cis(lambda x: (x * weights).mean((1, 2, 3)), torch.rand(3, H, W, generator=g), mesh,
              patch=9, stride=4, face=face)
    xy = mesh if mesh.dim() == 3 else mesh[None]
    occluders = LandmarkPatchMasks((H, W), xy, res.points, 9).removal(np.arange(len(res.points))).double()
    mass = occluders.sum(0)
    weighted = (res.drops.double()[:, None, None] * occluders).sum(0)
    expected = torch.where(mass > 0, weighted / mass.clamp(min=1), torch.zeros(()).double())
    assert torch.allclose(res.image_map.double(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- CMS (eq. 6, Fig. 5)
def test_cms_is_the_mean_and_converges_to_itself(face):
    g = torch.Generator().manual_seed(3)
    maps = [torch.rand(face.size, face.size, generator=g) for _ in range(12)]
    assert torch.allclose(cms(maps), torch.stack(maps).mean(0), atol=1e-6)
    curve = cms_convergence(maps, seed=0)
    assert curve["n_images"].tolist() == [1, 2, 5, 10, 12]
    assert curve["pearson_with_final"].iloc[-1] == pytest.approx(1.0)
    assert curve["l1"].iloc[-1] == pytest.approx(0.0, abs=1e-12)
    assert curve["ssim"].iloc[-1] == pytest.approx(1.0)
    assert curve["pearson_with_final"].iloc[0] < 0.6  # one noise map is far from the mean of 12
    again = cms_convergence(maps, seed=0, steps=[3, 12])
    other = cms_convergence(maps, seed=1, steps=[3, 12])
    assert again["pearson_with_final"].iloc[0] != other["pearson_with_final"].iloc[0]
    assert again.equals(cms_convergence(maps, seed=0, steps=[12, 3]))


def test_images_needed_recovers_the_known_number_with_its_interval():
    # maps = scale_i * signal + independent noise: two means of n maps correlate at
    # r(n) = vs / (vs + vn / n) (Pearson ignores the mean scale, 1 here), so r = 0.99 needs
    # n = 0.99 vn / (0.01 vs) images per map; the maps' own scales must not count as noise
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(24, 24, generator=g)
    noise_sd = 3.0
    truth = 0.99 * noise_sd ** 2 / (0.01 * float(signal.var(unbiased=False)))
    scales = 0.2 + 1.6 * torch.rand(400, generator=g)  # mean 1
    maps = [float(a) * signal + noise_sd * torch.randn(24, 24, generator=g) for a in scales]
    need, low, high = images_needed(maps, 0.99, n_boot=300, seed=1)
    assert low < truth < high and low < need < high
    assert need == pytest.approx(truth, rel=0.15)
    few = images_needed(maps[:100], 0.99, n_boot=300, seed=1)
    assert few[2] - few[1] > high - low  # fewer images, a wider interval
    assert images_needed(maps, 0.99, n_boot=50, seed=1) == images_needed(maps, 0.99, n_boot=50, seed=1)
    assert np.isnan(images_needed(maps, 0.99)[1])
    mask = torch.zeros(24, 24, dtype=torch.bool)
    mask[:12] = True
    assert images_needed(maps, 0.99, mask)[0] != need
    assert images_needed([torch.randn(24, 24, generator=g) for _ in range(50)], 0.99)[0] > 1e3  # noise only
    with pytest.raises(ValueError, match=">= 4 maps"):
        images_needed(maps[:3], 0.99)


def test_region_means_and_plot(face):
    cmap = face.region_mask("mouth").float()
    means = region_means(cmap, face)
    assert means["mouth"] == pytest.approx(1.0) and means["eyes"] == 0.0
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    im = plot_canonical(ax, cmap, face)
    assert im.get_array().shape == (face.size, face.size)
    plt.close(fig)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_actionable_errors(face):
    mesh = synthetic_mesh(face)
    img = torch.rand(3, H, W)
    f = lambda x: x.mean((1, 2, 3))  # noqa: E731
    with pytest.raises(ValueError, match="468"):
        cis(f, img, mesh[:68], face=face)
    with pytest.raises(ValueError, match="468"):
        image_to_canonical(img, torch.zeros(468, 4), face)
    with pytest.raises(ValueError, match="patch must be in"):
        cis(f, img, mesh, patch=0, face=face)
    with pytest.raises(ValueError, match="stride must be in"):
        cis(f, img, mesh, stride=0, face=face)
    with pytest.raises(ValueError, match="canvas_patch"):
        cis(f, img, mesh, canvas_patch=0, face=face)
    bad = mesh.clone()
    bad[5, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cis(f, img, bad, face=face)
    with pytest.raises(ValueError, match="normalized"):
        cis(f, img, face.uv, face=face)
    with pytest.raises(ValueError, match="inside the 224x224 image"):
        cis(f, img, mesh + 1000, face=face)
    with pytest.raises(ValueError, match="face.size"):
        canonical_to_image(torch.zeros(64, 64), mesh, (H, W), face)
    with pytest.raises(ValueError, match="unknown region"):
        face.region_mask("ears")
    with pytest.raises(ValueError, match="at least one"):
        cms([])
    with pytest.raises(ValueError, match="same canonical face"):
        cms([torch.zeros(192, 192), torch.zeros(128, 128)])
    with pytest.raises(ValueError, match="steps"):
        cms_convergence([torch.zeros(192, 192)] * 3, steps=[5])


# ----------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def lfw_face(data_dir):
    from xfr.io import load_image

    image = load_image(data_dir / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg")
    return image, face_mesh(image)


@pytest.mark.slow
def test_face_mesh_and_round_trip_on_lfw(lfw_face, face):
    image, mesh = lfw_face
    assert mesh.shape == (468, 2) and torch.isfinite(mesh).all()
    # eyes above the mouth, subject's right eye on the image left: the mesh is upright
    assert mesh[33, 0] < mesh[263, 0] and mesh[[33, 263], 1].mean() < mesh[13, 1] < mesh[152, 1]
    back = canonical_to_image(image_to_canonical(image, mesh, face), mesh, image.shape[1:], face)
    inside = back.abs().sum(0) > 0
    assert 0.1 < inside.float().mean() < 0.6
    assert (back - image).abs()[:, inside].mean() < 0.02


@pytest.mark.slow
def test_cis_known_answer_on_a_real_face(lfw_face, face):
    image, mesh = lfw_face
    centre = mesh[[13, 14, 61, 291]].mean(0)
    f = disc_score(centre, radius=10.0, hw=tuple(image.shape[1:]))
    res = cis(f, image, mesh, patch=15, stride=2, face=face)
    peak = torch.nonzero(res.canonical == res.canonical.max())
    assert face.region_mask("mouth", dilate=3)[peak[:, 0], peak[:, 1]].all()


@pytest.mark.slow
def test_face_mesh_on_small_gray_faces(data_dir):
    from xfr.io import load_image
    from xfr.models.align import NoFaceError

    path = sorted((data_dir / "fer2013_privatetest" / "happy").glob("*.jpg"))[0]
    gray = load_image(path)[:1]  # [1,48,48]
    mesh = face_mesh(gray, box=(0, 0, 48, 48))
    assert mesh.shape == (468, 2) and torch.isfinite(mesh).all()
    assert mesh[:, 0].min() > -10 and mesh[:, 0].max() < 58
    with pytest.raises(NoFaceError, match="upsample"):
        face_mesh(torch.full((3, 100, 100), 0.5))


# ----------------------------------------------------------------------------- CIS runs and convergence
def test_cis_with_explicit_points_costs_one_pass_each():
    face = canonical_face(64)
    img = torch.rand(3, 64, 64)
    mesh = face.points.clone() * (48 / 64) + 8  # a face filling the middle of the image
    pts = spread_landmarks(30, face)
    f = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    res = cis(f, img, mesh, patch=5, points=pts, face=face)
    assert res.n_forward == 31 and torch.equal(res.points, pts)
    assert (res.drops > 0).all()  # black patches lower the mean brightness
    with pytest.raises(ValueError, match="points must be landmark indices"):
        cis(f, img, mesh, patch=5, points=[0, 468], face=face)


def test_images_to_converge():
    curve = pd.DataFrame({"n_images": [1, 2, 5, 10, 20],
                          "pearson_with_final": [0.5, 0.96, 0.94, 0.97, 1.0]})
    assert images_to_converge(curve, 0.95) == 10  # the dip at 5 counts
    assert images_to_converge(curve, 0.9) == 2
    assert images_to_converge(curve, 0.999) is None  # only the trivial last point


def test_spearman_brown_n_known_answers():
    # two halves of 50 correlate at 0.5: reliability 0.95 needs 50 * 0.95 * 0.5 / (0.5 * 0.05)
    assert spearman_brown_n(0.5, 50, 0.95) == pytest.approx(950.0)
    assert spearman_brown_n(0.95, 50, 0.95) == pytest.approx(50.0)
    assert spearman_brown_n(-0.1, 50, 0.95) == float("inf")
    # simulated: map + noise, the projected n reproduces the measured split-half correlation
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    maps = truth + rng.normal(scale=3.0, size=(400, 400))
    r = np.corrcoef(maps[:20].mean(0), maps[20:40].mean(0))[0, 1]
    n = spearman_brown_n(r, 20, 0.9)
    big = int(round(n))
    r_big = np.corrcoef(maps[:big].mean(0), maps[big:2 * big].mean(0))[0, 1] if 2 * big <= 400 else None
    assert r_big is not None and r_big == pytest.approx(0.9, abs=0.04)
    with pytest.raises(ValueError, match="target"):
        spearman_brown_n(0.5, 10, 1.0)
