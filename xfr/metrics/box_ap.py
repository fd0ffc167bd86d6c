"""AP of a saliency map against a box (MinPlus §3.4, Fig. 7, Table 1).

The binary image of the detected bounding box is compared with the binary image obtained by
thresholding the saliency map. For every threshold the pixels give true positives (in the map and
in the box), false positives (in the map, outside the box) and false negatives (in the box, not in
the map), hence one precision/recall point; AP is the area under the precision-recall curve,

    AP = sum_k (R_k - R_{k-1}) P_k,      R_0 = 0,

with thresholds in decreasing order (the step-wise area used by scikit-learn's
``average_precision_score``, which equals ours on the same pixel labels and scores when all
distinct map values are thresholds). Higher is better: a compact map inside the box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import as_map, as_region, declares


@dataclass
class BoxAPResult:
    ap: float
    precision: np.ndarray  # [T] precision at each threshold (decreasing thresholds)
    recall: np.ndarray  # [T] recall, non-decreasing
    thresholds: np.ndarray  # [T] decreasing; a pixel is "in the map" when saliency >= threshold


def _ap(precision: np.ndarray, recall: np.ndarray) -> float:
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@declares('box_ap', higher=True, field='ap',
          paper='MinPlus §3.4, Fig. 7, Table 1: AP of the thresholded map against the detected box')
def box_ap(saliency, region, levels: int | None = None) -> BoxAPResult:
    """AP of ``saliency`` [H,W] against ``region`` (a box ``(x1, y1, x2, y2)`` or a boolean mask).

    ``levels=None`` thresholds at every distinct map value (exact; equals scikit-learn's AP);
    ``levels=n`` uses n evenly spaced thresholds from the map's maximum down to its minimum (the
    paper's "different thresholds"). NaN when the region is empty.
    """
    sal = as_map(saliency)
    gt = as_region(region, sal.shape)
    n_pos = int(gt.sum())
    if n_pos == 0:
        nan = np.array([np.nan])
        return BoxAPResult(float("nan"), nan, nan, nan)
    s = sal.ravel()
    y = gt.ravel()
    if levels is None:
        order = np.argsort(-s, kind="mergesort")
        s_sorted, y_sorted = s[order], y[order]
        last_of_value = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
        tp = np.cumsum(y_sorted)[last_of_value].astype(np.float64)
        predicted = (last_of_value + 1).astype(np.float64)
        thresholds = s_sorted[last_of_value]
    else:
        if levels < 2:
            raise ValueError(f"levels must be >= 2 (or None for every distinct value), got {levels}")
        thresholds = np.linspace(s.max(), s.min(), int(levels))
        neg_all = np.sort(-s)
        neg_pos = np.sort(-s[y])
        # number of pixels with s >= t  <=>  -s <= -t
        predicted = np.searchsorted(neg_all, -thresholds, side="right").astype(np.float64)
        tp = np.searchsorted(neg_pos, -thresholds, side="right").astype(np.float64)
    precision = tp / predicted
    recall = tp / n_pos
    return BoxAPResult(_ap(precision, recall), precision, recall, thresholds)


def interpolated_precision(precision: np.ndarray, recall: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolated PR curve on a recall grid: the best precision at recall >= r (NaN-free;
    0 beyond the largest recall reached)."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    out = np.zeros(len(grid))
    for i, r in enumerate(grid):
        ok = recall >= r - 1e-12
        out[i] = precision[ok].max() if ok.any() else 0.0
    return out


def box_scores(smap, box, recall_grid: np.ndarray) -> dict:
    """AP of ``smap`` against ``box`` (exact, every distinct value a threshold), pointing game,
    and the interpolated precision on ``recall_grid``."""
    from .pointing import pointing_game

    res = box_ap(np.asarray(smap, dtype=np.float64), np.asarray(box, dtype=np.float64))
    return dict(ap=res.ap, pointing=pointing_game(np.asarray(smap, np.float64), np.asarray(box)),
                pr=interpolated_precision(res.precision, res.recall, recall_grid))
