"""The metric registry: every metric's name, direction (higher is better?) and where it lives.

Quantus-style: each metric declares whether a higher value is better, once, with the decorator
:func:`declares` on the function that computes it, so that tables and ``dvc metrics diff`` can be
read without knowing the papers. :data:`METRICS` holds the function objects.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    function: Callable  # the function that computes it
    field: str  # attribute of the function's result holding the per-image value
    paper: str  # where it is defined


# name -> MetricInfo; filled by the @declares decorators of the metric modules, which importing
# any of xfr.metrics (the package imports them all) runs.
METRICS: dict[str, MetricInfo] = {}


def declares(name: str, *, higher: bool, field: str, paper: str) -> Callable[[F], F]:
    """Decorator: register one value that the function computes (its result's ``field``) as the
    metric ``name`` with its direction, once, here. Stack it for functions that compute several
    values (a deletion curve gives a flip fraction and an AUC). The function gets
    ``fn.directions`` (field -> higher is better) and, when all its values point the same way,
    ``fn.higher_is_better``."""

    def wrap(fn: F) -> F:
        if name in METRICS and METRICS[name].function is not fn:
            raise ValueError(f"metric {name!r} is declared twice")
        METRICS[name] = MetricInfo(name, higher, fn, field, paper)
        directions = {**getattr(fn, "directions", {}), field: higher}
        fn.directions = directions  # type: ignore[attr-defined]
        if len(set(directions.values())) == 1:
            fn.higher_is_better = higher  # type: ignore[attr-defined]
        elif hasattr(fn, "higher_is_better"):
            del fn.higher_is_better  # type: ignore[attr-defined]
        return fn

    return wrap


def higher_is_better(name: str) -> bool:
    """Whether a higher value of the named metric (see :data:`METRICS`) is better."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name].higher_is_better


# ----------------------------------------------------------------------------- input helpers
def as_map(x, name: str = "saliency", ndim: int = 2) -> np.ndarray:
    """A finite float64 numpy array of ``ndim`` dims from a tensor/array ([1,H,W] squeezed)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def as_region(region, shape: tuple[int, int], name: str = "region") -> np.ndarray:
    """A boolean [H,W] region from a mask (array/tensor) or a box ``(x1, y1, x2, y2)``."""
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    r = np.asarray(region)
    if r.shape == (4,) and shape != (4,):
        return box_mask(r, shape)
    while r.ndim > 2 and r.shape[0] == 1:
        r = r[0]
    if r.shape != tuple(shape):
        raise ValueError(f"{name} mask has shape {r.shape}, expected {tuple(shape)} "
                         "(or pass a box (x1, y1, x2, y2))")
    return r.astype(bool)


def box_mask(box, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean [H,W] mask of the pixels whose centres lie in ``box = (x1, y1, x2, y2)``.

    Coordinates are in pixels with the image's top-left corner at (0, 0) (x = column, y = row),
    so the integer box (10, 20, 30, 40) covers columns 10..29 and rows 20..39.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, got {box}")
    h, w = shape
    cols = np.arange(w) + 0.5
    rows = np.arange(h) + 0.5
    return ((rows[:, None] >= y1) & (rows[:, None] <= y2)) & ((cols[None] >= x1) & (cols[None] <= x2))


EmbedFn = Callable[[torch.Tensor], torch.Tensor]  # images [N,3,H,W] in [0,1] -> embeddings [N,D]


def embed_batches(embed_fn: EmbedFn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """L2-normalized embeddings [N,D] (float32, CPU) of ``images`` by ``embed_fn``, ``batch_size``
    images per call, without gradients (the inpainting game and the item-response curves)."""
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            e = embed_fn(chunk)
            if not isinstance(e, torch.Tensor) or e.dim() != 2 or e.shape[0] != len(chunk):
                raise ValueError("embed_fn must map images [N,3,H,W] to embeddings [N,D]")
            out.append(F.normalize(e.float().cpu(), dim=1))
    return torch.cat(out)
