"""Small shared pieces of the explainers: argument checks, Gaussian windows, smoothing, scaling,
and the score-weighted mask accumulator that runs inside :func:`xfr.engine.perturb`.

Conventions (DEVELOPERS.md §3): every explainer returns a ``torch.Tensor`` float32 ``[H, W]`` on
the CPU, the size of the input image; masks are *keep* masks (1 keeps a pixel, 0 replaces it by
the fill), as in :mod:`xfr.engine`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine import CountingScore, ScoreFn, check_image, score_images

# The reference MinPlus code (D. Mery's Colab, ``gaussian_kernel(size, size / 8.5)``) ties the
# standard deviation of a Gaussian window to its width: std = width / 8.5.
WIDTH_TO_STD = 8.5


# ----------------------------------------------------------------------------- argument checks
def as_counting(f: ScoreFn) -> CountingScore:
    """``f`` wrapped so that every call is checked and counted (a CountingScore is kept as is, so
    a caller's counter sees all forward passes of an explainer)."""
    return f if isinstance(f, CountingScore) else CountingScore(f)


def check_int(name: str, value, low: int, high: int | None = None, hint: str = "") -> int:
    """``value`` as an int in [low, high]; a clear ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and float(value).is_integer()
    ):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}, got {v}{'; ' + hint if hint else ''}")
    return v


def check_float(name: str, value, low: float, high: float | None = None,
                low_open: bool = False, hint: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    bad = not math.isfinite(v) or (v <= low if low_open else v < low) or (high is not None and v > high)
    if bad:
        lo = f"> {low}" if low_open else f">= {low}"
        rng = lo if high is None else f"{lo} and <= {high}"
        raise ValueError(f"{name} must be {rng}, got {value!r}{'; ' + hint if hint else ''}")
    return v


def check_seed(seed) -> int:
    return check_int("seed", seed, 0, hint="seeds are non-negative integers")


def base_score(f: CountingScore, image: Tensor) -> float:
    """f on the unperturbed image (one forward pass, under inference mode)."""
    return float(score_images(f, image[None], batch_size=1)[0])


def prepare(image: Tensor) -> Tensor:
    """The image as float32 [C,H,W] on the CPU (explainers build masks on the CPU; score
    functions move batches to their model's device)."""
    return check_image(image).detach().cpu().contiguous()


# ----------------------------------------------------------------------------- Gaussians
def window_offsets(width: int) -> np.ndarray:
    """Integer offsets of a ``width``-tap window centred on 0, as ``np.mgrid[-w//2+1 : w//2+1]``
    of the reference code (symmetric for odd widths)."""
    return np.arange((-width) // 2 + 1, width // 2 + 1)


def gaussian_profile(n: int, centers: Tensor, std: float, half: float | None) -> Tensor:
    """1-D Gaussians exp(-(x-c)^2 / 2 std^2) on x = 0..n-1 for each centre c -> [len(c), n],
    peak 1, zero where |x - c| > half (``half=None``: not truncated)."""
    x = torch.arange(n, dtype=torch.float64)[None, :]
    d = x - centers.to(torch.float64)[:, None]
    g = torch.exp(-0.5 * (d / std) ** 2)
    if half is not None:
        g = torch.where(d.abs() <= half + 1e-9, g, torch.zeros((), dtype=g.dtype))
    return g


def gaussian_bumps(hw: tuple[int, int], centers_yx: Tensor, std: float,
                   half: float | None = None) -> Tensor:
    """Separable 2-D Gaussians with peak 1 at each centre (y, x) -> float32 [K, H, W]."""
    gy = gaussian_profile(hw[0], centers_yx[:, 0], std, half)
    gx = gaussian_profile(hw[1], centers_yx[:, 1], std, half)
    return (gy[:, :, None] * gx[:, None, :]).float()


def _reflect101(idx: np.ndarray, n: int) -> np.ndarray:
    """OpenCV's BORDER_REFLECT_101 index folding (gfedcb|abcdefgh|gfedcba), any distance."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n - 2
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def conv_matrix(n: int, kernel: np.ndarray, offsets: np.ndarray) -> Tensor:
    """[n, n] matrix A with (A @ v)[i] = sum_k kernel[k] * v[reflect101(i + offsets[k])]: 1-D
    correlation with OpenCV's default border (what ``cv2.filter2D`` does)."""
    a = np.zeros((n, n), dtype=np.float64)
    rows = np.repeat(np.arange(n), len(offsets))
    cols = _reflect101((np.arange(n)[:, None] + offsets[None, :]).ravel(), n)
    np.add.at(a, (rows, cols), np.tile(kernel, n))
    return torch.from_numpy(a)


def gaussian_smooth(smap: Tensor, width: int) -> Tensor:
    """conv(H, G(sigma)) of MinPlus eq. 12: correlation with a ``width`` x ``width`` Gaussian window
    of std width/8.5 and peak 1 (the reference's ``cv2.filter2D(H, -1, gaussian_kernel(w,
    w/8.5, 'Max'))``, border reflect-101). Computed exactly as A_y @ H @ A_x^T."""
    offsets = window_offsets(width)
    kernel = np.exp(-0.5 * (offsets / (width / WIDTH_TO_STD)) ** 2)
    h, w = smap.shape
    ay, ax = conv_matrix(h, kernel, offsets), conv_matrix(w, kernel, offsets)
    return (ay @ smap.to(torch.float64) @ ax.T).float()


def gaussian_blur(smap: Tensor, ksize: int, std: float) -> Tensor:
    """Gaussian blur with a ``ksize`` x ``ksize`` normalized kernel of standard deviation ``std``
    (border reflect-101, like ``cv2.GaussianBlur``)."""
    offsets = window_offsets(ksize)
    kernel = np.exp(-0.5 * (offsets / std) ** 2)
    kernel = kernel / kernel.sum()
    h, w = smap.shape
    ay, ax = conv_matrix(h, kernel, offsets), conv_matrix(w, kernel, offsets)
    return (ay @ smap.to(torch.float64) @ ax.T).float()


def minmax(smap):
    """(D - min) / (max - min) (MinPlus eq. 13); a constant map becomes all zeros. A tensor gives
    a float32 tensor (computed in float64), an array a float64 array."""
    if not isinstance(smap, Tensor):
        a = np.asarray(smap)
        lo_a, hi_a = float(a.min()), float(a.max())
        if hi_a - lo_a <= 0:
            return np.zeros_like(a, dtype=np.float64)
        return (a - lo_a) / (hi_a - lo_a)
    smap = smap.to(torch.float64)
    lo, hi = smap.min(), smap.max()
    if not torch.isfinite(hi - lo) or hi - lo <= 0:
        return torch.zeros(smap.shape, dtype=torch.float32)
    return ((smap - lo) / (hi - lo)).float()


def joint_minmax(maps: Sequence[Tensor]) -> list[Tensor]:
    """Min-max scaling with one min and one max over several maps (so that a weaker map stays
    weaker, as S-RISE §3.2.2 step 7 compares matching and non-matching pairs)."""
    stacked = torch.stack([m.to(torch.float64) for m in maps])
    lo, hi = stacked.min(), stacked.max()
    if hi - lo <= 0:
        return [torch.zeros(m.shape, dtype=torch.float32) for m in maps]
    return [((m.to(torch.float64) - lo) / (hi - lo)).float() for m in maps]


# ----------------------------------------------------------------------------- accumulation
class WeightedMaskSum:
    """``on_batch`` callback that accumulates sum_k w(s_k) * m_k (and optionally sum_k m_k) in
    float64 without keeping the masks. ``transform(masks)`` maps keep masks to the weights that
    are summed (identity for RISE-style maps, ``1 - m`` for occlusion); ``weight(scores)`` maps
    scores to per-mask weights."""

    def __init__(self, hw: tuple[int, int], transform=None, weight=None, count: bool = False):
        self.total = torch.zeros(hw[0] * hw[1], dtype=torch.float64)
        self.mass = torch.zeros(hw[0] * hw[1], dtype=torch.float64) if count else None
        self.hw = hw
        self.transform = transform
        self.weight = weight
        self.n = 0
        self.mask_sum = 0.0

    def __call__(self, masks: Tensor, scores: Tensor, start: int) -> None:
        m = masks if masks.dim() == 3 else masks.mean(dim=1)  # [B,C,H,W] masks: channel mean
        if self.transform is not None:
            m = self.transform(m)
        m = m.reshape(m.shape[0], -1).to(torch.float64)
        w = scores.to(torch.float64)
        if self.weight is not None:
            w = self.weight(w)
        self.total += w @ m
        if self.mass is not None:
            self.mass += m.sum(dim=0)
        self.mask_sum += float(m.sum())
        self.n += m.shape[0]

    def mean(self) -> Tensor:
        """sum_k w_k m_k / K as [H, W] float64."""
        return (self.total / max(self.n, 1)).reshape(self.hw)

    def weighted_average(self) -> Tensor:
        """sum_k w_k m_k / sum_k m_k per pixel (0 where no mask touched the pixel)."""
        mass = self.mass
        assert mass is not None, "weighted_average needs count=True"
        out = torch.where(mass > 0, self.total / mass.clamp(min=1e-300), torch.zeros((), dtype=torch.float64))
        return out.reshape(self.hw)

    def mean_mask_value(self) -> float:
        return self.mask_sum / max(self.n * self.hw[0] * self.hw[1], 1)


# ----------------------------------------------------------------------------- scoring of masks
SCORINGS = ("centred", "raw", "coverage")


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


class GroupedMaskSums:
    """``on_batch`` callback of the RISE-family explainers: for each group g of masks (a function
    ``group(indices) -> group ids`` of the mask indices; one group by default) it accumulates, in
    float64, T_g = sum_k s_k m_k, D_g = sum_k m_k (the mask density), S_g = sum_k s_k and n_g.

    :meth:`map` turns any union of groups into a map with one of three *scorings*:

    - ``"raw"``: T / n, the papers' estimator (RISE eq. 6 before its 1/p; S-RISE's H / N);
    - ``"centred"``: (T - (S / n) D) / n = (1/n) sum_k (s_k - s_bar) m_k. The term removed,
      s_bar * D / n, is the mask density times the mean score: its expectation is the same
      for every pixel (the masks are stationary), so the centred map has the raw map's
      expectation up to a constant, but not the density's random fluctuation, which dominates
      the raw map when the scores vary little around s_bar (verification: cosines within
      0.8-1.0). A control variate, as the debiased RISE of Hatakeyama et al. (ACCV 2020;
      xaitk-saliency ``RISEScoring(p1)``: sum_k s_k (m_k - p1)) subtracts the expected mask;
    - ``"coverage"``: T / D - S / n, the mean score of the masks that keep a pixel minus the
      mean score (the per-pixel normalisation by mask coverage of xaitk-saliency's
      ``weight_regions_by_scalar(normalize=True)``, used by its ``SimilarityScoring``).

    Groups give maps of mask subsets from one run: the prefixes of a reliability curve, the
    even and odd halves of a split-half reliability (:mod:`xfr.explain.reliability`)."""

    def __init__(self, hw: tuple[int, int], n_groups: int = 1, group=None):
        self.hw = hw
        self.n_groups = int(n_groups)
        self.group = group
        size = hw[0] * hw[1]
        self.total = torch.zeros(self.n_groups, size, dtype=torch.float64)
        self.density = torch.zeros(self.n_groups, size, dtype=torch.float64)
        self.score_sum = torch.zeros(self.n_groups, dtype=torch.float64)
        self.count = torch.zeros(self.n_groups, dtype=torch.int64)

    def __call__(self, masks: Tensor, scores: Tensor, start: int) -> None:
        m = masks if masks.dim() == 3 else masks.mean(dim=1)
        m = m.reshape(m.shape[0], -1).to(torch.float64)
        w = scores.to(torch.float64)
        if self.group is None:
            ids = torch.zeros(len(w), dtype=torch.int64)
        else:
            ids = torch.as_tensor(self.group(torch.arange(start, start + len(w))), dtype=torch.int64)
        for g in torch.unique(ids).tolist():
            sel = ids == g
            ms, ws = m[sel], w[sel]
            self.total[g] += ws @ ms
            self.density[g] += ms.sum(dim=0)
            self.score_sum[g] += ws.sum()
            self.count[g] += int(sel.sum())

    def map(self, scoring: str = "centred", groups=None) -> Tensor:
        """The map [H, W] (float64) of the masks of ``groups`` (default: all) under ``scoring``."""
        check_scoring(scoring)
        idx = list(range(self.n_groups)) if groups is None else list(groups)
        t, d = self.total[idx].sum(0), self.density[idx].sum(0)
        n = max(int(self.count[idx].sum()), 1)
        s_bar = float(self.score_sum[idx].sum()) / n
        if scoring == "raw":
            out = t / n
        elif scoring == "centred":
            out = (t - s_bar * d) / n
        else:
            out = torch.where(d > 0, t / d.clamp(min=1e-300) - s_bar, torch.zeros((), dtype=torch.float64))
        return out.reshape(self.hw)

    def mean_mask_value(self, groups=None) -> float:
        """Mean value of the masks of ``groups`` (RISEgauss divides its map by it, as RISE by p)."""
        idx = list(range(self.n_groups)) if groups is None else list(groups)
        n = max(int(self.count[idx].sum()), 1)
        return float(self.density[idx].sum()) / (n * self.hw[0] * self.hw[1])
