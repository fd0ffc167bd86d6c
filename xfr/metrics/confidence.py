"""Average Drop %, % Increase in confidence and Win % with negative explanation images
(Canonical Saliency Maps, John et al., §4.2, eqs. 9-13).

For one image I and a set of methods with heatmaps h:

- eq. 10: every heatmap is min-max normalized, ``H' = (h - min h) / (max h - min h)``, then
  rescaled to the same pixel sum ``s`` for all methods of that image, ``H = s / sum(H') * H'``;
- eq. 9: the negative explanation image ``E = (1 - H) * I`` darkens the highlighted pixels;
- eq. 11: Average Drop % = mean over images of ``max(0, (M(I) - M(E)) / M(I)) * 100``
  (higher is better: hiding what the map highlights should hurt);
- eq. 12: % Increase = mean of ``1[M(E) > M(I)] * 100`` (lower is better);
- eq. 13: Win % of a method = share of images where its E has the lowest confidence among all
  methods (higher is better; the Win % of all methods add up to 100).

``M`` is the model's confidence for the explained class (a probability: eq. 11 divides by M(I)).
Through the engine, E is the keep mask ``1 - H`` with fill 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine import ScoreFn, check_image, perturb
from .base import as_map, declares


def normalize_heatmaps(heatmaps, pixel_sum: float | None = None) -> np.ndarray:
    """Eq. 10 for the maps of one image: [K,H,W] -> [K,H,W] with equal pixel sums.

    ``pixel_sum`` is the common sum ``s``; by default the smallest sum of the min-max normalized
    maps, so every H stays in [0, 1] (the paper leaves s open). A larger ``s`` may push pixels
    above 1; they are clipped to 1 (E must stay an image). A constant map has no preferred pixel:
    it becomes uniform (every pixel darkened by the same amount).
    """
    maps = np.stack([as_map(h, "heatmap") for h in heatmaps])
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be [K,H,W], got {maps.shape}")
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    unit = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 1.0)
    sums = unit.sum(axis=(1, 2), keepdims=True)
    s = float(sums.min()) if pixel_sum is None else float(pixel_sum)
    if s < 0:
        raise ValueError(f"pixel_sum must be >= 0, got {s}")
    return np.clip(unit * (s / sums), 0.0, 1.0)


def negative_explanation(image: Tensor, heatmap) -> Tensor:
    """Eq. 9: E = (1 - H) * I for a heatmap H in [0, 1] of the image size."""
    image = check_image(image)
    h = torch.as_tensor(as_map(heatmap, "heatmap"), dtype=image.dtype)
    return (1 - h)[None] * image


def average_drop(m_image, m_explained) -> np.ndarray:
    """Per-image term of eq. 11: max(0, (M(I) - M(E)) / M(I)) * 100 (NaN where M(I) <= 0)."""
    mi = np.asarray(m_image, dtype=np.float64)
    me = np.asarray(m_explained, dtype=np.float64)
    if mi.ndim < me.ndim:  # one M(I) per image, several methods per image
        mi = mi.reshape(mi.shape + (1,) * (me.ndim - mi.ndim))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.maximum(0.0, (mi - me) / mi) * 100
    return np.where(mi > 0, out, np.nan)


def increase_in_confidence(m_image, m_explained) -> np.ndarray:
    """Per-image term of eq. 12: 1[M(E) > M(I)] * 100."""
    mi = np.asarray(m_image, dtype=np.float64)
    me = np.asarray(m_explained, dtype=np.float64)
    if mi.ndim < me.ndim:
        mi = mi.reshape(mi.shape + (1,) * (me.ndim - mi.ndim))
    return (me > mi).astype(np.float64) * 100


def win(m_explained) -> np.ndarray:
    """Per-image term of eq. 13 for M(E) of shape [N, K] (K methods): 100 to the method with the
    lowest confidence; ties share the 100 equally, so each row sums to 100."""
    me = np.asarray(m_explained, dtype=np.float64)
    if me.ndim != 2 or me.shape[1] < 1:
        raise ValueError(f"m_explained must be [N images, K methods], got {me.shape}")
    best = me == me.min(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True) * 100


@dataclass
class ConfidenceResult:
    methods: list[str]
    m_image: np.ndarray  # [N] M(I)
    m_explained: np.ndarray  # [N, K] M(E) per method
    drop: np.ndarray  # [N, K] eq. 11 terms
    increase: np.ndarray  # [N, K] eq. 12 terms
    win: np.ndarray  # [N, K] eq. 13 terms
    n_forward: int

    def summary(self) -> dict[str, dict[str, float]]:
        """{method: {average_drop, increase_in_confidence, win}} (means over images, in %)."""
        return {
            m: {
                "average_drop": float(np.nanmean(self.drop[:, k])),
                "increase_in_confidence": float(np.mean(self.increase[:, k])),
                "win": float(np.mean(self.win[:, k])),
            }
            for k, m in enumerate(self.methods)
        }


def explanation_scores(f: ScoreFn, image: Tensor, heatmaps: np.ndarray, batch_size: int = 64):
    """M(I) and M(E_k) for normalized heatmaps [K,H,W] of one image, in one engine call."""
    image = check_image(image)
    keep = torch.as_tensor(1.0 - np.asarray(heatmaps), dtype=torch.float32)
    masks = torch.cat([torch.ones(1, *keep.shape[1:]), keep])  # mask 0: the image itself
    res = perturb(f, image, masks, fill=0.0, batch_size=batch_size, desc="negative explanations")
    return float(res.scores[0]), res.scores[1:].numpy().astype(np.float64), res.n_forward


@declares('average_drop', higher=True, field='drop',
          paper='CMS eq. 11 with negative explanation images (eq. 9): higher is better')
@declares('increase_in_confidence', higher=False, field='increase',
          paper='CMS eq. 12')
@declares('win', higher=True, field='win',
          paper='CMS eq. 13')
def confidence_metrics(
    f: ScoreFn,
    images: Sequence[Tensor],
    heatmaps: Mapping[str, Sequence],
    pixel_sum: float | None = None,
    batch_size: int = 64,
) -> ConfidenceResult:
    """Eqs. 9-13 for N images and K methods.

    ``f`` returns the confidence M of the explained class (e.g. a softmax probability);
    ``heatmaps[method][n]`` is the raw map of method for image n. Returns per-image, per-method
    values; :meth:`ConfidenceResult.summary` gives the paper's percentages.
    """
    methods = list(heatmaps)
    if not methods:
        raise ValueError("heatmaps must name at least one method")
    n = len(images)
    for m in methods:
        if len(heatmaps[m]) != n:
            raise ValueError(f"method {m!r} has {len(heatmaps[m])} heatmaps for {n} images")
    m_image = np.empty(n)
    m_explained = np.empty((n, len(methods)))
    n_forward = 0
    for i, image in enumerate(images):
        hs = normalize_heatmaps([heatmaps[m][i] for m in methods], pixel_sum)
        m_image[i], m_explained[i], nf = explanation_scores(f, image, hs, batch_size)
        n_forward += nf
    return ConfidenceResult(
        methods=methods,
        m_image=m_image,
        m_explained=m_explained,
        drop=average_drop(m_image, m_explained),
        increase=increase_in_confidence(m_image, m_explained),
        win=win(m_explained),
        n_forward=n_forward,
    )
