"""Canonical Saliency Maps (John et al., "Canonical Saliency Maps: Decoding Deep Face Models",
the CMS paper): occlusion saliency measured at dense face landmarks of the input image and
recorded on a canonical frontal face, so that maps of different images can be compared and
averaged.

- :func:`canonical_face` — the canonical face F (§3.1): MediaPipe FaceMesh's canonical UV layout
  (468 points, 880 triangles) drawn on an S x S canvas, with named facial regions.
- :func:`face_mesh` — the dense alignment M_I of an input image (§3.1): MTCNN box + MediaPipe
  FaceMesh (the paper fits a 3DMM with PR-Net; FaceMesh plays the same role with 468 points).
- :func:`image_to_canonical` / :func:`canonical_to_image` — piecewise affine warps over the mesh
  triangles, both ways (Fig. 6 d reprojects CMS maps onto input faces).
- :func:`cis` — the Canonical Image Saliency map, Algorithm 1 with eqs. 1-5.
- :func:`cms` — the Canonical Model Saliency map, eq. 6; :func:`cms_convergence` — Fig. 5.

Coordinates are continuous pixel coordinates (x, y), pixel i covering [i, i+1] (as
:func:`xfr.models.human.facemesh_landmarks`). Images are float [C,H,W] in [0,1].

Deviations from the paper: the dense alignment is FaceMesh (468 landmarks) rather than PR-Net's
3DMM (tens of thousands of vertices), so ``stride`` subsamples landmark indices rather than
vertices; the canonical face is FaceMesh's canonical texture layout (a frontal, neutral face
unwrapped to the unit square) rather than a frontal face photograph.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import Fill, ScoreFn, perturb
from .common import WeightedMaskSum, as_counting, base_score, check_int, prepare
from .masks import IndexedMasks

N_LANDMARKS = 468
LAYOUT_FILE = "mediapipe/facemesh_canonical_uv468_tri.npz"

# ----------------------------------------------------------------------------- regions
# MediaPipe's landmark index loops (mediapipe/python/solutions/face_mesh_connections.py), as
# closed polygons in drawing order. "left"/"right" are the SUBJECT's left/right, as in MediaPipe
# (the subject's left eye appears on the right of the image and of the canvas).
_LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
_RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
_LEFT_EYEBROW = [276, 283, 282, 295, 285, 336, 296, 334, 293, 300]
_RIGHT_EYEBROW = [46, 53, 52, 65, 55, 107, 66, 105, 63, 70]
_LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
               40, 185]
_LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81,
               80, 191]
# the inner lip loop split into its lower and upper halves (78 -> 308), landmark for landmark:
# FaceMesh leaves the mouth opening untriangulated; the strip between them fills it
_LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
_LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
# FACEMESH_NOSE (bridge from between the eyes to the nostrils); filled as its convex hull
_NOSE = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45,
         220, 115, 48, 64]
_FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
              377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
              109]
# cheek centres (MediaPipe's usual cheek landmarks): the cheek is the convex hull of the
# landmarks within CHEEK_RADIUS (in uv units) of the midpoint of each pair
_CHEEK_CENTRES = {"right_cheek": (50, 205), "left_cheek": (280, 425)}
CHEEK_RADIUS = 0.085

# regions filled as convex hulls of their landmarks (the others are ordered polygons)
_HULL_REGIONS = {"nose", "right_cheek", "left_cheek"}


def _region_polygons(uv: np.ndarray) -> dict[str, list[list[int]]]:
    """name -> list of polygons (landmark index loops) on the canonical layout."""
    polys: dict[str, list[list[int]]] = {
        "left_eye": [_LEFT_EYE],
        "right_eye": [_RIGHT_EYE],
        "left_eyebrow": [_LEFT_EYEBROW],
        "right_eyebrow": [_RIGHT_EYEBROW],
        "mouth": [_LIPS_OUTER],
        "nose": [_NOSE],
        "face_oval": [_FACE_OVAL],
    }
    taken = set(_LEFT_EYE + _RIGHT_EYE + _LEFT_EYEBROW + _RIGHT_EYEBROW + _LIPS_OUTER + _NOSE)
    for name, (a, b) in _CHEEK_CENTRES.items():
        centre = (uv[a] + uv[b]) / 2
        near = np.flatnonzero(np.linalg.norm(uv - centre, axis=1) < CHEEK_RADIUS)
        polys[name] = [[int(i) for i in near if int(i) not in taken]]
    polys["eyes"] = polys["left_eye"] + polys["right_eye"]
    polys["eyebrows"] = polys["left_eyebrow"] + polys["right_eyebrow"]
    polys["cheeks"] = polys["left_cheek"] + polys["right_cheek"]
    return polys


def mouth_triangles() -> np.ndarray:
    """[18,3] triangles filling the mouth opening (between the inner lip contours), which the
    FaceMesh triangulation leaves as a hole: without them an open mouth would not be warped."""
    lo, up = _LIPS_INNER_LOWER, _LIPS_INNER_UPPER
    out = []
    for i in range(len(lo) - 1):
        if lo[i] != up[i]:
            out.append((lo[i], up[i], up[i + 1]))
        if lo[i + 1] != up[i + 1]:
            out.append((lo[i], up[i + 1], lo[i + 1]))
    return np.array(out, dtype=np.int64)


def _hull_loop(points: np.ndarray, idx: list[int]) -> list[int]:
    from scipy.spatial import ConvexHull

    hull = ConvexHull(points[idx])
    return [idx[v] for v in hull.vertices]


# ----------------------------------------------------------------------------- rasterization
def rasterize_mesh(vertices: Tensor, tri: Tensor, hw: tuple[int, int],
                   depth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Which triangle covers each pixel centre of an H x W grid, and where.

    ``vertices`` [V,2] continuous (x, y) pixel coordinates, ``tri`` [T,3] vertex indices.
    Returns ``(tri_index LongTensor[H,W]`` (-1 where no triangle covers the pixel centre),
    ``bary Tensor[H,W,3]`` float64 barycentric coordinates in that triangle). Where triangles
    overlap (a self-occluding mesh, e.g. a profile face) the pixel goes to the triangle with the
    smallest interpolated ``depth`` [V] when given (MediaPipe z: smaller is nearer the camera),
    else to the triangle with the smallest index. Vectorized over triangles (each triangle's
    bounding box is tested at once); no Python loop over pixels.
    """
    h, w = int(hw[0]), int(hw[1])
    v = vertices.detach().to(torch.float64).cpu()
    tri = tri.to(torch.long).cpu()
    p = v[tri]  # [T,3,2]
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    # pixel i (centre i + 0.5) can lie in the triangle when min_x <= i + 0.5 <= max_x
    x_lo = torch.ceil(p[..., 0].min(1).values - 0.5).clamp(min=0)
    x_hi = torch.floor(p[..., 0].max(1).values - 0.5).clamp(max=w - 1)
    y_lo = torch.ceil(p[..., 1].min(1).values - 0.5).clamp(min=0)
    y_hi = torch.floor(p[..., 1].max(1).values - 0.5).clamp(max=h - 1)
    ok = (area2.abs() > 1e-12) & (x_hi >= x_lo) & (y_hi >= y_lo)
    tids = torch.nonzero(ok).flatten()
    bw = (x_hi - x_lo + 1)[tids].long()
    bh = (y_hi - y_lo + 1)[tids].long()
    order = torch.argsort(bw * bh)
    tids, bw, bh = tids[order], bw[order], bh[order]

    pix_l, tri_l, bary_l = [], [], []
    budget = 1 << 21  # candidate pixels per chunk
    start = 0
    while start < len(tids):
        # grow the chunk while (count x largest box in it) fits the budget (sorted by box size)
        stop = start + 1
        while stop < len(tids) and (stop + 1 - start) * int(bw[stop] * bh[stop]) <= budget:
            stop += 1
        t = tids[start:stop]
        mw, mh = int(bw[start:stop].max()), int(bh[start:stop].max())
        px = x_lo[t][:, None, None] + torch.arange(mw, dtype=torch.float64)[None, None, :]
        py = y_lo[t][:, None, None] + torch.arange(mh, dtype=torch.float64)[None, :, None]
        cx, cy = px + 0.5, py + 0.5
        ta, tb, tc = a[t][:, None, None, :], b[t][:, None, None, :], c[t][:, None, None, :]
        d = area2[t][:, None, None]
        w0 = ((tb[..., 0] - cx) * (tc[..., 1] - cy) - (tb[..., 1] - cy) * (tc[..., 0] - cx)) / d
        w1 = ((tc[..., 0] - cx) * (ta[..., 1] - cy) - (tc[..., 1] - cy) * (ta[..., 0] - cx)) / d
        w2 = 1.0 - w0 - w1
        eps = -1e-9
        inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        inside &= (px <= x_hi[t][:, None, None]) & (py <= y_hi[t][:, None, None])
        k, iy, ix = torch.nonzero(inside, as_tuple=True)
        pix_l.append((py[k, iy, 0] * w + px[k, 0, ix]).long())
        tri_l.append(t[k])
        bary_l.append(torch.stack([w0[k, iy, ix], w1[k, iy, ix], w2[k, iy, ix]], dim=1))
        start = stop

    tri_index = torch.full((h * w,), -1, dtype=torch.long)
    bary = torch.zeros(h * w, 3, dtype=torch.float64)
    if not pix_l:
        return tri_index.reshape(h, w), bary.reshape(h, w, 3)
    pix, tt, bb = torch.cat(pix_l), torch.cat(tri_l), torch.cat(bary_l)
    if depth is not None:  # nearest triangle first (z-buffer)
        z = (bb * depth.detach().to(torch.float64).cpu()[tri[tt]]).sum(1)
        zmin = torch.full((h * w,), math.inf, dtype=torch.float64).scatter_reduce(
            0, pix, z, reduce="amin")
        keep = z <= zmin[pix]
        pix, tt, bb = pix[keep], tt[keep], bb[keep]
    first = torch.full((h * w,), tri.shape[0], dtype=torch.long).scatter_reduce(
        0, pix, tt, reduce="amin")
    keep = tt == first[pix]
    tri_index[pix[keep]] = tt[keep]
    bary[pix[keep]] = bb[keep]
    return tri_index.reshape(h, w), bary.reshape(h, w, 3)


