"""Masked-face detection of MinPlus (Mery 2022, §3.4, Figs. 6-7, Table 1): a YOLO detector of
three classes of faces (with mask, without mask, mask worn incorrectly) trained on the Kaggle
face-mask data set (stages ``mask_data``, :mod:`xfr.experiments.mask_data`, and ``mask_train``,
:mod:`xfr.experiments.mask_train`), whose "with mask" detections are explained and scored by the
AP of the thresholded saliency map against the detected box: the helpers of
``notebooks/masks.ipynb`` (stage ``masks``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .mask_data import CLASS_LABELS, CLASSES, DATASET_YAML, IMAGE_SUFFIXES, SPLITS

# ----------------------------------------------------------------------------- VOC -> YOLO


# ----------------------------------------------------------------------------- stages




# ----------------------------------------------------------------------------- notebook helpers
def dataset_root(results_root: str | Path) -> Path:
    """``<results_root>/mask_data/yolo``, checked (the ``mask_data`` stage's output)."""
    root = Path(results_root) / "mask_data" / "yolo"
    if not (root / DATASET_YAML).is_file():
        raise FileNotFoundError(f"no YOLO face-mask data set at {root}: run the data stage first "
                                f"(`dvc repro mask_data` or `python -m xfr.experiments.mask_data "
                                f"--out-root {results_root}`)")
    return root


def split_images(root: str | Path, split: str) -> list[Path]:
    """The image files of ``split`` in the YOLO data set ``root``, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(root) / "images" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (is {root} a YOLO data set written by `prepare`?)")
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def ground_truth(image_path: str | Path, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The labels of an image of the YOLO data set (``images/<split>/X.jpg`` ->
    ``labels/<split>/X.txt``) as pixel boxes [K,4] (x1, y1, x2, y2) and classes [K]."""
    image_path = Path(image_path)
    label = image_path.parent.parent.parent / "labels" / image_path.parent.name / f"{image_path.stem}.txt"
    rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
    h, w = hw
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.as_tensor(rows[:, 0]).long()


def detections_at(detector, imgsz: int, conf: float = 0.001):
    """images [N,3,H,W] -> [(boxes, scores, classes)] of the ultralytics ``detector`` predicting at
    ``imgsz`` (letterboxed; boxes in the images' pixels), confidence floor ``conf``: the
    detection function f_d of eq. 4 that :func:`xfr.score.detection_score` reads."""
    from ..score import yolo_detections

    return yolo_detections(detector, conf=float(conf), imgsz=int(imgsz))


@dataclass
class MaskFace:
    """One detection to explain: the window image around it and the detection in the window."""

    name: str  # "<image stem>#<class>"
    image: str  # image file name
    cls: int
    class_name: str
    window: Tensor  # [3, S, S] in [0, 1]
    box: Tensor  # [4] the box explained, window pixels
    score: float  # f(window): the detection score of that box and class
    rect: tuple[int, int, int, int]  # the window in image pixels
    image_box: Tensor  # [4] the detection (or ground-truth box) in the image
    image_score: float  # its score on the whole image (nan for a ground-truth box)
    source: str  # "detection" or "ground truth"

    @property
    def box_fraction(self) -> float:
        """Share of the window inside the box: the AP of an uninformative (constant) map."""
        from ..metrics.base import box_mask

        return float(box_mask(self.box.numpy(), tuple(self.window.shape[1:])).mean())


def mask_window(name: str, image: Tensor, image_box: Tensor, cls: int, window_detect,
                context: float = 2.5, window_size: int = 96, min_iou: float = 0.5,
                image_score: float = float("nan"), source: str = "ground truth",
                fallback_iou: float | None = None) -> MaskFace | None:
    """The square window of ``context`` x the box's longer side around ``image_box`` (cut from
    the image, resized to ``window_size``) and the detection of class ``cls`` in it
    (``window_detect``: images -> detections) overlapping the mapped box with IoU >= ``min_iou``
    (the highest-scoring such one; its box is the one explained). None when there is none —
    unless ``fallback_iou`` is given: then the mapped box itself is kept (for ground-truth boxes
    the detector misses) with the score eq. 4 gives it at IoU >= ``fallback_iou``, and None only
    when that score is 0. ``source`` labels such a kept box (a matched detection is labelled
    "detection")."""
    from ..faces.windows import map_box, resize_to, square_window
    from ..score import box_iou

    rect = square_window(image_box.tolist(), context, tuple(image.shape[1:]))
    x1, y1, x2, y2 = rect
    window = resize_to(image[:, y1:y2, x1:x2], (window_size, window_size))
    expected = map_box(image_box, rect, window_size)
    boxes, scores, classes = window_detect(window[None])[0]
    ok = (classes.reshape(-1) == int(cls)) if len(boxes) else torch.zeros(0, dtype=torch.bool)
    if bool(ok.any()):
        ious = box_iou(boxes, expected)
        cand = ok & (ious >= min_iou)
        if bool(cand.any()):
            j = int(torch.argmax(torch.where(cand, scores, torch.full_like(scores, -1.0))))
            return MaskFace(name, name.split("#")[0], int(cls), CLASSES[int(cls)], window,
                            boxes[j].clone().float(), float(scores[j]), rect, image_box.clone(),
                            float(image_score), "detection")
    if fallback_iou is None:
        return None
    ok_fb = ok & (box_iou(boxes, expected) >= float(fallback_iou)) if len(boxes) else ok
    if not bool(ok_fb.any()):
        return None
    return MaskFace(name, name.split("#")[0], int(cls), CLASSES[int(cls)], window,
                    expected.clamp(0, window_size).float(), float(scores[ok_fb].max()), rect,
                    image_box.clone(), float(image_score), source)


def find_faces(paths: Sequence[Path], detector, cls: int, window_detect, n: int,
               min_conf: float = 0.25, min_side: float = 12.0, context: float = 2.5,
               window_size: int = 96, min_iou: float = 0.5, per_image: int = 1,
               load=None) -> tuple[list[MaskFace], list[dict]]:
    """Up to ``n`` detections of class ``cls`` to explain, ``per_image`` per image at most, in
    the order of ``paths``: in each image the detector's (native ``imgsz``) detections of
    ``cls`` with confidence >= ``min_conf`` and longer side >= ``min_side`` px, by decreasing
    confidence, kept when the window around it has a matching detection
    (:func:`mask_window`). Also returns a log row per image (detections found, kept, why not)."""
    from ..io import load_image
    from ..score import yolo_detections

    load = load or load_image
    full = yolo_detections(detector, conf=float(min_conf))
    faces: list[MaskFace] = []
    log: list[dict] = []
    for p in paths:
        if len(faces) >= n:
            break
        image = load(p)
        boxes, scores, classes = full(image[None])[0]
        assert classes is not None  # YOLO detections carry classes
        sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else boxes
        sel = [int(i) for i in torch.argsort(-scores) if int(classes[i]) == cls and float(sides[i]) >= min_side]
        kept = 0
        for i in sel:
            if kept >= per_image or len(faces) >= n:
                break
            fw = mask_window(f"{Path(p).stem}#{CLASSES[cls]}", image, boxes[i], cls, window_detect,
                             context=context, window_size=window_size, min_iou=min_iou,
                             image_score=float(scores[i]))
            if fw is not None:
                faces.append(fw)
                kept += 1
        log.append(dict(image=Path(p).name, detections=int((classes == cls).sum()) if len(boxes) else 0,
                        eligible=len(sel), explained=kept))
    return faces, log


def ground_truth_faces(paths: Sequence[Path], detector, cls: int, window_detect, n: int,
                       context: float = 2.5, window_size: int = 96, fallback_iou: float = 0.3,
                       min_side: float = 12.0, load=None) -> list[MaskFace]:
    """Fallback when the detector finds no ``cls`` detection to explain: up to ``n`` ground-truth
    boxes of ``cls`` (largest first per image), each explained with the eq. 4 score of that box
    and class (IoU >= ``fallback_iou``, the detector's weak detections included, conf >= 0.001);
    boxes whose score is 0 are skipped."""
    from ..io import load_image

    load = load or load_image
    out: list[MaskFace] = []
    for p in paths:
        if len(out) >= n:
            break
        image = load(p)
        boxes, classes = ground_truth(p, tuple(image.shape[1:]))
        idx = [int(i) for i in torch.nonzero(classes == cls).reshape(-1)]
        idx.sort(key=lambda i: -float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])))
        for i in idx:
            side = float(torch.maximum(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]))
            if side < min_side:
                continue
            fw = mask_window(f"{Path(p).stem}#{CLASSES[cls]}", image, boxes[i], cls, window_detect,
                             context=context, window_size=window_size, min_iou=1.01,
                             source="ground truth", fallback_iou=fallback_iou)
            if fw is not None:
                out.append(fw)
                break
    return out


