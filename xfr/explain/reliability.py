"""Reliability of the random explainers: how much a map depends on the seed.

A random explainer (LIME, LIME-map, RISE, RISEgauss, S-RISE) averages N random perturbations;
two seeds give two maps, and their Spearman correlation ("seed-to-seed rho") says how much of
the map is the model and how much is the draw of the masks (MinPlus §3.2/§3.5, Fig. 4, shows
such run-to-run differences). Everything here comes from *one* run per seed:

- :func:`prefix_maps`: the maps of the first N masks for several N (mask k depends only on the
  seed and k, so the first N masks of a run of 4000 are exactly the masks of a run of N), the
  points of a reliability curve rho(N);
- :func:`explain_with_reliability`: the explainer's map and its *split-half reliability*, the
  Spearman correlation of the maps of the even and of the odd masks, stepped up to the full
  mask count with the Spearman-Brown formula rho_N = 2 rho_{N/2} / (1 + rho_{N/2}) (Spearman
  1910, Brown 1910); it estimates the seed-to-seed rho of two full runs at no extra cost;
- :func:`masks_needed`: the N at which rho(N) reaches a target (measured, or predicted from the
  largest measured N with the Spearman-Brown prophecy formula).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from ..engine import Fill, ScoreFn, perturb
from .common import GroupedMaskSums, as_counting, check_scoring, minmax, prepare

RANDOM_METHODS = ("lime", "lime-map", "rise", "rise-gauss", "s-rise")
TARGET_RHO = 0.9


def _family(method: str, image: Tensor, n: int, seed: int, params: dict):
    """(mask source, finish(acc, scoring, groups) -> map, parameters left for the finish)."""
    import importlib

    # the package's names lime/rise/srise are the functions; the modules by their full names
    L = importlib.import_module("xfr.explain.lime")
    R = importlib.import_module("xfr.explain.rise")
    S = importlib.import_module("xfr.explain.srise")

    hw = (image.shape[1], image.shape[2])
    if method == "rise":
        masks = R.rise_masks(hw, n, params.pop("s", 8), params.pop("p", 0.5), seed)
        return masks, lambda acc, sc, g: R.rise_finish(acc, sc, masks, g)
    if method == "rise-gauss":
        masks = R.rise_gauss_masks(hw, n, params.pop("n_blobs", 40), params.pop("width_range", None), seed)
        return masks, lambda acc, sc, g: R.rise_gauss_finish(acc, sc, masks, g)
    if method == "s-rise":
        masks = S.srise_masks(hw, n, params.pop("n_patches", 100), params.pop("kernel", 40),
                              params.pop("sigma", 7.0), seed, params.pop("patches", S.PATCHES_DEFAULT))
        normalize = params.pop("normalize", True)

        def finish(acc, sc, g):
            out = S.srise_finish(acc, sc, masks, g)
            return minmax(out) if normalize else out
        return masks, finish
    if method in ("lime", "lime-map"):
        lm = L.lime_masks(image, n, params.pop("segments", None), params.pop("kernel_size", 3),
                          params.pop("max_dist", 200), params.pop("ratio", 0.2), params.pop("p", 0.5), seed)
        if method == "lime-map":
            return lm, lambda acc, sc, g: L.lime_map_finish(acc, sc, lm, g)
        num_features, kernel_width = params.pop("num_features", 16), params.pop("kernel_width", 0.25)
        return lm, ("lime", num_features, kernel_width)
    raise ValueError(f"unknown random method {method!r}; one of {RANDOM_METHODS}")


def count_parameter(method: str) -> str:
    """The name of the method's sample-count argument (``n_samples`` for LIME, else ``n_masks``)."""
    return "n_samples" if method in ("lime", "lime-map") else "n_masks"


@dataclass
class GroupedRun:
    """One run of a random explainer whose masks are split into groups (see the module)."""

    method: str
    n: int
    seed: int
    group: Callable[[np.ndarray], np.ndarray]
    acc: GroupedMaskSums
    scores: Tensor
    masks: Any  # the mask source (SuperpixelMasks for LIME)
    finish: Any  # finish(acc, scoring, groups) -> map, or LIME's ("lime", num_features, kernel_width)
    n_forward: int
    extra: dict = field(default_factory=dict)

    def map(self, scoring: str = "centred", groups: Sequence[int] | None = None) -> Tensor:
        """The method's map of the masks of ``groups`` (default: all)."""
        if isinstance(self.finish, tuple):  # LIME: the linear model refitted on the groups' samples
            from .lime import fit_lime

            _, num_features, kernel_width = self.finish
            idx = np.arange(self.n)
            if groups is not None:
                idx = idx[np.isin(self.group(idx), list(groups))]
            return fit_lime(self.masks, self.scores, idx, num_features, kernel_width, self.seed).lime_map
        return self.finish(self.acc, scoring, groups)


