"""C-Score (Knoche et al., X-Maps §3.1, eqs. 1-3) of the dlib ResNet on the LFW fold-1 pairs.

MTCNN -> 5-point alignment (template "dlib150") -> dlib ResNet descriptors -> cosine distance
(eq. 1) for the 553 available LFW View-2 fold-1 pairs; then, fold-wise over 10 stratified folds of
these pairs (threshold and logistic fit on the other 9 folds), the 400-bin histogram, the fitted
sigmoid (eq. 2, dogbox) and per-pair C-Scores (eq. 3). Plots the histogram with the bin ratios
and fitted curves, and C against distance; prints accuracy, the C range and mean C for correct vs
wrong predictions.

    .venv/bin/python scripts/cscore_lfw.py [reports/cscore_lfw.png] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xfr.data import lfw_pairs
from xfr.io import load_image
from xfr.metrics import cosine_distance, cscore
from xfr.models.align import align
from xfr.models.detect import largest_face, load_mtcnn
from xfr.models.dlib_resnet import load_dlib_resnet


def embeddings(names: list[Path], batch_size: int = 16) -> tuple[dict[str, np.ndarray], list[str]]:
    """dlib descriptors of the aligned chips; images without a detection use the mean landmarks
    of the others (LFW crops are roughly centred). Returns (name -> descriptor, fallbacks)."""
    mtcnn = load_mtcnn()
    images, landmarks = {}, {}
    for i in range(0, len(names), batch_size):
        chunk = names[i:i + batch_size]
        imgs = [load_image(p) for p in chunk]
        for p, img, det in zip(chunk, imgs, mtcnn.detect(imgs)):
            k = largest_face(det)
            images[p.name] = img
            landmarks[p.name] = None if k is None else det.landmarks[k]
    found = [lm for lm in landmarks.values() if lm is not None]
    mean_lm = torch.stack(found).mean(0)
    fallback = [n for n, lm in landmarks.items() if lm is None]
    model = load_dlib_resnet()
    out = {}
    keys = list(images)
    with torch.inference_mode():
        for i in range(0, len(keys), 32):
            chunk = keys[i:i + 32]
            chips = torch.stack([align(images[n], mean_lm if landmarks[n] is None else landmarks[n],
                                       "dlib150") for n in chunk])
            out.update(zip(chunk, model(chips).double().numpy()))
    return out, fallback


def plot(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = res.distances
    lo, hi = max(0.0, d.min() - 0.05), min(2.0, d.max() + 0.05)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    fit0 = res.fits[0]
    edges = fit0.histogram.edges
    ax.hist(d[res.same], bins=edges, color="tab:green", alpha=0.6, label="genuine (all pairs)")
    ax.hist(d[~res.same], bins=edges, color="tab:red", alpha=0.6, label="imposter (all pairs)")
    ax.set_xlabel("cosine distance d (eq. 1)")
    ax.set_ylabel("pairs per bin (400 bins on [0, 2])")
    ax.set_xlim(lo, hi)
    ax2 = ax.twinx()
    h = fit0.histogram
    ok = ~np.isnan(h.ratio)
    ax2.plot(h.centers[ok], h.ratio[ok], ".", color="k", ms=4,
             label="bin ratio genuine/(genuine+imposter), fold 1's training folds")
    xs = np.linspace(lo, hi, 400)
    for j, fit in enumerate(res.fits):
        ax2.plot(xs, fit.curve(xs), color="tab:blue", alpha=0.9 if j == 0 else 0.25,
                 lw=2 if j == 0 else 1, label="fitted c(d) (eq. 2), 10 folds" if j == 0 else None)
    t = np.array([f.threshold for f in res.fits])
    ax2.axvline(t.mean(), color="tab:purple", ls="--", label=f"threshold t (mean {t.mean():.3f})")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("ratio / c(d)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax2.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax.set_title("dlib ResNet, LFW fold-1 pairs: histogram and fitted sigmoid")
    ax = axes[1]
    ok = res.correct
    ax.scatter(d[ok & res.same], res.C[ok & res.same], s=8, c="tab:green", label="correct, genuine")
    ax.scatter(d[ok & ~res.same], res.C[ok & ~res.same], s=8, c="tab:red", label="correct, imposter")
    ax.scatter(d[~ok], res.C[~ok], s=30, marker="x", c="k", label="wrong prediction")
    ax.axvline(t.mean(), color="tab:purple", ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.45, 1.02)
    ax.set_xlabel("cosine distance d")
    ax.set_ylabel("C-Score (eq. 3)")
    ax.set_title(f"per-pair C-Score (10-fold), accuracy {res.accuracy:.4f}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("png", nargs="?", type=Path, default=Path("reports/cscore_lfw.png"))
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--empty-bins", choices=["drop", "fill"], default="drop")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    t0 = time.time()
    pairs = lfw_pairs()
    if not pairs:
        sys.exit("no LFW pairs; run `python -m xfr.data lfw_gray` first")
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    emb, fallback = embeddings(names)
    a = np.stack([emb[p.a.name] for p in pairs])
    b = np.stack([emb[p.b.name] for p in pairs])
    d = cosine_distance(a, b)
    same = np.array([p.same for p in pairs])
    res = cscore(d, same, n_folds=10, bins=400, empty_bins=args.empty_bins)
    assert np.all((res.C >= 0.5) & (res.C <= 1.0)), "C-Score outside [0.5, 1]"
    c_ok, c_bad = res.C[res.correct], res.C[~res.correct]
    summary = {
        "n_pairs": int(len(d)), "n_genuine": int(same.sum()), "n_images": len(names),
        "images_without_detection": fallback,
        "accuracy_10fold": res.accuracy,
        "thresholds": [round(f.threshold, 4) for f in res.fits],
        "logistic_params_fold1_L_k_d0_b": [round(float(v), 4) for v in res.fits[0].params],
        "C_min": float(res.C.min()), "C_max": float(res.C.max()),
        "C_mean_correct": float(c_ok.mean()), "C_mean_wrong": float(c_bad.mean()) if len(c_bad) else None,
        "n_wrong": int(len(c_bad)),
        "C_raw_below_0.5_clipped": int((res.C_raw < 0.5).sum()),
        "mean_C_vs_accuracy": float(res.C.mean()),
        "mean_distance_genuine": float(d[same].mean()), "mean_distance_imposter": float(d[~same].mean()),
        "empty_bins": args.empty_bins, "seconds": round(time.time() - t0, 1),
    }
    plot(res, args.png)
    for k, v in summary.items():
        print(f"{k}: {v}")
    print(f"figure: {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