def _interpolate(vertices: Tensor, tri: Tensor, tri_index: Tensor, bary: Tensor) -> Tensor:
    """Positions sum_k bary_k * vertices[tri[t, k]] for each pixel [H,W,2] (float64; 0 where
    tri_index < 0)."""
    t = tri_index.clamp(min=0)
    corners = vertices.to(torch.float64)[tri[t]]  # [H,W,3,2]
    pos = (bary[..., None] * corners).sum(-2)
    return torch.where((tri_index >= 0)[..., None], pos, torch.zeros((), dtype=pos.dtype))


def _grid_sample(src: Tensor, pos: Tensor, hw_src: tuple[int, ...]) -> Tensor:
    """Bilinear values of ``src`` [C,H,W] at continuous (x, y) positions ``pos`` [h,w,2] -> [C,h,w]
    (zeros outside ``src``)."""
    hs, ws = hw_src
    scale = torch.tensor([2.0 / ws, 2.0 / hs], dtype=torch.float64)
    grid = (pos * scale - 1.0).to(src.dtype)[None]
    return F.grid_sample(src[None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


# ----------------------------------------------------------------------------- canonical face
class CanonicalFace:
    """The canonical face F of §3.1 on an S x S canvas: MediaPipe FaceMesh's canonical UV layout
    (``uv`` [468,2] in [0,1], upright: v grows downwards from forehead to chin) scaled to S.

    Attributes: ``size`` S, ``points`` [468,2] canvas pixel coordinates M_F (uv * S), ``tri``
    [880,3] (FaceMesh's triangles), ``raster_tri`` (``tri`` plus :func:`mouth_triangles`, the
    triangles both warps use, so that an open mouth is mapped too), ``face_mask`` [S,S] (canvas
    pixels inside the mesh), ``regions`` (name -> landmark indices). The canvas rasterization
    (triangle of ``raster_tri`` and barycentric coordinates of every canvas pixel) is computed
    once and cached here.
    """

    def __init__(self, uv: np.ndarray, tri: np.ndarray, size: int = 192):
        self.size = check_int("size", size, 8, 4096, hint="the canvas side in pixels")
        uv = np.asarray(uv, dtype=np.float64)
        if uv.shape != (N_LANDMARKS, 2) or np.asarray(tri).ndim != 2 or np.asarray(tri).shape[1] != 3:
            raise ValueError(f"canonical layout must be uv [468,2] and tri [T,3], got "
                             f"{uv.shape} and {np.asarray(tri).shape}")
        self.uv = torch.from_numpy(uv).float()
        self.points = (self.uv.double() * self.size).float()
        self.tri = torch.from_numpy(np.asarray(tri, dtype=np.int64))
        self._polygons = _region_polygons(uv)
        self.regions: dict[str, list[int]] = {
            name: sorted({i for poly in polys for i in poly}) for name, polys in self._polygons.items()
        }
        self.raster_tri = torch.cat([self.tri, torch.from_numpy(mouth_triangles())])
        self.tri_index, self.bary = rasterize_mesh(self.points, self.raster_tri, (self.size, self.size))
        self.face_mask = self.tri_index >= 0
        self._region_cache: dict[str, Tensor] = {}
        self._template: Tensor | None = None

    def __repr__(self) -> str:
        return f"CanonicalFace(size={self.size}, points=468, triangles={len(self.tri)})"

    @property
    def scale(self) -> float:
        """RMS distance of the canonical points from their centroid (canvas pixels): the face size
        used to scale the occluding patch onto the canvas (:func:`cis`)."""
        return _mesh_scale(self.points[None])

    def region_mask(self, name: str, dilate: int = 0) -> Tensor:
        """BoolTensor[S,S]: canvas pixels inside region ``name`` (its landmark polygon(s) filled;
        nose and cheeks as convex hulls), grown by ``dilate`` pixels (a disc)."""
        if name not in self._polygons:
            raise ValueError(f"unknown region {name!r}; known: {', '.join(sorted(self._polygons))}")
        dilate = check_int("dilate", dilate, 0, self.size)
        if name not in self._region_cache:
            from matplotlib.path import Path

            s = self.size
            centres = np.stack(np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="xy"),
                               -1).reshape(-1, 2)
            pts = self.points.numpy().astype(np.float64)
            inside = np.zeros(s * s, dtype=bool)
            for poly in self._polygons[name]:
                loop = _hull_loop(pts, poly) if self._is_hull(name) else poly
                inside |= Path(pts[loop]).contains_points(centres)
            self._region_cache[name] = torch.from_numpy(inside.reshape(s, s))
        mask = self._region_cache[name]
        if dilate > 0:
            r = torch.arange(-dilate, dilate + 1, dtype=torch.float64)
            disc = ((r[:, None] ** 2 + r[None, :] ** 2) <= dilate ** 2 + 1e-9).double()
            grown = F.conv2d(mask.double()[None, None], disc[None, None], padding=dilate)[0, 0]
            mask = grown > 0.5
        return mask.clone()

    def _is_hull(self, name: str) -> bool:
        return name in _HULL_REGIONS or name == "cheeks"

    def template(self) -> Tensor:
        """Tensor[3,S,S]: a neutral face picture for display — the mesh region shaded darker
        towards its outline, eyes, eyebrows, nostrils-to-bridge and lips drawn in darker greys,
        and the triangle wireframe on top (black outside the face)."""
        if self._template is None:
            from scipy.ndimage import distance_transform_edt

            s = self.size
            inside = self.face_mask.numpy()
            dist = distance_transform_edt(inside)
            shade = np.where(inside, 0.55 + 0.35 * np.sqrt(dist / max(dist.max(), 1.0)), 0.0)
            for name, tone in (("nose", 0.8), ("cheeks", 0.9), ("eyebrows", 0.35), ("eyes", 0.25),
                               ("mouth", 0.5)):
                m = self.region_mask(name).numpy()
                shade = np.where(m, shade * tone if name in ("nose", "cheeks") else tone, shade)
            # wireframe: sample each edge densely and darken the pixels it crosses
            edges = torch.cat([self.tri[:, [0, 1]], self.tri[:, [1, 2]], self.tri[:, [2, 0]]])
            edges = torch.unique(torch.sort(edges, dim=1).values, dim=0)
            p = self.points.double()[edges]  # [E,2,2]
            n = int(torch.ceil((p[:, 1] - p[:, 0]).norm(dim=1).max()).item()) * 2 + 2
            tt = torch.linspace(0, 1, n, dtype=torch.float64)[None, :, None]
            pts = p[:, None, 0] + tt * (p[:, None, 1] - p[:, None, 0])
            ix = pts[..., 0].floor().long().clamp(0, s - 1).flatten().numpy()
            iy = pts[..., 1].floor().long().clamp(0, s - 1).flatten().numpy()
            wire = np.zeros((s, s), dtype=bool)
            wire[iy, ix] = True
            shade = np.where(wire & inside, shade * 0.82, shade)
            self._template = torch.from_numpy(np.repeat(shade[None], 3, axis=0)).float()
        return self._template.clone()


@lru_cache(maxsize=8)
def canonical_face(size: int = 192) -> CanonicalFace:
    """The canonical face of side ``size`` (cached): MediaPipe's canonical FaceMesh UV layout from
    ``mediapipe/facemesh_canonical_uv468_tri.npz`` (uv 468x2, tri 880x3)."""
    from ..assets import model_file

    size = check_int("size", size, 8, 4096, hint="the canvas side in pixels")
    with np.load(model_file(LAYOUT_FILE)) as z:
        return CanonicalFace(z["uv"], z["tri"], size)


# ----------------------------------------------------------------------------- meshes
def face_mesh(image: Tensor, box: Sequence[float] | Tensor | None = None, detector=None,
              with_z: bool = False) -> Tensor:
    """The dense alignment M_I (§3.1) of the face in ``image``: MediaPipe FaceMesh's 468
    landmarks, Tensor[468,2] (x, y) in image pixels ([468,3] with the relative depth z when
    ``with_z``). ``box`` (x1, y1, x2, y2) locates the face; when None MTCNN (``detector``, default
    the shared ``xfr.models.load("mtcnn")``) finds it and the largest face is used
    (:class:`xfr.models.align.NoFaceError` when there is none). MTCNN needs faces of >= 20 px:
    upsample tiny images (FER-2013 48x48, CelebA crops) before calling. 1-channel (gray) and
    RGBA images are accepted."""
    from ..models.align import NoFaceError, _as_image, _default_mtcnn
    from ..models.detect import largest_face
    from ..models.human import facemesh_landmarks

    if isinstance(image, Tensor) and image.dim() == 2:
        image = image[None]
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    img = _as_image(image).detach().float().cpu()
    if min(img.shape[1:]) < 2:
        raise ValueError(f"image of shape {tuple(img.shape)} is too small for a face mesh")
    if box is None:
        det = (detector if detector is not None else _default_mtcnn()).detect(img)[0]
        k = largest_face(det)
        if k is None:
            raise NoFaceError(
                f"no face found in image of shape {tuple(img.shape)} (MTCNN needs faces of >= 20 px; "
                f"upsample small images first, or pass box=(x1, y1, x2, y2))")
        box = det.boxes[k]
    box_t = torch.as_tensor(box, dtype=torch.float32).flatten()
    if box_t.numel() != 4 or not torch.isfinite(box_t).all() or box_t[2] <= box_t[0] or box_t[3] <= box_t[1]:
        raise ValueError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box}")
    mesh = facemesh_landmarks(img, box_t).float().cpu()
    return mesh if with_z else mesh[:, :2].contiguous()


