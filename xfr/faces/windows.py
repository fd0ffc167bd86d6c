"""Windows around a detected face: the square context window a detection is explained in (MinPlus
§3.3-3.4: the detector sees the face with its surroundings, cut from the full-resolution photo and
resized), and boxes mapped between photo and window pixels."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.base import box_mask
from ..score import box_iou


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


@dataclass
class FaceWindow:
    """One face to explain: the window image and the detection in it."""

    name: str  # "<photo>#<k>"
    photo: str
    window: Tensor  # [3, S, S] in [0, 1]
    box: Tensor  # [4] the MTCNN detection in the window (x1, y1, x2, y2), window pixels
    prob: float  # its score f(window)
    rect: tuple[int, int, int, int]  # window in photo pixels
    photo_box: Tensor  # [4] the detection in the photo (photo pixels)
    iou_photo_window: float  # IoU of the window detection with the photo detection, mapped

    @property
    def box_fraction(self) -> float:
        """Share of the window inside the box: the AP of an uninformative (constant) map."""
        return float(box_mask(self.box.numpy(), tuple(self.window.shape[1:])).mean())


def face_windows(photo: str, image: Tensor, detector, faces_per_photo: int = 2,
                 detect_side: int = 512, context: float = 2.5, window_size: int = 96,
                 min_prob: float = 0.95, min_iou: float = 0.5) -> tuple[list[FaceWindow], Tensor]:
    """The ``faces_per_photo`` largest faces MTCNN finds in ``photo`` (detected on a copy with
    long side ``detect_side``; probability >= ``min_prob``), each as a :class:`FaceWindow`: the
    square window around it cut from the full-resolution photo, resized, and detected again
    (the window detection overlapping the mapped photo box with IoU >= ``min_iou``; faces whose
    window has none are dropped). Also returns the photo detections' boxes (photo pixels)."""
    small, s = downscale(image, detect_side)
    det = detector.detect(small)[0]
    keep = det.probs >= min_prob
    boxes, probs = det.boxes[keep] / s, det.probs[keep]
    if len(boxes):
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = torch.argsort(-areas, stable=True)
        boxes, probs = boxes[order], probs[order]
    out = []
    for k in range(min(int(faces_per_photo), len(boxes))):
        fw = window_for_box(detector, image, boxes[k], context, window_size, min_iou,
                            name=f"{photo}#{k}", photo=photo)
        if fw is not None:
            out.append(fw)
    return out, boxes


def window_for_box(detector, image: Tensor, box: Sequence[float] | Tensor, context: float = 2.5,
                   window_size: int = 96, min_iou: float = 0.5, name: str = "", photo: str = "") -> FaceWindow | None:
    """The detection ``box`` (photo pixels) of ``image`` as a :class:`FaceWindow`: the square of
    ``context`` x the box's longer side around it, cut from the full-resolution photo and resized
    to ``window_size``, and the detector's box in it (the window detection overlapping the mapped
    box with IoU >= ``min_iou``); None when the detector finds no such face in the window.

    This is where a detection is explained (detection stage, ``xfr explain --task detection``):
    every perturbed image is a window, not the whole photo. The MinPlus paper explains MTCNN and
    YOLOv5s detections on images that show the face with some surroundings (its Figs. 5-6) but does
    not say how they were cut; 2.5x the box at 96 px keeps the face and its context while the
    detector runs on a few thousand pixels instead of the whole photo."""
    box_t = torch.as_tensor(box, dtype=torch.float32).reshape(4)
    rect = square_window(box_t.tolist(), context, tuple(image.shape[1:]))
    x1, y1, x2, y2 = rect
    window = resize_to(image[:, y1:y2, x1:x2], (window_size, window_size))
    expected = map_box(box_t, rect, window_size)
    wdet = detector.detect(window)[0]
    if len(wdet) == 0:
        return None
    ious = box_iou(wdet.boxes, expected)
    j = int(torch.argmax(ious))
    if float(ious[j]) < min_iou:
        return None
    return FaceWindow(name, photo, window, wdet.boxes[j].clone(), float(wdet.probs[j]), rect,
                      box_t.clone(), float(ious[j]))
