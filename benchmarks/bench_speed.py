"""The speed benchmark: every ratio that matters, side by side in one run, on this machine.

    python benchmarks/bench_speed.py [--sections forward,overhead,peers,minplus] [--faces 10]
                                     [--out reports/speed]

Sections (each a table in ``<out>.md`` and ``<out>.json``, with the machine it ran on):

1. ``forward``: images/s of every zoo model on each CPU execution path and agreement with the
   PyTorch module (``bench_forward.py``); the path ``backend="auto"`` adopts per model.
2. ``overhead``: per explainer, at 112 px (dlib-resnet verification score, MinPlus eq. 2) and
   256 px (mini-Xception FER-2013 class probability, eq. 3, the expressions stage's size): wall
   time / pure batched forward time of the same number of images (target <= 1.10). The pure
   time is f on stacked copies of the image in batches of 64, measured before and after the
   explainers (their mean).
3. ``peers``: ours against captum ``Occlusion``, xaitk-saliency ``RISEStack`` and ``SBSMStack``
   (similarity saliency), torchray ``rise`` and the ``lime`` package, each at equal numbers of
   masks/samples on the same face, score function and backend, runs alternating; ratio = ours /
   peer (median of the repeats; < 1: ours is faster).
4. ``minplus``: MinPlus per face at the paper's defaults (theta 0.01, t_max 20, width 161 and
   d 16 on 256 px, scaled at 112 px) on ``--faces`` faces at each size, with the PyTorch module
   (``backend="torch"``, what the suite ran before) and the default path (``"auto"``): seconds
   and forward passes per face, and the Spearman correlation of the two maps of each face.

Run by hand; not a test. Use an idle machine: a second job on the same cores slows both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_forward import measure as forward_table  # noqa: E402

from xfr import explain as ex  # noqa: E402
from xfr.engine import Counting, CountingScore, score_images  # noqa: E402
from xfr.models import load  # noqa: E402
from xfr.score import attribute_score, verification_score  # noqa: E402

SECTIONS = ("forward", "overhead", "peers", "minplus")
N_MASKS = 500


# ----------------------------------------------------------------------------- faces
def verification_faces(n: int, size: int = 112):
    """n genuine LFW pairs aligned onto dlib's template scaled to ``size``: [(probe, mate)]."""
    from explain_lfw_figure import scaled_template

    from xfr.data import lfw_pairs
    from xfr.models.align import NoFaceError, detect_and_align

    tpl = scaled_template(load("dlib-resnet").template, size)
    mtcnn = load("mtcnn")
    out = []
    for p in lfw_pairs():
        if not p.same:
            continue
        try:
            out.append((detect_and_align(p.a, tpl, mtcnn=mtcnn), detect_and_align(p.b, tpl, mtcnn=mtcnn)))
        except NoFaceError:
            continue
        if len(out) == n:
            return out
    raise SystemExit("not enough LFW pairs in data/")


