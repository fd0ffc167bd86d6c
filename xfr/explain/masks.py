"""Mask generators: indexable sets of *keep* masks ``[B, H, W]`` (1 keeps a pixel), built lazily
batch by batch for :func:`xfr.engine.perturb`.

Random generators draw mask k from ``numpy.random.default_rng([seed, k])`` and nothing else, so
mask k (and therefore every map) is the same for every batch size and every order of evaluation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .common import WIDTH_TO_STD, check_int, gaussian_bumps, window_offsets


def mask_rng(seed: int, k: int) -> np.random.Generator:
    """The random stream of mask ``k``: depends only on (seed, k)."""
    return np.random.default_rng([int(seed), int(k)])


class IndexedMasks:
    """Base class: ``len(masks)`` and ``masks[i:j] -> Tensor[j-i, H, W]`` (float32, CPU)."""

    hw: tuple[int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    def make(self, idx: np.ndarray) -> Tensor:
        raise NotImplementedError

    def __getitem__(self, index) -> Tensor:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            return self.make(np.arange(start, stop, step))
        k = int(index)
        if not -n <= k < n:
            raise IndexError(f"mask index {k} out of range for {n} masks")
        return self.make(np.array([k % n]))[0]

    def all(self) -> Tensor:
        """Every mask at once (for tests and small sets only)."""
        return self[0:len(self)]


# ----------------------------------------------------------------------------- grids of patches
def sliding_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Window offsets 0, s, 2s, ... of captum's ``Occlusion``: ceil((size - window)/stride) + 1
    positions, the last window clipped at the border, so that every pixel is covered."""
    count = math.ceil((size - window) / stride) + 1
    return np.arange(count) * stride


def xmaps_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """X-Maps Algorithm 1 / eq. 4: floor((size - p) / s) positions per axis, 0, s, 2s, ..."""
    return np.arange((size - patch) // stride) * stride


class PatchMasks(IndexedMasks):
    """Occluders at a grid of positions: ``kind="square"`` removes the ``patch`` x ``patch``
    square with top-left corner (y, x) (clipped at the border); ``kind="gaussian"`` removes a
    Gaussian of standard deviation ``std`` (peak 1) centred in that square. Keep mask = 1 - patch.
    """

    def __init__(self, hw, ys: np.ndarray, xs: np.ndarray, patch: int,
                 kind: str = "square", std: float | None = None):
        if kind not in ("square", "gaussian"):
            raise ValueError(f"patch kind must be 'square' or 'gaussian', got {kind!r}")
        self.hw = (int(hw[0]), int(hw[1]))
        yy, xx = np.meshgrid(np.asarray(ys), np.asarray(xs), indexing="ij")
        self.positions = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.int64)  # raster order
        self.patch = int(patch)
        self.kind = kind
        self.std = float(std) if std is not None else self.patch / 4.0

    def __len__(self) -> int:
        return len(self.positions)

    def removal(self, idx: np.ndarray) -> Tensor:
        """The occluder weights (1 - keep) of masks ``idx`` -> [B, H, W]."""
        h, w = self.hw
        pos = torch.from_numpy(self.positions[idx])
        if self.kind == "square":
            ys, xs = torch.arange(h), torch.arange(w)
            in_y = (ys[None] >= pos[:, :1]) & (ys[None] < pos[:, :1] + self.patch)
            in_x = (xs[None] >= pos[:, 1:]) & (xs[None] < pos[:, 1:] + self.patch)
            return (in_y[:, :, None] & in_x[:, None, :]).float()
        centers = pos.to(torch.float64) + (self.patch - 1) / 2.0
        return gaussian_bumps(self.hw, centers, self.std)

    def make(self, idx: np.ndarray) -> Tensor:
        return 1.0 - self.removal(idx)


class GaussianMasks(IndexedMasks):
    """MinPlus masks G(sigma, i, j) (eqs. 5 and 8): a Gaussian window of ``width`` pixels (std =
    width / 8.5, peak 1, zero outside the window, as the reference code's ``DefineGaussianMask``)
    centred at each of ``centers`` (y, x). ``invert=True`` gives the removal keep mask 1 - G
    (eq. 5), ``invert=False`` the aggregation mask G (eq. 8)."""

    def __init__(self, hw, centers: np.ndarray, width: int, invert: bool):
        self.hw = (int(hw[0]), int(hw[1]))
        self.centers = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
        self.width = int(width)
        offsets = window_offsets(self.width)
        self.half = float(max(-offsets[0], offsets[-1]))
        self.std = self.width / WIDTH_TO_STD
        self.invert = invert

    def __len__(self) -> int:
        return len(self.centers)

    def bumps(self, idx: np.ndarray) -> Tensor:
        return gaussian_bumps(self.hw, torch.from_numpy(self.centers[idx]), self.std, self.half)

    def make(self, idx: np.ndarray) -> Tensor:
        g = self.bumps(idx)
        return 1.0 - g if self.invert else g


