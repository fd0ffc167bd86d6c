"""Faces in a common working frame with their dense FaceMesh (the CMS paper §3.1): warp geometry
between original images, working frames and aligned chips (pixel-centre 2x3 matrices of
:mod:`xfr.models.align`), and face preparation (one MTCNN pass, a frame, a 468-point mesh).

**Working frame.** Every face is brought to a common 224 x 224 working image (the VGG input size
of the paper, so that its 15-px occluding patch keeps its meaning relative to the face) and gets
its 468-point FaceMesh there (:func:`xfr.explain.canonical.face_mesh` with the MTCNN box mapped
into the frame). :func:`prepare_faces` builds the frame from one MTCNN pass on the original image:

- ``"full"``: the whole image resized (FER-2013: 48 x 48 tight crops; the expression model was
  trained on exactly these crops);
- ``"crop"``: a square of ``crop_scale`` x the longer side of the MTCNN box around its centre
  (UTKFace chips, CelebA aligned crops; the faceres nets were trained on VGGFace2 crops of the
  box x 1.3);
- ``"align"``: the 5-point similarity transform onto a model template scaled to 224 (LFW for the
  dlib ResNet: its ``dlib150`` chip, so that the network's own resize to 150 gives exactly the
  chip it expects).

Pixels outside the original image are edge-replicated. Faces where MTCNN finds nothing, or
whose FaceMesh disagrees with MTCNN's five landmarks (mean distance over the eye centres, nose
tip and mouth corners > ``max_mesh_error`` x the inter-ocular distance), are dropped and counted.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.align import compose_affine as compose
from ..models.align import invert_affine as invert
from ..models.align import sampling_grid, transform_points

WORK_SIZE = 224
# FaceMesh landmarks standing for MTCNN's five points, in MTCNN's order (image-left eye first:
# the subject's right eye, MediaPipe 33/133; subject's left eye 362/263; nose tip 1; the mouth
# corner on the image left 61, on the image right 291).
MESH5 = ((33, 133), (362, 263), (1,), (61,), (291,))


# ----------------------------------------------------------------------------- geometry
def to_centres(points) -> np.ndarray:
    """Continuous pixel coordinates (pixel i covers [i, i+1]) -> pixel-centre coordinates (centre
    of pixel i at i), the convention of :mod:`xfr.models.align` matrices."""
    return np.asarray(points, dtype=np.float64) - 0.5


def transform_continuous(mat: np.ndarray, points) -> np.ndarray:
    """Apply a pixel-centre 2x3 affine matrix (:mod:`xfr.models.align`) to continuous points."""
    pts = np.asarray(points.detach().cpu().numpy() if isinstance(points, Tensor) else points,
                     dtype=np.float64)
    return transform_points(np.asarray(mat, dtype=np.float64), pts - 0.5) + 0.5


def frame_matrix(mode: str, hw: tuple[int, ...], landmarks5=None, box=None, crop_scale: float = 1.4,
                 template: str = "dlib150", size: int = WORK_SIZE) -> np.ndarray:
    """2x3 matrix (pixel centres) from original image pixels to the ``size`` working frame.

    ``mode``: ``"full"`` (the whole H x W image scaled to size x size), ``"crop"`` (a square of
    ``crop_scale`` x the longer side of ``box`` (x1, y1, x2, y2, continuous) around its centre),
    ``"align"`` (5-point similarity of ``landmarks5`` [5,2] onto ``template`` scaled to size).
    """
    from ..models.align import get_template, similarity_transform

    h, w = int(hw[0]), int(hw[1])
    if mode == "full":
        sx, sy = size / w, size / h
        return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    if mode == "crop":
        if box is None:
            raise ValueError("mode 'crop' needs the face box")
        if not crop_scale > 0:
            raise ValueError(f"crop_scale must be > 0, got {crop_scale}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box}")
        side = crop_scale * max(x2 - x1, y2 - y1)
        x0, y0 = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
        k = size / side
        return np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])
    if mode == "align":
        if landmarks5 is None:
            raise ValueError("mode 'align' needs the 5 landmarks")
        tpl = get_template(template)
        dst = (tpl.array() + 0.5) * size / tpl.size - 0.5
        lm = np.asarray(landmarks5, dtype=np.float64)
        return similarity_transform(lm, dst, tpl.weights)
    raise ValueError(f"mode must be 'full', 'crop' or 'align', got {mode!r}")


def warp_replicate(image: Tensor, mat: np.ndarray, size: int = WORK_SIZE) -> Tensor:
    """``image`` [C,H,W] sampled into a size x size frame by ``mat`` (pixel centres), pixels
    outside the image edge-replicated (bilinear; antialiased when shrinking by more than 2x)."""
    from ..models.align import warp_affine

    h, w = image.shape[1:]
    inv = invert(mat)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], dtype=np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    need = max(0.0, -src.min(), float((src[:, 0] - (w - 1)).max()), float((src[:, 1] - (h - 1)).max()))
    pad = int(math.ceil(need)) + 2
    pad = min(pad, 4 * max(h, w))
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0] if pad else image
    shift = np.array([[1.0, 0.0, -pad], [0.0, 1.0, -pad]])  # padded pixel -> original pixel
    return warp_affine(padded, compose(mat, shift) if pad else mat, size).clamp(0, 1)


def batched_warp(images: Tensor, mat: np.ndarray, size: int) -> Tensor:
    """A batch [N,C,H,W] warped by one 2x3 matrix (pixel centres, source -> destination) into
    size x size (bilinear, zeros outside; differentiable). The score of a keypoint-aligned model
    on an unaligned frame: ``f(batched_warp(x, A, 150))``."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N,C,H,W], got {tuple(images.shape)}")
    n, _, h, w = images.shape
    grid = sampling_grid(mat, (h, w), size).to(images.dtype).to(images.device)[None].expand(n, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def warp_map(smap, mat: np.ndarray, hw: tuple[int, int]) -> Tensor:
    """A map [h,w] in a frame B carried into a frame A of size ``hw`` where ``mat`` maps A to B
    (pixel centres): out(p) = smap(mat p), bilinear, 0 outside B."""
    m = torch.as_tensor(np.asarray(smap, dtype=np.float32))
    if m.dim() != 2:
        raise ValueError(f"smap must be [H,W], got {tuple(m.shape)}")
    h, w = int(hw[0]), int(hw[1])
    if h != w:
        raise ValueError("warp_map needs a square destination frame")
    # batched_warp samples src at inv(M) p; here src = smap (frame B), M = inv(mat): A -> B
    return batched_warp(m[None, None], invert(mat), h)[0, 0]


def frame_to_chip(face: PreparedFace, raw_hw: tuple[int, ...], size: int = WORK_SIZE) -> np.ndarray:
    """2x3 matrix from the "no alignment" frame (the original image resized to size x size) to
    the face's working (aligned) frame."""
    return compose(face.matrix, invert(frame_matrix("full", raw_hw, size=size)))


# ----------------------------------------------------------------------------- faces
@dataclass
class PreparedFace:
    """One face in the 224 working frame with its dense mesh."""

    name: str
    dataset: str
    image: Tensor  # [3,S,S] in [0,1]
    mesh: Tensor  # [468,2] continuous working-frame pixels
    landmarks5: Tensor  # [5,2] MTCNN points in the working frame (continuous)
    box: Tensor  # [4] MTCNN box in the working frame
    matrix: np.ndarray  # 2x3 original pixel -> working pixel (pixel centres)
    label: int  # ground-truth class index (-1: none)
    mesh_error: float  # mean |mesh5 - MTCNN5| / inter-ocular distance
    meta: dict = field(default_factory=dict)


@dataclass
class PreparedSet:
    faces: list[PreparedFace]
    dropped: dict[str, int]  # reason -> count
    n_input: int
    seconds: float
    errors: list[float] = field(default_factory=list)  # mesh errors of all meshed faces

    def summary(self, dataset: str) -> dict:
        return dict(dataset=dataset, input=self.n_input, kept=len(self.faces),
                    no_face=self.dropped.get("no_face", 0), bad_mesh=self.dropped.get("bad_mesh", 0),
                    median_mesh_error=float(np.median(self.errors)) if self.errors else float("nan"),
                    seconds=self.seconds)


def mesh_five(mesh) -> np.ndarray:
    """The five MTCNN-like points [5,2] read off a FaceMesh [468,2] (:data:`MESH5`)."""
    m = np.asarray(mesh.detach().cpu().numpy() if isinstance(mesh, Tensor) else mesh, dtype=np.float64)
    return np.stack([m[list(idx), :2].mean(0) for idx in MESH5])


def mesh_error(mesh, landmarks5) -> float:
    """Mean distance of :func:`mesh_five` from the MTCNN landmarks, over their inter-ocular
    distance (0 = perfect agreement)."""
    lm = np.asarray(landmarks5, dtype=np.float64)
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    if iod <= 0:
        return float("inf")
    return float(np.linalg.norm(mesh_five(mesh) - lm, axis=1).mean() / iod)


def detect_faces(images: Sequence[Tensor], detector, det_size: int = 224, pad: float = 0.25):
    """One MTCNN pass per image on a copy scaled to long side ``det_size`` and edge-padded by
    ``pad`` x det_size (tight crops need the margin): per image (box [4], landmarks [5,2]) of the
    largest face in original continuous pixels, or None."""
    from ..models.detect import largest_face

    smalls, scales, pads = [], [], []
    for img in images:
        h, w = img.shape[1:]
        s = det_size / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        x = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=s < 1).clamp(0, 1)
        p = int(round(pad * det_size))
        smalls.append(F.pad(x, (p, p, p, p), mode="replicate")[0])
        scales.append((nw / w, nh / h))
        pads.append(p)
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for det, (sx, sy), p in zip(detector.detect(smalls), scales, pads):
        k = largest_face(det)
        if k is None:
            out.append(None)
            continue
        box = det.boxes[k].double().numpy().copy()
        lm = det.landmarks[k].double().numpy().copy()
        box[[0, 2]] = (box[[0, 2]] - p) / sx
        box[[1, 3]] = (box[[1, 3]] - p) / sy
        lm[:, 0] = (lm[:, 0] - p) / sx
        lm[:, 1] = (lm[:, 1] - p) / sy
        out.append((box, lm))
    return out


