"""Every explainer on one real LFW pair (dlib-resnet verification score), side by side.

    python scripts/explain_lfw_figure.py [OUT.png] [--pair N] [--size 112] [--fast]

Probe X and mate Y: the N-th genuine pair of ``xfr.data.lfw_pairs()``; the non-mate of the S-RISE
triplet: the second image of the N-th impostor pair. Faces are aligned with MTCNN onto the dlib
chip template scaled to ``--size`` pixels. f(X) = <f_e(X), f_e(Y)> (MinPlus eq. 2). Rows: the
inputs; MinPlus, AVG and the four partial maps; occlusion, LIME, LIME-map, RISE, RISEgauss;
S-RISE on the triplet; X-Maps I-III (HLS blend, green = similar, red = dissimilar). Paper
defaults everywhere unless ``--fast`` (fewer iterations and masks, for a quick look).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xfr import explain as ex
from xfr import viz
from xfr.data import lfw_pairs
from xfr.engine import CountingScore
from xfr.explain.common import gaussian_smooth
from xfr.models import load
from xfr.models.align import Template, detect_and_align, get_template
from xfr.score import verification_score

ROOT = Path(__file__).resolve().parents[1]


def scaled_template(name: str, size: int) -> Template:
    """A model's alignment template rescaled to a ``size`` x ``size`` chip."""
    tpl = get_template(name)
    s = size / tpl.size
    pts = tuple(((x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5) for x, y in tpl.points)
    return Template(pts, size, f"{tpl.source}, scaled to {size}")


class TimedEmbedder:
    """Wraps an embedder, counting images and seconds (for the pair methods)."""

    def __init__(self, model):
        self.model = model
        self.n = 0
        self.seconds = 0.0

    def parameters(self):
        return self.model.parameters()

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - t0
        self.n += x.shape[0]
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=str(ROOT / "reports" / "explainers_lfw.png"))
    ap.add_argument("--pair", type=int, default=0, help="index among the genuine pairs")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--model", default="dlib-resnet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="t_max=3 and 200 masks (quick look)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    pairs = lfw_pairs()
    genuine = [p for p in pairs if p.same][args.pair]
    impostor = [p for p in pairs if not p.same][args.pair]
    model = load(args.model)
    tpl = scaled_template(model.template, args.size)
    probe = detect_and_align(genuine.a, tpl)
    mate = detect_and_align(genuine.b, tpl)
    nonmate = detect_and_align(impostor.b, tpl)
    f = CountingScore(verification_score(model, mate))
    emb = TimedEmbedder(model)
    s_pm = float(f(probe[None])[0])
    s_pn = float(verification_score(model, nonmate)(probe[None])[0])
    print(f"probe {genuine.a.name}  mate {genuine.b.name}  non-mate {impostor.b.name}")
    print(f"f(X) = <f_e(probe), f_e(mate)> = {s_pm:.4f};  <f_e(probe), f_e(non-mate)> = {s_pn:.4f}")

    n = 200 if args.fast else 500
    t_max = 3 if args.fast else 20
    common = dict(batch_size=args.batch_size, progress=args.progress)
    maps, timing = {}, {}

    def timed(name, fn, counter="f"):
        before = (f.n_forward, f.seconds) if counter == "f" else (emb.n, emb.seconds)
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        after = (f.n_forward, f.seconds) if counter == "f" else (emb.n, emb.seconds)
        timing[name] = {"forward": after[0] - before[0], "wall_s": round(wall, 2),
                        "in_f_s": round(after[1] - before[1], 2)}
        print(f"{name:12s} {timing[name]}", flush=True)
        return out

    mp = timed("minplus", lambda: ex.minplus_maps(f, probe, t_max=t_max, **common))
    maps["MinPlus"] = ex.combine_minplus(mp)
    maps["AVG"] = ex.combine_avg(mp)
    partial = {"H0-": mp.h0_minus, "H1-": mp.h1_minus, "H0+": mp.h0_plus, "H1+": mp.h1_plus}
    maps["occlusion"] = timed("occlusion", lambda: ex.occlusion(f, probe, **common))
    le = timed("lime", lambda: ex.lime_explain(f, probe, n_samples=n, seed=args.seed, **common))
    maps["LIME"], maps["LIME-map"] = le.lime_map, le.saliency
    maps["RISE"] = timed("rise", lambda: ex.rise(f, probe, n_masks=n, seed=args.seed, **common))
    maps["RISEgauss"] = timed("rise-gauss", lambda: ex.rise_gauss(f, probe, n_masks=n,
                                                                   seed=args.seed, **common))
    tri = timed("s-rise", lambda: ex.srise_triplet(emb, probe, mate, nonmate, n_masks=n,
                                                    seed=args.seed, **common), counter="emb")
    xm = timed("x-maps", lambda: ex.xmaps_methods(emb, probe, mate, **common), counter="emb")

    def ov(m):
        return viz.overlay(probe, m)

    smooth = {k: gaussian_smooth(v, mp.width) for k, v in partial.items()}
    rows = [
        [(f"probe X\nf(X)={s_pm:.3f}", viz.image_panel(probe)), ("mate Y", viz.image_panel(mate)),
         (f"non-mate\n<X,non-mate>={s_pn:.3f}", viz.image_panel(nonmate))],
        [("MinPlus", ov(maps["MinPlus"])), ("AVG", ov(maps["AVG"]))]
        + [(f"{k} (smoothed)", ov(v)) for k, v in smooth.items()],
        [(k, ov(maps[k])) for k in ("occlusion", "LIME", "LIME-map", "RISE", "RISEgauss")],
        [("S-RISE probe|mate", ov(tri.probe_mate)),
         ("S-RISE mate", viz.overlay(mate, tri.mate)),
         ("S-RISE probe|non-mate", ov(tri.probe_nonmate)),
         ("S-RISE non-mate", viz.overlay(nonmate, tri.nonmate))],
        [(f"X-Map {r} probe", viz.blend_hls(probe, xm[m].map1)) for m, r in ((1, "I"), (2, "II"), (3, "III"))]
        + [(f"X-Map {r} mate", viz.blend_hls(mate, xm[m].map2)) for m, r in ((1, "I"), (2, "II"))],
    ]
    out = viz.side_by_side(rows, args.out, title=f"{args.model} verification, LFW "
                           f"{genuine.a.stem} vs {genuine.b.stem} ({args.size}px)")
    side = Path(args.out).with_suffix(".json")
    side.write_text(json.dumps({"probe": genuine.a.name, "mate": genuine.b.name,
                                "nonmate": impostor.b.name, "score": s_pm,
                                "score_nonmate": s_pn, "timing": timing,
                                "minplus_iterations": [mp.iterations_minus, mp.iterations_plus],
                                "minplus_width_step": [mp.width, mp.step]}, indent=1))
    print(f"wrote {out} and {side}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