def _check_mesh(mesh, allow_batch: bool, name: str = "mesh") -> tuple[Tensor, Tensor | None]:
    """``mesh`` as float64 [K,468,2] (plus the depth [K,468] when a z column is present)."""
    if isinstance(mesh, np.ndarray):
        mesh = torch.from_numpy(mesh)
    if not isinstance(mesh, Tensor):
        raise ValueError(f"{name} must be a Tensor [468,2] of image pixel coordinates "
                         f"(from face_mesh), got {type(mesh).__name__}")
    shapes = "[468,2] (or [468,3] with depth" + (", or [K,468,2] for K faces)" if allow_batch else ")")
    if mesh.dim() == 2:
        mesh = mesh[None]
    elif mesh.dim() != 3 or not allow_batch:
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(mesh.shape)}")
    if mesh.shape[1] != N_LANDMARKS or mesh.shape[2] not in (2, 3) or mesh.shape[0] < 1:
        raise ValueError(f"{name} must have shape {shapes} (MediaPipe FaceMesh's 468 landmarks, "
                         f"x, y in image pixels), got {tuple(mesh.shape)}")
    mesh = mesh.detach().cpu().to(torch.float64)
    if not torch.isfinite(mesh).all():
        raise ValueError(f"{name} contains NaN or inf: the landmarker failed on this image; "
                         f"re-run face_mesh with a better box or leave the image out")
    depth = mesh[..., 2] if mesh.shape[2] == 3 else None
    xy = mesh[..., :2]
    extent = (xy.amax(1) - xy.amin(1)).min()
    if extent < 2.0:
        raise ValueError(f"{name} spans less than 2 pixels ({float(extent):.3g}); it must be in "
                         f"image pixels, not normalized [0,1] coordinates (multiply x by W, y by H)")
    return xy, depth


