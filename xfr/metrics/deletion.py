"""Deletion and Insertion: remove (add) pixels in order of saliency and watch the score.

Two readings of the same curve are returned:

- **S-RISE form** (Lu & Ebrahimi, §3.3, Table 1): the fraction of pixels removed (added) when the
  verification decision changes at the threshold,
  ``#Removed pixels / #All pixels`` and ``#Added pixels / #All pixels``; removed pixels are
  replaced by the mean value of the image (``fill="mean"``). Smaller is better.
- **AUC form** (Petsiuk et al. 2018, RISE; the survey's "hiding game", §2.5): the area under the
  score-vs-fraction curve. Lower is better for deletion, higher for insertion.

Pixels are processed in steps (``step``: a fraction of the pixels, default 1 %, or an int number of
pixels). Each step is one perturbed image, built lazily per batch by :class:`SaliencyOrderMasks`
and scored by :func:`xfr.engine.perturb`, so a curve with K steps costs exactly K + 1 forward
passes (K steps plus the unperturbed start point) and never more than ``batch_size`` images in
memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine import Fill, ScoreFn, check_image, perturb
from .base import as_map, declares


class SaliencyOrderMasks:
    """Mask source: mask k removes (``deletion``) or shows (``insertion``) the ``counts[k]`` most
    salient pixels.

    Pixels are ranked by decreasing saliency; ties keep raster order (a stable sort), so the result
    is deterministic. Keep-mask convention of the engine: deletion masks are 1 on pixels not yet
    removed, insertion masks are 1 on pixels already added.
    """

    def __init__(self, saliency, counts, mode: str):
        if mode not in ("deletion", "insertion"):
            raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
        sal = torch.as_tensor(as_map(saliency))
        h, w = sal.shape
        order = torch.argsort(-sal.reshape(-1), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        self.rank = rank.view(h, w)
        self.counts = torch.as_tensor(np.asarray(counts), dtype=torch.long)
        self.mode = mode

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index: slice) -> Tensor:
        c = self.counts[index][:, None, None]
        m = self.rank[None] >= c if self.mode == "deletion" else self.rank[None] < c
        return m.float()


def step_counts(n_pixels: int, step: float | int = 0.01) -> np.ndarray:
    """Numbers of pixels removed at each point of the curve: 0, ..., n_pixels.

    ``step`` a float in (0, 1] is a fraction of the pixels (K = ceil(1/step) steps of equal size
    up to rounding); an int >= 1 is a number of pixels per step.
    """
    if isinstance(step, (bool, np.bool_)):
        raise ValueError("step must be a fraction in (0, 1] or a positive int number of pixels")
    if isinstance(step, (int, np.integer)):
        if step < 1:
            raise ValueError(f"step in pixels must be >= 1, got {step}")
        counts = np.arange(0, n_pixels, int(step))
        return np.append(counts, n_pixels)
    if not 0 < step <= 1:
        raise ValueError(f"step as a fraction must be in (0, 1], got {step}")
    k = math.ceil(round(1.0 / step, 9))
    return np.unique(np.round(np.linspace(0, n_pixels, k + 1)).astype(np.int64))


def decision_flip(scores, threshold: float, mode: str) -> int | None:
    """Index of the first curve point where the decision changes (S-RISE §3.3), or None.

    The decision is ``score >= threshold``. Deletion starts from the original image (point 0) and
    flips at the first point whose decision differs from it; insertion starts from the fill image
    and flips at the first point whose decision equals that of the full image (the last point).
    Works for similarities and distances alike (only the side of the threshold matters).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    s = np.asarray(scores, dtype=np.float64)
    d = s >= threshold
    target = ~d[0] if mode == "deletion" else d[-1]
    hits = np.flatnonzero(d == target)
    return int(hits[0]) if len(hits) else None


