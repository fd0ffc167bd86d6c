"""Soft-mask image edits on face regions, for controlled interventions such as the make-up study
of the CMS paper (§5.2, :mod:`xfr.experiments.bias`): regions drawn on the canonical face
(:mod:`xfr.explain.canonical`) and an equal-area control region (:func:`equal_area_mask`,
:func:`edit_regions`), reprojected onto real images through their FaceMesh meshes
(:func:`face_meshes`, :func:`image_masks`), and a luminance edit inside a feathered mask
(:func:`gaussian_feather`, :func:`luminance_edit`, :func:`edited_variants`)."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import apply_masks, check_image
from ..io import load_image

if TYPE_CHECKING:
    from ..explain.canonical import CanonicalFace


def equal_area_mask(region: Tensor, area: int, allowed: Tensor | None = None) -> Tensor:
    """BoolTensor: the ``area`` pixels of ``allowed`` deepest inside (or, when ``region`` is
    smaller than ``area``, nearest to) ``region``, i.e. ``region`` eroded or grown along its
    signed distance until it has exactly ``area`` pixels (the equal-area CONTROL region)."""
    from scipy.ndimage import distance_transform_edt

    if not isinstance(region, Tensor) or region.dim() != 2 or region.dtype != torch.bool:
        raise ValueError(f"region must be a BoolTensor [H,W], got "
                         f"{getattr(region, 'dtype', type(region))} {tuple(getattr(region, 'shape', ()))}")
    if not region.any():
        raise ValueError("region is empty")
    allowed = torch.ones_like(region) if allowed is None else allowed.bool()
    if allowed.shape != region.shape:
        raise ValueError(f"allowed {tuple(allowed.shape)} must match region {tuple(region.shape)}")
    area = int(area)
    if not 1 <= area <= int(allowed.sum()):
        raise ValueError(f"area must be in [1, {int(allowed.sum())}] (allowed pixels), got {area}")
    r = region.numpy()
    signed = distance_transform_edt(r) - distance_transform_edt(~r)  # > 0 inside, < 0 outside
    signed = np.where(allowed.numpy(), signed, -np.inf).ravel()
    # stable order (ties broken by pixel index) -> deterministic
    keep = np.argsort(-signed, kind="stable")[:area]
    out = np.zeros(r.size, dtype=bool)
    out[keep] = True
    return torch.from_numpy(out.reshape(r.shape))


def gaussian_feather(mask: Tensor, sigma: float) -> Tensor:
    """A [H,W] mask blurred by a Gaussian of ``sigma`` pixels (zero padding), float32 in [0,1]."""
    m = mask.float()
    if sigma <= 0:
        return m
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.conv2d(m[None, None], k.view(1, 1, 1, -1), padding=(0, r))
    out = F.conv2d(out, k.view(1, 1, -1, 1), padding=(r, 0))
    return out[0, 0].clamp(0, 1)


@dataclass
class EditRegions:
    """The eye and control regions on the canonical canvas: ``hard`` BoolTensors [S,S] and their
    feathered ``soft`` float versions; ``areas`` in canvas pixels."""

    face: CanonicalFace
    hard: dict
    soft: dict
    description: dict = field(default_factory=dict)

    @property
    def areas(self) -> dict:
        return {k: int(v.sum()) for k, v in self.hard.items()}


def edit_regions(face=None, eye_dilate: int = 6, eye_ring: bool = True, control: str = "cheeks",
                 feather: float = 2.0, control_gap: int = 4) -> EditRegions:
    """The canonical eye region (``canonical_face().region_mask('eyes')`` grown by ``eye_dilate``
    canvas pixels; with ``eye_ring`` the eye openings themselves are left out, so the edit
    covers lids, lash lines and eye corners, not the eyeballs) and the CONTROL: region
    ``control`` (e.g. 'cheeks', 'nose', 'mouth') grown/eroded to exactly the eye region's area
    and kept ``control_gap`` pixels away from it (:func:`equal_area_mask`). Soft masks: the hard
    ones feathered by a Gaussian of ``feather`` canvas pixels."""
    from ..explain.canonical import canonical_face

    face = canonical_face() if face is None else face
    if eye_dilate < 0 or (eye_ring and eye_dilate == 0):
        raise ValueError(f"eye_dilate must be >= 0 (>= 1 with eye_ring), got {eye_dilate}")
    eyes = face.region_mask("eyes", dilate=int(eye_dilate))
    if eye_ring:
        eyes = eyes & ~face.region_mask("eyes")
    if control in ("eyes", "left_eye", "right_eye"):
        raise ValueError(f"control region must not be the eyes, got {control!r}")
    allowed = face.face_mask & ~face.region_mask("eyes", dilate=int(eye_dilate) + int(control_gap))
    ctrl = equal_area_mask(face.region_mask(control), int(eyes.sum()), allowed)
    hard = {"eyes": eyes, "control": ctrl}
    soft = {k: gaussian_feather(v, feather) * face.face_mask.float() for k, v in hard.items()}
    desc = {"eyes": f"eye {'ring' if eye_ring else 'region'} (eyes + {eye_dilate} px)",
            "control": f"{control} (equal area)"}
    return EditRegions(face, hard, soft, desc)


def image_masks(regions: EditRegions, mesh: Tensor, hw: tuple[int, ...], supersample: int = 1
                ) -> dict[str, Tensor]:
    """The soft canonical masks reprojected onto an image of size ``hw`` through its ``mesh``
    (:func:`xfr.explain.canonical.canonical_to_image`), each [H,W] in [0,1]. With ``supersample`` s > 1
    the reprojection is made at s x the resolution and area-averaged back (anti-aliasing for
    small images, e.g. CelebA's 89x109)."""
    from ..explain.canonical import canonical_to_image

    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    h, w = int(hw[0]), int(hw[1])
    mesh = torch.as_tensor(mesh, dtype=torch.float32)[..., :2]
    names = list(regions.soft)
    cmaps = torch.stack([regions.soft[n] for n in names])  # one rasterization for all regions
    m = canonical_to_image(cmaps, mesh * s, (h * s, w * s), face=regions.face)
    if s > 1:
        m = F.avg_pool2d(m[None], s)[0]
    return {n: m[i].clamp(0, 1).float() for i, n in enumerate(names)}


def luminance_edit(image: Tensor, alpha: Tensor, factor: float) -> Tensor:
    """The make-up edit: x' = (1 - a) x + a clip(factor x, 0, 1) with the soft mask a = ``alpha``
    [H,W] in [0,1] — luminance (all channels) multiplied by ``factor`` where a = 1, blended at the
    feathered edge, untouched where a = 0. Built with :func:`xfr.engine.apply_masks` (keep mask
    1 - a, fill clip(factor x)). ``factor`` 1 is the identity; the result stays in [0,1]."""
    image = check_image(image)
    if not isinstance(alpha, Tensor) or alpha.dim() != 2 or tuple(alpha.shape) != tuple(image.shape[1:]):
        raise ValueError(f"alpha must be a Tensor [H,W] = {tuple(image.shape[1:])}, got "
                         f"{tuple(alpha.shape) if isinstance(alpha, Tensor) else type(alpha).__name__}")
    if float(alpha.min()) < 0 or float(alpha.max()) > 1:
        raise ValueError("alpha must lie in [0, 1]")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
        raise ValueError(f"factor must be a finite number >= 0, got {factor!r}")
    fill = (image * float(factor)).clamp(0, 1)
    return apply_masks(image, (1.0 - alpha.to(image))[None], fill)[0]


def upsample(image: Tensor, scale: int) -> Tensor:
    """``image`` [C,H,W] enlarged ``scale`` x (bilinear, clipped to [0, 1]); itself for scale 1."""
    if scale == 1:
        return image
    return F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0].clamp(0, 1)


