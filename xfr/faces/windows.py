"""Windows around a detected face: the square context window a detection is explained in (MinPlus
§3.3-3.4: the detector sees the face with its surroundings, cut from the full-resolution photo and
resized), and boxes mapped between photo and window pixels."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_to(image: Tensor, hw: tuple[int, int]) -> Tensor:
    shrink = hw[0] < image.shape[1] or hw[1] < image.shape[2]
    return F.interpolate(image[None], size=tuple(int(v) for v in hw), mode="bilinear",
                         align_corners=False, antialias=shrink)[0].clamp(0, 1)


def downscale(image: Tensor, max_side: int) -> tuple[Tensor, float]:
    """The image with its long side at most ``max_side`` px, and the scale applied (<= 1)."""
    h, w = image.shape[1:]
    s = min(1.0, float(max_side) / max(h, w))
    if s >= 1.0:
        return image, 1.0
    return resize_to(image, (max(1, round(h * s)), max(1, round(w * s)))), s


def square_window(box: Sequence[float], context: float, hw: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Integer (x1, y1, x2, y2) of a square of side ``context`` x the box's longer side, centred
    on the box and shifted to lie inside an image of size ``hw`` (clipped when the image is
    smaller than the square)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box}")
    if context <= 0:
        raise ValueError(f"context must be > 0, got {context}")
    h, w = hw
    side = int(round(context * max(x2 - x1, y2 - y1)))
    side = max(1, min(side, h, w))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    left = min(max(left, 0), w - side)
    top = min(max(top, 0), h - side)
    return left, top, left + side, top + side


def map_box(box: Sequence[float] | Tensor, rect: Sequence[int], size: int) -> Tensor:
    """A box in photo pixels -> pixels of the window ``rect`` resized to ``size`` x ``size``."""
    x1, y1, x2, y2 = rect
    s = size / float(x2 - x1)
    b = torch.as_tensor(box, dtype=torch.float32)
    return (b - torch.tensor([x1, y1, x1, y1], dtype=torch.float32)) * s
