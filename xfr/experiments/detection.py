"""Face-detection experiments of MinPlus (Mery 2022, §3.3 Fig. 5, and the AP-vs-box metric of
§3.4 / Table 1) with MTCNN on in-the-wild photos (notebook ``notebooks/detection.ipynb``).

Each explained face is the MTCNN detection of a face in a square window around it (``context``
times the face box, cut from the full-resolution photo and resized to ``window_size`` pixels); the
score is eq. 4, f(X) = score of the detection of X that overlaps the given box with IoU >= 0.5, 0
when none does (:func:`xfr.score.detection_score`). The maps are compared with that box: AP of the
thresholded map (:func:`xfr.metrics.box_ap`) and the pointing game.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from ..data import DATA_DIR
from ..faces.windows import downscale, map_box, resize_to, square_window
from ..io import load_image, to_tensor
from ..metrics.base import box_mask
from ..score import box_iou
from ..viz import draw_box

WILD_DIR = DATA_DIR / "wild_photos" / "imgs"


# ----------------------------------------------------------------------------- photos
def sample_photo_path(name: str) -> Path | None:
    """Files of the sample photos that registry packages ship: ``grace_hopper`` (matplotlib),
    ``t1`` and ``Tom_Hanks_54745`` (insightface); None when the package (or file) is missing."""
    try:
        if name == "grace_hopper":
            import matplotlib

            p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        elif name in ("t1", "Tom_Hanks_54745"):
            import importlib.util

            spec = importlib.util.find_spec("insightface")
            if spec is None or not spec.submodule_search_locations:
                return None
            base = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
            p = base / ("t1.jpg" if name == "t1" else "Tom_Hanks_54745.png")
        else:
            return None
    except ImportError:
        return None
    return p if p.is_file() else None


def load_photo(name: str, wild_dir: Path = WILD_DIR) -> Tensor:
    """A photo as float RGB [3,H,W]: ``astronaut`` (scikit-image), ``grace_hopper``, ``t1``,
    ``Tom_Hanks_54745`` (package sample photos) or a file name in ``data/wild_photos/imgs``.
    Raises FileNotFoundError naming where it looked."""
    if name == "astronaut":
        from skimage import data

        return to_tensor(data.astronaut())
    p = sample_photo_path(name)
    if p is not None:
        return load_image(p)
    if name in ("grace_hopper", "t1", "Tom_Hanks_54745"):
        raise FileNotFoundError(f"sample photo {name!r} not found: its package (matplotlib / "
                                f"insightface) is not installed or lacks the file")
    path = Path(wild_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"photo {name!r} not found in {wild_dir} (run `python -m xfr.data` "
                                f"to assemble data/)")
    return load_image(path)


# ----------------------------------------------------------------------------- windows


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
        rect = square_window(boxes[k].tolist(), context, tuple(image.shape[1:]))
        x1, y1, x2, y2 = rect
        window = resize_to(image[:, y1:y2, x1:x2], (window_size, window_size))
        expected = map_box(boxes[k], rect, window_size)
        wdet = detector.detect(window)[0]
        if len(wdet) == 0:
            continue
        ious = box_iou(wdet.boxes, expected)
        j = int(torch.argmax(ious))
        if float(ious[j]) < min_iou:
            continue
        out.append(FaceWindow(f"{photo}#{k}", photo, window, wdet.boxes[j].clone(),
                              float(wdet.probs[j]), rect, boxes[k].clone(), float(ious[j])))
    return out, boxes


# ----------------------------------------------------------------------------- metrics


# ----------------------------------------------------------------------------- figures


def fig_photos(photos: Sequence[tuple[str, Tensor, Tensor, Sequence[FaceWindow]]], path,
               max_side: int = 400):
    """The photos with every MTCNN face (thin white) and the explained windows (yellow)."""
    from ..viz import image_panel, side_by_side

    row = []
    for name, image, boxes, faces in photos:
        small, s = downscale(image, max_side)
        rgb = image_panel(small)
        for b in boxes:
            rgb = draw_box(rgb, (b * s).tolist(), (255, 255, 255))
        for fw in faces:
            rgb = draw_box(rgb, [v * s for v in fw.rect], (255, 220, 0))
        row.append((f"{name}: {len(boxes)} faces, {len(faces)} explained", rgb))
    return side_by_side([row], path, title="MTCNN detections (white) and explained windows (yellow)",
                        panel_inches=3.0)


def fig_detection(faces: Sequence[FaceWindow], results: Sequence[dict], scores: pd.DataFrame, path,
                  title: str, scale: int = 2):
    """MinPlus Fig. 5 layout: per face the window with its detection box, then each method's map
    over it with the box, titled with AP, pointing game, forward passes and seconds."""
    from ..report import label
    from ..viz import image_panel, overlay, side_by_side, upscale

    panels = []
    for fw, res in zip(faces, results):
        row = [(f"{fw.name}\nMTCNN score {fw.prob:.3f}",
                draw_box(upscale(image_panel(fw.window), scale), fw.box.tolist(), scale=scale))]
        for name, t in res.items():
            sc = scores[(scores.face == fw.name) & (scores.method == label(name))].iloc[0]
            hit = "hit" if sc.pointing_game == 1 else "miss"
            cap = (f"{label(name)} AP {sc.ap:.2f} {hit}\n"
                   f"{t.n_forward} passes, {t.seconds:.0f}s")
            row.append((cap, draw_box(upscale(overlay(fw.window, t.map), scale), fw.box.tolist(),
                                      scale=scale)))
        panels.append(row)
    return side_by_side(panels, path, title=title)