# ----------------------------------------------------------------------------- random masks
class RiseMasks(IndexedMasks):
    """RISE masks (Petsiuk et al. 2018, §3.2): a random binary s x s grid (each cell 1 with
    probability p), upsampled bilinearly to (s+1) x cell size, cell = ceil(H/s), and cropped
    H x W at a random shift in [0, cell). Mask k depends only on (seed, k)."""

    def __init__(self, hw, n: int, s: int = 8, p: float = 0.5, seed: int = 0):
        self.hw = (int(hw[0]), int(hw[1]))
        self.n = int(n)
        self.s = int(s)
        self.p = float(p)
        self.seed = int(seed)
        self.cell = (math.ceil(self.hw[0] / self.s), math.ceil(self.hw[1] / self.s))
        self.up = ((self.s + 1) * self.cell[0], (self.s + 1) * self.cell[1])

    def __len__(self) -> int:
        return self.n

    def draw(self, k: int) -> tuple[np.ndarray, int, int]:
        """(grid [s, s] of 0/1, shift y, shift x) of mask k."""
        rng = mask_rng(self.seed, k)
        grid = (rng.random((self.s, self.s)) < self.p).astype(np.float32)
        dy = int(rng.integers(0, self.cell[0]))
        dx = int(rng.integers(0, self.cell[1]))
        return grid, dy, dx

    def make(self, idx: np.ndarray) -> Tensor:
        draws = [self.draw(int(k)) for k in idx]
        if not draws:
            return torch.zeros(0, *self.hw)
        grids = torch.from_numpy(np.stack([d[0] for d in draws]))[:, None]
        up = F.interpolate(grids, size=self.up, mode="bilinear", align_corners=False)[:, 0]
        h, w = self.hw
        out = torch.stack([up[i, dy:dy + h, dx:dx + w] for i, (_, dy, dx) in enumerate(draws)])
        return out.clamp_(0.0, 1.0)  # bilinear weights can overshoot 1 by an ulp


