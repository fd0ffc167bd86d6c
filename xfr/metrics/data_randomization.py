"""Data randomization test (Adebayo et al. 2018, survey §2.5): the maps of a model trained on the
true labels compared, image by image, with those of the same architecture trained on randomly
permuted labels (:func:`xfr.models.small_cnn.train_expression_cnn`, ``shuffle_labels=True``).
A method that explains what the model learned gives dissimilar maps (low values pass the test);
similar maps mean the method shows the image (edges), not the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import as_map, declares
from .randomization import map_ssim
from .stability import spearman


@dataclass
class MapSimilarity:
    """Per item: Spearman rank correlation of the signed maps, of their absolute values (Adebayo
    et al. report both: gradient signs flip between models), and SSIM of the min-max scaled maps."""

    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray


def _items(maps, name: str) -> list[np.ndarray]:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().double().numpy()
    if isinstance(maps, np.ndarray):
        if maps.ndim == 2:
            return [maps]
        if maps.ndim == 3:
            return list(maps)
        raise ValueError(f"{name} must be [H,W] or [N,H,W], got shape {maps.shape}")
    return list(maps)


@declares("data_randomization_spearman", higher=False, field="spearman",
          paper="survey §2.5 (Adebayo et al. 2018): true-label vs random-label map rank correlation")
@declares("data_randomization_ssim", higher=False, field="ssim",
          paper="survey §2.5 (Adebayo et al. 2018): true-label vs random-label map SSIM")
def map_similarity(maps_a, maps_b) -> MapSimilarity:
    """Per-item similarity of two stacks of maps [N,H,W] (or single [H,W] maps):
    :func:`xfr.metrics.spearman` of the maps and of their absolute values, and
    :func:`xfr.metrics.map_ssim`. NaN Spearman where a map is constant. Lower = the explanation
    depends more on the labels (passes the data randomization test)."""
    a, b = _items(maps_a, "maps_a"), _items(maps_b, "maps_b")
    if len(a) != len(b):
        raise ValueError(f"{len(a)} maps in maps_a but {len(b)} in maps_b")
    rho, rho_abs, ssim = [], [], []
    for k, (x, y) in enumerate(zip(a, b)):
        x, y = as_map(x, f"maps_a[{k}]"), as_map(y, f"maps_b[{k}]")
        if x.shape != y.shape:
            raise ValueError(f"maps_a[{k}] has shape {x.shape}, maps_b[{k}] {y.shape}")
        rho.append(spearman(x, y))
        rho_abs.append(spearman(np.abs(x), np.abs(y)))
        ssim.append(map_ssim(x, y))
    return MapSimilarity(np.array(rho), np.array(rho_abs), np.array(ssim))


__all__ = ["MapSimilarity", "map_similarity"]
