"""Canonical Saliency Maps experiments (John et al., the CMS paper, §3-§5; notebook
``notebooks/cms_bias.ipynb``): face preparation, the paper's score functions, Grad-CAM baselines,
the alignment and patch-size ablations and the summaries of the canonical maps.

**Working frame.** Every face is brought to a common 224 x 224 working image (the VGG input size
of the paper, so that its 15-px occluding patch keeps its meaning relative to the face) and gets
its 468-point FaceMesh there (:func:`xfr.canonical.face_mesh` with the MTCNN box mapped into the
frame). :func:`prepare_faces` builds the frame from one MTCNN pass on the original image:

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

**Scores** (eqs. 1, 7, 8): :func:`class_score` is the probability of the ground-truth class
(Algorithm 1 uses the target class C of the input, Fig. 2 the ground truth); the gender
mini-Xception gets the face with extra context (:class:`ContextPadded`,
``xfr.models.xception.pad_context``) because it was trained on loose IMDB crops.
:func:`pair_confidence` / :func:`mate_confidence` are eq. 8, S = c (cos(Q1, Q2) - tau), with c =
+1 for a genuine pair and -1 for an impostor pair, so that a correct decision has a positive
confidence (eq. 8 as printed, c (tau - cos) with c = 1 for "same", is negative for every
correctly verified genuine pair; the sign convention is the only difference).
"""
from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import ScoreFn
from ..models.align import compose_affine as compose
from ..models.align import invert_affine as invert
from ..models.align import transform_points
from ..models.xception import ContextPadded
from ..score import attribute_score, unit_embeddings

WORK_SIZE = 224
# FaceMesh landmarks standing for MTCNN's five points, in MTCNN's order (image-left eye first:
# the subject's right eye, MediaPipe 33/133; subject's left eye 362/263; nose tip 1; the mouth
# corner on the image left 61, on the image right 291).
MESH5 = ((33, 133), (362, 263), (1,), (61,), (291,))
# extra canonical regions (landmark discs / polygons) for the paper's claims, see region_masks
EYE_CORNERS = (33, 133, 362, 263)
GLABELLA = (9, 8, 168, 107, 336, 55, 285)
EYE_NOSE_TRIANGLE = (33, 263, 1)


