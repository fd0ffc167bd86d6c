"""The metric registry: every metric's name, direction (higher is better?) and where it lives.

Quantus-style: each metric declares whether a higher value is better, so that tables and
``dvc metrics diff`` can be read without knowing the papers. Functions that return one main value
carry the attribute ``higher_is_better`` too; functions returning several values (a deletion
curve gives a flip fraction *and* an AUC) are described by one entry per value here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    function: str  # "module:function" that computes it
    field: str  # attribute of the function's result holding the per-image value
    paper: str  # where it is defined


METRICS: dict[str, MetricInfo] = {}


def _register(name, higher, function, field, paper):
    METRICS[name] = MetricInfo(name, higher, function, field, paper)


_register("deletion_flip", False, "xfr.metrics.deletion:deletion", "flip_fraction",
          "S-RISE §3.3: #removed pixels / #all pixels until the decision changes")
_register("insertion_flip", False, "xfr.metrics.deletion:insertion", "flip_fraction",
          "S-RISE §3.3: #added pixels / #all pixels until the decision is reached")
_register("deletion_auc", False, "xfr.metrics.deletion:deletion", "auc",
          "Petsiuk et al. 2018 (RISE) deletion AUC; survey §2.5 'hiding game'")
_register("insertion_auc", True, "xfr.metrics.deletion:insertion", "auc",
          "Petsiuk et al. 2018 (RISE) insertion AUC; survey §2.5")
_register("box_ap", True, "xfr.metrics.box_ap:box_ap", "ap",
          "MinPlus §3.4, Fig. 7, Table 1: AP of the thresholded map against the detected box")
_register("average_drop", True, "xfr.metrics.confidence:confidence_metrics", "drop",
          "CMS eq. 11 with negative explanation images (eq. 9): higher is better")
_register("increase_in_confidence", False, "xfr.metrics.confidence:confidence_metrics",
          "increase", "CMS eq. 12")
_register("win", True, "xfr.metrics.confidence:confidence_metrics", "win", "CMS eq. 13")
_register("pointing_game", True, "xfr.metrics.pointing:pointing_game", "hit",
          "survey §2.5 (Zhang et al. 2018): saliency maximum inside the ground truth")
_register("energy_pointing_game", True, "xfr.metrics.pointing:energy_pointing_game", "energy",
          "survey §2.5 (Wang et al. 2020): share of the map's mass inside the ground truth")
_register("cscore", True, "xfr.metrics.cscore:cscore", "C",
          "X-Maps eqs. 1-3: probability that the verification decision is correct")
_register("stability_pearson", True, "xfr.metrics.stability:stability", "mean_pearson",
          "MinPlus Fig. 4: agreement of maps from different seeds")
_register("stability_spearman", True, "xfr.metrics.stability:stability", "mean_spearman",
          "MinPlus Fig. 4")
_register("stability_std", False, "xfr.metrics.stability:stability", "mean_std",
          "MinPlus Fig. 4: mean pixel-wise std across runs")
_register("randomization_spearman", False, "xfr.metrics.randomization:randomization_test",
          "spearman", "Adebayo et al. 2018; S-RISE §4.2; CMS §4.1.3: similarity to the map of "
          "a randomized model (low = the explainer depends on the weights)")
_register("randomization_ssim", False, "xfr.metrics.randomization:randomization_test", "ssim",
          "Adebayo et al. 2018")


def higher_is_better(name: str) -> bool:
    """Whether a higher value of the named metric (see :data:`METRICS`) is better."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name].higher_is_better


def declares(higher: bool) -> Callable[[F], F]:
    """Decorator: set ``fn.higher_is_better``."""

    def wrap(fn: F) -> F:
        fn.higher_is_better = higher  # type: ignore[attr-defined]
        return fn

    return wrap


# ----------------------------------------------------------------------------- input helpers
def as_map(x, name: str = "saliency", ndim: int = 2) -> np.ndarray:
    """A finite float64 numpy array of ``ndim`` dims from a tensor/array ([1,H,W] squeezed)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def as_region(region, shape: tuple[int, int], name: str = "region") -> np.ndarray:
    """A boolean [H,W] region from a mask (array/tensor) or a box ``(x1, y1, x2, y2)``."""
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    r = np.asarray(region)
    if r.shape == (4,) and shape != (4,):
        return box_mask(r, shape)
    while r.ndim > 2 and r.shape[0] == 1:
        r = r[0]
    if r.shape != tuple(shape):
        raise ValueError(f"{name} mask has shape {r.shape}, expected {tuple(shape)} "
                         "(or pass a box (x1, y1, x2, y2))")
    return r.astype(bool)


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """Boolean [H,W] mask of the pixels whose centres lie in ``box = (x1, y1, x2, y2)``.

    Coordinates are in pixels with the image's top-left corner at (0, 0) (x = column, y = row),
    so the integer box (10, 20, 30, 40) covers columns 10..29 and rows 20..39.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, got {box}")
    h, w = shape
    cols = np.arange(w) + 0.5
    rows = np.arange(h) + 0.5
    return ((rows[:, None] >= y1) & (rows[:, None] <= y2)) & ((cols[None] >= x1) & (cols[None] <= x2))


def minmax(a: np.ndarray) -> np.ndarray:
    """(a - min) / (max - min); a constant map becomes all zeros."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 0:
        return np.zeros_like(a, dtype=np.float64)
    return (a - lo) / (hi - lo)
