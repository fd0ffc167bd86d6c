"""LIME for images (Ribeiro, Singh & Guestrin 2016) and LIME-map (MinPlus §3, footnote 3).

Samples switch superpixels on and off at random; the scores of the perturbed images are fitted
by a kernel-weighted linear model over the on/off vectors z, as ``lime_image`` does: sample 0 is
the original (all on), distances are cosine distances of z to the all-on vector, weights
sqrt(exp(-d^2 / 0.25^2)), model ``sklearn.linear_model.Ridge(alpha=1)``. LIME shows the
``num_features`` superpixels with the largest positive coefficients (lime's
``get_image_and_mask(positive_only=True)``; the map holds their coefficients, 0 elsewhere). LIME-map is the RISE strategy on the same samples: sum_k f(X_k) M_k / (N p).

Parameters follow the MinPlus reference code (``saliency_LIME``): ``quickshift(kernel_size=3,
max_dist=200, ratio=0.2)``, 500 samples, 16 top superpixels, black fill. Deviation: the reference
fits an unregularized ``LinearRegression``; we use lime's ``Ridge(alpha=1)`` on all superpixels
(lime itself first preselects ``num_features`` of them with a Ridge(alpha=0.01) fit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine import Fill, ScoreFn, perturb
from .common import WeightedMaskSum, as_counting, check_float, check_int, check_seed, prepare
from .masks import SuperpixelMasks


@dataclass
class LimeExplanation:
    segments: Tensor  # [H, W] superpixel index of each pixel (0..m-1)
    coef: Tensor  # [m] linear-model coefficient of each superpixel
    intercept: float
    r2: float  # weighted R^2 of the linear model on the samples
    top: Tensor  # the (at most num_features) superpixels with the largest positive coefficients
    lime_map: Tensor  # [H, W] coefficient of the pixel's superpixel if it is in `top`, else 0
    saliency: Tensor  # [H, W] LIME-map


def superpixels(image: Tensor, kernel_size: float = 3, max_dist: float = 200, ratio: float = 0.2,
                seed: int = 0) -> np.ndarray:
    """Quickshift superpixels (lime's segmentation; parameters of the MinPlus reference)."""
    from skimage.segmentation import quickshift

    arr = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return quickshift(arr[:, :, :3], kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                      rng=seed)


def lime_explain(
    f: ScoreFn,
    image: Tensor,
    n_samples: int = 500,
    num_features: int = 16,
    kernel_width: float = 0.25,
    segments: np.ndarray | Tensor | None = None,
    kernel_size: float = 3,
    max_dist: float = 200,
    ratio: float = 0.2,
    p: float = 0.5,
    fill: Fill = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> LimeExplanation:
    """LIME and LIME-map from one set of ``n_samples`` perturbations (see module docstring).
    ``segments`` ([H, W] labels) overrides the quickshift segmentation."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    img = prepare(image)
    hw = (img.shape[1], img.shape[2])
    n_samples = check_int("n_samples", n_samples, 2, hint="LIME needs samples to fit its model")
    num_features = check_int("num_features", num_features, 1)
    kernel_width = check_float("kernel_width", kernel_width, 0.0, low_open=True)
    p = check_float("p", p, 0.0, 1.0, low_open=True)
    seed = check_seed(seed)
    if segments is None:
        segments = superpixels(img, kernel_size, max_dist, ratio, seed)
    segments = np.asarray(segments.cpu() if isinstance(segments, Tensor) else segments)
    if segments.shape != hw:
        raise ValueError(f"segments must have the image's shape {hw}, got {segments.shape}")
    masks = SuperpixelMasks(segments, n_samples, p=p, seed=seed, include_original=True)
    acc = WeightedMaskSum(hw)
    res = perturb(as_counting(f), img, masks, fill=fill, batch_size=batch_size,
                  progress=progress, on_batch=acc, desc="lime")
    z = masks.z(np.arange(n_samples)).numpy().astype(np.float64)
    y = res.scores.numpy().astype(np.float64)
    d = pairwise_distances(z, z[:1], metric="cosine").ravel()
    weights = np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))
    model = Ridge(alpha=1.0, fit_intercept=True, random_state=seed)
    model.fit(z, y, sample_weight=weights)
    coef = torch.from_numpy(model.coef_.astype(np.float64))
    order = np.argsort(-model.coef_, kind="stable")
    order = order[model.coef_[order] > 0]  # lime's get_image_and_mask(positive_only=True)
    top = torch.from_numpy(order[:num_features].copy())
    shown = torch.zeros_like(coef)
    shown[top] = coef[top]
    return LimeExplanation(
        segments=masks.segments,
        coef=coef.float(),
        intercept=float(model.intercept_),
        r2=float(model.score(z, y, sample_weight=weights)),
        top=top,
        lime_map=shown[masks.segments].float(),
        saliency=(acc.mean() / p).float(),
    )


def lime(f: ScoreFn, image: Tensor, **kwargs) -> Tensor:
    """LIME map [H, W] (float32): coefficients of the top positive superpixels, 0 elsewhere."""
    return lime_explain(f, image, **kwargs).lime_map


def lime_map(f: ScoreFn, image: Tensor, **kwargs) -> Tensor:
    """LIME-map [H, W] (float32): score-weighted mean of the LIME samples' keep masks / p."""
    return lime_explain(f, image, **kwargs).saliency
