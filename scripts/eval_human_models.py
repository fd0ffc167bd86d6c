"""Measure the human-models networks run by xfr's TF.js graph executor on real data.

1. Verification on the 553 available LFW View-2 fold-1 pairs (``xfr.data.lfw_pairs()``; tight
   350x350 grayscale crops, edge-padded by 100 px so MTCNN sees the whole head): MTCNN -> 5-point
   alignment to the model's template -> embedding -> cosine similarity; accuracy of a threshold
   chosen by 10-fold cross-validation over the pairs (threshold maximizing accuracy on 9 folds,
   accuracy on the 10th), the thresholds, and the ROC AUC. Variants: faceres with the
   ``faceres224`` template of xfr.models.align and with a template derived here that reproduces
   human's own faceres crop (FaceMesh landmarks' bounding box x1.6, square; derived on UTKFace
   images, not LFW); Caffe BGR mean subtraction (HSE's scaling, the default) or RGB 0..255
   (human's); mobileface (``arcface112``) with 0..255 (the graph's own normalization) or 0..1
   (human's). Landmarks: the largest MTCNN face, refined by a second MTCNN pass
   (``xfr.models.align.face_landmarks``; ``--no-refine`` for one pass).
2. Gender accuracy of faceres on UTKFace (``xfr.data.utkface()``, 1000 male / 1000 female):
   MTCNN -> aligned chip -> ``load_faceres_gender``; also the whole 200x200 UTKFace crop resized;
   overall, per gender, per race, and for ages under 18 / 18 and over.
3. Throughput (images/s, CPU, batch 32) of each model's forward pass.

    .venv/bin/python scripts/eval_human_models.py [--n-utk 2000] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from xfr.data import lfw_pairs, utkface
from xfr.io import load_image
from xfr.models.align import Template, align, face_landmarks
from xfr.models.detect import largest_face, load_mtcnn
from xfr.models.human import (
    facemesh_landmarks,
    load_facemesh,
    load_faceres,
    load_faceres_gender,
    load_mobileface,
    square_box,
)

PAD = 100
BATCH = 16


def padded(path, pad=PAD):
    img = load_image(path)
    return F.pad(img[None], (pad,) * 4, mode="replicate")[0]


def landmark_batches(paths, mtcnn, pad=PAD, refine=True):
    """Yield lists of (path, padded image, 5 landmarks or None) per batch of paths: the largest
    MTCNN face, refined by a second MTCNN pass unless ``refine`` is False
    (``xfr.models.align.face_landmarks``, the suite's alignment pipeline)."""
    for i in range(0, len(paths), BATCH):
        chunk = paths[i:i + BATCH]
        imgs = [padded(p, pad) for p in chunk]
        yield list(zip(chunk, imgs, face_landmarks(imgs, mtcnn, refine=refine)))


def detect_all(paths, mtcnn, pad=PAD):
    """Yield (path, padded image, box, landmarks) of the largest MTCNN face (None: no face)."""
    for i in range(0, len(paths), BATCH):
        chunk = paths[i:i + BATCH]
        imgs = [padded(p, pad) for p in chunk]
        for p, img, det in zip(chunk, imgs, mtcnn.detect(imgs)):
            k = largest_face(det)
            yield p, img, (None if k is None else det.boxes[k]), (
                None if k is None else det.landmarks[k])


def derive_mesh_template(paths, mtcnn, facemesh, size=224, crop_factor=1.6) -> Template:
    """Where MTCNN's 5 landmarks fall in human's faceres crop (FaceMesh landmarks' bounding box
    enlarged by ``crop_factor`` and made square, facemesh.ts), averaged over ``paths``."""
    pts = []
    for _, img, box, lm in detect_all(paths, mtcnn, pad=50):
        if box is None:
            continue
        mesh = facemesh_landmarks(img, box, model=facemesh)
        mbox = torch.cat([mesh[:, :2].min(0).values, mesh[:, :2].max(0).values])
        x0, y0, side = square_box(mbox, crop_factor)
        # continuous -> pixel-centre coordinates of the size x size chip
        pts.append(((lm.double() + 0.5 - torch.tensor([x0, y0], dtype=torch.float64))
                    * size / side - 0.5).numpy())
    pts = np.stack(pts)
    mean = pts.mean(0)
    print(f"mesh template from {len(pts)} images: {np.round(mean, 2).tolist()} "
          f"(per-point std {np.round(pts.std(0).mean(1), 2).tolist()} px)")
    return Template(tuple(map(tuple, mean.round(4).tolist())), size,
                    f"FaceMesh bbox x{crop_factor} square (human faceres crop), measured")


def cv_accuracy(sims: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0) -> dict:
    """Accuracy of a similarity threshold chosen on the other folds (10-fold CV)."""
    accs, thrs = [], []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(sims):
        cand = np.unique(sims[train])
        cand = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
        train_acc = ((sims[train][None, :] >= cand[:, None]) == same[train][None, :]).mean(1)
        t = float(cand[int(np.argmax(train_acc))])
        thrs.append(t)
        accs.append(float(((sims[test] >= t) == same[test]).mean()))
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "threshold": float(np.mean(thrs)), "threshold_std": float(np.std(thrs)),
            "auc": float(roc_auc_score(same, sims)), "n_pairs": int(len(sims))}


