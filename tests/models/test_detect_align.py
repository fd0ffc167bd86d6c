"""MTCNN detection (xfr.models.detect) and 5-point alignment (xfr.models.align)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from xfr.io import load_image
from xfr.models.align import (
    TEMPLATES,
    NoFaceError,
    align,
    align_batch,
    alignment_matrix,
    detect_and_align,
    face_landmarks,
    invert_affine,
    similarity_transform,
    transform_points,
    warp_affine,
)
from xfr.models.detect import Detections, best_face, largest_face, load_mtcnn

LFW_IMAGES = ("Abel_Pacheco_0001.jpg", "Akhmed_Zakayev_0001.jpg")


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _blob_image(points: np.ndarray, h: int, w: int, sigma: float) -> torch.Tensor:
    """A gray image with a Gaussian blob at each point (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(np.clip(img, 0, 1)).float()[None].expand(3, -1, -1).contiguous()


def _peak(chip: torch.Tensor, x: float, y: float, r: int = 6) -> tuple[float, float]:
    """Intensity-weighted centroid of the chip around (x, y)."""
    g = chip[0].double().numpy()
    x0, y0 = int(round(x)), int(round(y))
    win = g[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
    yy, xx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
    return float((win * xx).sum() / win.sum()), float((win * yy).sum() / win.sum())


# ----------------------------------------------------------------------------- similarity fit
@pytest.mark.parametrize("scale,angle", [(1.0, 0.0), (2.7, 0.4), (0.35, -1.2), (1.3, 3.0)])
def test_similarity_transform_recovers_known_transform(scale, angle):
    tpl = TEMPLATES["arcface112"].array()
    truth = _similarity(scale, angle, 13.0, -7.5)
    src = transform_points(truth, tpl)
    got = similarity_transform(tpl, src)
    np.testing.assert_allclose(got, truth, atol=1e-9)
    # and the alignment of src back onto the template leaves no residual
    back = alignment_matrix(src, "arcface112")
    np.testing.assert_allclose(transform_points(back, src), tpl, atol=1e-8)


def test_similarity_transform_matches_skimage_on_noisy_points():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = transform_points(_similarity(0.6, 0.3, 5, 9), src) + rng.normal(0, 2.0, size=(5, 2))
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        ref = SimilarityTransform.from_estimate(src, dst)
    else:
        ref = SimilarityTransform()
        assert ref.estimate(src, dst)
    np.testing.assert_allclose(similarity_transform(src, dst), ref.params[:2], atol=1e-8)


def test_weighted_similarity_transform_matches_linear_least_squares():
    """A similarity x -> [[a, -b], [b, a]] x + t is linear in (a, b, tx, ty): the weighted fit
    must equal numpy's weighted linear least squares; zero-weight points must not matter."""
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 150, size=(5, 2))
    dst = transform_points(_similarity(1.7, -0.6, 20, -4), src) + rng.normal(0, 3.0, (5, 2))
    w = np.array([1.0, 1.0, 0.5, 0.0, 0.0])
    rows, rhs, rw = [], [], []
    for (x, y), (u, v), wk in zip(src, dst, w):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
        rw += [wk, wk]
    sw = np.sqrt(np.array(rw))
    a, b, tx, ty = np.linalg.lstsq(np.array(rows) * sw[:, None], np.array(rhs) * sw, rcond=None)[0]
    np.testing.assert_allclose(similarity_transform(src, dst, w),
                               [[a, -b, tx], [b, a, ty]], atol=1e-8)
    moved = dst.copy()
    moved[3:] += 40.0
    np.testing.assert_allclose(similarity_transform(src, moved, w),
                               similarity_transform(src, dst, w), atol=1e-10)
    with pytest.raises(ValueError, match="two of them > 0"):
        similarity_transform(src, dst, [1, 0, 0, 0, 0])


def test_similarity_transform_rejects_bad_input():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="5 landmarks"):
        alignment_matrix(np.zeros((4, 2)), "dlib150")
    with pytest.raises(KeyError, match="unknown alignment template"):
        alignment_matrix(np.zeros((5, 2)), "nope")