def prepare_faces(paths: Sequence[Path], labels: Sequence[int], dataset: str, mode: str, detector,
                  crop_scale: float = 1.4, template: str = "dlib150", size: int = WORK_SIZE,
                  max_mesh_error: float = 0.25, metas: Sequence[dict] | None = None,
                  batch: int = 32) -> PreparedSet:
    """Detect, frame (:func:`frame_matrix`) and mesh every image; see the module docstring."""
    from ..explain.canonical import face_mesh
    from ..io import load_image

    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if not max_mesh_error > 0:
        raise ValueError(f"max_mesh_error must be > 0, got {max_mesh_error}")
    t0 = time.perf_counter()
    faces, dropped, errors = [], {"no_face": 0, "bad_mesh": 0}, []
    metas = list(metas) if metas is not None else [{} for _ in paths]
    for start in range(0, len(paths), batch):
        chunk = list(range(start, min(start + batch, len(paths))))
        images = [load_image(paths[i]) for i in chunk]
        for i, img, found in zip(chunk, images, detect_faces(images, detector, det_size=size)):
            if found is None:
                dropped["no_face"] += 1
                continue
            box, lm = found
            # MTCNN points are pixel-centre-like; treat them as continuous coordinates of the
            # image (the half-pixel difference is far below the mesh tolerance)
            mat = frame_matrix(mode, img.shape[1:], landmarks5=to_centres(lm), box=box,
                               crop_scale=crop_scale, template=template, size=size)
            work = warp_replicate(img, mat, size)
            corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
            c = transform_continuous(mat, corners)
            box_w = np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()])
            lm_w = transform_continuous(mat, lm)
            mesh = face_mesh(work, box=torch.from_numpy(box_w).float())
            err = mesh_error(mesh, lm_w)
            errors.append(err)
            if not np.isfinite(err) or err > max_mesh_error:
                dropped["bad_mesh"] += 1
                continue
            faces.append(PreparedFace(Path(paths[i]).name, dataset, work, mesh,
                                      torch.from_numpy(lm_w).float(), torch.from_numpy(box_w).float(),
                                      mat, int(labels[i]), err, dict(metas[i])))
    return PreparedSet(faces, dropped, len(paths), time.perf_counter() - t0, errors)


def pair_canvas(a: Tensor, b: Tensor) -> Tensor:
    """Two faces [3,S,S] side by side -> [3,S,2S] (eq. 8 occludes both at the same landmark)."""
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"pair faces must be two [3,S,S] images of one size, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return torch.cat([a, b], dim=2)


def pair_mesh(mesh_a: Tensor, mesh_b: Tensor, width: int) -> Tensor:
    """The two meshes [468,2] of :func:`pair_canvas` as [2,468,2] canvas coordinates."""
    shifted = mesh_b.clone()
    shifted[:, 0] += width
    return torch.stack([mesh_a, shifted])