def eval_lfw(mtcnn, variants, refine=True) -> dict:
    pairs = lfw_pairs()
    paths = sorted({p for pr in pairs for p in (pr.a, pr.b)})
    embs: dict[str, dict] = {name: {} for name in variants}
    missing = []
    t0 = time.time()
    done = 0
    for batch in landmark_batches(paths, mtcnn, refine=refine):
        found = [(p, img, lm) for p, img, lm in batch if lm is not None]
        missing += [p.name for p, _, lm in batch if lm is None]
        for name, (model, template) in variants.items():
            if not found:
                continue
            chips = torch.stack([align(img, lm, template) for _, img, lm in found])
            with torch.no_grad():
                for (p, _, _), e in zip(found, model(chips)):
                    embs[name][p] = e
        done += len(batch)
        if done % 96 < BATCH:
            print(f"  LFW {done}/{len(paths)} images, {time.time() - t0:.0f} s", flush=True)
    out = {"n_images": len(paths), "no_face": missing}
    for name in variants:
        kept = [pr for pr in pairs if pr.a in embs[name] and pr.b in embs[name]]
        sims = np.array([float(torch.cosine_similarity(embs[name][pr.a], embs[name][pr.b], 0))
                         for pr in kept])
        same = np.array([pr.same for pr in kept])
        out[name] = cv_accuracy(sims, same)
        out[name]["n_pairs_skipped"] = len(pairs) - len(kept)
        r = out[name]
        print(f"LFW {name:32s} acc {r['accuracy']:.4f} +- {r['accuracy_std']:.4f}  thr "
              f"{r['threshold']:.3f} +- {r['threshold_std']:.3f}  AUC {r['auc']:.4f}  "
              f"({r['n_pairs']} pairs)", flush=True)
    return out


