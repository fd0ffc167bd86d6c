"""S-RISE: similarity-based RISE for face recognition (Lu & Ebrahimi, §3.2).

Masks of many Gaussian patches at random positions (§3.2.1; defaults of §4.1.2: 500 masks, 100
patches per mask, kernel 40, sigma 7). For a pair {I_p, I_m} (§3.2.2) each mask is applied to one
image at a time: s_i^p = cos(N(I_p o M_i), N(I_m)), s_i^m = cos(N(I_p), N(I_m o M_i)), and
H_p = sum_i s_i^p M_i, H_m = sum_i s_i^m M_i (we divide by N, which changes no normalized map).
A triplet {I_p, I_m, I_n} is split into the matching and the non-matching pair; the same masks
are used for both pairs, so the masked probes are embedded once. Step 7 "normalize the saliency
maps for both matching and non-matching pairs": we scale all maps of a pair (or of a triplet)
with one common min-max, so that a less similar pair keeps shallower maps (as §4.3 reads them).
Readings the paper leaves open, as parameters: ``patches`` -- whether a mask *keeps* the
clipped sum of its patches (``"keep"``) or *removes* it (``"remove"``; :class:`SRiseMasks`), and
``scoring`` -- the paper's H = sum s_i M_i (``"raw"``) or the same sum with the mean similarity
subtracted from every weight (``"centred"``, the default; it removes the random fluctuation of
the mask density, which dominates H when the similarities barely move:
:class:`xfr.explain.common.GroupedMaskSums`). Which reading reproduces the paper is measured
in results/srise (the S-RISE stage) and stated in :data:`PATCHES_DEFAULT`'s comment.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..engine import Fill, ScoreFn, check_image, perturb
from ..score import unit_embeddings
from .common import (
    GroupedMaskSums,
    as_counting,
    check_float,
    check_int,
    check_scoring,
    check_seed,
    joint_minmax,
    minmax,
    prepare,
)
from .masks import SRISE_PATCHES, SRiseMasks

PATCHES_DEFAULT = "keep"


def srise_masks(hw: tuple[int, int], n_masks: int = 500, n_patches: int = 100, kernel: int = 40,
                sigma: float = 7.0, seed: int = 0, patches: str = PATCHES_DEFAULT) -> SRiseMasks:
    """S-RISE's masks for an image of size ``hw``, arguments checked."""
    if patches not in SRISE_PATCHES:
        raise ValueError(f"patches must be one of {SRISE_PATCHES}, got {patches!r}")
    n_masks = check_int("n_masks", n_masks, 1, hint="an empty mask set explains nothing")
    n_patches = check_int("n_patches", n_patches, 1)
    kernel = check_int("kernel", kernel, 1, min(hw),
                       hint=f"the Gaussian patch must fit the {hw[0]}x{hw[1]} image")
    sigma = check_float("sigma", sigma, 0.0, low_open=True)
    if sigma > 2 * max(hw):
        raise ValueError(f"sigma={sigma} does not fit the {hw[0]}x{hw[1]} image")
    return SRiseMasks(hw, n_masks, n_patches, kernel, sigma, seed=check_seed(seed), patches=patches)


def srise_finish(acc: GroupedMaskSums, scoring: str, masks=None, groups=None) -> Tensor:
    """The un-normalized S-RISE map of ``acc``'s masks (of ``groups``)."""
    return acc.map(scoring, groups).float()


