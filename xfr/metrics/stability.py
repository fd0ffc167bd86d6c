"""Run-to-run stability of a random explainer (MinPlus §3.2/§3.5, Fig. 4).

MinPlus shows five runs of LIME, RISEgauss and RISE on the same face and observes that random
methods give very different maps from run to run, while MinPlus has no random component. Here the
maps of k runs (k seeds) are compared: mean pairwise Pearson and Spearman correlation of the
flattened maps (higher = more stable) and the pixel-wise standard deviation map (lower = more
stable). Maps are compared as they are; min-max normalize first if the runs differ in scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from scipy import stats

from .base import as_map, declares


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pearson(a, b) -> float:
    """Pearson correlation of two maps (NaN if one is constant)."""
    return _corr(as_map(a).ravel(), as_map(b).ravel())


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (average ranks for ties; NaN if one is constant)."""
    return _corr(stats.rankdata(as_map(a).ravel()), stats.rankdata(as_map(b).ravel()))


@dataclass
class StabilityResult:
    mean_pearson: float
    mean_spearman: float
    pearson: np.ndarray  # [k,k] pairwise, diagonal 1
    spearman: np.ndarray  # [k,k]
    std_map: np.ndarray  # [H,W] pixel-wise std over runs (ddof=0)
    mean_map: np.ndarray  # [H,W]
    mean_std: float  # mean of std_map


@declares('stability_pearson', higher=True, field='mean_pearson',
          paper='MinPlus Fig. 4: agreement of maps from different seeds')
@declares('stability_spearman', higher=True, field='mean_spearman',
          paper='MinPlus Fig. 4')
@declares('stability_std', higher=False, field='mean_std',
          paper='MinPlus Fig. 4: mean pixel-wise std across runs')
def stability(maps) -> StabilityResult:
    """Agreement of ``maps`` ([k,H,W] or a list of k maps, k >= 2) from k runs of one explainer."""
    if isinstance(maps, (np.ndarray, torch.Tensor)) and maps.ndim == 3:
        stack = as_map(maps, "maps", ndim=3)
    else:
        stack = np.stack([as_map(m) for m in maps])
    k = stack.shape[0]
    if k < 2:
        raise ValueError(f"stability needs maps from at least 2 runs, got {k}")
    flat = stack.reshape(k, -1)
    ranks = np.stack([stats.rankdata(r) for r in flat])
    p = np.eye(k)
    s = np.eye(k)
    for i, j in combinations(range(k), 2):
        p[i, j] = p[j, i] = _corr(flat[i], flat[j])
        s[i, j] = s[j, i] = _corr(ranks[i], ranks[j])
    iu = np.triu_indices(k, 1)
    std_map = stack.std(axis=0)
    return StabilityResult(
        mean_pearson=float(np.mean(p[iu])),
        mean_spearman=float(np.mean(s[iu])),
        pearson=p,
        spearman=s,
        std_map=std_map,
        mean_map=stack.mean(axis=0),
        mean_std=float(std_map.mean()),
    )
