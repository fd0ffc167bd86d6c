"""xfr.faces.mesh: working frames and warps (pixel-centre 2x3 matrices), FaceMesh agreement with
MTCNN's five points, pair canvases, face preparation on real data."""
import numpy as np
import pytest
import torch

from xfr.faces.mesh import (
    MESH5,
    PreparedFace,
    batched_warp,
    frame_matrix,
    frame_to_chip,
    mesh_error,
    mesh_five,
    pair_canvas,
    pair_mesh,
    prepare_faces,
    transform_continuous,
    warp_map,
    warp_replicate,
)
from xfr.score import pair_confidence


def test_frame_matrix_modes_map_known_points():
    full = frame_matrix("full", (48, 48), size=224)
    np.testing.assert_allclose(transform_continuous(full, [[0, 0], [48, 48], [24, 12]]),
                               [[0, 0], [224, 224], [112, 56]], atol=1e-9)
    crop = frame_matrix("crop", (100, 100), box=(20, 30, 60, 90), crop_scale=1.0, size=224)
    # square of side 60 around the box centre (40, 60): x in [10, 70], y in [30, 90]
    np.testing.assert_allclose(transform_continuous(crop, [[10, 30], [70, 90], [40, 60]]),
                               [[0, 0], [224, 224], [112, 112]], atol=1e-9)
    from xfr.models.align import get_template

    tpl = get_template("dlib150")
    dst = (tpl.array() + 0.5) * 224 / 150 - 0.5
    src = (dst - 7.0) / 1.3  # a scaled, shifted copy of the template
    mat = frame_matrix("align", (300, 300), landmarks5=src, size=224)
    np.testing.assert_allclose(src @ mat[:, :2].T + mat[:, 2], dst, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        frame_matrix("warp", (10, 10))
    with pytest.raises(ValueError, match="box"):
        frame_matrix("crop", (10, 10))


def test_warp_replicate_identity_and_edges():
    img = torch.rand(3, 20, 20)
    same = warp_replicate(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 20)
    torch.testing.assert_close(same, img, atol=1e-5, rtol=0)
    # shift by 5 px to the right: the left 5 columns replicate the image's first column
    shifted = warp_replicate(img, np.array([[1.0, 0, 5], [0, 1.0, 0]]), 20)
    torch.testing.assert_close(shifted[:, :, 5:], img[:, :, :15], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[:, :, :5], img[:, :, :1].expand(-1, -1, 5), atol=1e-5, rtol=0)


def test_batched_warp_and_warp_map_invert_each_other():
    x = torch.rand(2, 3, 32, 32)
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(batched_warp(x, eye, 32), x, atol=1e-5, rtol=0)
    mat = np.array([[1.0, 0, 4], [0, 1.0, -3]])  # A -> B: shift
    warped = batched_warp(x, mat, 32)
    # pixel (u, v) of the warped batch is pixel (u - 4, v + 3) of the source
    torch.testing.assert_close(warped[:, :, 0:29, 4:], x[:, :, 3:, :28], atol=1e-5, rtol=0)
    smap = torch.rand(32, 32)
    back = warp_map(smap, mat, (32, 32))  # frame A map from a frame B map: out(p) = smap(mat p)
    torch.testing.assert_close(back[3:, :28], smap[:29, 4:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="N,C,H,W"):
        batched_warp(torch.rand(3, 8, 8), eye, 8)


def test_frame_to_chip_composes_with_the_face_matrix():
    mat = frame_matrix("crop", (100, 80), box=(20, 30, 60, 70), crop_scale=1.4, size=224)
    face = PreparedFace("x", "d", torch.zeros(3, 224, 224), torch.zeros(468, 2), torch.zeros(5, 2),
                          torch.zeros(4), mat, 0, 0.0)
    raw_to_chip = frame_to_chip(face, (100, 80), 224)
    raw = transform_continuous(frame_matrix("full", (100, 80), size=224), [[33.0, 41.0]])
    np.testing.assert_allclose(transform_continuous(raw_to_chip, raw),
                               transform_continuous(mat, [[33.0, 41.0]]), atol=1e-9)


def _mesh_with_five(five: np.ndarray) -> torch.Tensor:
    mesh = np.random.default_rng(0).uniform(0, 100, (468, 2))
    for pt, idx in zip(five, MESH5):
        for i in idx:
            mesh[i] = pt
    return torch.from_numpy(mesh).float()


def test_mesh_error_zero_when_consistent_and_scales_with_iod():
    five = np.array([[30.0, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    mesh = _mesh_with_five(five)
    np.testing.assert_allclose(mesh_five(mesh), five, atol=1e-4)
    assert mesh_error(mesh, five) == pytest.approx(0.0, abs=1e-5)
    assert mesh_error(mesh, five + [4.0, 0.0]) == pytest.approx(4.0 / 40, abs=1e-5)


def test_pair_canvas_and_mesh():
    a, b = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    canvas = pair_canvas(a, b)
    assert canvas.shape == (3, 8, 16) and canvas[:, :, 8:].eq(1).all()
    m = torch.rand(468, 2) * 8
    pm = pair_mesh(m, m, 8)
    assert pm.shape == (2, 468, 2)
    torch.testing.assert_close(pm[1, :, 0] - pm[0, :, 0], torch.full((468,), 8.0))
    with pytest.raises(ValueError, match="two"):
        pair_canvas(a, torch.zeros(3, 8, 9))


@pytest.mark.slow
def test_prepare_faces_real_celeba_and_lfw(data_dir):
    from xfr import data, models

    mtcnn = models.load("mtcnn")
    rows = data.celeba().head(3)
    ps = prepare_faces(list(rows.path), list(rows.Male.astype(int)), "celeba", "crop", mtcnn,
                         crop_scale=1.4)
    assert ps.n_input == 3 and len(ps.faces) + sum(ps.dropped.values()) == 3 and ps.faces
    for f in ps.faces:
        assert f.image.shape == (3, 224, 224) and 0 <= float(f.image.min()) <= float(f.image.max()) <= 1
        assert f.mesh.shape == (468, 2) and f.mesh_error <= 0.25
        assert (f.mesh >= 0).all() and (f.mesh <= 224).all()
    pair = [p for p in data.lfw_pairs() if p.same][0]
    pl = prepare_faces([pair.a, pair.b], [0, 0], "lfw", "align", mtcnn, template="dlib150")
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
    score = float(pair_confidence(dlib, 0.5, True)(pair_canvas(a.image, b.image)[None]))
    assert score > 0