# ----------------------------------------------------------------------------- warping
@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("scale,angle", [(1.6, 0.25), (4.0, -0.5)])  # 4.0: antialiased path
def test_align_maps_landmarks_onto_template(template, scale, angle):
    """Known answer: blobs drawn at a known similarity transform of the template land, after
    alignment, on the template positions."""
    tpl = TEMPLATES[template]
    truth = _similarity(scale, angle, 0, 0)
    pts = transform_points(truth, tpl.array())
    pts -= pts.min(0) - scale * tpl.size * 0.3  # shift into the image with a margin
    size = int(pts.max() + scale * tpl.size * 0.3)
    image = _blob_image(pts, size, size, sigma=1.5 * scale)
    chip = align(image, torch.from_numpy(pts).float(), template)
    assert chip.shape == (3, tpl.size, tpl.size)
    for (x, y) in tpl.array():
        px, py = _peak(chip, x, y)
        assert abs(px - x) < 0.05 and abs(py - y) < 0.05, (template, x, y, px, py)


def test_warp_matches_cv2_warp_affine():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.uniform(0, 1, (120, 140, 3)).astype(np.float32), (0, 0), 2)
    mat = _similarity(0.8, 0.2, -10, 15)
    ref = cv2.warpAffine(img, mat, (100, 100), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ours = warp_affine(torch.from_numpy(img).permute(2, 0, 1), mat, 100).permute(1, 2, 0).numpy()
    inner = (slice(10, 90), slice(10, 90))  # away from the border
    assert np.abs(ours[inner] - ref[inner]).max() < 2e-3


def test_align_batch_and_gradient():
    img = torch.rand(2, 3, 80, 90, requires_grad=True)
    lms = torch.tensor([[[30.0, 35], [55, 34], [43, 48], [33, 60], [54, 61]]] * 2)
    chips = align_batch(img, lms, "arcface112")
    assert chips.shape == (2, 3, 112, 112)
    torch.testing.assert_close(chips[0], align(img[0], lms[0], "arcface112"))
    chips.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="landmark sets"):
        align_batch(img, lms[:1], "arcface112")


# ----------------------------------------------------------------------------- detection helpers
def test_largest_and_best_face_helpers():
    det = Detections(
        boxes=torch.tensor([[0.0, 0, 10, 10], [0, 0, 50, 40], [5, 5, 20, 20]]),
        probs=torch.tensor([0.90, 0.95, 0.99]),
        landmarks=torch.zeros(3, 5, 2),
    )
    assert largest_face(det) == 1
    assert best_face(det) == 2
    assert len(det.select(1)) == 1
    empty = Detections.empty()
    assert len(empty) == 0 and empty.landmarks.shape == (0, 5, 2)
    assert largest_face(empty) is None and best_face(empty) is None


# ----------------------------------------------------------------------------- MTCNN, real weights
@pytest.fixture(scope="module")
def mtcnn():
    return load_mtcnn()


@pytest.mark.slow
def test_mtcnn_finds_faces_in_lfw_with_plausible_landmarks(mtcnn, data_dir):
    imgs = torch.stack([load_image(data_dir / "lfw_gray" / "images" / n) for n in LFW_IMAGES])
    dets = mtcnn.detect(imgs)
    assert len(dets) == 2
    for img, det in zip(imgs, dets):
        assert len(det) >= 1
        k = largest_face(det)
        assert det.probs[k] > 0.9
        box, lm = det.boxes[k], det.landmarks[k]
        # the tight LFW crops are mostly face
        assert (box[2] - box[0]) > 0.4 * img.shape[2]
        le, re, nose, ml, mr = lm
        assert le[0] < nose[0] < re[0] and ml[0] < mr[0]
        assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
        inside = ((lm[:, 0] >= box[0]) & (lm[:, 0] <= box[2])
                  & (lm[:, 1] >= box[1]) & (lm[:, 1] <= box[3]))
        assert bool(inside.all())
    # batched detection equals one image at a time
    single = mtcnn.detect(imgs[1])[0]
    torch.testing.assert_close(single.landmarks, dets[1].landmarks, atol=1e-3, rtol=0)


