"""What a saliency map looks like, measured: how much it resembles an edge detector run on the
image, and how coarse it is. The survey (``002_…`` §2.1, §2.5, after Adebayo et al. 2018)
states that gradient maps "look like edge detectors" and that CAM maps are too coarse for faces;
these two per-map values let the ``survey`` stage test both statements on the same faces.

- :func:`edge_similarity`: Spearman rank correlation of ``|map|`` with the Sobel gradient
  magnitude of the image (Adebayo et al. compare maps with an edge detector the same way, by
  rank correlation). High = the map follows the image's edges whatever the model does.
- :func:`map_coarseness`: the radius at which the map's spatial autocorrelation falls to one
  half, as a fraction of the image side (the width of a typical blob of the map). A 4x4 CAM
  upsampled to the face has blobs a quarter of the face wide; an eye is about a tenth.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from torch import Tensor

from .base import as_map, declares
from .stability import spearman


def image_edges(image) -> np.ndarray:
    """Sobel gradient magnitude [H,W] of the image's mean over channels ([C,H,W] or [H,W])."""
    x = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=0)
    if x.ndim != 2:
        raise ValueError(f"image must be [C,H,W] or [H,W], got shape {x.shape}")
    return np.hypot(ndimage.sobel(x, axis=0), ndimage.sobel(x, axis=1))


@declares("edge_similarity", higher=False, field="value",
          paper="survey §2.1/§2.5 (Adebayo et al. 2018): rank correlation of |map| with the image's "
                "Sobel edges; high = the map looks like an edge detector")
def edge_similarity(saliency, image) -> float:
    """Spearman correlation of ``|saliency|`` [H,W] with :func:`image_edges` of ``image``."""
    sal = np.abs(as_map(saliency))
    edges = image_edges(image)
    if edges.shape != sal.shape:
        raise ValueError(f"saliency map {sal.shape} and image {edges.shape} differ in size")
    return spearman(sal, edges)


@declares("map_coarseness", higher=False, field="value",
          paper="survey §2.2 (CAM maps too coarse for faces): autocorrelation half-width of the "
                "map / image side; high = coarse blobs")
def map_coarseness(saliency) -> float:
    """Smallest radius r (pixels, over the image side) at which the radially averaged
    autocorrelation of the mean-removed map drops to 0.5 of its value at 0 (Wiener-Khinchin:
    the inverse FFT of the power spectrum, zero-padded so it does not wrap around). A constant
    map has no structure: NaN."""
    sal = as_map(saliency).astype(np.float64)
    h, w = sal.shape
    x = sal - sal.mean()
    if not np.any(x):
        return float("nan")
    spec = np.fft.rfft2(x, s=(2 * h, 2 * w))
    acf = np.fft.irfft2(np.abs(spec) ** 2, s=(2 * h, 2 * w))
    acf = np.fft.fftshift(acf)
    cy, cx = h, w
    yy, xx = np.indices(acf.shape)
    r = np.hypot(yy - cy, xx - cx).astype(np.int64)
    rmax = min(h, w)
    keep = r < rmax
    prof = np.bincount(r[keep], weights=acf[keep], minlength=rmax) / np.maximum(
        np.bincount(r[keep], minlength=rmax), 1)
    prof = prof / prof[0]
    below = np.nonzero(prof <= 0.5)[0]
    if not len(below):
        return 1.0
    k = int(below[0])  # linear interpolation between k - 1 and k
    r_half = (k - 1) + (prof[k - 1] - 0.5) / (prof[k - 1] - prof[k])
    return float(r_half / max(h, w))
