"""X-Maps (Knoche et al., WACV Workshops 2023, §3.2): similarity maps of a face pair from
systematic occlusion.

Algorithm 1 / eq. 4 occludes each image with a black p x p patch at positions 0, s, 2s, ...
(floor((H - p) / s) per axis); M_i is 1 inside the i-th patch. With unit embeddings F_1, F_2 of the
occluded images and the cosine distance d (eq. 1), the three methods choose the distances
(eqs. 6-8):

- I:   D_1(i) = mean_j d(F_1(i), F_2(j)),  D_2(j) = mean_i d(F_1(i), F_2(j));
- II:  D_1(i) = d(F_1(i), N(I_2)),         D_2(i) = d(N(I_1), F_2(i));
- III: D_1(i) = D_2(i) = d(F_1(i), F_2(i))  (co-located occlusions, identical maps).

Eq. 9: S = sum_i (d_i - d_orig) M_i / N; eq. 10: S_bar = sum_p S_p / (p^2 |p|) over the patch
sizes (7, 14, 28) with stride 5; then a Gaussian blur (s x s kernel, sigma = s) and scaling to
[-1, 1]. Positive values: occluding the region increases the distance, i.e. the region is
similar (green in Algorithm 2's blend, :func:`xfr.viz.blend_hls`); negative: dissimilar.
Reading: "normalization to [-1, 1]" divides each map by its largest absolute value, so that 0
keeps meaning "no effect".
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine import Counting, Fill, check_image, perturb
from ..score import unit_embeddings
from .common import check_int, gaussian_blur, prepare
from .masks import PatchMasks, xmaps_positions


@dataclass
class XMaps:
    map1: Tensor  # [H, W] in [-1, 1] for image 1
    map2: Tensor  # [H, W] in [-1, 1] for image 2
    method: int
    distance: float  # d_orig, cosine distance of the unoccluded pair
    raw1: Tensor  # S_bar of image 1 before blur and scaling
    raw2: Tensor


def _occluders(hw: tuple[int, int], patch: int, stride: int, kind: str = "square",
               std: float | None = None) -> PatchMasks:
    """Occluders at the positions of Algorithm 1 (``floor((H - p) / s)`` per axis): ``kind``
    "square" (a p x p patch, the paper's) or "gaussian" (a Gaussian of standard deviation
    ``std``, peak 1, centred in the square)."""
    return PatchMasks(hw, xmaps_positions(hw[0], patch, stride), xmaps_positions(hw[1], patch, stride),
                      patch, kind=kind, std=std)


def _occluded_embeddings(embed, image: Tensor, other: Tensor, masks: PatchMasks, fill,
                         batch_size, progress, desc: str = "x-maps") -> Tensor:
    """Unit embeddings [N, D] of ``image`` under each occluder of ``masks`` (the engine scores
    the cosine distance to ``other``; the counting wrapper keeps the embeddings)."""
    col = Counting(embed, keep=True)
    perturb(lambda images: 1.0 - col(images) @ other, image, masks, fill=fill,
            batch_size=batch_size, progress=progress, desc=desc)
    return torch.cat(col.outputs)


def _weighted_masks(weights: Tensor, masks: PatchMasks, chunk: int = 256) -> Tensor:
    """sum_i w_i M_i / N with M_i = 1 inside patch i (eq. 9)."""
    total = torch.zeros(masks.hw[0] * masks.hw[1], dtype=torch.float64)
    for start in range(0, len(masks), chunk):
        idx = np.arange(start, min(start + chunk, len(masks)))
        m = masks.removal(idx).reshape(len(idx), -1).to(torch.float64)
        total += weights[idx].to(torch.float64) @ m
    return (total / len(masks)).reshape(masks.hw)


def scale_signed(smap: Tensor) -> Tensor:
    """A signed map divided by its largest absolute value (X-Maps' scaling to [-1, 1])."""
    peak = smap.abs().max()
    return (smap / peak).float() if peak > 0 else torch.zeros(smap.shape)


def xmaps_methods(
    embedder,
    image1: Tensor,
    image2: Tensor,
    methods: Sequence[int] = (1, 2, 3),
    patch_sizes: Sequence[int] = (7, 14, 28),
    stride: int = 5,
    fill: Fill = 0.0,
    blur: bool = True,
    batch_size: int = 64,
    progress: bool = False,
    kind: str = "square",
    std: float | None = None,
) -> dict[int, XMaps]:
    """X-Maps of several methods from one set of occluded embeddings (the methods differ only
    in which distances they take): {method: XMaps}. ``kind``: the occluder, "square" (the
    paper's p x p patch) or "gaussian" (standard deviation ``std``, see :func:`_occluders`)."""
    methods = tuple(methods)
    if not methods or any(m not in (1, 2, 3) for m in methods):
        raise ValueError(f"methods must be a non-empty subset of (1, 2, 3) (X-Maps eqs. 6-8), "
                         f"got {methods!r}")
    a, b = prepare(image1), prepare(image2)
    if a.shape != b.shape:
        raise ValueError(f"both images must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)} (align both faces to the model's chip)")
    hw = (a.shape[1], a.shape[2])
    stride = check_int("stride", stride, 1, min(hw) - 1)
    if isinstance(patch_sizes, (int, np.integer)):
        patch_sizes = (int(patch_sizes),)
    if len(patch_sizes) == 0:
        raise ValueError("patch_sizes is empty: nothing to occlude")
    sizes = []
    for p in patch_sizes:
        p = check_int("patch size", p, 1, min(hw) - stride,
                      hint=f"a p x p patch moved by stride {stride} must fit the "
                           f"{hw[0]}x{hw[1]} image at least once (N = floor((H-p)/s)^2 > 0)")
        sizes.append(p)
    embed = unit_embeddings(embedder)
    with torch.inference_mode():
        e = embed(torch.stack([a, b]))
    e1, e2 = e[0], e[1]
    d_orig = float(1.0 - e1 @ e2)
    acc = {m: [torch.zeros(hw, dtype=torch.float64), torch.zeros(hw, dtype=torch.float64)]
           for m in methods}
    for p in sizes:
        masks = _occluders(hw, p, stride, kind, std)
        f1 = _occluded_embeddings(embed, a, e2, masks, fill, batch_size, progress)
        f2 = _occluded_embeddings(embed, b, e1, masks, fill, batch_size, progress)
        for m in methods:
            if m == 1:  # eq. 6
                d1 = 1.0 - f1 @ f2.mean(dim=0)
                d2 = 1.0 - f2 @ f1.mean(dim=0)
            elif m == 2:  # eq. 7
                d1 = 1.0 - f1 @ e2
                d2 = 1.0 - f2 @ e1
            else:  # eq. 8
                d1 = d2 = 1.0 - (f1 * f2).sum(dim=1)
            acc[m][0] += _weighted_masks(d1 - d_orig, masks) / (p * p * len(sizes))  # eqs. 9, 10
            acc[m][1] += _weighted_masks(d2 - d_orig, masks) / (p * p * len(sizes))
    out = {}
    for m, (s1, s2) in acc.items():
        o1, o2 = s1, s2
        if blur:
            o1 = gaussian_blur(o1, stride, float(stride))
            o2 = gaussian_blur(o2, stride, float(stride))
        out[m] = XMaps(scale_signed(o1), scale_signed(o2), m, d_orig, s1.float(), s2.float())
    return out


def xmaps(
    embedder,
    image1: Tensor,
    image2: Tensor,
    method: int = 3,
    patch_sizes: Sequence[int] = (7, 14, 28),
    stride: int = 5,
    fill: Fill = 0.0,
    blur: bool = True,
    batch_size: int = 64,
    progress: bool = False,
    kind: str = "square",
    std: float | None = None,
) -> XMaps:
    """X-Maps of a pair of aligned faces (same size); ``embedder``: images -> embeddings [N,D].
    Forward passes: 2 + 2 sum_p floor((H - p)/s) floor((W - p)/s)."""
    if method not in (1, 2, 3):
        raise ValueError(f"method must be 1, 2 or 3 (X-Maps eqs. 6-8), got {method!r}")
    return xmaps_methods(embedder, image1, image2, (method,), patch_sizes, stride, fill, blur,
                         batch_size, progress, kind=kind, std=std)[method]


def xmap_single(embedder, image1: Tensor, image2: Tensor, patch: int, stride: int = 5,
                fill: Fill = 0.0, kind: str = "square", std: float | None = None,
                blur: bool = False, batch_size: int = 64) -> tuple[Tensor, float]:
    """X-Map of method III (eq. 8) for one occluder, for the sensitivity study (X-Maps Fig. 6).

    Occluders at the positions of Algorithm 1 (``floor((H - p) / s)`` per axis): ``kind``
    "square" (a p x p patch, the paper's) or "gaussian" (a Gaussian of standard deviation
    ``std``, peak 1, centred in the square: a round occluder with soft edges); ``fill`` is the
    occluder's colour (a number, "mean", or an image such as noise). Returns (S / p^2 of eqs.
    9-10 with one patch size, the unoccluded distance); with ``blur`` the map is blurred with an
    s x s kernel of sigma s and scaled to [-1, 1] by its largest absolute value, as
    :func:`xfr.explain.xmaps` does. Same occluded embeddings as :func:`xmaps_methods`; the
    distance differences d_i - d_orig are taken in float64 here."""
    a, b = check_image(image1), check_image(image2)
    if a.shape != b.shape:
        raise ValueError(f"both images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    hw = (a.shape[1], a.shape[2])
    if patch < 1 or patch > min(hw) - stride:
        raise ValueError(f"patch {patch} with stride {stride} does not fit a {hw} image")
    masks = _occluders(hw, patch, stride, kind, std)
    embed = unit_embeddings(embedder)
    with torch.inference_mode():
        e = embed(torch.stack([a, b]))
    d_orig = float(1.0 - e[0] @ e[1])
    f1 = _occluded_embeddings(embed, a, e[1], masks, fill, batch_size, False, desc="x-map")
    f2 = _occluded_embeddings(embed, b, e[0], masks, fill, batch_size, False, desc="x-map")
    d = 1.0 - (f1 * f2).sum(dim=1)  # eq. 8
    s = _weighted_masks(d.to(torch.float64) - d_orig, masks) / (patch * patch)
    if blur:
        s = scale_signed(gaussian_blur(s, stride, float(stride)))
    return s.float(), d_orig