@pytest.mark.slow
def test_mtcnn_accepts_gray_rgba_and_mixed_sizes(mtcnn, data_dir, tmp_path):
    path = data_dir / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg"
    rgb = load_image(path)
    gray = rgb.mean(0, keepdim=True)
    rgba = torch.cat([rgb, torch.ones_like(rgb[:1])])
    small = torch.nn.functional.interpolate(rgb[None], scale_factor=0.8, mode="bilinear")[0]
    dets = mtcnn.detect([rgb, gray, rgba, small])
    assert [len(d) >= 1 for d in dets] == [True] * 4
    torch.testing.assert_close(dets[2].landmarks, dets[0].landmarks)  # alpha ignored
    # RGBA and grayscale image *files* go through xfr.io and detect_and_align
    Image.fromarray(np.asarray(Image.open(path).convert("RGBA"))).save(tmp_path / "face.png")
    chip = detect_and_align(tmp_path / "face.png", "dlib150", mtcnn=mtcnn)
    assert chip.shape == (3, 150, 150)
    chip = detect_and_align(data_dir / "lfw_gray" / "images" / LFW_IMAGES[0], "arcface112",
                            mtcnn=mtcnn)
    assert chip.shape == (3, 112, 112)
    chip = detect_and_align(gray, "faceres224", mtcnn=mtcnn)
    assert chip.shape == (3, 224, 224)


@pytest.mark.slow
def test_detect_and_align_puts_landmarks_on_template(mtcnn, data_dir):
    img = load_image(data_dir / "lfw_rgb_samples" / "Anthony_Hopkins_0002.jpg")
    chip = detect_and_align(img, "arcface112", mtcnn=mtcnn)
    det = mtcnn.detect(chip)[0]
    k = largest_face(det)
    assert k is not None
    err = (det.landmarks[k] - torch.from_numpy(TEMPLATES["arcface112"].array()).float()).norm(dim=1)
    assert err.max() < 4.0  # MTCNN re-detected on the chip: a few pixels of jitter


@pytest.mark.slow
@pytest.mark.parametrize("degrees", [20, -35])
def test_refined_landmarks_follow_a_rotation_of_the_image(mtcnn, data_dir, degrees):
    """Equivariance: landmarks found on a rotated image, mapped back through the rotation, equal
    those of the original image (the second, upright pass of refine_landmarks makes them so)."""
    img = load_image(data_dir / "lfw_rgb_samples" / "Anthony_Hopkins_0002.jpg")
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0]])
    centre = np.array([(img.shape[2] - 1) / 2, (img.shape[1] - 1) / 2])
    rot[:, 2] = centre - rot[:, :2] @ centre
    rotated = warp_affine(img, rot, img.shape[1])
    ref = face_landmarks(img, mtcnn)[0].double().numpy()
    back = transform_points(invert_affine(rot), face_landmarks(rotated, mtcnn)[0])
    assert np.linalg.norm(back - ref, axis=1).max() < 2.5
    # refined landmarks stay close to the first pass
    first = face_landmarks(img, mtcnn, refine=False)[0].double().numpy()
    assert np.linalg.norm(first - ref, axis=1).max() < 4.0


@pytest.mark.slow
def test_no_face_error_on_blank_image(mtcnn, tmp_path):
    blank = torch.full((3, 200, 240), 0.5)
    assert len(mtcnn.detect(blank)[0]) == 0
    assert [len(d) for d in mtcnn.detect([torch.rand(3, 12, 15), torch.rand(1, 19, 40)])] == [0, 0]
    with pytest.raises(NoFaceError, match=r"no face found in image of shape \(3, 200, 240\)"):
        detect_and_align(blank, "dlib150", mtcnn=mtcnn)
    Image.new("L", (120, 100), 30).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="no face found in .*blank.png"):
        detect_and_align(tmp_path / "blank.png", "dlib150", mtcnn=mtcnn)