# ----------------------------------------------------------------------------- Table 1
# MinPlus Table 1 (Mery 2022): mean AP of the thresholded map against the detected box over the
# paper's 20 test images (YOLOv5s, "with mask"). Constants from the paper's text, for comparison.
PAPER_TABLE1_MEAN = {"MinPlus": 0.90, "LIME-map": 0.67, "RISEgauss": 0.86, "RISE": 0.83}


def method_ranking(mean_ap: Mapping[str, float]) -> list[str]:
    """Methods by decreasing mean AP (ties keep the given order)."""
    return [m for m, _ in sorted(mean_ap.items(), key=lambda kv: -kv[1])]


# ----------------------------------------------------------------------------- figures
def _face_caption(fw: MaskFace) -> str:
    src = "" if fw.source == "detection" else "ground-truth box, "
    return f"{fw.name.split('#')[0]}: {CLASS_LABELS[fw.class_name]}\n{src}score {fw.score:.2f}"


def fig_faces(faces: Sequence[MaskFace], results: Sequence[Mapping], scores: pd.DataFrame, path,
              title: str, scale: int = 2, captions: Sequence[str] | None = None):
    """MinPlus Fig. 6 layout: per face the window with the explained box, then each method's map
    over it with the box, titled with the AP against the box, pointing game, forward passes and
    seconds. ``scores``: rows with columns face, method, ap, pointing_game."""
    from ..report import label
    from ..viz import draw_box, image_panel, overlay, side_by_side, upscale

    panels = []
    for k, (fw, res) in enumerate(zip(faces, results)):
        cap = captions[k] if captions is not None else _face_caption(fw)
        row = [(cap, draw_box(upscale(image_panel(fw.window), scale), fw.box.tolist(), scale=scale))]
        for name, t in res.items():
            sc = scores[(scores.face == fw.name) & (scores.method == label(name))].iloc[0]
            hit = "hit" if sc.pointing_game == 1 else "miss"
            row.append((f"{label(name)} AP {sc.ap:.2f} {hit}\n{t.n_forward} passes, {t.seconds:.0f}s",
                        draw_box(upscale(overlay(fw.window, t.map), scale), fw.box.tolist(), scale=scale)))
        panels.append(row)
    return side_by_side(panels, path, title=title)


