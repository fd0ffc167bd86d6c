"""Forward-path table: images/s of every zoo model on each CPU execution path, and agreement with
the PyTorch module, at the batch sizes the engine uses.

    python benchmarks/bench_forward.py [--batch-sizes 16,64] [--paths torch,torch-cl,...] [--json out.json]

Paths (``xfr.models.backends``): ``torch`` (PyTorch eager, what the suite ran before; oneDNN),
``torch-cl`` (eager with channels-last tensors), ``torch-compile`` (``torch.compile``, inductor;
compile time reported apart), ``onnxruntime`` and ``openvino`` (the module's ONNX export, FP32).
Each path runs the same real inputs: LFW faces centre-cropped and resized to the model's input
(MTCNN: the detection stage's 96 px windows of the insightface group photo, each under a random
occlusion so that scores vary). Timing rounds interleave the paths, so load changes hit all
alike; the median round is reported. Agreement: embeddings min cosine to PyTorch's, probabilities
max |difference| (classifiers: softmax; MTCNN: the detection score f of eq. 4), landmarks max
|difference| in pixels. ``backend="auto"`` adopts a path for a model when it is >= 1.3x faster
than ``torch`` at batch size 64 and agrees (cosine >= 0.9999, probabilities <= 1e-4, landmarks
<= 0.01 px), the fastest such path, except that the current default (``xfr.models.backends.AUTO``)
is kept while it stays within 20% of the fastest (two runs on one day moved the ONNX Runtime /
OpenVINO ratio of the mini-Xception models by up to 30%, so closer calls are noise); ``adopt``
says which path that rule picks.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from xfr.models import load
from xfr.models.backends import AUTO, accelerated

MODELS = ("dlib-resnet", "mobileface", "faceres", "faceres-gender", "mini-xception-fer2013",
          "mini-xception-gender", "facemesh", "mtcnn")
PATHS = ("torch", "torch-cl", "torch-compile", "onnxruntime", "openvino")
KIND = {"dlib-resnet": "embedding", "mobileface": "embedding", "faceres": "embedding",
        "faceres-gender": "probability", "mini-xception-fer2013": "probability",
        "mini-xception-gender": "probability", "facemesh": "landmarks", "mtcnn": "probability"}
SPEEDUP, COSINE, PROB, LANDMARK_PX, HYSTERESIS = 1.3, 0.9999, 1e-4, 0.01, 0.8


def faces(n: int, size: int) -> torch.Tensor:
    """n real LFW faces, the central 150 px of the 250 px photos resized to size x size."""
    from xfr.data import lfw_pairs
    from xfr.io import load_image

    out, seen = [], set()
    for p in lfw_pairs():
        for path in (p.a, p.b):
            if path in seen:
                continue
            seen.add(path)
            img = load_image(path)
            h, w = img.shape[1:]
            c = img[:, (h - 150) // 2:(h + 150) // 2, (w - 150) // 2:(w + 150) // 2]
            out.append(F.interpolate(c[None], size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False)[0].clamp(0, 1))
            if len(out) == n:
                return torch.stack(out)
    raise SystemExit("not enough LFW faces in data/")


def mtcnn_windows(n: int, mtcnn) -> tuple[torch.Tensor, torch.Tensor]:
    """n perturbed 96 px windows of the first face of the detection stage's photo, and its box."""
    from xfr.data import sample_photo_path
    from xfr.explain.masks import RiseMasks
    from xfr.faces.windows import face_windows
    from xfr.io import load_image

    path = sample_photo_path("t1")
    if path is None:
        raise SystemExit("the insightface sample photo t1.jpg is missing (pip install insightface)")
    fws, _ = face_windows(str(path), load_image(path), mtcnn, faces_per_photo=1)
    fw = fws[0]
    masks = RiseMasks((96, 96), n, s=7, p=0.7, seed=0)[0:n]
    return fw.window[None] * masks[:, None] + 0.0, fw.box


def runner(model, name: str, path: str, box=None):
    """A callable images -> output tensor on ``path`` (its first call exports or compiles)."""
    if path in ("onnxruntime", "openvino"):
        m = accelerated(model, path)
    elif path == "torch-cl":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
    elif path == "torch-compile":
        m = copy.deepcopy(model)
        if name == "mtcnn":
            for net in ("pnet", "rnet", "onet"):
                setattr(m.mtcnn, net, torch.compile(getattr(m.mtcnn, net), dynamic=True))
        else:
            m.body = torch.compile(m.body)
    else:
        m = model
    if name == "mtcnn":
        from xfr.score import detection_score

        return detection_score(m, box, backend="torch")
    if path == "torch-cl":
        return lambda x: m(x.contiguous(memory_format=torch.channels_last))
    return m