def face_meshes(paths: Sequence, scale: int = 1, progress: bool = False) -> tuple[list, float]:
    """FaceMesh meshes [468,2] (:func:`xfr.explain.canonical.face_mesh`, MTCNN's largest face) of each
    image, in the image's own pixels; images are upsampled ``scale`` x (bilinear) first so MTCNN
    finds small faces (CelebA 89x109: 3) and the mesh divided back. None where no face is found.
    Returns (meshes, seconds)."""
    from tqdm.auto import tqdm

    from ..explain.canonical import face_mesh
    from ..models.align import NoFaceError

    if int(scale) < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale}")
    t0 = time.perf_counter()
    out: list[Tensor | None] = []
    for p in tqdm(list(paths), desc="face mesh", disable=not progress, leave=False):
        img = load_image(p)
        try:
            out.append(face_mesh(upsample(img, int(scale))) / int(scale))
        except NoFaceError:
            out.append(None)
    return out, time.perf_counter() - t0


EDITS_DEFAULT = {"dark": 0.6, "light": 1.3}


def _check_edits(edits: Mapping[str, float]) -> dict:
    """``edits`` checked (a non-empty mapping name -> finite factor >= 0) as {str: float}."""
    if not isinstance(edits, Mapping) or not edits:
        raise ValueError(f"edits must be a non-empty mapping name -> factor, e.g. {EDITS_DEFAULT}")
    out = {}
    for k, v in edits.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"edit {k!r}: factor must be a finite number >= 0, got {v!r}")
        out[str(k)] = float(v)
    return out


def edited_variants(image: Tensor, masks: Mapping[str, Tensor], edits: Mapping[str, float]
                    ) -> tuple[list[tuple[str, str]], Tensor]:
    """Every (region, edit) variant of ``image``: ([(region, edit)...], Tensor[V,C,H,W])."""
    keys, imgs = [], []
    for region in masks:
        for name, k in _check_edits(edits).items():
            keys.append((region, name))
            imgs.append(luminance_edit(image, masks[region], k))
    return keys, torch.stack(imgs)