def fig_images(rows: Sequence[tuple[str, Tensor, Tensor, Tensor, Sequence[MaskFace]]], path,
               max_cols: int = 5, title: str | None = None):
    """The images with every detection (green: with mask, red: without, orange: worn
    incorrectly) and the explained windows (yellow). ``rows``: (name, image, boxes, classes,
    faces)."""
    from ..viz import draw_box, image_panel, side_by_side

    colors = {0: (0, 200, 0), 1: (230, 0, 0), 2: (255, 140, 0)}
    panels, row = [], []
    for name, image, boxes, classes, faces in rows:
        rgb = image_panel(image)
        for b, c in zip(boxes, classes):
            rgb = draw_box(rgb, b.tolist(), colors.get(int(c), (255, 255, 255)))
        for fw in faces:
            rgb = draw_box(rgb, list(fw.rect), (255, 230, 0))
        row.append((f"{name}: {len(boxes)} detections", rgb))
        if len(row) == max_cols:
            panels.append(row)
            row = []
    if row:
        panels.append(row)
    return side_by_side(panels, path, title=title, panel_inches=2.6)


def fig_pixels(fw: MaskFace, smap, path, quantile: float = 0.85, title: str | None = None, scale: int = 3):
    """MinPlus Fig. 7: the detected box (blue) and the map thresholded at its ``quantile``
    (orange); true positive (in both), false positive (map only) and false negative (box only)
    pixels, with that threshold's precision and recall."""
    from ..metrics.base import box_mask
    from ..viz import draw_box, image_panel, overlay, side_by_side, upscale

    m = np.asarray(smap, dtype=np.float64)
    thr = float(np.quantile(m, quantile))
    on = m >= thr
    box = box_mask(fw.box.numpy(), m.shape)
    tp, fp, fn = on & box, on & ~box, ~on & box
    rgb = (image_panel(fw.window).astype(np.float64) * 0.35).astype(np.uint8)
    lab = rgb.copy()
    lab[tp] = (0, 200, 0)
    lab[fp] = (230, 60, 0)
    lab[fn] = (40, 90, 255)
    prec = tp.sum() / max(1, on.sum())
    rec = tp.sum() / max(1, box.sum())
    shape = rgb.copy()
    shape[on] = (255, 150, 0)
    panels = [[("window, detected box (blue)",
                draw_box(upscale(image_panel(fw.window), scale), fw.box.tolist(), (40, 90, 255), scale)),
               ("saliency map", draw_box(upscale(overlay(fw.window, m), scale), fw.box.tolist(), (40, 90, 255), scale)),
               (f"map >= its {quantile:.0%} quantile (orange)",
                draw_box(upscale(shape, scale), fw.box.tolist(), (40, 90, 255), scale)),
               (f"TP green, FP red, FN blue\nprecision {prec:.2f}, recall {rec:.2f}", upscale(lab, scale))]]
    return side_by_side(panels, path, title=title, panel_inches=2.4)