def curve_auc(fractions, scores) -> float:
    """Area under the score-vs-fraction curve (trapezoidal rule; Petsiuk et al. 2018)."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


@dataclass
class CurveResult:
    mode: str  # "deletion" or "insertion"
    fractions: np.ndarray  # [K+1] fraction of pixels removed (added) at each point, 0 .. 1
    scores: np.ndarray  # [K+1] score of f at each point
    threshold: float | None
    flip_index: int | None  # first point with the changed decision (None: no flip / no threshold)
    flip_fraction: float  # fractions[flip_index], NaN when the decision never changes
    auc: float
    n_forward: int

    @property
    def flipped(self) -> bool:
        return self.flip_index is not None


def _curve(f, image, saliency, mode, threshold, step, fill, batch_size, progress,
           stop_at_flip: bool = False) -> CurveResult:
    image = check_image(image)
    sal = as_map(saliency)
    if sal.shape != tuple(image.shape[-2:]):
        raise ValueError(f"saliency map {sal.shape} must match the image size {tuple(image.shape[-2:])}")
    n = sal.size
    counts = step_counts(n, step)
    fractions = counts / n
    if stop_at_flip:
        if threshold is None:
            raise ValueError("stop_at_flip needs a threshold: the flip is where the decision changes")
        return _curve_to_flip(f, image, sal, counts, fractions, mode, threshold, fill, batch_size)
    masks = SaliencyOrderMasks(sal, counts, mode)
    res = perturb(f, image, masks, fill=fill, batch_size=batch_size, progress=progress, desc=mode)
    scores = res.scores.numpy().astype(np.float64)
    flip = decision_flip(scores, threshold, mode) if threshold is not None else None
    return CurveResult(
        mode=mode,
        fractions=fractions,
        scores=scores,
        threshold=threshold,
        flip_index=flip,
        flip_fraction=float(fractions[flip]) if flip is not None else float("nan"),
        auc=curve_auc(fractions, scores),
        n_forward=res.n_forward,
    )


FLIP_CHUNK = 16  # curve points scored per pass when stopping at the flip


def _curve_to_flip(f, image, sal, counts, fractions, mode, threshold, fill, batch_size) -> CurveResult:
    """The curve scored chunk by chunk (:data:`FLIP_CHUNK` points) from its start until
    :func:`decision_flip` finds the flip in the points scored so far: the same flip as the whole
    curve (the points before it are the same), fewer forward passes; points after the flip are
    NaN and so is the AUC. Insertion first scores its last point (the full image), whose decision
    is the target."""
    k = len(counts)
    scores = np.full(k, np.nan)
    n_forward = 0
    if mode == "insertion":
        last = perturb(f, image, SaliencyOrderMasks(sal, counts[-1:], mode), fill=fill, batch_size=1)
        scores[-1] = float(last.scores[0])
        n_forward += last.n_forward
    flip = None
    chunk = max(1, min(FLIP_CHUNK, int(batch_size)))
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        res = perturb(f, image, SaliencyOrderMasks(sal, counts[start:stop], mode), fill=fill,
                      batch_size=batch_size)
        scores[start:stop] = res.scores.numpy().astype(np.float64)
        n_forward += res.n_forward
        # the prefix, and for insertion the full image's point that sets the target decision
        seen = scores[:stop] if mode == "deletion" else np.append(scores[:stop], scores[-1])
        hit = decision_flip(seen, threshold, mode)
        if hit is not None and hit < stop:
            flip = hit
            break
    return CurveResult(mode=mode, fractions=fractions, scores=scores, threshold=threshold,
                       flip_index=flip,
                       flip_fraction=float(fractions[flip]) if flip is not None else float("nan"),
                       auc=float("nan") if flip is not None and flip < k - 1 else curve_auc(fractions, scores),
                       n_forward=n_forward)


@declares('deletion_flip', higher=False, field='flip_fraction',
          paper='S-RISE §3.3: #removed pixels / #all pixels until the decision changes')
@declares('deletion_auc', higher=False, field='auc',
          paper="Petsiuk et al. 2018 (RISE) deletion AUC; survey §2.5 'hiding game'")
def deletion(
    f: ScoreFn,
    image: Tensor,
    saliency,
    threshold: float | None = None,
    step: float | int = 0.01,
    fill: Fill = "mean",
    batch_size: int = 64,
    progress: bool = False,
    stop_at_flip: bool = False,
) -> CurveResult:
    """Deletion curve of one image: the most salient pixels are replaced by ``fill`` step by step.

    S-RISE §3.3: with the verification ``threshold``, ``flip_fraction`` = #removed / #all pixels at
    the first step where the decision (score >= threshold) differs from the original image's
    (NaN when it never does); ``fill="mean"`` is the paper's mean-value replacement. ``auc`` is
    the Petsiuk et al. deletion AUC (lower is better; they delete to black, ``fill=0``). The flip
    is resolved to the step size: the true count lies in (counts[k-1], counts[k]].
    ``stop_at_flip`` (needs ``threshold``) scores the curve only up to the flip: the same flip
    for fewer passes, NaN scores after it and a NaN ``auc``.
    """
    return _curve(f, image, saliency, "deletion", threshold, step, fill, batch_size, progress, stop_at_flip)


@declares('insertion_flip', higher=False, field='flip_fraction',
          paper='S-RISE §3.3: #added pixels / #all pixels until the decision is reached')
@declares('insertion_auc', higher=True, field='auc',
          paper='Petsiuk et al. 2018 (RISE) insertion AUC; survey §2.5')
def insertion(
    f: ScoreFn,
    image: Tensor,
    saliency,
    threshold: float | None = None,
    step: float | int = 0.01,
    fill: Fill = "mean",
    batch_size: int = 64,
    progress: bool = False,
    stop_at_flip: bool = False,
) -> CurveResult:
    """Insertion curve: start from the ``fill`` image and add the most salient pixels step by step.

    S-RISE §3.3: ``flip_fraction`` = #added / #all pixels at the first step whose decision equals
    the full image's (0 if the fill image already has it). ``auc`` is the Petsiuk et al. insertion
    AUC (higher is better; they insert onto a blurred copy, ``fill="blur"``). ``stop_at_flip``:
    as in :func:`deletion` (one more pass, for the full image's decision).
    """
    return _curve(f, image, saliency, "insertion", threshold, step, fill, batch_size, progress, stop_at_flip)