def srise(
    f: ScoreFn,
    image: Tensor,
    n_masks: int = 500,
    n_patches: int = 100,
    kernel: int = 40,
    sigma: float = 7.0,
    fill: Fill = 0.0,
    seed: int = 0,
    patches: str = PATCHES_DEFAULT,
    scoring: str = "centred",
    normalize: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """S-RISE map [H, W] of one image for any score f: (1/N) sum_i f(X o M_i) M_i (steps 4-5;
    ``patches``, ``scoring``: module docstring), min-max scaled to [0, 1] when ``normalize``."""
    img = prepare(image)
    check_scoring(scoring)
    masks = srise_masks((img.shape[1], img.shape[2]), n_masks, n_patches, kernel, sigma, seed, patches)
    acc = GroupedMaskSums(masks.hw)
    perturb(as_counting(f), img, masks, fill=fill, batch_size=batch_size, progress=progress,
            on_batch=acc, desc="s-rise")
    out = srise_finish(acc, scoring)
    return minmax(out) if normalize else out


class _MultiReference:
    """Score function cos(N(X), ref_0) that also keeps cos(N(X), ref_r) for every reference of the
    last batch (so one forward pass serves several pairs)."""

    def __init__(self, embedder, refs: Tensor):
        self.embed = unit_embeddings(embedder)
        self.refs = refs  # [R, D] unit vectors
        self.last: Tensor | None = None

    def __call__(self, images: Tensor) -> Tensor:
        sims = self.embed(images) @ self.refs.T
        self.last = sims.detach().cpu().float()
        return sims[:, 0]


def _maps_against(embedder, image: Tensor, refs: Tensor, masks: SRiseMasks, fill, batch_size,
                  progress, scoring: str = "centred") -> list[Tensor]:
    """Un-normalized S-RISE maps of ``image`` against each reference embedding."""
    scorer = _MultiReference(embedder, refs)
    accs = [GroupedMaskSums(masks.hw) for _ in range(len(refs))]

    def on_batch(m, s, start):
        for r, acc in enumerate(accs):
            acc(m, scorer.last[:, r], start)

    perturb(scorer, image, masks, fill=fill, batch_size=batch_size, progress=progress,
            on_batch=on_batch, desc="s-rise")
    return [srise_finish(acc, scoring) for acc in accs]


@dataclass
class SRiseTriplet:
    """Jointly normalized S-RISE maps of a triplet (§3.2.2): the probe and the mate of the
    matching pair, the probe and the non-mate of the non-matching pair, and the similarities."""

    probe_mate: Tensor
    mate: Tensor
    probe_nonmate: Tensor
    nonmate: Tensor
    similarity_mate: float
    similarity_nonmate: float


def srise_pair(embedder, probe: Tensor, mate: Tensor, n_masks: int = 500, n_patches: int = 100,
               kernel: int = 40, sigma: float = 7.0, fill: Fill = 0.0, seed: int = 0,
               patches: str = PATCHES_DEFAULT, scoring: str = "centred",
               batch_size: int = 64, progress: bool = False) -> tuple[Tensor, Tensor]:
    """(H_p, H_m) of a pair, jointly min-max normalized (steps 2-5 and 7 of §3.2.2).
    ``embedder``: images [N,C,H,W] in [0,1] -> embeddings [N,D] (any recognition model)."""
    p, m = prepare(probe), prepare(mate)
    if p.shape != m.shape:
        raise ValueError(f"probe and mate must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(m.shape)} (align both faces to the model's chip)")
    check_scoring(scoring)
    masks = srise_masks((p.shape[1], p.shape[2]), n_masks, n_patches, kernel, sigma, seed, patches)
    embed = unit_embeddings(embedder)
    with torch.inference_mode():
        e = embed(torch.stack([p, m]))
    h_p, = _maps_against(embedder, p, e[1:2], masks, fill, batch_size, progress, scoring)
    h_m, = _maps_against(embedder, m, e[0:1], masks, fill, batch_size, progress, scoring)
    h_p, h_m = joint_minmax([h_p, h_m])
    return h_p, h_m


def srise_triplet(embedder, probe: Tensor, mate: Tensor, nonmate: Tensor, n_masks: int = 500,
                  n_patches: int = 100, kernel: int = 40, sigma: float = 7.0, fill: Fill = 0.0,
                  seed: int = 0, patches: str = PATCHES_DEFAULT, scoring: str = "centred",
                  batch_size: int = 64, progress: bool = False) -> SRiseTriplet:
    """S-RISE on a triplet: maps for {I_p, I_m} and {I_p, I_n}, all four scaled together."""
    p, m, n = prepare(probe), prepare(mate), prepare(nonmate)
    if not (p.shape == m.shape == n.shape):
        raise ValueError("probe, mate and non-mate must have the same shape (aligned chips)")
    check_scoring(scoring)
    masks = srise_masks((p.shape[1], p.shape[2]), n_masks, n_patches, kernel, sigma, seed, patches)
    embed = unit_embeddings(embedder)
    with torch.inference_mode():
        e = embed(torch.stack([p, m, n]))
    h_pm, h_pn = _maps_against(embedder, p, e[1:3], masks, fill, batch_size, progress, scoring)
    h_m, = _maps_against(embedder, m, e[0:1], masks, fill, batch_size, progress, scoring)
    h_n, = _maps_against(embedder, n, e[0:1], masks, fill, batch_size, progress, scoring)
    pm, mm, pn, nn_ = joint_minmax([h_pm, h_m, h_pn, h_n])
    return SRiseTriplet(pm, mm, pn, nn_, float(e[0] @ e[1]), float(e[0] @ e[2]))


@dataclass
class PrefixMaps:
    """S-RISE maps of several mask counts from one run (see :func:`srise_prefix_maps`)."""

    maps: dict[int, Tensor]  # (1/N) sum_{i<N} s_i M_i, the paper's H (un-normalized; "raw")
    centered: dict[int, Tensor]  # (1/N) sum_{i<N} (s_i - mean_{j<N} s_j) M_i ("centred")
    n_forward: int
    seconds: float


def srise_prefix_maps(f, image: Tensor, counts: Sequence[int], n_patches: int = 100,
                      kernel: int = 40, sigma: float = 7.0, fill: Fill = 0.0, seed: int = 0,
                      patches: str = PATCHES_DEFAULT, batch_size: int = 64,
                      progress: bool = False) -> PrefixMaps:
    """Un-normalized S-RISE maps (1/N) sum_{i<N} f(X o M_i) M_i (§3.2.2 steps 4-5) for every N in
    ``counts`` from one run over max(counts) masks.

    Mask i depends only on (seed, i) (:class:`xfr.explain.masks.SRiseMasks`), so the map of the
    first N masks is exactly ``xfr.explain.srise(f, image, n_masks=N, normalize=False, ...)``;
    the larger counts reuse the forward passes of the smaller ones.

    Also returns the *centered* maps (1/N) sum (s_i - s_bar) M_i, the same sum without the
    term s_bar * (1/N) sum M_i: the mask density, whose random spatial fluctuation dominates the
    paper's H when the scores s_i vary little around their mean s_bar (``scoring="centred"``, the
    default of :func:`srise`)."""
    img = check_image(image)
    counts = sorted({int(c) for c in counts})
    if not counts or counts[0] < 1:
        raise ValueError(f"mask counts must be positive integers, got {counts}")
    hw = (img.shape[1], img.shape[2])
    masks = srise_masks(hw, counts[-1], n_patches, kernel, sigma, seed, patches)
    totals = {c: torch.zeros(hw[0] * hw[1], dtype=torch.float64) for c in counts}
    density = {c: torch.zeros(hw[0] * hw[1], dtype=torch.float64) for c in counts}
    score_sum = {c: 0.0 for c in counts}

    def on_batch(m: Tensor, s: Tensor, start: int) -> None:
        flat = m.reshape(m.shape[0], -1).to(torch.float64)
        w = s.to(torch.float64)
        for c in counts:
            k = min(max(c - start, 0), len(w))
            if k:
                totals[c] += w[:k] @ flat[:k]
                density[c] += flat[:k].sum(dim=0)
                score_sum[c] += float(w[:k].sum())

    counted = as_counting(f)
    t0 = time.perf_counter()
    res = perturb(counted, img, masks, fill=fill, batch_size=batch_size, progress=progress,
                  on_batch=on_batch, desc="s-rise")
    maps = {c: (totals[c] / c).reshape(hw).float() for c in counts}
    centered = {c: ((totals[c] - score_sum[c] / c * density[c]) / c).reshape(hw).float()
                for c in counts}
    return PrefixMaps(maps, centered, res.n_forward, time.perf_counter() - t0)


__all__ = ["srise", "srise_masks", "srise_finish", "PATCHES_DEFAULT", "srise_pair", "srise_triplet", "SRiseTriplet", "PrefixMaps", "srise_prefix_maps"]
