"""Visual psychophysics for face verification (RichardWebster et al. 2018, survey §6):
item-response curves, the match rate of genuine pairs as one image is perturbed more and more.

1. **Herding.** Pairs (optionally whole identities) whose *unperturbed* genuine pair already fails
   at the threshold tau are dropped first: errors inherent to the matcher (the survey's goats)
   must not be read as effects of the perturbation. The curve then starts at 1.0 at strength 0.
2. **Item-response curve.** For each perturbation and strength s in [0, 1] the second image of
   every kept pair (the probe) is perturbed, re-embedded and matched against the unperturbed
   first image (the gallery); the match rate comes with a Wilson interval
   (:func:`wilson_interval`; here, not in :mod:`xfr.stats`, so that the stages importing
   :mod:`xfr.metrics` keep their declared code dependencies).

Perturbations share one signature ``fn(images [B,3,H,W] in [0,1], strength, rows [B]) ->
images`` (``rows``: the pairs' indices in the input, for perturbations that carry per-image data
such as region masks or noise seeds); strength 0 is the identity for all of them:

- :func:`gaussian_blur`: sigma = s * ``max_sigma`` x image width;
- :func:`additive_noise`: Gaussian noise of std s * ``max_std``, seeded per pair (same image, same
  noise, whatever the batch);
- :func:`contrast_reduction`: x' = mu + (1 - s)(x - mu), mu each image's mean grey (s = 1: flat);
- :class:`RegionOcclusion`: a FaceMesh region filled with grey, by ``"opacity"`` (the whole region
  at opacity s) or ``"coverage"`` (the fraction s of its pixels nearest its centroid, opaque).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EmbedFn, declares, embed_batches

Perturbation = Callable[[Tensor, float, Tensor], Tensor]


def _check_strength(strength) -> float:
    s = float(strength)
    if not (math.isfinite(s) and 0.0 <= s <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    return s


def _check_batch(images) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a Tensor [N,3,H,W] in [0,1], got {got}")
    return images


# ----------------------------------------------------------------------------- perturbations
def gaussian_blur(images: Tensor, strength: float, rows: Tensor | None = None,
                  max_sigma: float = 0.04) -> Tensor:
    """Gaussian blur of sigma = strength * ``max_sigma`` * W pixels (separable, edge-replicated;
    224-px chips: up to 9 px). Strength 0 returns the images unchanged."""
    x, s = _check_batch(images), _check_strength(strength)
    sigma = s * float(max_sigma) * x.shape[-1]
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.clamp(0, 1)


def additive_noise(images: Tensor, strength: float, rows: Tensor | None = None,
                   max_std: float = 0.5, seed: int = 0) -> Tensor:
    """Images plus Gaussian noise of std strength * ``max_std`` (clipped to [0, 1]). The noise of
    pair ``rows[i]`` is drawn from its own generator (seed, row): the same for every batch size
    and the same pattern, only scaled, at every strength (a psychophysical staircase)."""
    x, s = _check_batch(images), _check_strength(strength)
    if s == 0:
        return x
    rows = torch.arange(len(x)) if rows is None else torch.as_tensor(rows)
    if len(rows) != len(x):
        raise ValueError(f"{len(rows)} rows for {len(x)} images")
    noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(
        int(seed) * 1_000_003 + int(r))) for r in rows]).to(x)
    return (x + s * float(max_std) * noise).clamp(0, 1)


def contrast_reduction(images: Tensor, strength: float, rows: Tensor | None = None) -> Tensor:
    """x' = mu + (1 - strength)(x - mu), mu the image's mean over pixels and channels: strength
    0 is the identity, 1 a flat grey image."""
    x, s = _check_batch(images), _check_strength(strength)
    if s == 0:
        return x
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mu + (1.0 - s) * (x - mu)).clamp(0, 1)


class RegionOcclusion:
    """Grey fill of one region per pair: ``masks`` BoolTensor [N,H,W] (the probes' region, e.g.
    :func:`xfr.metrics.inpainting.chip_region_masks`). ``mode="opacity"``: the whole region
    blended with ``fill`` at opacity s; ``"coverage"``: the ceil(s * area) region pixels nearest
    the region's centroid (ties by pixel index) replaced by ``fill``."""

    def __init__(self, masks: Tensor, mode: str = "coverage", fill: float = 0.5):
        if not isinstance(masks, Tensor) or masks.dim() != 3:
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"masks must be a Tensor [N,H,W] (one region per pair), got {got}")
        if mode not in ("opacity", "coverage"):
            raise ValueError(f"mode must be 'opacity' or 'coverage', got {mode!r}")
        if not 0.0 <= float(fill) <= 1.0:
            raise ValueError(f"fill must be a grey level in [0, 1], got {fill!r}")
        self.masks, self.mode, self.fill = masks > 0.5, mode, float(fill)
        self._order: dict[int, Tensor] = {}

    def _nearest_first(self, row: int) -> Tensor:
        """Flat indices of the region's pixels, nearest to its centroid first."""
        if row not in self._order:
            m = self.masks[row]
            idx = torch.nonzero(m.flatten()).flatten()
            if len(idx):
                yx = torch.stack([idx // m.shape[1], idx % m.shape[1]], 1).double()
                d = (yx - yx.mean(0)).pow(2).sum(1)
                idx = idx[np.argsort(d.numpy(), kind="stable")]
            self._order[row] = idx
        return self._order[row]

    def alpha(self, strength: float, rows: Tensor) -> Tensor:
        """Fill weights [B,H,W] in [0,1] of the pairs ``rows`` at ``strength``."""
        s = _check_strength(strength)
        rows = torch.as_tensor(rows).long()
        if len(rows) and (int(rows.max()) >= len(self.masks) or int(rows.min()) < 0):
            raise ValueError(f"rows must index the {len(self.masks)} masks, got max {int(rows.max())}")
        if self.mode == "opacity":
            return self.masks[rows].float() * s
        h, w = self.masks.shape[1:]
        out = torch.zeros(len(rows), h * w)
        for i, r in enumerate(rows.tolist()):
            order = self._nearest_first(r)
            out[i, order[: int(math.ceil(s * len(order) - 1e-9))]] = 1.0
        return out.view(len(rows), h, w)

    def __call__(self, images: Tensor, strength: float, rows: Tensor | None = None) -> Tensor:
        x = _check_batch(images)
        rows = torch.arange(len(x)) if rows is None else torch.as_tensor(rows)
        if len(rows) != len(x):
            raise ValueError(f"{len(rows)} rows for {len(x)} images")
        if tuple(self.masks.shape[1:]) != tuple(x.shape[2:]):
            raise ValueError(f"masks are {tuple(self.masks.shape[1:])}, images {tuple(x.shape[2:])}")
        if _check_strength(strength) == 0:
            return x
        a = self.alpha(strength, rows).to(x)[:, None]
        return x * (1 - a) + self.fill * a


def standard_perturbations(region_masks: Mapping[str, Tensor] | None = None, occlusion: str = "coverage",
                           noise_seed: int = 0) -> dict[str, Perturbation]:
    """blur, noise, contrast and ``occlude_<region>`` for each of ``region_masks`` (name ->
    BoolTensor [N,H,W] of the probes)."""
    def noise(x: Tensor, s: float, rows: Tensor | None = None) -> Tensor:
        return additive_noise(x, s, rows, seed=noise_seed)

    out: dict[str, Perturbation] = {"blur": gaussian_blur, "noise": noise, "contrast": contrast_reduction}
    for name, m in (region_masks or {}).items():
        out[f"occlude_{name}"] = RegionOcclusion(m, occlusion)
    return out


# ----------------------------------------------------------------------------- curves
def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) of a binomial proportion ``successes / n``: better
    coverage than the normal (Wald) interval near 0 and 1 and for small n, never outside [0, 1].
    (NaN, NaN) when n = 0."""
    from scipy.stats import norm

    k, n = int(successes), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    if n == 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + float(level) / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))



@dataclass
class ItemResponse:
    """Item-response curves. ``table``: one row per perturbation and strength with n (pairs after
    herding), matches, match_rate, ci_low, ci_high (Wilson), mean_similarity. ``similarity``:
    perturbation -> [S, n] cosine of each kept pair at each strength. ``kept``: [N] the pairs
    that survived herding; ``s_unperturbed`` [N]."""

    table: pd.DataFrame
    similarity: dict
    kept: np.ndarray
    s_unperturbed: np.ndarray
    strengths: np.ndarray
    tau: float
    n_forward: int
    seconds: float
    herded_identities: list = field(default_factory=list)

    @property
    def match_rate(self) -> np.ndarray:
        """[P, S] match rates (perturbations in table order)."""
        return self.table.pivot(index="perturbation", columns="strength", values="match_rate").loc[
            list(dict.fromkeys(self.table.perturbation))].to_numpy()

    @property
    def n_herded_out(self) -> int:
        return int((~self.kept).sum())


def herd(s_unperturbed, tau: float, identities: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Herding (survey §6): keep pair i iff s_i >= tau; with ``identities`` (one per pair), drop
    every pair of an identity that has any failing pair. Returns (kept [N] bool, dropped ids)."""
    s = np.asarray(s_unperturbed, dtype=np.float64)
    kept = s >= float(tau)
    dropped: list = []
    if identities is not None:
        ids = list(identities)
        if len(ids) != len(s):
            raise ValueError(f"{len(ids)} identities for {len(s)} pairs")
        dropped = sorted({ids[i] for i in np.flatnonzero(~kept)}, key=str)
        bad = set(dropped)
        kept = np.array([k and ids[i] not in bad for i, k in enumerate(kept)], dtype=bool)
    return kept, dropped


@declares("item_response_match_rate", higher=True, field="match_rate",
          paper="survey §6 (RichardWebster et al. 2018): genuine match rate under a perturbation")
def item_response_curves(embed_fn: EmbedFn, pairs: tuple[Tensor, Tensor],
                         perturbations: Mapping[str, Perturbation], strengths: Sequence[float],
                         tau: float, batch_size: int = 64, identities: Sequence | None = None,
                         herding: bool = True, level: float = 0.95) -> ItemResponse:
    """Item-response curves of a verifier (survey §6) on genuine ``pairs`` = (gallery [N,3,H,W],
    probes [N,3,H,W]) of aligned chips in [0,1] (RGB, the chips' own size; ``embed_fn`` images ->
    embeddings, e.g. :func:`xfr.score.unit_embeddings`): herding (:func:`herd`, unless
    ``herding=False``), then for each perturbation and strength the probes of the kept pairs
    perturbed (``fn(images, s, rows)``) and matched against their gallery image at ``tau``
    (cosine >= tau). Forward passes: 2N + P * S * n_kept images, in batches of ``batch_size``."""
    t0 = time.perf_counter()
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
        raise ValueError("pairs must be (gallery [N,3,H,W], probes [N,3,H,W]) of genuine pairs")
    gallery, probes = (_check_batch(x) for x in pairs)
    if gallery.shape[0] != probes.shape[0] or gallery.shape[0] == 0:
        raise ValueError(f"gallery and probes must hold the same number (>= 1) of images, got "
                         f"{gallery.shape[0]} and {probes.shape[0]}")
    if not isinstance(perturbations, Mapping) or not perturbations:
        raise ValueError("perturbations must map names to fn(images, strength, rows)")
    levels = np.array([_check_strength(s) for s in strengths], dtype=np.float64)
    if levels.size == 0:
        raise ValueError("strengths must hold at least one value in [0, 1]")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite cosine threshold, got {tau!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(probes)
    e = embed_batches(embed_fn, torch.cat([gallery, probes]), batch_size)
    eg, ep = e[:n], e[n:]
    s0 = (eg * ep).sum(1).numpy().astype(np.float64)
    if herding:
        kept, dropped_ids = herd(s0, tau, identities)
    else:
        kept, dropped_ids = np.ones(n, dtype=bool), []
    rows = torch.from_numpy(np.flatnonzero(kept))
    n_forward = 2 * n
    table, sims = [], {}
    for name, fn in perturbations.items():
        per = np.zeros((len(levels), len(rows)))
        for j, s in enumerate(levels):
            vals = []
            for i in range(0, len(rows), batch_size):
                r = rows[i:i + batch_size]
                x = fn(probes[r], float(s), r)
                if not isinstance(x, Tensor) or x.shape != probes[r].shape:
                    raise ValueError(f"perturbation {name!r} must return images of the input's shape")
                vals.append((embed_batches(embed_fn, x, batch_size) * eg[r]).sum(1))
                n_forward += len(r)
            if vals:
                per[j] = torch.cat(vals).numpy()
            k = int((per[j] >= tau).sum())
            lo, hi = wilson_interval(k, len(rows), level)
            table.append(dict(perturbation=name, strength=float(s), n=len(rows), matches=k,
                              match_rate=k / len(rows) if len(rows) else float("nan"),
                              ci_low=lo, ci_high=hi,
                              mean_similarity=float(per[j].mean()) if len(rows) else float("nan")))
        sims[name] = per
    return ItemResponse(pd.DataFrame(table), sims, kept, s0, levels, float(tau), n_forward,
                        time.perf_counter() - t0, dropped_ids)


__all__ = ["Perturbation", "gaussian_blur", "additive_noise", "contrast_reduction", "RegionOcclusion",
           "standard_perturbations", "herd", "wilson_interval", "item_response_curves", "ItemResponse"]
