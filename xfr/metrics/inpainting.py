"""The inpainting game for face verification (Williford et al. 2020, as summarized in the survey
§2.5), built from aligned chips and FaceMesh regions.

**Probes.** A facial region (eyes, eyebrows, nose, mouth) of an aligned probe chip is replaced by
the same region of an aligned non-mate chip (:func:`inpainted_probe`; a feathered paste, the
region located by the *probe's* FaceMesh). Williford et al. synthesize the region with an
inpainting network; pasting the co-located region of a real non-mate (X-Maps §4.3's
cut-and-paste) gives the same kind of stimulus: a probe that differs from the original only
inside a known region.

**Which inpainted probes count** (:func:`inpainting_triplets`). The survey: "a customized
dataset for each network by choosing images such that the network can distinguish the probe
image and inpainted image" — only those where the region changes the network's decision. Two
readings are offered (``criterion``):

- ``"threshold"`` (default): the original probe matches the mate (s(p, m) >= tau) and the
  inpainted probe does not (s(p', m) < tau). This is the decision a deployed verifier makes and
  the one the saliency map is asked to explain ("why is p' no longer matched to m"), so it is
  the default.
- ``"closer"``: the original probe matches the mate and the inpainted probe is closer to the
  non-mate than the original probe was (s(p', n) > s(p, n)) *and* closer to the non-mate than
  to the mate (s(p', n) > s(p', m)): the identity moved towards the donor, threshold-free.

**Score** (:func:`inpainting_score`). The map must explain ``f(x) = s(x, mate)`` (the cosine of
:func:`xfr.score.verification_score` with the mate as reference) at the inpainted probe, and its
high values must mark pixels that LOWER f (the evidence against the match). A good map then
highlights the replaced region: the score is the AUC of the ROC of the map's pixel values
against the region mask (Mann-Whitney, average ranks for ties: sklearn's ``roc_auc_score``) and
the average precision (sklearn's ``average_precision_score``). Most explainers (RISE, S-RISE,
occlusion with "drop" sign) return maps whose high values SUPPORT f; pass ``sign=-1`` for
those, or explain ``-f``. The region mask itself scores 1.0, its negation 0.0, a constant
map 0.5 (AUC) and the region's share of pixels (AP).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from ..engine import check_image
from .base import EmbedFn, as_map, declares, embed_batches

REGIONS = ("eyes", "eyebrows", "nose", "mouth")
CRITERIA = ("threshold", "closer")


# ----------------------------------------------------------------------------- regions
def chip_region_masks(mesh: Tensor, hw: tuple[int, int], regions: Sequence[str] = REGIONS,
                      dilate: int = 3) -> dict[str, Tensor]:
    """FaceMesh regions on an image: name -> BoolTensor [H,W], the canonical region
    (:meth:`xfr.explain.canonical.CanonicalFace.region_mask`, grown by ``dilate`` canvas pixels of
    the 192 canvas) reprojected through ``mesh`` [468,2] (image pixels) and thresholded at 0.5."""
    from ..explain.canonical import canonical_face, canonical_to_image

    face = canonical_face()
    regions = list(regions)
    if not regions:
        raise ValueError("regions must name at least one FaceMesh region, e.g. ('eyes', 'nose')")
    cmaps = torch.stack([face.region_mask(r, dilate=int(dilate)).float() for r in regions])
    m = canonical_to_image(cmaps, mesh, hw, face=face)
    return {r: m[i] > 0.5 for i, r in enumerate(regions)}


def inpainted_probe(probe: Tensor, nonmate: Tensor, region_mask: Tensor, feather: float = 2.0) -> Tensor:
    """The probe chip [3,H,W] with ``region_mask`` (bool/binary [H,W]) replaced by the co-located
    pixels of the aligned ``nonmate`` chip (same size). ``feather`` > 0: the hard mask blurred by
    a Gaussian of ``feather`` px (:func:`xfr.faces.edits.gaussian_feather`) is the blend weight,
    so no seam; 0: a hard cut-and-paste (:func:`xfr.faces.occluders.cut_and_paste`)."""
    from ..faces.edits import gaussian_feather
    from ..faces.occluders import cut_and_paste, paste

    p, n = check_image(probe), check_image(nonmate)
    if p.shape != n.shape:
        raise ValueError(f"probe {tuple(p.shape)} and nonmate {tuple(n.shape)} differ in shape")
    if not isinstance(region_mask, Tensor) or tuple(region_mask.shape) != tuple(p.shape[1:]):
        got = tuple(region_mask.shape) if isinstance(region_mask, Tensor) else type(region_mask).__name__
        raise ValueError(f"region_mask must be a Tensor [H,W] = {tuple(p.shape[1:])}, got {got}")
    if not (isinstance(feather, (int, float)) and np.isfinite(feather) and feather >= 0):
        raise ValueError(f"feather must be a finite number >= 0 (pixels), got {feather!r}")
    hard = (region_mask.float() > 0.5).float()
    if feather == 0:
        return cut_and_paste(p, n, hard)
    return paste(p, gaussian_feather(hard, float(feather)).to(p.dtype), n)


# ----------------------------------------------------------------------------- triplets
@dataclass
class InpaintingSet:
    """Inpainted probes, one item per (triplet, region).

    ``inpainted`` [M,3,H,W] and ``masks`` (the replaced region, bool [M,H,W]) per item;
    ``triplet`` [M] (index into ``probes``/``mates``/``nonmates`` [N,3,H,W]), ``region`` [M]
    names; cosine similarities ``s_probe_mate``, ``s_inpainted_mate``, ``s_probe_nonmate``,
    ``s_inpainted_nonmate`` [M]; ``kept`` [M] bool (the decision changed, ``criterion``)."""

    probes: Tensor
    mates: Tensor
    nonmates: Tensor
    inpainted: Tensor
    masks: Tensor
    triplet: np.ndarray
    region: np.ndarray
    s_probe_mate: np.ndarray
    s_inpainted_mate: np.ndarray
    s_probe_nonmate: np.ndarray
    s_inpainted_nonmate: np.ndarray
    kept: np.ndarray
    tau: float
    criterion: str
    n_forward: int
    names: list = field(default_factory=list)  # optional (probe, mate, nonmate) names per triplet

    @property
    def table(self) -> pd.DataFrame:
        """One row per item: triplet, region, area (pixels), the four similarities, kept."""
        return pd.DataFrame(dict(
            triplet=self.triplet, region=self.region, area=self.masks.flatten(1).sum(1).numpy(),
            s_probe_mate=self.s_probe_mate, s_inpainted_mate=self.s_inpainted_mate,
            s_probe_nonmate=self.s_probe_nonmate, s_inpainted_nonmate=self.s_inpainted_nonmate,
            kept=self.kept))

    def kept_items(self) -> np.ndarray:
        return np.flatnonzero(self.kept)


def _check_stack(x, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a Tensor [N,3,H,W] of aligned chips in [0,1], got {got}")
    return x.float()


def inpainting_triplets(embed_fn: EmbedFn, probes: Tensor, mates: Tensor, nonmates: Tensor,
                        region_masks: Mapping[str, Tensor], tau: float, feather: float = 2.0,
                        criterion: str = "threshold", batch_size: int = 64,
                        names: Sequence | None = None) -> InpaintingSet:
    """The inpainting game's stimuli: for every triplet i and region r the probe with r replaced
    by the non-mate's (:func:`inpainted_probe`; ``region_masks[r]`` [N,H,W], the probe's region),
    and whether the model's decision changed (``criterion``, see the module docstring):
    ``"threshold"``: s(p, m) >= tau and s(p', m) < tau; ``"closer"``: s(p, m) >= tau,
    s(p', n) > s(p, n) and s(p', n) > s(p', m).

    ``embed_fn``: images [N,3,H,W] in [0,1] (RGB, the chips' size) -> embeddings [N,D]
    (:func:`xfr.score.unit_embeddings`); run in batches of ``batch_size``."""
    probes, mates, nonmates = (_check_stack(x, k) for x, k in
                               ((probes, "probes"), (mates, "mates"), (nonmates, "nonmates")))
    n = len(probes)
    if not (probes.shape == mates.shape == nonmates.shape) or n == 0:
        raise ValueError(f"probes, mates, nonmates must be non-empty stacks of one shape, got "
                         f"{tuple(probes.shape)}, {tuple(mates.shape)}, {tuple(nonmates.shape)}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not isinstance(region_masks, Mapping) or not region_masks:
        raise ValueError("region_masks must map region names to masks [N,H,W]")
    if not (isinstance(tau, (int, float)) and np.isfinite(tau)):
        raise ValueError(f"tau must be a finite cosine threshold, got {tau!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    hw = tuple(probes.shape[2:])
    for r, m in region_masks.items():
        if not isinstance(m, Tensor) or tuple(m.shape) != (n, *hw):
            got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"region_masks[{r!r}] must be a Tensor [N,H,W] = {(n, *hw)}, got {got}")
    e = embed_batches(embed_fn, torch.cat([probes, mates, nonmates]), batch_size)
    ep, em, en = e[:n], e[n:2 * n], e[2 * n:]
    s_pm, s_pn = (ep * em).sum(1), (ep * en).sum(1)
    imgs, masks, trip, reg = [], [], [], []
    for r, m in region_masks.items():
        for i in range(n):
            mask = m[i] > 0.5
            imgs.append(inpainted_probe(probes[i], nonmates[i], mask, feather))
            masks.append(mask)
            trip.append(i)
            reg.append(r)
    inp = torch.stack(imgs)
    ei = embed_batches(embed_fn, inp, batch_size)
    t = torch.tensor(trip)
    s_im, s_in = (ei * em[t]).sum(1).numpy(), (ei * en[t]).sum(1).numpy()
    s_pm_i, s_pn_i = s_pm[t].numpy(), s_pn[t].numpy()
    if criterion == "threshold":
        kept = (s_pm_i >= tau) & (s_im < tau)
    else:
        kept = (s_pm_i >= tau) & (s_in > s_pn_i) & (s_in > s_im)
    return InpaintingSet(probes, mates, nonmates, inp, torch.stack(masks), t.numpy(), np.array(reg),
                         s_pm_i.astype(np.float64), s_im.astype(np.float64), s_pn_i.astype(np.float64),
                         s_in.astype(np.float64), kept, float(tau), criterion, 3 * n + len(inp),
                         list(names) if names is not None else [])


# ----------------------------------------------------------------------------- score
@dataclass
class InpaintingScore:
    """Per item: ``auc`` (ROC AUC of the map's pixels against the region) and ``ap`` (average
    precision); NaN where the region is empty or covers the whole map."""

    auc: np.ndarray
    ap: np.ndarray


def roc_auc(values: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of scores ``values`` for the boolean labels ``positive`` (Mann-Whitney U / (n+ n-),
    average ranks for ties; equals sklearn's ``roc_auc_score``). NaN with one class only."""
    v, y = np.asarray(values, np.float64).ravel(), np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(v)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(values: np.ndarray, positive: np.ndarray) -> float:
    """Average precision sum_k (R_k - R_{k-1}) P_k over the distinct thresholds of ``values``
    (descending; tied pixels enter together), sklearn's ``average_precision_score``. NaN when
    there is no positive."""
    v, y = np.asarray(values, np.float64).ravel(), np.asarray(positive, bool).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-v, kind="stable")
    v, y = v[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(v) != 0), len(v) - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _as_stack(x, name: str) -> list[np.ndarray]:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            return [x]
        if x.ndim == 3:
            return list(x)
        raise ValueError(f"{name} must be [H,W] or [N,H,W], got shape {x.shape}")
    return list(x)


@declares("inpainting_auc", higher=True, field="auc",
          paper="survey §2.5 (Williford et al. 2020): ROC AUC of the map against the inpainted region")
@declares("inpainting_ap", higher=True, field="ap",
          paper="survey §2.5 (Williford et al. 2020): average precision of the map against the inpainted region")
def inpainting_score(saliency_maps, region_masks, sign: float = 1.0) -> InpaintingScore:
    """The inpainting game's per-item score of maps [N,H,W] (or one [H,W]) against the replaced
    regions (bool [N,H,W]): ROC AUC and average precision of ``sign * map`` as a pixel classifier
    of the region. Convention: high values of ``sign * map`` = pixels that lower s(inpainted
    probe, mate); ``sign=-1`` for maps whose high values support that similarity (RISE-family)."""
    if sign not in (1, -1, 1.0, -1.0):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    maps, regions = _as_stack(saliency_maps, "saliency_maps"), _as_stack(region_masks, "region_masks")
    if len(maps) != len(regions):
        raise ValueError(f"{len(maps)} maps but {len(regions)} region masks")
    auc, ap = [], []
    for k, (m, r) in enumerate(zip(maps, regions)):
        a = as_map(m, f"saliency map {k}") * float(sign)
        g = as_map(r, f"region mask {k}")
        if g.shape != a.shape:
            raise ValueError(f"region mask {k} has shape {g.shape}, map has {a.shape}")
        g = g > 0.5
        auc.append(roc_auc(a, g))
        ap.append(average_precision(a, g) if (~g).any() else float("nan"))
    return InpaintingScore(np.array(auc), np.array(ap))


__all__ = ["REGIONS", "CRITERIA", "chip_region_masks", "inpainted_probe", "inpainting_triplets",
           "InpaintingSet", "inpainting_score",
           "InpaintingScore", "roc_auc", "average_precision"]
