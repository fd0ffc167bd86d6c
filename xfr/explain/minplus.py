"""MinPlus (D. Mery, "True Black-Box Explanation in Facial Analysis", CVPRW 2022, §2) and AVG
(Mery & Morris, WACV 2022), exactly as Algorithms 1-4 and eqs. 5-13.

Removal (§2.2): X'_ij = X o (1 - G(sigma, i, j)) (eq. 5) on a grid of centres every d pixels;
H0-(i,j) = f(X) - f(X'_ij) (eq. 6, Algorithm 1); H1- (Algorithm 2, eq. 7) removes, iteration after
iteration, the part whose removal lowers the score most and records the score drop there.
Aggregation (§2.3): starting from a black image, X'_ij = X_{t-1} (+) (X o G(sigma, i, j))
(eq. 8, Algorithms 3-4); H0+(i,j) = f(X'_ij) - f(0) and H1+ records the score gain of the best
part added at each iteration. MinPlus = minmax(conv(mean of the four maps, G(sigma))) (eqs.
11-13); AVG smooths and scales each map first and then averages them.

Details the paper leaves open are taken from third-party public copies of the author's Colab code
(``minplus_utils.py`` / ``face_utils.py``, functions ``saliency_minus``, ``saliency_plus``,
``DefineGaussianMask``, ``MaskMultNeg``, ``heatmap``; e.g. in the GitHub repositories that pair
them with ArcFace for the MinPlus figures), read for parameters only:

- the paper's sigma ("width of Gaussian mask") is the side of a square window; the Gaussian inside
  it has standard deviation width / 8.5, peak 1, and is zero outside the window;
- defaults ``gsigma = 161``, ``d = 16``, ``tmax = 20``, ``dsc`` (theta) ``= 0.01`` on 256 x 256
  images; we scale width and d with the image (``default_width``, ``default_step``), so a 112 x 112
  face gets width 71 and d = 7: the same 15 x 15 grid of centres;
- grid centres are d, 2d, ... < N (``range(d, N, d)``);
- aggregation (+) is the screen blend A (+) B = 1 - (1 - A)(1 - B) (``MaskMultNeg``), so the first
  step is X o G (eq. 8) and later steps never exceed 1;
- H0- is the first iteration of Algorithm 2 (the same evaluations as Algorithm 1), H0+ the first
  iteration of Algorithm 4, as the reference computes them;
- eq. 12's kernel is the same window (width, std width / 8.5) with OpenCV's reflect-101 border.

H1(i*, j*) <- delta s is an assignment (Algorithms 2 and 4, line 26): a centre chosen again keeps
its latest delta s; the last iteration's delta s (the one that stops the loop) is recorded too.

Deviations: the aggregation starts from an exact black image as Algorithms 3-4 say (the reference
starts from random values in {0, 1/255}); every grid centre is evaluated at every iteration as
Algorithms 2 and 4 say (the reference skips centres whose pixel is already black); ties in the
arg-min / arg-max go to the first centre in raster order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from ..engine import ScoreFn, perturb
from .common import as_counting, base_score, check_float, check_int, gaussian_smooth, minmax, prepare
from .masks import GaussianMasks

REFERENCE_SIZE = 256  # image side of the reference parameters
REFERENCE_WIDTH = 161
REFERENCE_STEP = 16


def default_width(hw: tuple[int, int]) -> int:
    """The reference window width 161 (on 256 px) scaled to the image, rounded to an odd int."""
    w = int(round(REFERENCE_WIDTH * min(hw) / REFERENCE_SIZE))
    return max(3, w | 1)


def default_step(hw: tuple[int, int]) -> int:
    """The reference grid step d = 16 (on 256 px) scaled to the image."""
    return max(1, int(round(REFERENCE_STEP * min(hw) / REFERENCE_SIZE)))


@dataclass
class MinPlusMaps:
    """The four sparse partial maps of MinPlus (values only at the grid centres) and run info."""

    h0_minus: Tensor  # Algorithm 1 / eq. 6
    h1_minus: Tensor  # Algorithm 2 / eq. 7
    h0_plus: Tensor  # Algorithm 3 / eq. 9
    h1_plus: Tensor  # Algorithm 4 / eq. 10
    width: int
    step: int
    iterations_minus: int
    iterations_plus: int
    n_forward: int

    def as_list(self) -> list[Tensor]:
        return [self.h0_minus, self.h1_minus, self.h0_plus, self.h1_plus]


def _check(img: Tensor, width, step, theta, t_max):
    hw = (img.shape[1], img.shape[2])
    width = default_width(hw) if width is None else check_int(
        "width", width, 1, 2 * max(hw),
        hint=f"the Gaussian window (the paper's sigma) must fit the {hw[0]}x{hw[1]} image "
             f"(at most twice its size)")
    step = default_step(hw) if step is None else check_int(
        "step", step, 1, min(hw) - 1,
        hint=f"the grid step d must leave at least one centre inside the {hw[0]}x{hw[1]} image")
    if theta != -float("inf"):  # -inf: never stop before t_max
        theta = check_float("theta", theta, -float("inf"))
    t_max = check_int("t_max", t_max, 1)
    return hw, width, step, theta, t_max


def grid_centers(hw: tuple[int, int], step: int) -> np.ndarray:
    """Centres (i, j) = (d, 2d, ... < N) x (d, 2d, ... < M) in raster order -> [K, 2]."""
    ys, xs = np.arange(step, hw[0], step), np.arange(step, hw[1], step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _first_arg(values: Tensor, largest: bool) -> int:
    target = values.max() if largest else values.min()
    return int(torch.nonzero(values == target)[0, 0])


def removal_maps(f: ScoreFn, image: Tensor, width: int | None = None, step: int | None = None,
                 theta: float = 0.01, t_max: int = 20, batch_size: int = 64,
                 progress: bool = False) -> tuple[Tensor, Tensor, int]:
    """Algorithms 1 and 2: (H0-, H1-, iterations). Forward passes: 1 + iterations x grid size."""
    img = prepare(image)
    hw, width, step, theta, t_max = _check(img, width, step, theta, t_max)
    cf = as_counting(f)
    centers = grid_centers(hw, step)
    # keep 1 - G: X o (1 - G), eq. 5; built once for every iteration
    masks = GaussianMasks(hw, centers, width, invert=True).all()
    h0 = torch.zeros(hw, dtype=torch.float64)
    h1 = torch.zeros(hw, dtype=torch.float64)
    x_t = img
    s_prev = base_score(cf, img)  # s_0
    delta, t = 1.0, 0
    while delta > theta and t < t_max:
        t += 1
        scores = perturb(cf, x_t, masks, fill=0.0, batch_size=batch_size, progress=progress,
                         desc=f"minplus removal t={t}").scores.to(torch.float64)
        if t == 1:
            h0[centers[:, 0], centers[:, 1]] = s_prev - scores  # eq. 6
        k = _first_arg(scores, largest=False)
        x_t = x_t * masks[k:k + 1][0]
        delta = float(s_prev - scores[k])  # s_{t-1} - s_t
        h1[centers[k, 0], centers[k, 1]] = delta
        s_prev = float(scores[k])
    return h0.float(), h1.float(), t


def screen(a: Tensor, b: Tensor) -> Tensor:
    """The aggregation A (+) B = 1 - (1 - A)(1 - B) of the reference code (``MaskMultNeg``)."""
    return 1.0 - (1.0 - a) * (1.0 - b)


def aggregation_maps(f: ScoreFn, image: Tensor, width: int | None = None, step: int | None = None,
                     theta: float = 0.01, t_max: int = 20, batch_size: int = 64,
                     progress: bool = False) -> tuple[Tensor, Tensor, int]:
    """Algorithms 3 and 4: (H0+, H1+, iterations). Forward passes: 1 + iterations x grid size.

    X_{t-1} (+) (X o G) = X_{t-1} + G (X (+) X_{t-1} - X_{t-1}), i.e. the engine's keep-mask
    convention with mask G, image X (+) X_{t-1} and fill X_{t-1}.
    """
    img = prepare(image)
    hw, width, step, theta, t_max = _check(img, width, step, theta, t_max)
    cf = as_counting(f)
    centers = grid_centers(hw, step)
    masks = GaussianMasks(hw, centers, width, invert=False).all()  # G, built once for every iteration
    h0 = torch.zeros(hw, dtype=torch.float64)
    h1 = torch.zeros(hw, dtype=torch.float64)
    x_t = torch.zeros_like(img)  # X_0 = Z, a black image
    s_prev = base_score(cf, x_t)  # s_0
    s_zero = s_prev
    delta, t = 1.0, 0
    while delta > theta and t < t_max:
        t += 1
        scores = perturb(cf, screen(x_t, img), masks, fill=x_t, batch_size=batch_size,
                         progress=progress, desc=f"minplus aggregation t={t}").scores
        scores = scores.to(torch.float64)
        if t == 1:
            h0[centers[:, 0], centers[:, 1]] = scores - s_zero  # Algorithm 3, line 14
        k = _first_arg(scores, largest=True)
        x_t = screen(x_t, img * masks[k:k + 1][0])
        delta = float(scores[k] - s_prev)  # s_t - s_{t-1}
        h1[centers[k, 0], centers[k, 1]] = delta
        s_prev = float(scores[k])
    return h0.float(), h1.float(), t


def minplus_maps(f: ScoreFn, image: Tensor, width: int | None = None, step: int | None = None,
                 theta: float = 0.01, t_max: int = 20, batch_size: int = 64,
                 progress: bool = False) -> MinPlusMaps:
    """The four partial maps H0-, H1-, H0+, H1+ (Algorithms 1-4) of one image."""
    img = prepare(image)
    hw, width, step, theta, t_max = _check(img, width, step, theta, t_max)
    cf = as_counting(f)
    before = cf.n_forward
    h0m, h1m, tm = removal_maps(cf, img, width, step, theta, t_max, batch_size, progress)
    h0p, h1p, tp = aggregation_maps(cf, img, width, step, theta, t_max, batch_size, progress)
    return MinPlusMaps(h0m, h1m, h0p, h1p, width, step, tm, tp, cf.n_forward - before)


def combine_minplus(maps: MinPlusMaps) -> Tensor:
    """Eqs. 11-13: average the four maps, smooth with G(sigma), scale to [0, 1]."""
    h_bar = cast(Tensor, sum(m.to(torch.float64) for m in maps.as_list()) / 4.0)  # eq. 11
    return minmax(gaussian_smooth(h_bar, maps.width))  # eqs. 12, 13


def combine_avg(maps: MinPlusMaps) -> Tensor:
    """AVG (Mery & Morris 2022, as MinPlus §2.4 describes it): smooth and scale each of the four
    maps, then average the scaled maps."""
    scaled = [minmax(gaussian_smooth(m, maps.width)).to(torch.float64) for m in maps.as_list()]
    return (sum(scaled) / 4.0).float()


def minplus(f: ScoreFn, image: Tensor, width: int | None = None, step: int | None = None,
            theta: float = 0.01, t_max: int = 20, batch_size: int = 64,
            progress: bool = False) -> Tensor:
    """MinPlus saliency map [H, W] (float32, in [0, 1]); see the module docstring."""
    return combine_minplus(minplus_maps(f, image, width, step, theta, t_max, batch_size, progress))


def avg(f: ScoreFn, image: Tensor, width: int | None = None, step: int | None = None,
        theta: float = 0.01, t_max: int = 20, batch_size: int = 64,
        progress: bool = False) -> Tensor:
    """AVG saliency map [H, W] (float32, in [0, 1]) from the same four partial maps."""
    return combine_avg(minplus_maps(f, image, width, step, theta, t_max, batch_size, progress))