def expression_faces(n: int, size: int = 256):
    """n FER-2013 faces (happy, surprise, angry, neutral in turn) resized to ``size``: [(face, k)]."""
    from xfr.data import fer2013
    from xfr.experiments.expressions import resize_face
    from xfr.io import load_image

    df = fer2013().sort_values("path")
    classes = ["happy", "surprise", "angry", "neutral"]
    rows = [df[df.label == c].iloc[i // len(classes)] for i, c in
            zip(range(n), [classes[i % len(classes)] for i in range(n)])]
    return [(resize_face(load_image(r.path), size), int(r.y)) for r in rows]


def setups():
    """(name, model, score-function factory(backend), image, mate or None) at the stages' two
    sizes."""
    dlib, fer = load("dlib-resnet"), load("mini-xception-fer2013")
    (probe, mate), = verification_faces(1)
    (face, k), = expression_faces(1)
    return [
        ("112 px dlib-resnet verification", dlib, lambda b="auto": verification_score(dlib, mate, backend=b), probe, mate),
        ("256 px mini-xception-fer2013 P(class)", fer, lambda b="auto": attribute_score(fer, k, backend=b), face, None),
    ]


def pure_seconds_per_image(f, image: torch.Tensor, n: int = 256, batch_size: int = 64) -> float:
    """Time of f alone on ``n`` stacked copies of ``image`` in batches, per image."""
    stack = image[None].expand(n, -1, -1, -1).contiguous()
    score_images(f, stack[:batch_size], batch_size)  # warm-up (first call builds the session)
    t0 = time.perf_counter()
    score_images(f, stack, batch_size)
    return (time.perf_counter() - t0) / n


# ----------------------------------------------------------------------------- sections
def section_overhead(args) -> list[dict]:
    rows = []
    for name, model, make, image, mate in setups():
        rows += _overhead(name, model, make(), image, mate)
    return rows


def _overhead(name: str, model, f, image: torch.Tensor, mate) -> list[dict]:
    rows = []
    pure = [pure_seconds_per_image(f, image)]
    methods: list[tuple[str, Callable]] = [
        ("occlusion", lambda g: ex.occlusion(g, image)),
        ("minplus+avg (paper defaults)", lambda g: ex.minplus_maps(g, image)),
        ("lime", lambda g: ex.lime_explain(g, image, n_samples=N_MASKS)),
        ("rise", lambda g: ex.rise(g, image, n_masks=N_MASKS)),
        ("rise-gauss", lambda g: ex.rise_gauss(g, image, n_masks=N_MASKS)),
        ("s-rise", lambda g: ex.srise(g, image, n_masks=N_MASKS)),
    ]
    runs = []
    for method, run in methods:
        g = CountingScore(f)
        t0 = time.perf_counter()
        run(g)
        runs.append((method, g.n_forward, time.perf_counter() - t0, g.seconds))
    if mate is not None:  # the pair methods see the embedder (counted through its fast path)
        for method, run in [("s-rise pair", lambda e: ex.srise_pair(e, image, mate, n_masks=N_MASKS)),
                            ("x-maps I-III", lambda e: ex.xmaps_methods(e, image, mate))]:
            e = Counting(model)
            t0 = time.perf_counter()
            run(e)
            runs.append((method, e.n_forward, time.perf_counter() - t0, e.seconds))
    pure.append(pure_seconds_per_image(f, image))
    per_image = float(np.mean(pure))
    for method, n, wall, in_f in runs:
        row = {"setup": name, "method": method, "forward": n, "wall_s": wall, "in_f_s": in_f,
               "pure_forward_s": n * per_image, "wall_over_pure": wall / (n * per_image),
               "wall_over_in_f": wall / in_f}
        rows.append(row)
        print(f"{name:40s} {method:30s} {n:6d} passes  wall {wall:7.2f} s  pure {n * per_image:7.2f} s"
              f"  wall/pure {row['wall_over_pure']:.3f}  wall/in-f {row['wall_over_in_f']:.3f}", flush=True)
    return rows


class _Classifier:
    """xaitk-saliency's ``ClassifyImage`` on our score function (HxWxC float images)."""

    def __init__(self, f, batch_size=64):
        from smqtk_classifier.interfaces.classify_image import ClassifyImage

        outer = self

        class Impl(ClassifyImage):
            def get_labels(self):
                return ["score"]

            def classify_images(self, img_iter):
                batch: list = []
                for img in img_iter:
                    batch.append(img)
                    if len(batch) == batch_size:
                        yield from outer.run(batch)
                        batch = []
                if batch:
                    yield from outer.run(batch)

            def get_config(self):
                return {}

        self.f, self.impl = f, Impl()

    def run(self, batch):
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            s = self.f(x)
        return [{"score": float(v)} for v in s]


class _Describer:
    """xaitk-saliency's ``ImageDescriptorGenerator`` on an embedder (HxWxC float images)."""

    def __init__(self, embed, batch_size=64):
        from smqtk_descriptors.interfaces.image_descriptor_generator import ImageDescriptorGenerator

        class Impl(ImageDescriptorGenerator):
            def generate_arrays_from_images(self, img_mat_iter):
                imgs = list(img_mat_iter)
                for i in range(0, len(imgs), batch_size):
                    x = torch.from_numpy(np.stack(imgs[i:i + batch_size])).permute(0, 3, 1, 2).float()
                    yield from embed(x).numpy()

            def get_config(self):
                return {}

        self.impl = Impl()


def _rise_stack():
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    gen = RISEStack(n=N_MASKS, s=8, p1=0.5, seed=0, threads=0)
    gen.fill = 0  # our RISE's fill: masked pixels are black
    return gen


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().astype(np.float32)


def section_peers(args) -> list[dict]:
    rows = []
    for name, model, make, image, mate in setups():
        rows += _peers(args, name, model, make(), image, mate)
    return rows


def _peers(args, name: str, model, f, image: torch.Tensor, mate) -> list[dict]:
    from captum.attr import Occlusion
    from lime import lime_image
    from torchray.attribution.rise import rise as torchray_rise
    from xaitk_saliency.impls.gen_image_similarity_blackbox_sal.sbsm import SBSMStack

    from xfr.explain.lime import superpixels
    from xfr.score import unit_embeddings

    rows = []
    hw = tuple(image.shape[1:])
    patch, stride = max(4, hw[0] // 7), max(2, hw[0] // 14)
    segments = superpixels(image)
    pairs: list[tuple[str, Callable, Callable]] = [
        ("captum Occlusion", lambda: ex.occlusion(f, image, patch=patch, stride=stride, fill=0.0),
         lambda: Occlusion(f).attribute(image[None], sliding_window_shapes=(3, patch, patch),
                                        strides=(3, stride, stride), baselines=0.0,
                                        perturbations_per_eval=64)),
        ("xaitk-saliency RISEStack", lambda: ex.rise(f, image, n_masks=N_MASKS, s=8, p=0.5),
         lambda: _rise_stack()(_hwc(image), _Classifier(f).impl)),
        ("torchray rise", lambda: ex.rise(f, image, n_masks=N_MASKS, s=7, p=0.5),
         lambda: torchray_rise(lambda x: f(x)[:, None], image[None], num_masks=N_MASKS, num_cells=7,
                               batch_size=64, p=0.5)),
        ("lime package", lambda: ex.lime_explain(f, image, n_samples=N_MASKS, segments=segments),
         lambda: lime_image.LimeImageExplainer(random_state=0).explain_instance(
             _hwc(image).astype(np.float64), lambda b: f(torch.from_numpy(b).permute(0, 3, 1, 2).float())
             .numpy()[:, None], labels=(0,), top_labels=None, hide_color=0, num_samples=N_MASKS,
             batch_size=64, segmentation_fn=lambda _img: segments.numpy() if hasattr(segments, "numpy")
             else segments)),
    ]
    if mate is not None:  # similarity saliency: SBSM occludes the probe, compares to the mate
        embed = unit_embeddings(model)
        pairs.append(("xaitk-saliency SBSMStack", lambda: ex.occlusion(f, image, patch=patch, stride=stride),
                      lambda: SBSMStack(window_size=(patch, patch), stride=(stride, stride), threads=0,
                                        fill=0)(_hwc(image), [_hwc(mate)], _Describer(embed).impl)))
    for peer, ours, theirs in pairs:
        t_ours, t_peer = [], []
        try:
            ours()  # warm-up of both (imports, first-call costs)
            theirs()
        except Exception as err:  # a peer that cannot run here is reported, not fatal
            print(f"{name:40s} {peer:26s} failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
            rows.append({"setup": name, "peer": peer, "error": f"{type(err).__name__}: {err}"})
            continue
        for _ in range(args.repeats):
            with torch.inference_mode():
                t0 = time.perf_counter()
                ours()
                t_ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                theirs()
                t_peer.append(time.perf_counter() - t0)
        ratio = statistics.median(t_ours) / statistics.median(t_peer)
        rows.append({"setup": name, "peer": peer, "ours_s": t_ours, "peer_s": t_peer,
                     "ours_over_peer": ratio})
        print(f"{name:40s} {peer:26s} ours {statistics.median(t_ours):7.2f} s  peer "
              f"{statistics.median(t_peer):7.2f} s  ours/peer {ratio:.3f}", flush=True)
    return rows


def section_minplus(args) -> list[dict]:
    from scipy.stats import spearmanr

    rows = []
    dlib, fer = load("dlib-resnet"), load("mini-xception-fer2013")
    cases = [("112 px dlib-resnet verification", lambda b, m: verification_score(dlib, m, backend=b), x, m)
             for x, m in verification_faces(args.faces)]
    cases += [("256 px mini-xception-fer2013 P(class)", lambda b, k: attribute_score(fer, k, backend=b), x, k)
              for x, k in expression_faces(args.faces)]
    for b in ("torch", "auto"):  # build each path's session before timing
        cases[0][1](b, cases[0][3])(cases[0][2][None])
        cases[-1][1](b, cases[-1][3])(cases[-1][2][None])
    for i, (name, make, image, other) in enumerate(cases):
        res = {}
        for b in ("torch", "auto"):
            f = CountingScore(make(b, other))
            t0 = time.perf_counter()
            maps = ex.minplus_maps(f, image)
            res[b] = (time.perf_counter() - t0, f.n_forward, ex.combine_minplus(maps))
        rho = float(spearmanr(res["torch"][2].flatten().numpy(), res["auto"][2].flatten().numpy())[0])
        rows.append({"setup": name, "face": i, "torch_s": res["torch"][0], "auto_s": res["auto"][0],
                     "torch_forward": res["torch"][1], "auto_forward": res["auto"][1], "spearman": rho})
        print(f"{name:40s} face {i:2d}  torch {res['torch'][0]:6.2f} s ({res['torch'][1]} passes)  auto "
              f"{res['auto'][0]:6.2f} s ({res['auto'][1]} passes)  Spearman {rho:.5f}", flush=True)
    return rows


def summary_minplus(rows: list[dict]) -> list[dict]:
    out = []
    for setup in dict.fromkeys(r["setup"] for r in rows):
        sub = [r for r in rows if r["setup"] == setup]
        out.append({"setup": setup, "faces": len(sub),
                    "torch_s_per_face_mean": float(np.mean([r["torch_s"] for r in sub])),
                    "auto_s_per_face_mean": float(np.mean([r["auto_s"] for r in sub])),
                    "auto_s_per_face_max": float(np.max([r["auto_s"] for r in sub])),
                    "forward_per_face_mean": float(np.mean([r["auto_forward"] for r in sub])),
                    "spearman_min": float(np.min([r["spearman"] for r in sub])),
                    "spearman_median": float(np.median([r["spearman"] for r in sub]))})
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Speed benchmark ({report['date']})", "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, "
             f"torch {m['torch']}, Python {m['python']}. Command: `{report['command']}`.", ""]

    def table(rows, cols, title):
        if not rows:
            return
        lines.extend([f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c)
                if isinstance(v, list):
                    v = statistics.median(v)
                cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    fw = report.get("forward", {})
    table(fw.get("rows", []), ["model", "path", "batch_size", "images_per_s", "speedup_vs_torch",
                               "agreement_kind", "agreement", "agrees", "first_call_s"], "Forward paths")
    if fw.get("adopt"):
        lines.extend(["Adopted by `backend=\"auto\"` (>= 1.3x at batch 64 and agreeing; the current default "
                      "kept while within 20% of the fastest): "
                      + ", ".join(f"{k}: {v}" for k, v in sorted(fw["adopt"].items())), ""])
    table(report.get("overhead", []), ["setup", "method", "forward", "wall_s", "pure_forward_s",
                                       "wall_over_pure", "wall_over_in_f"], "Explainer wall time / pure forward time")
    table(report.get("peers", []), ["setup", "peer", "ours_s", "peer_s", "ours_over_peer"],
          "Ours vs peers (median seconds; ratio < 1: ours faster)")
    table(report.get("minplus_summary", []), ["setup", "faces", "torch_s_per_face_mean", "auto_s_per_face_mean",
                                              "auto_s_per_face_max", "forward_per_face_mean", "spearman_min",
                                              "spearman_median"], "MinPlus per face at the paper's defaults")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--faces", type=int, default=10, help="faces per size for the MinPlus section")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per peer comparison")
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds per forward path")
    ap.add_argument("--forward-paths", default="torch,torch-cl,torch-compile,onnxruntime,openvino")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "speed")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/bench_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": sys.version.split()[0]}}
    t_start = time.perf_counter()
    if "forward" in sections:
        report["forward"] = forward_table(paths=args.forward_paths.split(","), rounds=args.rounds)
    if "overhead" in sections:
        report["overhead"] = section_overhead(args)
    if "peers" in sections:
        report["peers"] = section_peers(args)
    if "minplus" in sections:
        report["minplus"] = section_minplus(args)
        report["minplus_summary"] = summary_minplus(report["minplus"])
    report["seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')} "
          f"({report['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
