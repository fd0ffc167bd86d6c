"""Cost of every explainer on one real 112x112 face with the dlib ResNet verification score.

    python benchmarks/bench_explainers.py [--batch-size 64] [--methods minplus,rise,...] [--json out.json]

Per method: forward passes, wall time, time inside f, overhead = wall / time inside f (the
engine's and the mask generators' cost; must stay <= 1.10 at batch size 64). Then, in the same
run, our occlusion against captum's ``Occlusion`` (``perturbations_per_eval`` = batch size) on the
same score function, window, stride and baseline: time, ratio and the largest difference of the
two maps. MinPlus runs at the paper's defaults (reference window 161 px / grid step 16 / t_max
20 / theta 0.01 on 256 px, scaled to 112 px: width 71, d = 7), which the paper reports as about
4.5 minutes per image on a Colab GPU. Run by hand; not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from explain_lfw_figure import TimedEmbedder, scaled_template  # noqa: E402

from xfr import explain as ex  # noqa: E402
from xfr.data import lfw_pairs  # noqa: E402
from xfr.engine import CountingScore  # noqa: E402
from xfr.models import load  # noqa: E402
from xfr.models.align import detect_and_align  # noqa: E402
from xfr.score import verification_score  # noqa: E402

ALL = ("occlusion", "minplus", "lime", "rise", "rise-gauss", "s-rise", "x-maps")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--methods", default=",".join(ALL),
                    help=f"comma-separated, from {', '.join(ALL)}, minplus-full")
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="captum comparison repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pair = next(p for p in lfw_pairs() if p.same)
    model = load("dlib-resnet")
    tpl = scaled_template(model.template, 112)
    probe, mate = detect_and_align(pair.a, tpl), detect_and_align(pair.b, tpl)
    bs = args.batch_size
    print(f"face {pair.a.name} vs {pair.b.name}, 112x112, dlib-resnet, batch size {bs}, "
          f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}")
    rows = {}

    def run(name, fn, embedder=False):
        f = CountingScore(verification_score(model, mate))
        emb = TimedEmbedder(model)
        t0 = time.perf_counter()
        out = fn(emb if embedder else f)
        wall = time.perf_counter() - t0
        n, in_f = (emb.n, emb.seconds) if embedder else (f.n_forward, f.seconds)
        rows[name] = {"forward": n, "wall_s": wall, "in_f_s": in_f, "overhead": wall / in_f,
                      "ms_per_forward": 1000 * in_f / n}
        r = rows[name]
        print(f"{name:14s} forward {n:6d}  wall {wall:8.2f} s  in f {in_f:8.2f} s  "
              f"overhead {r['overhead']:.3f}  ({r['ms_per_forward']:.1f} ms/forward)", flush=True)
        return out

    # one-time imports (scikit-learn takes seconds) are not per-call explainer cost
    import skimage.segmentation  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401

    common = {"batch_size": bs}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m == "occlusion":
            run("occlusion", lambda f: ex.occlusion(f, probe, **common))
        elif m == "minplus":
            maps = run("minplus+avg", lambda f: ex.minplus_maps(f, probe, **common))
            t0 = time.perf_counter()
            ex.combine_minplus(maps), ex.combine_avg(maps)
            print(f"{'':14s} MinPlus at paper defaults: width {maps.width}, d {maps.step}, "
                  f"iterations -/+ {maps.iterations_minus}/{maps.iterations_plus}; eqs. 11-13 + "
                  f"AVG combine {time.perf_counter() - t0:.3f} s")
            rows["minplus+avg"].update(width=maps.width, step=maps.step,
                                       iterations=[maps.iterations_minus, maps.iterations_plus])
        elif m == "minplus-full":  # all 20 iterations (theta = -inf): the worst case
            run("minplus t=20", lambda f: ex.minplus_maps(f, probe, theta=float("-inf"), **common))
        elif m == "lime":
            run("lime+lime-map", lambda f: ex.lime_explain(f, probe, **common))
        elif m == "rise":
            run("rise", lambda f: ex.rise(f, probe, **common))
        elif m == "rise-gauss":
            run("rise-gauss", lambda f: ex.rise_gauss(f, probe, **common))
        elif m == "s-rise":
            run("s-rise", lambda f: ex.srise(f, probe, **common))
            run("s-rise pair", lambda e: ex.srise_pair(e, probe, mate, **common), embedder=True)
        elif m == "x-maps":
            run("x-maps I-III", lambda e: ex.xmaps_methods(e, probe, mate, **common), embedder=True)
        else:
            raise SystemExit(f"unknown method {m!r}; choose from {ALL}")

    if not args.no_captum:
        from captum.attr import Occlusion

        patch, stride, fill = 16, 8, 0.0
        t_captum, t_ours = [], []
        for _ in range(args.repeats):  # alternate, so that load changes hit both alike
            f_c = CountingScore(verification_score(model, mate))
            t0 = time.perf_counter()
            with torch.no_grad():
                ref = Occlusion(f_c).attribute(
                    probe[None], sliding_window_shapes=(3, patch, patch),
                    strides=(3, stride, stride), baselines=fill, perturbations_per_eval=bs)[0, 0]
            t_captum.append(time.perf_counter() - t0)
            f_o = CountingScore(verification_score(model, mate))
            t0 = time.perf_counter()
            ours = ex.occlusion(f_o, probe, patch=patch, stride=stride, fill=fill, batch_size=bs)
            t_ours.append(time.perf_counter() - t0)
        diff = float((ours - ref.float()).abs().max())
        med = lambda v: sorted(v)[len(v) // 2]
        rows["captum-vs-ours"] = {"captum_s": t_captum, "ours_s": t_ours,
                                  "captum_forward": f_c.n_forward, "ours_forward": f_o.n_forward,
                                  "ratio_ours_over_captum_median": med(t_ours) / med(t_captum),
                                  "max_abs_diff": diff}
        print(f"occlusion {patch}/{stride}, {args.repeats} alternating runs: captum "
              f"{[round(t, 2) for t in t_captum]} s ({f_c.n_forward} forwards) | ours "
              f"{[round(t, 2) for t in t_ours]} s ({f_o.n_forward} forwards) | median ours/captum "
              f"= {med(t_ours) / med(t_captum):.3f} | max |diff| of the maps = {diff:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batch_size": bs, "threads": torch.get_num_threads(),
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
