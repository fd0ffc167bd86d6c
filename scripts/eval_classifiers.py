"""Accuracy and CPU speed of the Arriaga et al. (2017) Xception classifiers on the real data.

- ``mini-xception-fer2013`` and ``big-xception-fer2013``: top-1 and per-class accuracy on all
  2,874 FER-2013 PrivateTest images (``xfr.data.fer2013()``), through ``model(faces)`` (float
  pipeline), and through Arriaga's exact uint8 pipeline (``cv2.resize`` of the uint8 image to
  64x64, rounded, then ``(x/255-0.5)*2`` into ``model.net``) to show the float resize changes
  nothing that matters. The big-Xception is also run on the native 48x48 images (no resize).
- ``mini-xception-gender`` on the 2,000 UTKFace aligned faces (``xfr.data.utkface()``, gender 0 =
  male, 1 = female): whole 200x200 image, the same with an antialiased downscale, padded with
  10-50% context (``xfr.models.xception.pad_context``), and, when
  ``xfr.models.detect`` is available, the MTCNN box widened by Arriaga's gender offsets (30, 60)
  and the tight MTCNN box.
- throughput (images/s) of ``model(faces)`` on CPU.

Usage: ``python scripts/eval_classifiers.py [--batch-size 256] [--no-mtcnn] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from xfr import data
from xfr.io import load_image
from xfr.models import xception as X


def batched(model_fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model_fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def throughput(model, x: torch.Tensor, batch_size: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of model(x[:batch_size]), in images per second."""
    xb = x[:batch_size]
    with torch.inference_mode():
        model(xb)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(xb)
            best = min(best, time.perf_counter() - t0)
    return len(xb) / best


def per_class(pred: np.ndarray, y: np.ndarray, classes) -> dict[str, float]:
    return {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes) if (y == k).any()}


def eval_fer(args, results: dict) -> None:
    df = data.fer2013()
    y = df["y"].to_numpy()
    faces = torch.stack([load_image(p) for p in df["path"]])
    gray_u8 = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in df["path"]])
    print(f"FER-2013 PrivateTest: {len(df)} images, classes "
          f"{ {k: int(v) for k, v in df['label'].value_counts().items()} }")
    for name, loader in (("mini-xception-fer2013", X.load_fer2013_mini_xception),
                         ("big-xception-fer2013", X.load_fer2013_big_xception)):
        model = loader()
        t0 = time.perf_counter()
        pred = batched(model, faces, args.batch_size).argmax(1).numpy()
        wall = time.perf_counter() - t0
        acc = float((pred == y).mean())
        # Arriaga's exact preprocessing: uint8 cv2 resize (rounded), then the network
        u8 = np.stack([cv2.resize(g, model.input_size[::-1], interpolation=cv2.INTER_LINEAR)
                       for g in gray_u8])
        xa = (torch.from_numpy(u8).float()[:, None] / 255.0 - 0.5) * 2.0
        pred_a = batched(model.net, xa, args.batch_size).argmax(1).numpy()
        # native 48x48 input, no resize
        x48 = (torch.from_numpy(gray_u8).float()[:, None] / 255.0 - 0.5) * 2.0
        pred_48 = batched(model.net, x48, args.batch_size).argmax(1).numpy()
        speed = throughput(model, faces, args.batch_size)
        pc = per_class(pred, y, X.FER2013_CLASSES)
        results[name] = {
            "accuracy": acc, "per_class": pc,
            "accuracy_arriaga_uint8_resize": float((pred_a == y).mean()),
            "agreement_float_vs_uint8": float((pred_a == pred).mean()),
            "accuracy_native_48x48": float((pred_48 == y).mean()),
            "images_per_s": speed, "eval_wall_s": wall, "input_size": model.input_size,
        }
        print(f"\n{name} (input {model.input_size}):")
        print(f"  top-1 accuracy            {100 * acc:.2f}%  ({(pred == y).sum()}/{len(y)})")
        print("  per class                 " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in pc.items()))
        print(f"  Arriaga uint8 resize      {100 * results[name]['accuracy_arriaga_uint8_resize']:.2f}%"
              f"  (same prediction as float pipeline on "
              f"{100 * results[name]['agreement_float_vs_uint8']:.2f}% of images)")
        print(f"  native 48x48 (no resize)  {100 * results[name]['accuracy_native_48x48']:.2f}%")
        print(f"  speed                     {speed:.0f} images/s (batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads; whole set {wall:.1f} s)")