def fig_table1(table: pd.DataFrame, paper: Mapping[str, float], title: str):
    """Table 1 as a figure: AP per image and method, our mean, and the paper's mean (a separate,
    labelled row: the paper's images are not these)."""
    import matplotlib.pyplot as plt

    methods = [c for c in table.columns if c != "image"]
    cells = [[str(r.image)] + [f"{r[m]:.2f}" for m in methods]
             for _, r in table.iterrows()]
    cells.append(["mean (ours)"] + [f"{table[m].mean():.2f}" for m in methods])
    cells.append(["paper mean (YOLOv5s, 20 images)"] + [f"{paper[m]:.2f}" if m in paper else "" for m in methods])
    fig, ax = plt.subplots(figsize=(1.4 * (len(methods) + 1.6), 0.26 * (len(cells) + 2)))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=["image"] + methods, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.15)
    t.auto_set_column_width(col=list(range(len(methods) + 1)))
    best = {i: int(np.argmax([float(c) for c in row[1:]])) for i, row in enumerate(cells)
            if all(c != "" for c in row[1:])}
    for i, j in best.items():
        t[i + 1, j + 1].set_text_props(weight="bold")
    for j in range(len(methods) + 1):
        t[len(cells) - 1, j].set_facecolor("#eeeeee")
        t[len(cells), j].set_facecolor("#e8f0ff")
    ax.set_title(title, fontsize=9)
    return fig
