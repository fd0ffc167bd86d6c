"""Occlusion sensitivity (Zeiler & Fergus 2014; survey §2, "occlusion"): slide an occluder over
the image and record how much the score drops.

For occluders w_k (1 inside the patch) the map is the occluder-weighted mean of the drops,

    map(p) = sum_k (f(X) - f(X_k)) w_k(p) / sum_k w_k(p),   X_k = (1 - w_k) X + w_k fill,

which, for square patches and a constant fill, is exactly captum's ``Occlusion`` with
``sliding_window_shapes=(C, patch, patch)``, ``strides=(C, stride, stride)`` and that baseline
(same window positions: ceil((H - patch) / stride) + 1 per axis, the last one clipped).
"""
from __future__ import annotations

from torch import Tensor

from ..engine import Fill, ScoreFn, perturb
from .common import WeightedMaskSum, as_counting, base_score, check_float, check_int, prepare
from .masks import PatchMasks, check_patch_fits, sliding_positions


def occlusion(
    f: ScoreFn,
    image: Tensor,
    patch: int = 16,
    stride: int = 8,
    fill: Fill = 0.0,
    shape: str = "square",
    std: float | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """Occlusion map [H, W] (float32): mean score drop of the occluders covering each pixel.

    ``shape="square"``: ``patch`` x ``patch`` squares; ``shape="gaussian"``: Gaussians of
    standard deviation ``std`` (default patch / 4) centred in those squares. ``stride`` must not
    exceed ``patch`` (every pixel must be covered by some occluder).
    """
    img = prepare(image)
    hw = (img.shape[1], img.shape[2])
    patch = check_patch_fits("patch", patch, hw)
    stride = check_int("stride", stride, 1, patch,
                       hint=f"a stride larger than the patch ({patch}) leaves pixels unexplained")
    if shape not in ("square", "gaussian"):
        raise ValueError(f"shape must be 'square' or 'gaussian', got {shape!r}")
    if std is not None:
        std = check_float("std", std, 0.0, low_open=True)
    masks = PatchMasks(hw, sliding_positions(hw[0], patch, stride),
                       sliding_positions(hw[1], patch, stride), patch, kind=shape, std=std)
    cf = as_counting(f)
    s0 = base_score(cf, img)
    acc = WeightedMaskSum(hw, transform=lambda m: 1.0 - m, weight=lambda s: s0 - s, count=True)
    perturb(cf, img, masks, fill=fill, batch_size=batch_size, progress=progress, on_batch=acc,
            desc="occlusion")
    return acc.weighted_average().float()