class GaussianBlobMasks(IndexedMasks):
    """RISEgauss masks (MinPlus §3, footnote 3: RISE with Gaussian masks instead of squares):
    ``n_blobs`` Gaussian windows per mask, widths drawn uniformly in ``width_range`` pixels (std =
    width / 8.5, truncated to the window), centres uniform over the image extended by half its
    size on each side (the reference draws them on a 2H x 2W canvas and crops the centre). The
    keep mask is the union of the blobs, 1 - prod_i (1 - g_i)."""

    def __init__(self, hw, n: int, n_blobs: int, width_range: tuple[int, int], seed: int = 0):
        self.hw = (int(hw[0]), int(hw[1]))
        self.n = int(n)
        self.n_blobs = int(n_blobs)
        self.width_range = (int(width_range[0]), int(width_range[1]))
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(centres [n_blobs, 2] (y, x), widths [n_blobs]) of mask k."""
        rng = mask_rng(self.seed, k)
        h, w = self.hw
        cy = rng.uniform(-h / 2, 1.5 * h, self.n_blobs)
        cx = rng.uniform(-w / 2, 1.5 * w, self.n_blobs)
        widths = rng.integers(self.width_range[0], self.width_range[1] + 1, self.n_blobs)
        return np.stack([cy, cx], axis=1), widths

    def make(self, idx: np.ndarray) -> Tensor:
        h, w = self.hw
        out = np.ones((len(idx), h, w))  # prod_i (1 - g_i), built window by window
        for b, k in enumerate(idx):
            centers, widths = self.draw(int(k))
            for (cy, cx), width in zip(centers, widths):
                half = (width - 1) / 2.0
                y0, y1 = max(0, math.ceil(cy - half)), min(h - 1, math.floor(cy + half))
                x0, x1 = max(0, math.ceil(cx - half)), min(w - 1, math.floor(cx + half))
                if y0 > y1 or x0 > x1:
                    continue  # the blob's window misses the image
                std = width / WIDTH_TO_STD
                gy = np.exp(-0.5 * ((np.arange(y0, y1 + 1) - cy) / std) ** 2)
                gx = np.exp(-0.5 * ((np.arange(x0, x1 + 1) - cx) / std) ** 2)
                out[b, y0:y1 + 1, x0:x1 + 1] *= 1.0 - np.outer(gy, gx)
        return torch.from_numpy(1.0 - out).float()


SRISE_PATCHES = ("keep", "remove")


class SRiseMasks(IndexedMasks):
    """S-RISE masks (Lu & Ebrahimi, §3.2.1): ``n_patches`` Gaussian patches per mask (a
    ``kernel`` x ``kernel`` window of standard deviation ``sigma``, peak 1) at random integer
    centres; the mask is their sum clipped to [0, 1]. Defaults of §4.1.2: 100 patches, kernel
    40, sigma 7. Centres are uniform over every position whose window touches the image (the
    image extended by the window on each side), so every pixel is covered equally often on
    average, as RISE's random shifts make its masks stationary (the paper only says "random
    locations"; centres inside the image alone would bias every map towards the centre).

    The paper does not say whether the patches are what a mask keeps or what it removes:
    ``patches="keep"`` keeps the clipped sum of the patches (100 patches of sigma 7 on a 112 px
    face keep ~84 % of it), ``patches="remove"`` removes it (the mask is 1 minus that sum and
    keeps ~16 %)."""

    def __init__(self, hw, n: int, n_patches: int = 100, kernel: int = 40, sigma: float = 7.0,
                 seed: int = 0, patches: str = "keep"):
        if patches not in SRISE_PATCHES:
            raise ValueError(f"patches must be one of {SRISE_PATCHES}, got {patches!r}")
        self.patches = patches
        self.hw = (int(hw[0]), int(hw[1]))
        self.n = int(n)
        self.n_patches = int(n_patches)
        self.kernel = int(kernel)
        self.sigma = float(sigma)
        self.seed = int(seed)
        offsets = window_offsets(self.kernel)
        self._lo, self._hi = int(offsets[0]), int(offsets[-1])  # window offsets, lo <= 0 <= hi
        k1 = np.exp(-0.5 * (offsets / self.sigma) ** 2)
        # rows: centre c (shifted by hi), columns: pixel y; entry k(y - c)
        self._ay = self._matrix(self.hw[0], k1, offsets)
        self._ax = self._matrix(self.hw[1], k1, offsets)

    def _matrix(self, n: int, kernel: np.ndarray, offsets: np.ndarray) -> Tensor:
        n_centres = n + self._hi - self._lo
        a = np.zeros((n_centres, n), dtype=np.float64)
        for o, kv in zip(offsets, kernel):
            c = np.arange(-self._hi, n - self._lo)  # every centre whose window touches [0, n)
            y = c + o
            ok = (y >= 0) & (y < n)
            a[c[ok] + self._hi, y[ok]] += kv
        return torch.from_numpy(a)

    def __len__(self) -> int:
        return self.n

    def draw(self, k: int) -> np.ndarray:
        """Patch centres [n_patches, 2] (y, x) of mask k (possibly outside the image)."""
        rng = mask_rng(self.seed, k)
        h, w = self.hw
        return np.stack([rng.integers(-self._hi, h - self._lo, self.n_patches),
                         rng.integers(-self._hi, w - self._lo, self.n_patches)], axis=1)

    def make(self, idx: np.ndarray) -> Tensor:
        impulses = torch.zeros(len(idx), self._ay.shape[0], self._ax.shape[0], dtype=torch.float64)
        for b, k in enumerate(idx):
            c = torch.from_numpy(self.draw(int(k)) + self._hi)
            impulses[b].index_put_((c[:, 0], c[:, 1]), torch.ones(len(c), dtype=torch.float64),
                                   accumulate=True)
        # the patch centred at c adds k(y - c_y) k(x - c_x): a separable sum over the impulses
        summed = (self._ay.T @ impulses @ self._ax).clamp(0.0, 1.0)
        return (summed if self.patches == "keep" else 1.0 - summed).float()


class SuperpixelMasks(IndexedMasks):
    """LIME samples (Ribeiro et al. 2016): each superpixel of ``segments`` kept with probability
    ``p`` (lime's ``randint(0, 2)``: p = 0.5). Sample 0 keeps everything (lime puts the original
    instance first). ``z(idx)`` gives the binary vectors the linear model is fitted on."""

    def __init__(self, segments: np.ndarray, n: int, p: float = 0.5, seed: int = 0,
                 include_original: bool = True):
        seg = np.asarray(segments)
        _, inverse = np.unique(seg, return_inverse=True)
        self.segments = torch.from_numpy(inverse.reshape(seg.shape).astype(np.int64))
        self.n_segments = int(self.segments.max()) + 1
        self.hw = (int(seg.shape[0]), int(seg.shape[1]))
        self.n = int(n)
        self.p = float(p)
        self.seed = int(seed)
        self.include_original = include_original

    def __len__(self) -> int:
        return self.n

    def z(self, idx: np.ndarray) -> Tensor:
        rows = []
        for k in idx:
            if k == 0 and self.include_original:
                rows.append(np.ones(self.n_segments, dtype=np.float32))
            else:
                rows.append((mask_rng(self.seed, int(k)).random(self.n_segments) < self.p)
                            .astype(np.float32))
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, self.n_segments)

    def make(self, idx: np.ndarray) -> Tensor:
        z = self.z(idx)
        return z.index_select(1, self.segments.reshape(-1)).reshape(len(z), *self.hw)


def check_patch_fits(name: str, patch: int, hw: tuple[int, int]) -> int:
    return check_int(name, patch, 1, min(hw),
                     hint=f"it must fit the {hw[0]}x{hw[1]} image")


__all__ = [
    "mask_rng", "IndexedMasks", "PatchMasks", "GaussianMasks", "RiseMasks", "GaussianBlobMasks",
    "SRiseMasks", "SRISE_PATCHES", "SuperpixelMasks", "sliding_positions", "xmaps_positions", "check_patch_fits",
]