def run_grouped(f: ScoreFn, image: Tensor, method: str, n: int, seed: int = 0,
                group: Callable[[np.ndarray], np.ndarray] | None = None, n_groups: int = 1,
                fill: Fill = 0.0, batch_size: int = 64, progress: bool = False, **params) -> GroupedRun:
    """Run ``method`` with ``n`` masks of ``seed`` on ``image``, accumulating the masks in the
    groups ``group(mask indices) -> group ids`` (ids in [0, n_groups))."""
    if method not in RANDOM_METHODS:
        raise ValueError(f"unknown random method {method!r}; one of {RANDOM_METHODS}")
    img = prepare(image)
    params = dict(params)
    params.pop("scoring", None)
    masks, finish = _family(method, img, n, seed, params)
    if params:
        raise ValueError(f"unknown parameters for {method}: {sorted(params)}")
    grp = group if group is not None else (lambda idx: np.zeros(len(idx), dtype=np.int64))
    acc = GroupedMaskSums((img.shape[1], img.shape[2]), n_groups, lambda idx: grp(np.asarray(idx)))
    counted = as_counting(f)
    res = perturb(counted, img, masks, fill=fill, batch_size=batch_size, progress=progress,
                  on_batch=acc, desc=method)
    return GroupedRun(method, n, seed, grp, acc, res.scores, masks, finish, res.n_forward)


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman correlation of two maps (average ranks; NaN if one is constant)."""
    from ..metrics.stability import spearman as _spearman

    return _spearman(a, b)


def spearman_brown(rho: float, factor: float) -> float:
    """Reliability of a map averaged over ``factor`` times as many masks: k rho / (1 + (k-1) rho)."""
    denominator = 1.0 + (factor - 1.0) * rho
    if not np.isfinite(rho) or denominator <= 0:
        return float("nan")
    return float(factor * rho / denominator)


def prefix_maps(f: ScoreFn, image: Tensor, method: str, counts: Sequence[int], seed: int = 0,
                scorings: Sequence[str] = ("centred",), fill: Fill = 0.0, batch_size: int = 64,
                progress: bool = False, **params) -> tuple[dict[tuple[str, int], Tensor], int]:
    """{(scoring, N): map of the first N masks} for every N of ``counts`` from one run of
    max(counts) masks (LIME's top-superpixel map ignores ``scoring``), and the forward passes."""
    counts = sorted({int(c) for c in counts})
    if not counts or counts[0] < 2:
        raise ValueError(f"mask counts must be integers >= 2, got {counts}")
    for sc in scorings:
        check_scoring(sc)
    edges = np.asarray(counts)
    run = run_grouped(f, image, method, counts[-1], seed,
                      group=lambda idx: np.searchsorted(edges, idx, side="right"),
                      n_groups=len(counts), fill=fill, batch_size=batch_size, progress=progress, **params)
    out = {}
    for j, c in enumerate(counts):
        for sc in (scorings if method != "lime" else scorings[:1]):
            out[(sc, c)] = run.map(sc, range(j + 1))
    return out, run.n_forward


def explain_with_reliability(f: ScoreFn, image: Tensor, method: str, seed: int = 0,
                             scoring: str = "centred", fill: Fill = 0.0, batch_size: int = 64,
                             progress: bool = False, **params) -> tuple[Tensor, float]:
    """(the map ``method`` gives with these arguments, its split-half reliability): the Spearman
    correlation of the maps of the even and the odd masks, stepped up to all masks with
    Spearman-Brown (module docstring). Same forward passes as the explainer alone."""
    check_scoring(scoring)
    key = count_parameter(method)
    n = params.pop(key, 500)
    run = run_grouped(f, image, method, n, seed, group=lambda idx: idx % 2, n_groups=2, fill=fill,
                      batch_size=batch_size, progress=progress, **params)
    full = run.map(scoring)
    rho_half = spearman(run.map(scoring, [0]), run.map(scoring, [1]))
    return full, spearman_brown(rho_half, 2.0)


def masks_needed(counts: Sequence[int], rhos: Sequence[float], target: float = TARGET_RHO
                 ) -> tuple[float, bool]:
    """(N, measured): the smallest measured N with rho(N) >= ``target``, or, when no N reaches
    it, the N that the Spearman-Brown prophecy predicts from the largest N (inf when rho <= 0)."""
    pts = sorted((int(c), float(r)) for c, r in zip(counts, rhos) if np.isfinite(r))
    if not pts:
        return float("nan"), False
    for c, r in pts:
        if r >= target:
            return float(c), True
    c, r = pts[-1]
    if r <= 0:
        return float("inf"), False
    r1 = r / (c - (c - 1) * r)  # reliability of one mask
    return float(np.ceil(target * (1 - r1) / (r1 * (1 - target)))), False


__all__ = ["RANDOM_METHODS", "TARGET_RHO", "GroupedRun", "run_grouped", "prefix_maps",
           "explain_with_reliability", "masks_needed", "spearman_brown", "count_parameter"]