def _check_face(face) -> CanonicalFace:
    if face is None:
        return canonical_face()
    if not isinstance(face, CanonicalFace):
        raise ValueError(f"face must be a CanonicalFace (canonical_face(size)), got {type(face).__name__}")
    return face


def _check_in_image(xy: Tensor, hw: tuple[int, int], name: str = "mesh") -> None:
    h, w = hw
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= w) & (xy[..., 1] >= 0) & (xy[..., 1] <= h)
    if not inside.any():
        raise ValueError(f"no landmark of {name} lies inside the {h}x{w} image: the mesh belongs "
                         f"to another image size (rescale it with the image) or is in other units")


def _mesh_scale(xy: Tensor) -> float:
    """Mean over faces of the RMS distance of the landmarks from their centroid (pixels)."""
    xy = xy.to(torch.float64)
    centred = xy - xy.mean(dim=1, keepdim=True)
    return float(centred.pow(2).sum(-1).mean(-1).sqrt().mean())


# ----------------------------------------------------------------------------- warps
def image_to_canonical(image: Tensor, mesh: Tensor, face: CanonicalFace | None = None) -> Tensor:
    """Tensor[C,S,S]: ``image`` warped onto the canonical face, piecewise affine over the mesh
    triangles (each canvas pixel takes the bilinear image value at the same barycentric position
    in the image triangle); 0 outside the face."""
    face = _check_face(face)
    img = prepare(image)
    xy, _ = _check_mesh(mesh, allow_batch=False)
    pos = _interpolate(xy[0], face.raster_tri, face.tri_index, face.bary)
    out = _grid_sample(img, pos, tuple(img.shape[1:]))
    return out * face.face_mask.to(out.dtype)


