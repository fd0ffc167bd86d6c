"""LIME for images (Ribeiro, Singh & Guestrin 2016) and LIME-map (MinPlus §3, footnote 3).

Samples switch superpixels on and off at random; the scores of the perturbed images are fitted
by a kernel-weighted linear model over the on/off vectors z (:func:`fit_lime`), as ``lime_image`` does: sample 0 is
the original (all on), distances are cosine distances of z to the all-on vector, weights
sqrt(exp(-d^2 / 0.25^2)), model ``sklearn.linear_model.Ridge(alpha=1)``. LIME shows the
``num_features`` superpixels with the largest positive coefficients (lime's
``get_image_and_mask(positive_only=True)``; the map holds their coefficients, 0 elsewhere). LIME-map is the RISE strategy on the same samples: sum_k f(X_k) M_k / (N p), with RISE's
``scoring`` (default ``"centred"``, :func:`xfr.explain.rise.rise`).

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
from .common import GroupedMaskSums, as_counting, check_float, check_int, check_scoring, check_seed, prepare
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


def lime_masks(image: Tensor, n_samples: int = 500, segments: np.ndarray | Tensor | None = None,
               kernel_size: float = 3, max_dist: float = 200, ratio: float = 0.2, p: float = 0.5,
               seed: int = 0) -> SuperpixelMasks:
    """LIME's samples of ``image`` (quickshift superpixels unless ``segments`` is given)."""
    img = prepare(image)
    hw = (img.shape[1], img.shape[2])
    n_samples = check_int("n_samples", n_samples, 2, hint="LIME needs samples to fit its model")
    p = check_float("p", p, 0.0, 1.0, low_open=True)
    seed = check_seed(seed)
    if segments is None:
        segments = superpixels(img, kernel_size, max_dist, ratio, seed)
    segments = np.asarray(segments.cpu() if isinstance(segments, Tensor) else segments)
    if segments.shape != hw:
        raise ValueError(f"segments must have the image's shape {hw}, got {segments.shape}")
    return SuperpixelMasks(segments, n_samples, p=p, seed=seed, include_original=True)


@dataclass
class LimeFit:
    coef: Tensor
    intercept: float
    r2: float
    top: Tensor
    lime_map: Tensor


def fit_lime(masks: SuperpixelMasks, scores: Tensor, samples: np.ndarray | None = None,
             num_features: int = 16, kernel_width: float = 0.25, seed: int = 0) -> LimeFit:
    """lime_image's weighted Ridge fit of ``scores`` on the on/off vectors of ``samples`` (indices
    into ``masks``; default all), and the map of the top positive superpixels."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    idx = np.arange(len(masks)) if samples is None else np.asarray(samples)
    z = masks.z(idx).numpy().astype(np.float64)
    y = scores.numpy().astype(np.float64)[idx]
    on = np.ones((1, z.shape[1]))  # the original instance (lime's sample 0)
    d = pairwise_distances(z, on, metric="cosine").ravel()
    weights = np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))
    model = Ridge(alpha=1.0, fit_intercept=True, random_state=seed)
    model.fit(z, y, sample_weight=weights)
    coef = torch.from_numpy(model.coef_.astype(np.float64))
    order = np.argsort(-model.coef_, kind="stable")
    order = order[model.coef_[order] > 0]  # lime's get_image_and_mask(positive_only=True)
    top = torch.from_numpy(order[:num_features].copy())
    shown = torch.zeros_like(coef)
    shown[top] = coef[top]
    return LimeFit(coef.float(), float(model.intercept_), float(model.score(z, y, sample_weight=weights)),
                   top, shown[masks.segments].float())


def lime_map_finish(acc: GroupedMaskSums, scoring: str, masks: SuperpixelMasks, groups=None) -> Tensor:
    """The LIME-map of ``acc``'s samples: raw and centred sums divided by p."""
    out = acc.map(scoring, groups)
    return (out if scoring == "coverage" else out / masks.p).float()


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
    scoring: str = "centred",
    batch_size: int = 64,
    progress: bool = False,
) -> LimeExplanation:
    """LIME and LIME-map from one set of ``n_samples`` perturbations (see module docstring).
    ``segments`` ([H, W] labels) overrides the quickshift segmentation."""
    num_features = check_int("num_features", num_features, 1)
    kernel_width = check_float("kernel_width", kernel_width, 0.0, low_open=True)
    check_scoring(scoring)
    img = prepare(image)
    masks = lime_masks(img, n_samples, segments, kernel_size, max_dist, ratio, p, seed)
    acc = GroupedMaskSums(masks.hw)
    res = perturb(as_counting(f), img, masks, fill=fill, batch_size=batch_size,
                  progress=progress, on_batch=acc, desc="lime")
    fit = fit_lime(masks, res.scores, None, num_features, kernel_width, seed)
    return LimeExplanation(
        segments=masks.segments,
        coef=fit.coef,
        intercept=fit.intercept,
        r2=fit.r2,
        top=fit.top,
        lime_map=fit.lime_map,
        saliency=lime_map_finish(acc, scoring, masks),
    )


def lime(f: ScoreFn, image: Tensor, **kwargs) -> Tensor:
    """LIME map [H, W] (float32): coefficients of the top positive superpixels, 0 elsewhere."""
    return lime_explain(f, image, **kwargs).lime_map


def lime_map(f: ScoreFn, image: Tensor, **kwargs) -> Tensor:
    """LIME-map [H, W] (float32): score-weighted mean of the LIME samples' keep masks / p."""
    return lime_explain(f, image, **kwargs).saliency