def eval_gender(mtcnn, variants, n: int, refine=True) -> dict:
    df = utkface()
    if n < len(df):  # balanced subsample over gender x race
        df = df.groupby(["gender", "race"]).head(max(1, n // 10)).reset_index(drop=True)
    truth = dict(zip(df.path, df.gender))
    race = dict(zip(df.path, df.race))
    age = dict(zip(df.path, df.age))
    preds: dict[str, dict] = {name: {} for name in variants}
    t0 = time.time()
    done = 0
    for batch in landmark_batches(list(df.path), mtcnn, pad=50, refine=refine):
        for name, (model, template) in variants.items():
            if template is None:  # the whole UTKFace crop (without the padding)
                items = [(p, img[:, 50:-50, 50:-50]) for p, img, _ in batch]
            else:
                items = [(p, align(img, lm, template)) for p, img, lm in batch if lm is not None]
            if not items:
                continue
            with torch.no_grad():
                logits = model(torch.stack([c for _, c in items]))
            for (p, _), k in zip(items, logits.argmax(1).tolist()):
                preds[name][p] = k  # 1 = male
        done += len(batch)
        if done % 400 < BATCH:
            print(f"  UTKFace {done}/{len(df)} images, {time.time() - t0:.0f} s", flush=True)
    out = {"n_images": len(df)}
    for name in variants:
        ps = list(preds[name])
        y = np.array([1 - truth[p] for p in ps])  # listing: 0 male, 1 female -> 1 = male
        yhat = np.array([preds[name][p] for p in ps])
        r = {"accuracy": float((y == yhat).mean()), "n": len(ps),
             "accuracy_male": float((yhat[y == 1] == 1).mean()),
             "accuracy_female": float((yhat[y == 0] == 0).mean()),
             "accuracy_by_race": {str(rc): float((y == yhat)[[race[p] == rc for p in ps]].mean())
                                  for rc in sorted(set(race.values()))},
             "accuracy_age_under_18": float((y == yhat)[[age[p] < 18 for p in ps]].mean()),
             "accuracy_age_18_plus": float((y == yhat)[[age[p] >= 18 for p in ps]].mean())}
        out[name] = r
        print(f"UTKFace gender {name:28s} acc {r['accuracy']:.4f} (male {r['accuracy_male']:.3f},"
              f" female {r['accuracy_female']:.3f}; age <18 {r['accuracy_age_under_18']:.3f}, "
              f">=18 {r['accuracy_age_18_plus']:.3f}; n={r['n']})", flush=True)
    return out


def throughput(models: dict, batch: int = 32, repeats: int = 3) -> dict:
    out = {}
    for name, (model, size) in models.items():
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            model(x[:2])
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
            dt = time.perf_counter() - t0
        out[name] = batch * repeats / dt
        print(f"throughput {name:12s} {out[name]:7.1f} images/s (batch {batch}, {size}x{size})",
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-utk", type=int, default=2000, help="UTKFace images for gender")
    ap.add_argument("--n-template", type=int, default=200,
                    help="UTKFace images used to derive the FaceMesh-crop template")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-refine", action="store_true",
                    help="one MTCNN pass only (no xfr.models.align.refine_landmarks)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["lfw", "gender", "speed"])
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict = {"threads": args.threads, "torch": torch.__version__}

    mtcnn = load_mtcnn()
    faceres = {pp: load_faceres(preprocess=pp) for pp in ("rgb255", "caffe")}
    gender = {pp: load_faceres_gender(preprocess=pp) for pp in ("rgb255", "caffe")}
    mobile = {pp: load_mobileface(preprocess=pp) for pp in ("rgb255", "rgb01")}
    facemesh = load_facemesh()

    if {"lfw", "gender"} - set(args.skip):
        utk = utkface()
        tpl_paths = list(utk.path.iloc[np.linspace(0, len(utk) - 1, args.n_template).astype(int)])
        mesh_tpl = derive_mesh_template(tpl_paths, mtcnn, facemesh)
        results["faceres_mesh_template"] = {"points": mesh_tpl.points, "size": mesh_tpl.size,
                                            "n_images": len(tpl_paths)}

    refine = not args.no_refine
    results["refine_landmarks"] = refine
    if "lfw" not in args.skip:
        variants = {f"faceres/faceres224/{pp}": (m, "faceres224") for pp, m in faceres.items()}
        variants["faceres/mesh-crop/caffe"] = (faceres["caffe"], mesh_tpl)
        for pp, m in mobile.items():
            variants[f"mobileface/arcface112/{pp}"] = (m, "arcface112")
        results["lfw"] = eval_lfw(mtcnn, variants, refine)
    if "gender" not in args.skip:
        variants = {f"faceres224/{pp}": (m, "faceres224") for pp, m in gender.items()}
        variants["mesh-crop/caffe"] = (gender["caffe"], mesh_tpl)
        variants["whole-crop/caffe"] = (gender["caffe"], None)
        results["utkface_gender"] = eval_gender(mtcnn, variants, args.n_utk, refine)
    if "speed" not in args.skip:
        results["images_per_s"] = throughput({
            "faceres": (faceres["caffe"], 224), "mobileface": (mobile["rgb255"], 112),
            "facemesh": (facemesh, 192)})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
