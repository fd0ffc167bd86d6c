"""Synthetic occluders placed from 5 face landmarks (MTCNN order: eyes, nose, mouth corners):
a surgical mask and sunglasses (S-RISE Fig. 5, :func:`occlude`), the eye band and the
cut-and-paste of X-Maps Fig. 5 (:func:`eye_region`, :func:`cut_and_paste`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine import check_image


def _polygon_alpha(hw: tuple[int, ...], shapes: Sequence[tuple[str, list]], supersample: int = 4
                   ) -> Tensor:
    """Anti-aliased coverage [H, W] in [0, 1] of polygons / ellipses given in pixel coordinates
    (pixel centres at integers): ("polygon", [(x, y), ...]) or ("ellipse", [cx, cy, rx, ry])."""
    from PIL import Image, ImageDraw

    h, w = hw
    k = supersample
    canvas = Image.new("L", (w * k, h * k), 0)
    draw = ImageDraw.Draw(canvas)
    to = lambda x, y: ((x + 0.5) * k, (y + 0.5) * k)  # noqa: E731
    for kind, spec in shapes:
        if kind == "polygon":
            draw.polygon([to(x, y) for x, y in spec], fill=255)
        elif kind == "ellipse":
            cx, cy, rx, ry = spec
            x0, y0 = to(cx - rx, cy - ry)
            x1, y1 = to(cx + rx, cy + ry)
            draw.ellipse([x0, y0, x1, y1], fill=255)
        else:
            raise ValueError(f"unknown shape {kind!r}")
    arr = np.asarray(canvas, dtype=np.float64).reshape(h, k, w, k).mean(axis=(1, 3)) / 255.0
    return torch.from_numpy(arr).float()


def _face_frame(landmarks: np.ndarray):
    """Eye centre, eye distance, unit 'right' (along the eyes) and 'down' vectors, and the
    distances of the nose and the mouth below the eyes, from 5 MTCNN landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eyes = lm[:2][np.argsort(lm[:2, 0])]
    mouth = lm[3:5]
    eye_c = eyes.mean(0)
    right = eyes[1] - eyes[0]
    eye_dist = float(np.linalg.norm(right))
    if eye_dist <= 0:
        raise ValueError("degenerate landmarks: both eyes at the same place")
    right = right / eye_dist
    down = np.array([-right[1], right[0]])
    if down @ (mouth.mean(0) - eye_c) < 0:
        down = -down
    nose_d = float((lm[2] - eye_c) @ down)
    mouth_d = float((mouth.mean(0) - eye_c) @ down)
    return eye_c, eye_dist, right, down, nose_d, mouth_d


def surgical_mask_alpha(hw: tuple[int, ...], landmarks: np.ndarray) -> Tensor:
    """Coverage [H, W] of a surgical-mask-like polygon over nose and mouth, placed from the 5
    landmarks: from halfway between the eyes and the nose tip down to about the chin, as wide as
    the face (1.05 eye distances on each side of the face's centre line)."""
    c, e, r, d, nose_d, mouth_d = _face_frame(landmarks)
    top = 0.45 * nose_d
    chin = mouth_d + 0.95 * e
    pts = [(-1.05, top + 0.06 * e), (-0.5, top), (0.0, top - 0.06 * e), (0.5, top),
           (1.05, top + 0.06 * e), (1.1, mouth_d), (0.7, chin - 0.15 * e), (0.0, chin),
           (-0.7, chin - 0.15 * e), (-1.1, mouth_d)]
    poly = [tuple(c + u * e * r + v * d) for u, v in pts]
    return _polygon_alpha(hw, [("polygon", poly)])


def sunglasses_alpha(hw: tuple[int, ...], landmarks: np.ndarray) -> Tensor:
    """Coverage [H, W] of sunglasses: an ellipse over each eye (0.45 x 0.3 eye distances) and a
    bridge between them."""
    c, e, r, d, _, _ = _face_frame(landmarks)
    lm = np.asarray(landmarks, dtype=np.float64)
    shapes = [("ellipse", [float(x), float(y), 0.45 * e, 0.3 * e]) for x, y in lm[:2]]
    bridge = [c + s * 0.3 * e * r + t * 0.05 * e * d for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    shapes.append(("polygon", [tuple(p) for p in bridge]))
    return _polygon_alpha(hw, shapes)


def paste(image: Tensor, alpha: Tensor, colour: Sequence[float] | Tensor) -> Tensor:
    """``image`` with ``colour`` (an RGB triple or an image [3,H,W]) pasted where ``alpha`` > 0:
    alpha * colour + (1 - alpha) * image."""
    img = check_image(image)
    col = torch.as_tensor(colour, dtype=img.dtype)
    if col.dim() == 1:
        col = col[:, None, None]
    return (alpha[None] * col + (1 - alpha[None]) * img).clamp(0, 1)


def occlude(image: Tensor, landmarks: np.ndarray, kind: str) -> tuple[Tensor, Tensor]:
    """(occluded image, occluder coverage) for ``kind`` "mask" (light-blue surgical mask) or
    "sunglasses" (near-black)."""
    hw = tuple(image.shape[-2:])
    if kind == "mask":
        alpha = surgical_mask_alpha(hw, landmarks)
        return paste(image, alpha, (0.62, 0.78, 0.92)), alpha
    if kind == "sunglasses":
        alpha = sunglasses_alpha(hw, landmarks)
        return paste(image, alpha, (0.06, 0.06, 0.07)), alpha
    raise ValueError(f"occluder kind must be 'mask' or 'sunglasses', got {kind!r}")


def eye_region(hw: tuple[int, int], landmarks: np.ndarray) -> Tensor:
    """Binary [H, W] band around both eyes (0.6 eye distances beyond each eye, 0.35 above and
    below), the region cut and pasted in X-Maps Fig. 5 a)."""
    c, e, r, d, _, _ = _face_frame(landmarks)
    pts = [c + u * e * r + v * e * d for u, v in ((-1.1, -0.35), (1.1, -0.35), (1.1, 0.35),
                                                   (-1.1, 0.35))]
    return (_polygon_alpha(hw, [("polygon", [tuple(p) for p in pts])], supersample=1) > 0.5).float()


def cut_and_paste(target: Tensor, source: Tensor, region: Tensor) -> Tensor:
    """X-Maps §4.3: ``target`` with the co-located ``region`` (binary [H, W]) copied from
    ``source`` (aligned chips of the same size)."""
    t, s = check_image(target), check_image(source)
    if t.shape != s.shape:
        raise ValueError(f"target {tuple(t.shape)} and source {tuple(s.shape)} differ in shape")
    return torch.where(region[None] > 0.5, s, t)