def post(name: str, out: torch.Tensor) -> torch.Tensor:
    if KIND[name] == "probability" and name != "mtcnn":
        return torch.softmax(out.float(), dim=1)
    return out.float()


def agreement(name: str, ref: torch.Tensor, out: torch.Tensor) -> float:
    if KIND[name] == "embedding":
        return float(F.cosine_similarity(ref.reshape(len(ref), -1), out.reshape(len(out), -1)).min())
    return float((ref - out).abs().max())


def agrees(name: str, value: float) -> bool:
    if KIND[name] == "embedding":
        return value >= COSINE
    return value <= (LANDMARK_PX if KIND[name] == "landmarks" else PROB)


def measure(models=MODELS, paths=PATHS, sizes=(16, 64), rounds: int = 5) -> dict:
    """The forward-path table: {"rows": [...], "adopt": {model: path}} (see the module docstring)."""
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}", flush=True)
    rows = []
    for name in models:
        model = load(name)
        if name == "mtcnn":
            x_all, box = mtcnn_windows(max(sizes), model)
        else:
            size = {"dlib-resnet": 150, "mobileface": 112, "faceres": 224, "faceres-gender": 224,
                    "facemesh": 192}.get(name, 64)
            x_all, box = faces(max(sizes), size), None
        for bs in sizes:
            x = x_all[:bs]
            runs, compile_s, outs = {}, {}, {}
            for p in paths:
                try:
                    t0 = time.perf_counter()
                    fn = runner(model, name, p, box)
                    with torch.inference_mode():
                        outs[p] = post(name, fn(x))  # first call: export / compile
                        compile_s[p] = time.perf_counter() - t0
                        fn(x)  # warm-up
                    runs[p] = (fn, [])
                except Exception as err:  # a path that cannot run this model is a result too
                    print(f"{name} {p}: unavailable ({type(err).__name__}: {str(err)[:120]})", flush=True)
            for _ in range(rounds):
                for fn, times in runs.values():
                    with torch.inference_mode():
                        t0 = time.perf_counter()
                        fn(x)
                        times.append(time.perf_counter() - t0)
            base = statistics.median(runs["torch"][1]) if "torch" in runs else None
            for p, (_fn, times) in runs.items():
                med = statistics.median(times)
                agr = agreement(name, outs["torch"], outs[p]) if "torch" in outs else float("nan")
                row = {"model": name, "path": p, "batch_size": bs, "images_per_s": bs / med,
                       "seconds_per_batch": med, "speedup_vs_torch": (base / med) if base else None,
                       "agreement": agr, "agreement_kind": "min cosine" if KIND[name] == "embedding"
                       else ("max abs px" if KIND[name] == "landmarks" else "max abs p"),
                       "agrees": agrees(name, agr), "first_call_s": compile_s[p]}
                rows.append(row)
                print(f"{name:22s} {p:14s} bs {bs:3d}  {row['images_per_s']:8.1f} img/s  x{row['speedup_vs_torch']:.2f}"
                      f"  {row['agreement_kind']} {agr:.2e}  first call {compile_s[p]:.1f} s", flush=True)
    adopt = {}
    big = max(sizes)
    for name in dict.fromkeys(r["model"] for r in rows):
        cands = [r for r in rows if r["model"] == name and r["batch_size"] == big
                 and r["path"] in ("onnxruntime", "openvino") and r["agrees"]
                 and (r["speedup_vs_torch"] or 0) >= SPEEDUP]
        best = max(cands, key=lambda r: r["speedup_vs_torch"], default=None)
        # hysteresis: keep the current default while it stays within 20% of the best path, so
        # that near-ties (ONNX Runtime vs OpenVINO) do not flip the default from run to run
        current = next((r for r in cands if r["path"] == AUTO.get(name)), None)
        if best and current and current["speedup_vs_torch"] >= HYSTERESIS * best["speedup_vs_torch"]:
            best = current
        adopt[name] = best["path"] if best else "torch"
    print(f"adopt (rule: >= {SPEEDUP}x at batch {big} and agreeing):", json.dumps(adopt, sort_keys=True))
    return {"rule": {"speedup": SPEEDUP, "batch_size": big, "cosine": COSINE, "probability": PROB,
                     "landmarks_px": LANDMARK_PX}, "rows": rows, "adopt": adopt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = measure([m.strip() for m in args.models.split(",") if m.strip()],
                    [p.strip() for p in args.paths.split(",") if p.strip()],
                    [int(b) for b in args.batch_sizes.split(",")], args.rounds)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        table["machine"] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": sys.version.split()[0]}
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