# ----------------------------------------------------------------------------- sampling
def sample_rows(table: pd.DataFrame, n: int | None, seed: int = 0,
                stratify: Sequence[str] | None = None) -> pd.DataFrame:
    """``n`` random rows of ``table`` (all when n is None or larger), in equal shares of the
    groups of the ``stratify`` columns (as equal as the groups allow), reproducible by ``seed``."""
    if n is None or n >= len(table):
        return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not stratify:
        return table.sample(n=int(n), random_state=seed).reset_index(drop=True)
    groups = [g.sample(frac=1.0, random_state=seed) for _, g in table.groupby(list(stratify))]
    picked, k = [], 0
    while len(picked) < n:  # round robin over the shuffled groups
        added = False
        for g in groups:
            if k < len(g) and len(picked) < n:
                picked.append(g.iloc[k])
                added = True
        if not added:
            break
        k += 1
    out = pd.DataFrame(picked)
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def sample_pairs(pairs, n: int | None, seed: int = 0) -> list:
    """``n`` LFW pairs (:func:`xfr.data.lfw_pairs`), half genuine and half impostor, random."""
    rng = np.random.default_rng(seed)
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    if n is None:
        n = len(pairs)
    n_same = min(len(same), (int(n) + 1) // 2)
    n_diff = min(len(diff), int(n) - n_same)
    pick = [same[i] for i in rng.permutation(len(same))[:n_same]] + \
           [diff[i] for i in rng.permutation(len(diff))[:n_diff]]
    return [pick[i] for i in rng.permutation(len(pick))]


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


def frame_matrix(mode: str, hw: tuple[int, int], landmarks5=None, box=None, crop_scale: float = 1.4,
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
    inv = invert(mat)
    norm = np.array([[2.0 / max(w - 1, 1), 0, -1.0], [0, 2.0 / max(h - 1, 1), -1.0], [0, 0, 1]])
    theta = norm @ np.vstack([inv, [0, 0, 1]])
    u = torch.arange(size, dtype=torch.float64)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    grid = torch.stack([uu, vv, torch.ones_like(uu)], -1) @ torch.from_numpy(theta[:2].T)
    grid = grid.to(images.dtype).to(images.device)[None].expand(n, -1, -1, -1)
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
    out = []
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
    from ..canonical import face_mesh
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


# ----------------------------------------------------------------------------- scores
def classifier_net(model: nn.Module, context: float = 0.0) -> nn.Module:
    return ContextPadded(model, context) if context and context > 0 else model


def class_score(model: nn.Module, k: int, context: float = 0.0) -> ScoreFn:
    """phi(I, c) of eq. 1: the softmax probability of class ``k`` (the ground truth), the face
    padded by ``context`` first when > 0."""
    net = classifier_net(model, context)
    f = attribute_score(net, k)
    f.classifier, f.k = net, int(k)
    return f


def predict(model: nn.Module, images: Tensor, context: float = 0.0, batch_size: int = 64) -> Tensor:
    """Class probabilities [N,K] of a classifier on faces [N,3,H,W]."""
    net = classifier_net(model, context)
    with torch.inference_mode():
        return torch.cat([torch.softmax(net(images[i:i + batch_size]).float(), 1)
                          for i in range(0, len(images), batch_size)])


def cosine_tau(similarities, same) -> float:
    """tau of eq. 8: the cosine-similarity threshold with the best verification accuracy on the
    given pairs (genuine iff cos > tau; :func:`xfr.metrics.best_threshold` on 1 - cos)."""
    from ..metrics import best_threshold

    return 1.0 - best_threshold(1.0 - np.asarray(similarities, dtype=np.float64), same)


def _sign(same) -> float:
    return 1.0 if bool(same) else -1.0


def pair_confidence(embedder, tau: float, same: bool) -> ScoreFn:
    """Eq. 8 on a side-by-side pair canvas [N,3,S,2S]: c (cos(e(left), e(right)) - tau), c = +1
    for a genuine pair, -1 for an impostor pair (positive = verified correctly)."""
    embed = unit_embeddings(embedder)
    c = _sign(same)

    def f(canvas: Tensor) -> Tensor:
        if canvas.dim() == 3:
            canvas = canvas[None]
        w = canvas.shape[-1]
        if w % 2:
            raise ValueError(f"a pair canvas has an even width (two faces side by side), got {w}")
        n = canvas.shape[0]
        e = embed(torch.cat([canvas[..., : w // 2], canvas[..., w // 2:]]))
        return c * ((e[:n] * e[n:]).sum(1) - tau)

    f.verification = True
    return f


def mate_confidence(embedder, mate: Tensor, tau: float, same: bool) -> ScoreFn:
    """Eq. 8 with one image perturbed: f(X) = c (cos(e(X), e(mate)) - tau), ``mate`` fixed."""
    embed = unit_embeddings(embedder)
    ref = embed(mate[None])[0]
    c = _sign(same)

    def f(images: Tensor) -> Tensor:
        return c * (embed(images) @ ref - tau)

    f.reference_embedding = ref
    f.verification = True
    return f


def warped_score(f: ScoreFn, mat: np.ndarray, size: int) -> ScoreFn:
    """f on images warped by ``mat`` into size x size first (a keypoint-aligned model explained
    in an unaligned frame: occlusions happen in the frame, the model sees the warped chip)."""

    def g(images: Tensor) -> Tensor:
        if images.dim() == 3:
            images = images[None]
        return f(batched_warp(images, mat, size))

    return g


# ----------------------------------------------------------------------------- CIS runs
@dataclass
class CISRun:
    """The CIS maps of one model on one data set."""

    task: str  # e.g. "gender (UTKFace)"
    model: str
    faces: list  # PreparedFace (or pairs of them)
    results: list  # CISResult per face
    base_scores: np.ndarray  # f(I) per face
    correct: np.ndarray  # bool per face: the model's decision is right
    seconds: float

    @property
    def maps(self) -> list[Tensor]:
        return [r.canonical for r in self.results]

    @property
    def n_forward(self) -> int:
        return int(sum(r.n_forward for r in self.results))


def run_cis(task: str, model_name: str, items: Sequence, make_score: Callable, image_of: Callable,
            mesh_of: Callable, patch: int = 15, points: Tensor | None = None, stride: int = 1,
            batch_size: int = 64, face=None, correct_of: Callable | None = None,
            canvas_patch: int | None = None) -> CISRun:
    """CIS (Algorithm 1) of every item: ``make_score(item)`` -> f, ``image_of(item)`` -> image,
    ``mesh_of(item)`` -> mesh [468,2] or [K,468,2]; ``points`` (landmark indices, e.g.
    :func:`spread_landmarks`) or every ``stride``-th landmark occluded; ``canvas_patch`` as in
    :func:`xfr.canonical.cis`."""
    from ..canonical import cis

    t0 = time.perf_counter()
    results, base, correct = [], [], []
    for it in items:
        f = make_score(it)
        r = cis(f, image_of(it), mesh_of(it), patch=patch, stride=stride, points=points, face=face,
                batch_size=batch_size, canvas_patch=canvas_patch)
        results.append(r)
        base.append(r.base_score)
        correct.append(bool(correct_of(it)) if correct_of else True)
    return CISRun(task, model_name, list(items), results, np.array(base), np.array(correct),
                  time.perf_counter() - t0)


# ----------------------------------------------------------------------------- summaries
def images_to_converge(curve: pd.DataFrame, level: float) -> int | None:
    """Smallest n of a :func:`xfr.canonical.cms_convergence` curve from which the Pearson
    correlation with the final map stays >= ``level`` (None if never before the last step)."""
    c = curve.sort_values("n_images")
    ok = (c["pearson_with_final"] >= level).to_numpy()
    n = c["n_images"].to_numpy()
    if len(n) < 2 or not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    first = 0 if len(bad) == 0 else bad[-1] + 1
    return int(n[first]) if first < len(n) - 1 else None


def spearman_brown_n(r: float, n: int, target: float) -> float:
    """Images per map at which two independent CMS maps would correlate at ``target``, given that
    two maps of ``n`` images each correlate at ``r`` (split-half): the Spearman-Brown prophecy
    n * target (1 - r) / (r (1 - target)), which assumes each CIS map is the model's map plus
    independent noise (inf when r <= 0)."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not np.isfinite(r) or r <= 0:
        return float("inf")
    if r >= 1:
        return float(n)
    return float(n * target * (1 - r) / (r * (1 - target)))


def landmark_disc_mask(face, indices: Sequence[int], radius: float) -> Tensor:
    """BoolTensor[S,S]: canvas pixels within ``radius`` of any of the canonical landmarks."""
    s = face.size
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    pts = face.points[list(indices)].double()
    d2 = (xx[None].double() - pts[:, 0, None, None]) ** 2 + (yy[None].double() - pts[:, 1, None, None]) ** 2
    return (d2 <= radius ** 2).any(0) & face.face_mask


def polygon_mask(face, indices: Sequence[int]) -> Tensor:
    """BoolTensor[S,S]: canvas pixels inside the polygon through the given canonical landmarks."""
    from matplotlib.path import Path as MPath

    s = face.size
    centres = np.stack(np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="xy"), -1).reshape(-1, 2)
    pts = face.points[list(indices)].double().numpy()
    return torch.from_numpy(MPath(pts).contains_points(centres).reshape(s, s)) & face.face_mask


def region_masks(face) -> dict[str, Tensor]:
    """The canonical regions summarized: the face's own (eyes, eyebrows, nose, mouth, cheeks) and
    three for the paper's claims: ``eye_corners`` (discs of radius S/32 around the four eye
    corners, gender), ``glabella`` (between the eyebrows, disc S/24, expression) and
    ``eye_nose_triangle`` (outer eye corners and nose tip, recognition)."""
    s = face.size
    out = {n: face.region_mask(n) for n in ("eyes", "eyebrows", "nose", "mouth", "cheeks")}
    out["eye_corners"] = landmark_disc_mask(face, EYE_CORNERS, s / 32)
    out["glabella"] = landmark_disc_mask(face, GLABELLA, s / 24)
    out["eye_nose_triangle"] = polygon_mask(face, EYE_NOSE_TRIANGLE)
    return out


def region_mass(cmap, face, masks: Mapping[str, Tensor] | None = None) -> pd.DataFrame:
    """Per region: ``mass_share`` (share of the map's positive mass on the face that lies in the
    region), ``area_share`` (share of the face's area: what a uniform map would give),
    ``enrichment`` = mass_share / area_share (> 1: the model looks there more than uniformly)
    and the region's mean value."""
    m = torch.as_tensor(np.asarray(cmap, dtype=np.float64))
    if m.shape != (face.size, face.size):
        raise ValueError(f"cmap must be [{face.size},{face.size}], got {tuple(m.shape)}")
    masks = dict(masks) if masks is not None else region_masks(face)
    fm = face.face_mask
    pos = m.clamp(min=0) * fm
    total = float(pos.sum())
    area = float(fm.sum())
    rows = []
    for name, mask in masks.items():
        mask = mask & fm
        share = float(pos[mask].sum()) / total if total > 0 else float("nan")
        a = float(mask.sum()) / area
        rows.append(dict(region=name, mass_share=share, area_share=a,
                         enrichment=share / a if a > 0 else float("nan"),
                         mean_value=float(m[mask].mean()) if mask.any() else float("nan")))
    return pd.DataFrame(rows)


def masked_spearman(a, b, mask) -> float:
    """Spearman rank correlation of two maps restricted to ``mask`` (the face on the canvas:
    the constant zeros outside it would inflate the correlation)."""
    from ..metrics import spearman

    mk = np.asarray(mask, dtype=bool)
    return spearman(np.asarray(a, dtype=np.float64)[mk][None], np.asarray(b, dtype=np.float64)[mk][None])


def positive(smap) -> np.ndarray:
    """The positive part of a map (saliency = score drops; negative drops are no evidence for
    the explained decision) as float64."""
    return np.maximum(np.asarray(smap, dtype=np.float64), 0.0)


def spread_landmarks(n: int, face=None, start: int = 1) -> Tensor:
    """``n`` landmark indices spread evenly over the canonical face (farthest-point sampling of
    the canvas points from landmark ``start``, the nose tip), sorted.

    MediaPipe's landmark numbering has no spatial order, so Algorithm 1's "every stride-th
    vertex" leaves holes on the canvas (with the recorded patch of a 15 px occluder, stride 3
    covers about half of the face); the same number of evenly spread points covers far more.
    """
    from ..canonical import N_LANDMARKS, canonical_face

    face = face if face is not None else canonical_face()
    if not 1 <= int(n) <= N_LANDMARKS:
        raise ValueError(f"n must be in [1, {N_LANDMARKS}], got {n}")
    if n == N_LANDMARKS:
        return torch.arange(N_LANDMARKS)
    pts = face.points.double().numpy()
    sel = [int(start)]
    d = np.linalg.norm(pts - pts[start], axis=1)
    while len(sel) < int(n):
        i = int(d.argmax())
        sel.append(i)
        d = np.minimum(d, np.linalg.norm(pts - pts[i], axis=1))
    return torch.tensor(sorted(sel), dtype=torch.long)


def canvas_coverage(points: Tensor, canvas_patch: int, face=None) -> float:
    """Share of the canonical face covered by the recorded patches of ``points`` (eq. 5's count
    N > 0): the part of the face a CIS map can say anything about."""
    from ..canonical import canonical_face, square_cover

    face = face if face is not None else canonical_face()
    p = face.points.double()[torch.as_tensor(points, dtype=torch.long)]
    cols = square_cover(p[:, 0], int(canvas_patch), face.size).double()
    rows = square_cover(p[:, 1], int(canvas_patch), face.size).double()
    return float(((rows.T @ cols) > 0)[face.face_mask].float().mean())


# ----------------------------------------------------------------------------- Grad-CAM family
CAM_METHODS = ("gradcam", "gradcam++", "scorecam")
CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "ScoreCAM"}


class CamNet(nn.Module):
    """A model as pytorch-grad-cam wants it: an ``nn.Module`` with at least one parameter (the
    package finds the device from it; TF.js graphs hold only buffers)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class TappedFaceResGender(nn.Module):
    """``faceres-gender`` (a TF.js graph run op by op, :class:`xfr.models.tfjs_graph.TFJSGraph`)
    with an ``nn.Identity`` module ``tap`` applied to the output of graph node ``node``, so that
    module hooks (Grad-CAM's activations and gradients) see that layer. Same logits as the model.

    The graph's ops are closures, not modules, so no layer can be hooked directly; this re-runs
    the graph's compiled steps (``graph._steps``) with the tap inserted.
    """

    def __init__(self, net: nn.Module, node: str = "conv_pw_11_relu/clip_by_value"):
        super().__init__()
        from ..models.human import FaceResGender

        if not isinstance(net, FaceResGender):
            raise ValueError(f"expected the faceres-gender model, got {type(net).__name__}")
        names = [s[0] for s in net.graph._steps]
        if node not in names:
            raise ValueError(f"node {node!r} is not in the graph; conv layers: "
                             f"{[n for n in names if 'relu' in n][-6:]}")
        self.net = net
        self.node = node
        self.tap = nn.Identity()
        self.classes = net.classes
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, faces: Tensor) -> Tensor:
        from ..models.tfjs_graph import NCHW_TO_NHWC

        g = self.net.graph
        x = self.net.preprocess(faces).float().contiguous(memory_format=torch.channels_last)
        env = {g.input_name: x}
        for (name, _, fn), release in zip(g._steps, g._release):
            env[name] = fn(env)
            if name == self.node:
                env[name] = self.tap(env[name])
            for r in release:
                env.pop(r, None)
        name = g.output_names[0]
        z = env[name].permute(NCHW_TO_NHWC) if g._nchw[name] else env[name]
        return torch.cat([-z / 2, z / 2], dim=1)


class VerificationTarget:
    """Grad-CAM target for eq. 8: c (cos(e, e_mate) - tau) of an embedding ``e`` (model output)."""

    def __init__(self, mate_embedding: Tensor, tau: float, same: bool):
        self.ref = F.normalize(mate_embedding.float().flatten(), dim=0)
        self.tau = float(tau)
        self.c = _sign(same)

    def __call__(self, output: Tensor) -> Tensor:
        e = F.normalize(output.float(), dim=-1)
        return self.c * ((e * self.ref.to(e.device)).sum(-1) - self.tau)


def cam_setup(model_name: str, model: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(module to explain, its target layer, layer name) for the Grad-CAM family:
    mini-Xceptions: ``model.target_layer`` (the last convolution, Arriaga's Grad-CAM layer);
    dlib ResNet: ``blocks.conv256_2`` (the last residual block at 4x4 on the 150 input; the
    final down block leaves 2x2); faceres-gender: the graph node ``conv_pw_11`` (14x14x512, the
    resolution and width of VGG-16's conv5_3 at 224 that the paper's baselines use; its last
    layer conv_pw_13 is 7x7x1024, twice the ScoreCAM cost) through :class:`TappedFaceResGender`."""
    from ..models.dlib_resnet import DlibResNet
    from ..models.human import FaceResGender
    from ..models.xception import XceptionClassifier

    if isinstance(model, XceptionClassifier):
        return CamNet(model), model.target_layer, model.target_layer_name
    if isinstance(model, DlibResNet):
        return CamNet(model), model.blocks["conv256_2"], "blocks.conv256_2"
    if isinstance(model, FaceResGender):
        tapped = TappedFaceResGender(model)
        return tapped, tapped.tap, tapped.node
    raise ValueError(f"no Grad-CAM target layer known for {model_name!r} ({type(model).__name__})")


def cam_maps(method: str, net: nn.Module, layer: nn.Module, images: Tensor, targets: Sequence,
             context: float = 0.0, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM / Grad-CAM++ / ScoreCAM maps (pytorch-grad-cam) [N,H,W] in [0,1] of images
    [N,3,H,W] with one target per image (``ClassifierOutputTarget`` or a callable on the model
    output, e.g. :class:`VerificationTarget`).

    ``context`` > 0: the images are padded as :class:`ContextPadded` does, the CAM computed on
    the padded input (where the network's activations live) and cropped back to the face.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
    if method not in classes:
        raise ValueError(f"method must be one of {sorted(classes)}, got {method!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be [N,3,H,W], got {tuple(images.shape)}")
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    h, w = images.shape[-2:]
    x = images.float()
    ph = pw = 0
    if context and context > 0:
        from ..models.xception import pad_context

        x = pad_context(x, context)
        ph, pw = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    cam = classes[method](model=net, target_layers=[layer])
    cam.compute_input_gradient = method != "scorecam"  # gradients reach TF.js graphs (buffers)
    if method == "scorecam":
        cam.batch_size = batch_size
    out = []
    try:
        for i in range(len(x)):
            # oneDNN's backward of a strided 1x1 convolution on channels-last input (the
            # mini-Xception shortcuts) crashes this torch build (double free / segfault): the
            # gradient methods run on the native kernels (same gradients); ScoreCAM needs no
            # backward pass and keeps oneDNN (3x faster forward passes). Its tqdm bars are muted.
            with torch.enable_grad(), warnings.catch_warnings(), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore", UserWarning)
                with torch.backends.mkldnn.flags(enabled=method == "scorecam"):
                    m = cam(input_tensor=x[i:i + 1], targets=[targets[i]])[0]
            m = m[ph:ph + h, pw:pw + w] if (ph or pw) else m
            lo, hi = float(m.min()), float(m.max())
            out.append(((m - lo) / (hi - lo)) if hi > lo else np.zeros_like(m))
    finally:
        cam.activations_and_grads.release()
    return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------- ablation
def frame_to_chip(face: PreparedFace, raw_hw: tuple[int, int], size: int = WORK_SIZE) -> np.ndarray:
    """2x3 matrix from the "no alignment" frame (the original image resized to size x size) to
    the face's working (aligned) frame."""
    return compose(face.matrix, invert(frame_matrix("full", raw_hw, size=size)))


# ----------------------------------------------------------------------------- tables
def confidence_table(task: str, results: Sequence, costs: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Eqs. 11-13 over images that each have their own score function (verification: its
    mate; classification: its ground-truth class), i.e. one
    :func:`xfr.metrics.confidence_metrics` result per image, all with the same methods.

    One row per method: task, method, forward_passes and seconds_per_image (``costs[method]``),
    n_images, average_drop, increase_in_confidence, win (in %)."""
    from ..metrics import average_drop, increase_in_confidence, win

    if not results:
        raise ValueError("no results to summarize")
    methods = list(results[0].methods)
    if any(list(r.methods) != methods for r in results):
        raise ValueError("every result must have the same methods in the same order")
    mi = np.concatenate([r.m_image for r in results])
    me = np.concatenate([r.m_explained for r in results])
    drop, inc, wins = average_drop(mi, me), increase_in_confidence(mi, me), win(me)
    rows = []
    for j, m in enumerate(methods):
        passes, secs = costs.get(m, (np.nan, np.nan))
        rows.append(dict(task=task, method=m, forward_passes=float(passes), seconds_per_image=float(secs),
                         n_images=len(mi), average_drop=float(np.nanmean(drop[:, j])),
                         increase_in_confidence=float(np.mean(inc[:, j])), win=float(np.mean(wins[:, j]))))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures
def fig_cms_models(maps: Mapping[str, Tensor], face, subtitles: Mapping[str, str] | None = None,
                   title: str | None = None):
    """Figs. 1 / 7 / 13: one canonical map per model over the canonical face (each scaled to
    its own range, red = high)."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical

    n = len(maps)
    cols = n if n <= 4 else int(math.ceil(n / 2))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 3.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, m) in zip(axes.flat, maps.items()):
        plot_canonical(ax, m, face)
        sub = (subtitles or {}).get(name, "")
        ax.set_title(name + (f"\n{sub}" if sub else ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def fig_cis_examples(rows: Sequence[dict], face, title: str | None = None):
    """Fig. 6: per row (a) the occlusion-on-mesh map on the input, (b) the CIS map, (c) the
    model's CMS and (d) the CMS reprojected onto the input. ``rows``: dicts with ``label``,
    ``image`` [3,H,W], ``image_map`` [H,W], ``cis`` [S,S], ``cms`` [S,S], ``reprojected``
    [H,W]."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical
    from ..viz import overlay

    fig, axes = plt.subplots(len(rows), 4, figsize=(10.5, 2.75 * len(rows)), squeeze=False)
    heads = ("(a) occlusion on the mesh", "(b) CIS", "(c) CMS", "(d) CMS reprojected")
    for r, row in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(overlay(row["image"], row["image_map"]))
        plot_canonical(ax[1], row["cis"], face)
        plot_canonical(ax[2], row["cms"], face)
        rep = row["reprojected"]
        ax[3].imshow(overlay(row["image"], rep))
        for j in range(4):
            ax[j].set_axis_off()
            ax[j].set_title((heads[j] + "\n" if r == 0 else "") + (row["label"] if j == 0 else ""),
                            fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_convergence(curves: pd.DataFrame, levels: Sequence[float] = (0.95, 0.99)):
    """Fig. 5 as a curve: Pearson correlation of the CMS of n images with the final CMS."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, sub in curves.groupby("model", sort=False):
        ax.plot(sub.n_images, sub.pearson_with_final, marker="o", ms=3, label=model)
    for lv in levels:
        ax.axhline(lv, color="gray", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("number of CIS maps averaged (random order)")
    ax.set_ylabel("Pearson r with the CMS of all maps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_convergence_maps(maps: Sequence[Tensor], steps: Sequence[int], face, seed: int = 0,
                         title: str | None = None):
    """Fig. 5 as maps: the CMS of the first n CIS maps (same random order as cms_convergence)."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical

    stacked = torch.stack([torch.as_tensor(m, dtype=torch.float64) for m in maps])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(stacked)))
    steps = [s for s in steps if s <= len(stacked)]
    fig, axes = plt.subplots(1, len(steps), figsize=(2.4 * len(steps), 2.8), squeeze=False)
    for ax, k in zip(axes[0], steps):
        plot_canonical(ax, stacked[order[:k]].mean(0), face)
        ax.set_title(f"{k} images", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_alignment(none_map, mean_raw: Tensor, kp_map, mean_chip: Tensor, cms_map, face, title=None):
    """Fig. 21: the three model-level maps: (a) no alignment over the mean input image, (b)
    5-point alignment over the mean aligned face, (c) CMS over the canonical face."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical
    from ..viz import overlay

    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.5))
    axes[0].imshow(overlay(mean_raw, torch.as_tensor(np.asarray(none_map))))
    axes[0].set_title("(a) no alignment\n(mean of the input frames)", fontsize=8)
    axes[1].imshow(overlay(mean_chip, torch.as_tensor(np.asarray(kp_map))))
    axes[1].set_title("(b) 5-point alignment\n(mean aligned face)", fontsize=8)
    plot_canonical(axes[2], cms_map, face)
    axes[2].set_title("(c) canonical (CMS)", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


METRIC_TITLES = (("average_drop", "Average Drop % (higher better)"),
                 ("increase_in_confidence", "% Increase in confidence (lower better)"),
                 ("win", "Win % (higher better)"))


def fig_metric_bars(table: pd.DataFrame, title: str | None = None,
                    metrics: Sequence[tuple[str, str]] = METRIC_TITLES):
    """Figs. 10-12 / 20 layout: per metric, grouped bars of the methods for each task."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table.task))
    methods = list(dict.fromkeys(table.method))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, (col, name) in zip(axes[0], metrics):
        for j, m in enumerate(methods):
            vals = [float(table[(table.task == t) & (table.method == m)][col].iloc[0])
                    if ((table.task == t) & (table.method == m)).any() else np.nan for t in tasks]
            ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_negative_explanations(images: Sequence[Tensor], heatmaps: Mapping[str, Sequence],
                              scores: np.ndarray | None = None, labels: Sequence[str] | None = None,
                              title: str | None = None):
    """Figs. 9 / 14 style: per image a row of the normalized heat maps H (eq. 10) over the image
    and a row of the negative explanations E = (1 - H) I (eq. 9) of every method; ``scores``
    [N, 1 + K] = M(I), M(E_k) shown in the captions."""
    import matplotlib.pyplot as plt

    from ..metrics import negative_explanation, normalize_heatmaps
    from ..viz import overlay

    methods = list(heatmaps)
    n = len(images)
    fig, axes = plt.subplots(2 * n, 1 + len(methods), figsize=(2.1 * (1 + len(methods)), 4.5 * n),
                             squeeze=False)
    for i, img in enumerate(images):
        hs = normalize_heatmaps([heatmaps[m][i] for m in methods])
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top[0].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        cap = (labels[i] if labels else "") + (f"\nM(I) = {scores[i][0]:.3f}" if scores is not None else "")
        top[0].set_title(cap, fontsize=7)
        for k, m in enumerate(methods):
            top[k + 1].imshow(overlay(img, torch.from_numpy(hs[k]), alpha=0.5))
            top[k + 1].set_title(f"{m}: H (max {hs[k].max():.2f})", fontsize=7)
            e = negative_explanation(img, hs[k])
            bottom[k + 1].imshow(e.permute(1, 2, 0).clamp(0, 1).numpy())
            bottom[k + 1].set_title("E = (1 - H) I" + (f"\nM(E) = {scores[i][k + 1]:.3f}"
                                                          if scores is not None else ""), fontsize=7)
        for ax in list(top) + list(bottom):
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_patch_sizes(image: Tensor, results: Sequence, face, title: str | None = None):
    """Fig. 18: the CIS map of one image for each occluder size."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical

    fig, axes = plt.subplots(1, 1 + len(results), figsize=(2.4 * (1 + len(results)), 2.9))
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].set_axis_off()
    axes[0].set_title("input", fontsize=8)
    for ax, r in zip(axes[1:], results):
        plot_canonical(ax, r.canonical, face)
        ax.set_title(f"patch {r.patch} px\n{len(r.points)} points, canvas {r.canvas_patch} px",
                     fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_randomization(original: Tensor, maps: Sequence, layers: Sequence[str], table: pd.DataFrame,
                      face, title: str | None = None):
    """Fig. 8: the trained model's CMS and the CMS after randomizing the top 1, 2, ... layers,
    captioned with Spearman (face pixels) and SSIM against the trained CMS."""
    import matplotlib.pyplot as plt

    from ..canonical import plot_canonical

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.5 * (1 + len(maps)), 3.1))
    axes = np.atleast_1d(axes)
    plot_canonical(axes[0], torch.as_tensor(np.asarray(original)), face)
    axes[0].set_title("trained", fontsize=8)
    for k, (ax, m) in enumerate(zip(axes[1:], maps)):
        plot_canonical(ax, torch.as_tensor(np.asarray(m)), face)
        row = table.iloc[k]
        ax.set_title(f"top {k + 1} random ({layers[k]})\nrho {row.spearman_face:+.2f}, "
                     f"SSIM {row.ssim:.2f}", fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def layer_channels(net: nn.Module, layer: nn.Module, images: Tensor) -> int:
    """Number of channels of ``layer``'s output on ``images`` (ScoreCAM runs one pass each)."""
    shapes = []
    h = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    try:
        with torch.no_grad():
            net(images)
    finally:
        h.remove()
    return int(shapes[0][1])


def decided_correctly(f: ScoreFn, image: Tensor) -> bool:
    """Whether the model's decision on ``image`` is right: for :func:`class_score` the arg-max
    class is the explained (ground-truth) class, for :func:`mate_confidence` /
    :func:`pair_confidence` (eq. 8) the confidence is > 0."""
    if getattr(f, "verification", False):
        with torch.inference_mode():
            return float(f(image[None])[0]) > 0.0
    clf, k = getattr(f, "classifier", None), getattr(f, "k", None)
    if clf is None or k is None:
        raise ValueError("f must come from class_score, mate_confidence or pair_confidence")
    with torch.inference_mode():
        return int(clf(image[None]).float().argmax(1)[0]) == int(k)
