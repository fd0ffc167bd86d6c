"""Pointing game (survey §2.5; Zhang et al., "Top-down neural attention by excitation backprop").

A hit when the maximum of the saliency map falls inside the ground-truth region. The region is a
boolean mask or a box ``(x1, y1, x2, y2)``; an empty region gives NaN (not counted). When the
maximum is attained at several pixels, it is a hit only if all of them are inside, so a flat map
does not score by accident. ``tolerance`` (pixels) grows the region by a disk, as in Zhang et al.
(15 px there). The energy variant (Wang et al., Score-CAM) is the share of the map's positive mass
inside the region. Higher is better for both.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import as_map, as_region, declares


def _grow(region: np.ndarray, tolerance: float) -> np.ndarray:
    if tolerance <= 0:
        return region
    dist = ndimage.distance_transform_edt(~region)
    return dist <= tolerance


@declares('pointing_game', higher=True, field='hit',
          paper='survey §2.5 (Zhang et al. 2018): saliency maximum inside the ground truth')
def pointing_game(saliency, region, tolerance: float = 0.0) -> float:
    """1.0 if the saliency maximum lies in ``region`` (within ``tolerance`` px), 0.0 if not,
    NaN if the region is empty."""
    sal = as_map(saliency)
    gt = as_region(region, sal.shape)
    if not gt.any():
        return float("nan")
    gt = _grow(gt, tolerance)
    at_max = sal == sal.max()
    return float(np.all(gt[at_max]))


@declares('energy_pointing_game', higher=True, field='energy',
          paper="survey §2.5 (Wang et al. 2020): share of the map's mass inside the ground truth")
def energy_pointing_game(saliency, region) -> float:
    """Sum of the positive saliency inside ``region`` / sum over the image (NaN: empty region or a
    map without positive values)."""
    sal = np.clip(as_map(saliency), 0, None)
    gt = as_region(region, sal.shape)
    total = sal.sum()
    if not gt.any() or total <= 0:
        return float("nan")
    return float(sal[gt].sum() / total)


def pointing_game_batch(saliencies, regions, tolerance: float = 0.0) -> np.ndarray:
    """Per-image :func:`pointing_game` over a list (or [N,H,W] stack) of maps and regions."""
    if len(saliencies) != len(regions):
        raise ValueError(f"{len(saliencies)} maps but {len(regions)} regions")
    return np.array([pointing_game(s, r, tolerance) for s, r in zip(saliencies, regions)])
