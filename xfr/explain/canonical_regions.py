"""Canonical face regions and summaries of canonical maps (the CMS paper's readings, §5):
landmark discs and polygons on the canvas, the mass of a map per region, the face coverage of a
set of occluded landmarks, evenly spread landmarks, masked rank correlation.

Kept apart from :mod:`xfr.explain.canonical` (the face, the mesh warps, CIS and CMS), which is
long enough on its own; these functions only read a :class:`~xfr.explain.canonical.CanonicalFace`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .canonical import N_LANDMARKS, canonical_face, square_cover

# extra canonical regions (landmark discs / polygons) for the paper's claims, see region_masks
EYE_CORNERS = (33, 133, 362, 263)
GLABELLA = (9, 8, 168, 107, 336, 55, 285)
EYE_NOSE_TRIANGLE = (33, 263, 1)


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

    face = face if face is not None else canonical_face()
    p = face.points.double()[torch.as_tensor(points, dtype=torch.long)]
    cols = square_cover(p[:, 0], int(canvas_patch), face.size).double()
    rows = square_cover(p[:, 1], int(canvas_patch), face.size).double()
    return float(((rows.T @ cols) > 0)[face.face_mask].float().mean())