def eval_gender(args, results: dict) -> None:
    df = data.utkface()
    # class index of the model: 0 woman, 1 man; UTKFace gender: 0 male, 1 female
    y = (df["gender"].to_numpy() == 0).astype(int)
    images = torch.stack([load_image(p) for p in df["path"]])
    model = X.load_gender_mini_xception()
    print(f"\nUTKFace: {len(df)} aligned faces {tuple(images.shape[-2:])}, "
          f"{(y == 1).sum()} men, {(y == 0).sum()} women")
    variants = {}
    variants["whole image"] = batched(model, images, args.batch_size).argmax(1).numpy()
    aa = F.interpolate(images, size=model.input_size, mode="bilinear", align_corners=False,
                       antialias=True)
    variants["whole image, antialiased resize"] = batched(model, aa, args.batch_size
                                                          ).argmax(1).numpy()
    for margin in (0.1, 0.2, 0.3, 0.5):
        padded = X.pad_context(images, margin)
        variants[f"whole image + {margin:.0%} context (replicate)"] = batched(
            model, padded, args.batch_size).argmax(1).numpy()
    n_missed = None
    if not args.no_mtcnn:
        try:
            from xfr.models.detect import best_face, load_mtcnn
        except ImportError as err:
            print(f"  (MTCNN crops skipped: {err})")
        else:
            det = load_mtcnn()
            t0 = time.perf_counter()
            boxes, n_missed = [], 0
            for i in range(0, len(images), 100):
                for d in det.detect(images[i:i + 100]):
                    k = best_face(d)
                    boxes.append(None if k is None else d.boxes[k].tolist())
                    n_missed += k is None
            found = torch.tensor([b for b in boxes if b is not None])
            print(f"  MTCNN: {time.perf_counter() - t0:.0f} s, no face in {n_missed} images "
                  "(those use the whole image); mean box "
                  f"{(found[:, 2] - found[:, 0]).mean():.0f} x {(found[:, 3] - found[:, 1]).mean():.0f}"
                  f" px, {(found[:, :2] < 0).any(1).float().mean():.0%} start outside the image")
            for label, offsets in (("MTCNN box + Arriaga offsets (30,60)", X.GENDER_OFFSETS),
                                   ("MTCNN box, no offsets", (0, 0))):
                crops = []
                for img, box in zip(images, boxes):
                    crop = img if box is None else X.crop_with_offsets(img, box, offsets)
                    crops.append(model.preprocess(crop[None]))
                xin = torch.cat(crops)
                variants[label] = batched(model.net, xin, args.batch_size).argmax(1).numpy()
    race = df["race"].to_numpy()
    results["mini-xception-gender"] = {"mtcnn_no_face": n_missed,
                                       "images_per_s": throughput(model, images, args.batch_size)}
    for label, pred in variants.items():
        acc = float((pred == y).mean())
        by_gender = {"man": float((pred[y == 1] == 1).mean()),
                     "woman": float((pred[y == 0] == 0).mean())}
        by_race = {r: float((pred[race == k] == y[race == k]).mean())
                   for k, r in enumerate(data.UTK_RACES)}
        results["mini-xception-gender"][label] = {"accuracy": acc, "per_gender": by_gender,
                                                  "per_race": by_race}
        print(f"  {label:42s} accuracy {100 * acc:.2f}%  (men {100 * by_gender['man']:.1f}%, "
              f"women {100 * by_gender['woman']:.1f}%; "
              + ", ".join(f"{r} {100 * v:.1f}%" for r, v in by_race.items()) + ")")
    print(f"  speed {results['mini-xception-gender']['images_per_s']:.0f} images/s on 200x200 "
          f"inputs (batch {args.batch_size})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-mtcnn", action="store_true", help="skip the MTCNN crops of UTKFace")
    ap.add_argument("--skip-fer", action="store_true")
    ap.add_argument("--skip-gender", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    results: dict = {"torch_threads": torch.get_num_threads()}
    load = os.getloadavg()[0]
    print(f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average "
          f"{load:.1f} at start (speeds are lower on a busy machine)")
    results["load_average_at_start"] = load
    if not args.skip_fer:
        eval_fer(args, results)
    if not args.skip_gender:
        eval_gender(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=list))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