def _check_hw(hw) -> tuple[int, int]:
    if isinstance(hw, Tensor) and hw.dim() >= 2:
        hw = tuple(hw.shape[-2:])
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise ValueError(f"hw must be (H, W), got {hw!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"hw must be positive (H, W), got {hw!r}")
    return h, w


def canonical_to_image(cmap: Tensor, mesh: Tensor, hw, face: CanonicalFace | None = None) -> Tensor:
    """A canonical map reprojected onto an image of size ``hw`` = (H, W) (Fig. 6 d): every image
    pixel inside the mesh takes the bilinear canvas value at the same barycentric position of the
    canonical triangle; 0 outside the face. ``cmap`` [S,S] -> [H,W], [C,S,S] -> [C,H,W].

    ``mesh`` [468,2]; [468,3] also resolves self-occlusion (profile faces) with the depth z (the
    nearest triangle wins; without z the lowest triangle index wins); [K,468,2] reprojects onto K
    faces of the same image (where they overlap, the first one wins).
    """
    face = _check_face(face)
    h, w = _check_hw(hw)
    if not isinstance(cmap, Tensor):
        cmap = torch.as_tensor(np.asarray(cmap))
    squeeze = cmap.dim() == 2
    src = cmap[None] if squeeze else cmap
    if src.dim() != 3 or tuple(src.shape[1:]) != (face.size, face.size):
        raise ValueError(f"cmap must be [S,S] or [C,S,S] with S = face.size = {face.size}, got "
                         f"{tuple(cmap.shape)} (pass face=canonical_face(S) for another canvas)")
    src = src.detach().cpu().float()
    xy, depth = _check_mesh(mesh, allow_batch=True)
    out = torch.zeros(src.shape[0], h, w)
    filled = torch.zeros(h, w, dtype=torch.bool)
    for k in range(xy.shape[0]):
        tri_index, bary = rasterize_mesh(xy[k], face.raster_tri, (h, w),
                                         depth=None if depth is None else depth[k])
        pos = _interpolate(face.points.double(), face.raster_tri, tri_index, bary)
        vals = _grid_sample(src, pos, (face.size, face.size))
        new = (tri_index >= 0) & ~filled
        out = torch.where(new[None], vals, out)
        filled |= new
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------- CIS (Algorithm 1)
def square_cover(centres: Tensor, size: int, n: int) -> Tensor:
    """BoolTensor[..., n]: the ``size`` pixels [lo, lo + size) along an axis of ``n`` pixels
    around each continuous centre, lo = round(c - size / 2) (a pixel-exact square of side
    ``size`` centred on c to within half a pixel; clipped at the borders)."""
    lo = torch.floor(centres.to(torch.float64) - size / 2.0 + 0.5).long()
    idx = torch.arange(n)
    return (idx >= lo[..., None]) & (idx < lo[..., None] + size)


class LandmarkPatchMasks(IndexedMasks):
    """Keep masks of Algorithm 1 line 7 (eq. 2): mask j zeroes the ``patch`` x ``patch`` square
    around landmark ``points[j]`` of each of the K meshes ``xy`` [K,468,2] (all K faces occluded
    together)."""

    def __init__(self, hw: tuple[int, int], xy: Tensor, points: Tensor, patch: int):
        self.hw = (int(hw[0]), int(hw[1]))
        self.centres = xy[:, points].permute(1, 0, 2).contiguous()  # [n_points, K, 2]
        self.patch = int(patch)

    def __len__(self) -> int:
        return int(self.centres.shape[0])

    def _covered(self, idx: np.ndarray) -> Tensor:
        """[B,H,W] bool: inside one of the K squares of mask j."""
        c = self.centres[torch.as_tensor(idx, dtype=torch.long)]  # [B,K,2]
        in_x = square_cover(c[..., 0], self.patch, self.hw[1])  # [B,K,W]
        in_y = square_cover(c[..., 1], self.patch, self.hw[0])  # [B,K,H]
        return (in_y[..., :, None] & in_x[..., None, :]).any(dim=1)

    def removal(self, idx: np.ndarray) -> Tensor:
        return self._covered(idx).float()

    def make(self, idx: np.ndarray) -> Tensor:
        return (~self._covered(idx)).float()  # one pass over the masks, not 1 - removal

    def squares_overlap(self) -> bool:
        """Whether the K squares of any one mask overlap each other (faces closer than a patch)."""
        lo = torch.floor(self.centres - self.patch / 2.0 + 0.5)  # [n,K,2]
        gap = (lo[:, :, None] - lo[:, None, :]).abs()  # [n,K,K,2]
        near = (gap < self.patch).all(-1)
        near &= ~torch.eye(self.centres.shape[1], dtype=torch.bool)
        return bool(near.any())


def _splat(values: Tensor, centres: Tensor, size: int, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """sum_n v_n * square_n / sum_n square_n (0 where no square) and the count sum_n square_n,
    for the ``size`` squares around ``centres`` [K,n,2] (each value recorded at its K centres),
    as [H,W] float64 via R^T diag(v) C."""
    k = centres.shape[0]
    cols = square_cover(centres[..., 0], size, hw[1]).double().reshape(-1, hw[1])  # [K*n, W]
    rows = square_cover(centres[..., 1], size, hw[0]).double().reshape(-1, hw[0])  # [K*n, H]
    v = values.to(torch.float64).repeat(k)
    total = (rows * v[:, None]).T @ cols
    count = rows.T @ cols
    out = torch.where(count > 0, total / count.clamp(min=1.0), torch.zeros((), dtype=torch.float64))
    return out, count


@dataclass
class CISResult:
    """A Canonical Image Saliency map and what it was made of (see :func:`cis`)."""

    canonical: Tensor  # [S,S] float32, eq. 5: P = P* / N (0 where N == 0)
    count: Tensor  # [S,S] float32, N: how many canvas patches covered each pixel
    drops: Tensor  # [n_points] float32, S of eq. 1 for each occluded landmark
    points: Tensor  # [n_points] long, the landmark indices occluded (every stride-th)
    base_score: float  # f(I)
    n_forward: int  # forward passes of f, base image included
    image_map: Tensor  # [H,W] float32: the same drops averaged over the image squares
    patch: int  # occluder side in image pixels (sz)
    canvas_patch: int  # side of the recorded patch on the canvas (fsz)
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """P* of eq. 4 (the sum before density normalization) [S,S]."""
        return self.canonical * self.count


def cis(
    f: ScoreFn,
    image: Tensor,
    mesh: Tensor,
    patch: int = 15,
    stride: int = 1,
    face: CanonicalFace | None = None,
    fill: Fill = 0.0,
    batch_size: int = 64,
    progress: bool = False,
    canvas_patch: int | None = None,
    points: Sequence[int] | Tensor | None = None,
) -> CISResult:
    """Canonical Image Saliency map, Algorithm 1 with eqs. 1-5 of the CMS paper.

    For every ``stride``-th landmark n of ``mesh`` (M_I), the ``patch`` x ``patch`` square
    centred at mesh[n] in the image is replaced by ``fill`` (0: the paper's black occluder,
    Algorithm 1 line 7), all occlusions running through :func:`xfr.engine.perturb`; the drop
    S_n = f(I) - f(I_n) (eq. 1) is added to the ``canvas_patch`` square around face.points[n]
    (M_F) of P* and 1 to the count N there (eq. 4, Algorithm 1 lines 9-10); the map is P* / N
    with 0 where N = 0 (eq. 5, lines 12-14). Cost: len(points) + 1 forward passes (468 + 1 at
    stride 1).

    ``canvas_patch`` (fsz): None follows Algorithm 1 line 4, fsz = sz * H_F / H_I, with the
    face's size standing for H (the canvas is a face-filling layout while the image need not be
    a face crop): fsz = round(sz * face.scale / mesh scale), the scales being the RMS distance of
    the landmarks from their centroid, so the recorded patch covers the same part of the face as
    the occluder. An int fixes fsz in canvas pixels (e.g. ``canvas_patch=patch`` records patches
    of the same pixel size as the occluder).

    ``mesh`` may be [K,468,2]: K faces of the same image (e.g. a verification pair side by side,
    eq. 8) occluded together at the same landmark; the drop is recorded once on the canvas.
    ``image_map`` is the same drops averaged over the occluded image squares (occlusion on the
    mesh, Fig. 6 a). ``points`` (landmark indices) replaces the every-``stride``-th subset.
    """
    t0 = time.perf_counter()
    face = _check_face(face)
    img = prepare(image)
    hw = (int(img.shape[1]), int(img.shape[2]))
    xy, _ = _check_mesh(mesh, allow_batch=True)
    _check_in_image(xy, hw)
    patch = check_int("patch", patch, 1, min(hw),
                      hint=f"the occluder side in pixels must fit the {hw[0]}x{hw[1]} image (paper: 15)")
    stride = check_int("stride", stride, 1, N_LANDMARKS,
                       hint="every stride-th of the 468 landmarks is occluded (1 = all)")
    if canvas_patch is None:
        fsz = max(1, int(round(patch * face.scale / max(_mesh_scale(xy), 1e-9))))
        fsz = min(fsz, face.size)
    else:
        fsz = check_int("canvas_patch", canvas_patch, 1, face.size,
                        hint=f"the recorded patch must fit the {face.size}x{face.size} canvas")
    if points is None:
        points = torch.arange(0, N_LANDMARKS, stride)
    else:  # an explicit landmark subset (e.g. spatially even on the canvas); overrides stride
        points = torch.as_tensor(points, dtype=torch.long).flatten()
        if points.numel() == 0 or int(points.min()) < 0 or int(points.max()) >= N_LANDMARKS:
            raise ValueError(f"points must be landmark indices in [0, {N_LANDMARKS}), got "
                             f"{points.numel()} values")

    cf = as_counting(f)
    n0 = cf.n_forward
    s0 = base_score(cf, img)
    masks = LandmarkPatchMasks(hw, xy, points, patch)
    # the image map: where the K squares of one occlusion never overlap (always for K = 1) their
    # union is their sum and the map is separable like the canvas one (below); otherwise the
    # union masks are accumulated batch by batch
    acc = None
    if xy.shape[0] > 1 and masks.squares_overlap():
        acc = WeightedMaskSum(hw, transform=lambda m: 1.0 - m, weight=lambda s: s0 - s, count=True)
    res = perturb(cf, img, masks, fill=fill, batch_size=batch_size, progress=progress,
                  on_batch=acc, desc="cis")
    drops = (s0 - res.scores.to(torch.float64))

    # eq. 4 / Algorithm 1 lines 9-10, vectorized: the square around (x_n, y_n) is the outer
    # product of its row and column indicators, so P* = sum_n d_n r_n c_n^T = R^T diag(d) C
    canonical, count = _splat(drops, face.points.double()[points][None], fsz, (face.size, face.size))
    if acc is None:
        image_map, _ = _splat(drops, xy[:, points], patch, hw)
    else:
        image_map = acc.weighted_average()
    return CISResult(
        canonical=canonical.float(),
        count=count.float(),
        drops=drops.float(),
        points=points,
        base_score=s0,
        n_forward=cf.n_forward - n0,
        image_map=image_map.float(),
        patch=patch,
        canvas_patch=fsz,
        seconds=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------- CMS (eq. 6)
def _as_maps(maps) -> Tensor:
    items = list(maps) if not isinstance(maps, Tensor) else list(maps) if maps.dim() == 3 else None
    if items is None:
        raise ValueError(f"maps must be a list of [S,S] canonical maps (or a [N,S,S] tensor), "
                         f"got a tensor of shape {tuple(maps.shape)}")
    if not items:
        raise ValueError("no maps given: a CMS map needs at least one CIS map")
    arrs: list[Tensor] = []
    for i, m in enumerate(items):
        if isinstance(m, CISResult):
            m = m.canonical
        m = torch.as_tensor(m) if not isinstance(m, Tensor) else m
        if m.dim() != 2:
            raise ValueError(f"map {i} must be [S,S], got shape {tuple(m.shape)}")
        if arrs and m.shape != arrs[0].shape:
            raise ValueError(f"map {i} has shape {tuple(m.shape)}, map 0 {tuple(arrs[0].shape)}: "
                             f"all CIS maps must come from the same canonical face")
        arrs.append(m.detach().cpu().to(torch.float64))
    stacked = torch.stack(arrs)
    if not torch.isfinite(stacked).all():
        bad = [i for i in range(len(arrs)) if not torch.isfinite(arrs[i]).all()]
        raise ValueError(f"maps {bad[:10]} contain NaN or inf")
    return stacked


def cms(maps) -> Tensor:
    """Canonical Model Saliency map, eq. 6: V = (1/N) sum_i P_i, the mean of the CIS maps
    (``CISResult`` objects or [S,S] tensors) -> Tensor[S,S] float32."""
    return _as_maps(maps).mean(dim=0).float()


def _default_steps(n: int) -> list[int]:
    steps = {n}
    for e in range(0, int(math.log10(max(n, 1))) + 1):
        for m in (1, 2, 5):
            if m * 10 ** e <= n:
                steps.add(m * 10 ** e)
    return sorted(steps)


def cms_convergence(maps, steps: Sequence[int] | None = None, seed: int = 0,
                    mask: Tensor | None = None):
    """How fast the CMS map stabilizes (Fig. 5): the CMS of the first n maps, in a random order
    drawn from ``seed``, against the CMS of all of them, for n in ``steps`` (default 1, 2, 5, 10,
    20, 50, ... and N). Compared on ``mask`` (default: the canonical face mask when the maps are
    S x S canvases, else every pixel). Returns a pandas DataFrame with columns ``n_images``,
    ``pearson_with_final``, ``l1`` (mean |CMS_n - CMS| on the mask), ``rel_l1`` (l1 / mean |CMS|)
    and ``ssim`` (skimage, data range of the final CMS); the last row (n = N) has pearson 1."""
    import pandas as pd
    from skimage.metrics import structural_similarity

    stacked = _as_maps(maps)
    n = stacked.shape[0]
    if steps is None:
        steps = _default_steps(n)
    steps = sorted({check_int("steps", s, 1, n, hint=f"there are {n} maps") for s in steps})
    seed = check_int("seed", seed, 0)
    s = stacked.shape[-1]
    if mask is None:
        square = stacked.shape[-2] == s and s >= 8
        mask = canonical_face(s).face_mask if square else torch.ones(stacked.shape[1:], dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != stacked.shape[1:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the maps {tuple(stacked.shape[1:])}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    running = torch.cumsum(stacked[order], dim=0)
    final = stacked.mean(0)
    fv = final[mask]
    rng_final = float(final.max() - final.min())
    rows = []
    for k in steps:
        cur = running[k - 1] / k
        cv = cur[mask]
        a, b = cv - cv.mean(), fv - fv.mean()
        den = float(a.norm() * b.norm())
        pearson = float((a @ b) / den) if den > 0 else float("nan")
        l1 = float((cv - fv).abs().mean())
        ssim = float(structural_similarity(cur.numpy(), final.numpy(), data_range=rng_final)) \
            if rng_final > 0 else float("nan")
        rows.append({"n_images": k, "pearson_with_final": pearson, "l1": l1,
                     "rel_l1": l1 / max(float(fv.abs().mean()), 1e-300), "ssim": ssim})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- summaries, figures
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
    :func:`cis`."""
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


def images_to_converge(curve: pd.DataFrame, level: float) -> int | None:
    """Smallest n of a :func:`cms_convergence` curve from which the Pearson
    correlation with the final map stays >= ``level`` (None if never before the last step)."""
    c = curve.sort_values("n_images")
    ok = (c["pearson_with_final"] >= level).to_numpy()
    n = c["n_images"].to_numpy()
    if len(n) < 2 or not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    first = 0 if len(bad) == 0 else bad[-1] + 1
    return int(n[first]) if first < len(n) - 1 else None


def images_needed(maps, target: float, mask: Tensor | None = None, n_boot: int = 0, seed: int = 0,
                  level: float = 0.95, n_splits: int = 100) -> tuple[float, float, float]:
    """Images per map at which two CMS maps (eq. 6) of independent images correlate at
    ``target`` (Pearson over the pixels of ``mask``), from ``maps`` (the CIS maps of one model):
    the Pearson r of the CMS maps of two random halves (h images each), averaged over
    ``n_splits`` splits, projected with Spearman-Brown (:func:`spearman_brown_n`).

    Returns (n, low, high); with ``n_boot`` > 0 (else NaN) the percentile bootstrap interval
    over images: each resample draws the images with replacement and splits the *distinct*
    images into the halves, so that copies of one image never fall in both halves (they would
    correlate the halves), and projects from each half's effective number of images
    (sum w)^2 / sum w^2 (copies add no information). Pearson ignores each map's scale, so images
    whose maps differ only in magnitude do not count as disagreeing (a variance-component
    estimate would: it gave twice the images on our FER-2013 maps)."""
    x = _as_maps(maps).reshape(len(maps), -1).double()
    if mask is not None:
        x = x[:, mask.reshape(-1).bool()]
    n = len(x)
    if n < 4:
        raise ValueError(f"need >= 4 maps to estimate the images needed, got {n}")
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    rng = np.random.default_rng(seed)

    def split_r(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """weights [B, N] -> (Pearson r of the two halves' weighted means, the halves' mean
        effective number of images (sum w)^2 / sum w^2, which the projection needs)."""
        side = rng.random(weights.shape) < 0.5
        wa, wb = torch.from_numpy(weights * side), torch.from_numpy(weights * ~side)
        a = wa @ x / wa.sum(1, keepdim=True).clamp(min=1)
        b = wb @ x / wb.sum(1, keepdim=True).clamp(min=1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-300)
        eff = [w.sum(1) ** 2 / (w * w).sum(1).clamp(min=1) for w in (wa, wb)]
        return r.numpy(), ((eff[0] + eff[1]) / 2).numpy()

    r = float(np.mean(np.concatenate([split_r(np.ones((k, n)))[0] for k in _chunks(n_splits)])))
    point = spearman_brown_n(r, n // 2, target)
    if n_boot <= 0:
        return point, float("nan"), float("nan")
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_boot)).astype(np.float64)
    values = []
    for i in range(0, len(counts), 64):
        rs, effs = split_r(counts[i:i + 64])
        values += [spearman_brown_n(float(v), max(1, int(round(e))), target) for v, e in zip(rs, effs)]
    tail = (1.0 - level) / 2.0
    return point, float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def _chunks(total: int, size: int = 64) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


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


def region_means(cmap: Tensor, face: CanonicalFace | None = None,
                 names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean value of a canonical map [S,S] inside each named region (default: left/right eye,
    eyes, eyebrows, nose, mouth, cheeks)."""
    face = _check_face(face)
    cmap = torch.as_tensor(cmap).detach().cpu().double()
    if cmap.shape != (face.size, face.size):
        raise ValueError(f"cmap must be [{face.size},{face.size}], got {tuple(cmap.shape)}")
    names = list(names) if names is not None else ["left_eye", "right_eye", "eyes", "eyebrows",
                                                    "nose", "mouth", "cheeks"]
    return {n: float(cmap[face.region_mask(n)].mean()) for n in names}


def plot_canonical(ax, cmap: Tensor, face: CanonicalFace | None = None, alpha: float = 0.6,
                   colormap: str = "jet", vmin: float | None = None, vmax: float | None = None,
                   title: str | None = None):
    """Draw a canonical map [S,S] over ``face.template()`` on matplotlib axes ``ax`` (red = high,
    as in the paper's figures; outside the face only the template shows). Returns the AxesImage
    of the map (for a colorbar)."""
    face = _check_face(face)
    m = torch.as_tensor(cmap).detach().cpu().double()
    if m.shape != (face.size, face.size):
        raise ValueError(f"cmap must be [{face.size},{face.size}] (face.size), got {tuple(m.shape)}")
    arr = np.ma.masked_where(~face.face_mask.numpy(), m.numpy())
    ax.imshow(face.template().permute(1, 2, 0).numpy())
    im = ax.imshow(arr, cmap=colormap, alpha=alpha, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return im


__all__ = [
    "CanonicalFace", "canonical_face", "face_mesh", "image_to_canonical", "canonical_to_image",
    "cis", "CISResult", "cms", "cms_convergence", "rasterize_mesh", "LandmarkPatchMasks",
    "square_cover", "region_means", "plot_canonical", "N_LANDMARKS",
    "CISRun", "run_cis", "images_to_converge", "spearman_brown_n",
]
