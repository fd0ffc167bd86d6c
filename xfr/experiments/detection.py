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

import pandas as pd
from torch import Tensor

from ..faces.windows import FaceWindow, downscale
from ..viz import draw_box

# ----------------------------------------------------------------------------- photos


# ----------------------------------------------------------------------------- windows


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
