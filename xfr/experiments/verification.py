"""Face-verification experiments of three papers on LFW with the dlib ResNet (notebook
``notebooks/verification.ipynb``):

- MinPlus (Mery 2022) Fig. 2: MinPlus, AVG, LIME, LIME-map, RISE, RISEgauss on the same faces,
  each explained against a reference face of the same person (eq. 2);
- S-RISE (Lu & Ebrahimi) Figs. 3-5 (triplets, a failed verification, occluded faces) and Table 1
  (Deletion / Insertion as decision-flip fractions, §3.3, for 10 / 100 / 500 / 1000 masks);
- X-Maps (Knoche et al. 2023) Fig. 2 (C-Score, eqs. 1-3), Figs. 3-4 (methods I-III), Fig. 5
  (cut-and-paste) and Fig. 6 (sensitivity to patch size, blur, colour and shape).

Everything here is glue around :mod:`xfr.explain`, :mod:`xfr.metrics`, :mod:`xfr.faces` and
:mod:`xfr.models`: pair tables and thresholds, triplet selection, the runners of the method
comparison and of Table 1, and the figure panels. Detection and alignment (once per run) are
:func:`xfr.faces.align.align_faces`, the synthetic occluders :mod:`xfr.faces.occluders`, the
prefix-sum S-RISE :func:`xfr.explain.srise.srise_prefix_maps` and the single-occluder X-Map
:func:`xfr.explain.xmaps.xmap_single`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..explain.srise import srise_prefix_maps
from ..faces.align import AlignedFaces

# S-RISE Table 1 (Lu & Ebrahimi): iterations (= masks) -> (deletion, insertion), lower is better.
PAPER_SRISE_TABLE1 = {
    10: (0.4466, 0.3582),
    100: (0.2617, 0.1983),
    500: (0.2071, 0.1459),
    1000: (0.2077, 0.1384),
}


def identity_of(path: str | Path) -> str:
    """LFW identity from a file name ``First_Last_0001.jpg``."""
    return Path(path).stem.rsplit("_", 1)[0]


# ----------------------------------------------------------------------------- pairs
def pair_table(pairs, faces: AlignedFaces, embeddings: Tensor) -> pd.DataFrame:
    """One row per pair with both faces detected: a, b, same, similarity (cosine of the unit
    embeddings, eq. 2 of MinPlus) and distance (eq. 1 of X-Maps, 1 - similarity)."""
    rows = []
    for pr in pairs:
        if pr.a in faces and pr.b in faces:
            s = float(embeddings[faces.index[Path(pr.a)]] @ embeddings[faces.index[Path(pr.b)]])
            rows.append((Path(pr.a), Path(pr.b), bool(pr.same), s, 1.0 - s))
    return pd.DataFrame(rows, columns=["a", "b", "same", "similarity", "distance"])


def accuracy_at(similarity, same, threshold: float) -> float:
    """Accuracy of the decision "same person iff similarity >= threshold"."""
    s = np.asarray(similarity, dtype=np.float64)
    return float(((s >= threshold) == np.asarray(same, dtype=bool)).mean())


def make_triplets(table: pd.DataFrame, images: Sequence[Path], n: int, seed: int = 0,
                  threshold: float | None = None, accepted_only: bool = False,
                  exclude: Sequence[Path] = ()) -> list[tuple[Path, Path, Path]]:
    """``n`` (probe, mate, non-mate) triplets: a genuine pair of ``table`` (probe = a, mate = b)
    plus a non-mate drawn from ``images`` of another identity. ``accepted_only`` keeps genuine
    pairs the model accepts (similarity >= threshold), so a deletion can flip the decision.
    Deterministic in ``seed``; no probe is used twice and none from ``exclude``."""
    rng = np.random.default_rng(seed)
    gen = table[table["same"]]
    if accepted_only:
        if threshold is None:
            raise ValueError("accepted_only needs the verification threshold")
        gen = gen[gen["similarity"] >= threshold]
    order = rng.permutation(len(gen))
    images = [Path(p) for p in images]
    excluded = {Path(p) for p in exclude}
    out, used = [], set()
    for i in order:
        row = gen.iloc[int(i)]
        if row.a in excluded or row.b in excluded or identity_of(row.a) in used:
            continue
        others = [p for p in images if identity_of(p) != identity_of(row.a) and p not in excluded]
        if not others:
            raise ValueError("no image of another identity to use as non-mate")
        out.append((row.a, row.b, others[int(rng.integers(len(others)))]))
        used.add(identity_of(row.a))
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"only {len(out)} triplets available, {n} requested")
    return out


def explorer_pairs(table: pd.DataFrame, n: int, seed: int = 0) -> list:
    """Index labels of the ``n`` pairs of ``table`` the results site's explorer shows maps for:
    up to ``n // 2`` wrong decisions (lowest C-Score first), then the ``n // 4`` lowest C-Scores
    among the right decisions, then right decisions drawn at random (``seed``) for the rest."""
    if n < 0:
        raise ValueError(f"explorer_pairs must be >= 0, got {n}")
    wrong = table[~table["correct"]].sort_values("C").index.tolist()[: n // 2]
    right = table[table["correct"]].sort_values("C")
    low = right.index.tolist()[: n // 4]
    rest = [i for i in right.index if i not in low]
    rng = np.random.default_rng(seed)
    k = min(len(rest), n - len(wrong) - len(low))
    drawn = [rest[int(j)] for j in sorted(rng.choice(len(rest), size=k, replace=False))] if k > 0 else []
    return wrong + low + drawn


def failed_verification(table: pd.DataFrame, images: Sequence[Path], threshold: float,
                        seed: int = 0) -> tuple[str, tuple[Path, Path, Path], float]:
    """A triplet for S-RISE Fig. 4 (a failed prediction).

    Preferred: the imposter pair the model accepts with the highest similarity (a false accept):
    probe = its image a, non-mate = its image b, mate = another image of a's identity. Otherwise
    the genuine pair it rejects with the lowest similarity (false reject) with a random non-mate;
    if the model makes no error, the imposter pair with the highest similarity (closest call).
    Returns (kind, triplet, similarity of the failed pair)."""
    images = [Path(p) for p in images]
    imp = table[(~table["same"]) & (table["similarity"] >= threshold)].sort_values(
        "similarity", ascending=False)
    for row in imp.itertuples():
        for probe, other in ((row.a, row.b), (row.b, row.a)):
            mates = [p for p in images if identity_of(p) == identity_of(probe) and p != probe]
            if mates:
                return "false_accept", (probe, mates[0], other), float(row.similarity)
    gen = table[table["same"] & (table["similarity"] < threshold)].sort_values("similarity")
    if len(gen):
        row = gen.iloc[0]
        rng = np.random.default_rng(seed)
        others = [p for p in images if identity_of(p) != identity_of(row.a)]
        return ("false_reject", (row.a, row.b, others[int(rng.integers(len(others)))]),
                float(row.similarity))
    # no error at all: the closest call, the imposter pair with the highest similarity
    imp = table[~table["same"]].sort_values("similarity", ascending=False)
    for row in imp.itertuples():
        for probe, other in ((row.a, row.b), (row.b, row.a)):
            mates = [p for p in images if identity_of(p) == identity_of(probe) and p != probe]
            if mates:
                return "no_error_closest_imposter", (probe, mates[0], other), float(row.similarity)
    raise ValueError("the model makes no error on these pairs and no imposter has a mate")


def region_means(smap: Tensor, region: Tensor, threshold: float = 0.5) -> tuple[float, float]:
    """Mean of ``smap`` inside (region > threshold) and outside."""
    inside = region > threshold
    return float(smap[inside].mean()), float(smap[~inside].mean())


# ----------------------------------------------------------------------------- runners
@dataclass
class MethodRun:
    """One explanation: the map, its cost, and (when the pair is accepted) its S-RISE §3.3
    deletion / insertion flip fractions and AUCs."""

    method: str
    map: Tensor
    seconds: float
    n_forward: int
    params: str
    deletion: float = float("nan")
    insertion: float = float("nan")
    deletion_auc: float = float("nan")
    insertion_auc: float = float("nan")


def explain_face(f, image: Tensor, minplus_step: int | None, minplus_t_max: int, n_samples: int,
                 srise_masks: int, seed: int = 0, batch_size: int = 64) -> list[MethodRun]:
    """MinPlus Fig. 2's methods on one face for one score function ``f`` (eq. 2): MinPlus and
    AVG from the same four partial maps (Algorithms 1-4), LIME and LIME-map from the same
    samples, RISE, RISEgauss, and the single-image S-RISE map (the probe map of §3.2.2)."""
    from ..explain import combine_avg, combine_minplus, lime_explain, minplus_maps, rise, rise_gauss, srise
    from ..report import timed

    out = []
    t = timed(minplus_maps, f, image, step=minplus_step, t_max=minplus_t_max, batch_size=batch_size)
    mp = t.map
    p = f"d={mp.step} w={mp.width} T={minplus_t_max}"
    out.append(MethodRun("minplus", combine_minplus(mp), t.seconds, t.n_forward, p))
    out.append(MethodRun("avg", combine_avg(mp), t.seconds, t.n_forward, p))
    t = timed(lime_explain, f, image, n_samples=n_samples, seed=seed, batch_size=batch_size)
    out.append(MethodRun("lime", t.map.lime_map, t.seconds, t.n_forward, f"n={n_samples} top16"))
    out.append(MethodRun("lime-map", t.map.saliency, t.seconds, t.n_forward, f"n={n_samples}"))
    t = timed(rise, f, image, n_masks=n_samples, seed=seed, batch_size=batch_size)
    out.append(MethodRun("rise", t.map, t.seconds, t.n_forward, f"n={n_samples} s=8"))
    t = timed(rise_gauss, f, image, n_masks=n_samples, seed=seed, batch_size=batch_size)
    out.append(MethodRun("rise-gauss", t.map, t.seconds, t.n_forward, f"n={n_samples} 40 blobs"))
    t = timed(srise, f, image, n_masks=srise_masks, seed=seed, batch_size=batch_size)
    out.append(MethodRun("s-rise", t.map, t.seconds, t.n_forward, f"n={srise_masks}"))
    return out


def flip_metrics(f, image: Tensor, smap: Tensor, threshold: float, step: float,
                 batch_size: int = 64, stop_at_flip: bool = False) -> dict:
    """S-RISE §3.3 deletion / insertion (mean-value fill) of one map: flip fractions (1.0 when
    the decision never flips, flagged in ``*_flipped``) and the curves' AUCs (NaN with
    ``stop_at_flip``, which scores each curve only up to its flip)."""
    from ..metrics import deletion, insertion

    d = deletion(f, image, smap, threshold=threshold, step=step, fill="mean", batch_size=batch_size,
                 stop_at_flip=stop_at_flip)
    i = insertion(f, image, smap, threshold=threshold, step=step, fill="mean", batch_size=batch_size,
                  stop_at_flip=stop_at_flip)
    return {
        "deletion": d.flip_fraction if d.flipped else 1.0, "deletion_flipped": d.flipped,
        "insertion": i.flip_fraction if i.flipped else 1.0, "insertion_flipped": i.flipped,
        "deletion_auc": d.auc, "insertion_auc": i.auc, "n_forward": d.n_forward + i.n_forward,
        "fractions": d.fractions, "deletion_scores": d.scores, "insertion_scores": i.scores,
    }


def run_table1(embedder, faces: AlignedFaces, triplets, counts: Sequence[int], threshold: float,
               size: int, step: float, n_patches: int = 100, kernel: int = 40, sigma: float = 7.0,
               seed: int = 0, batch_size: int = 64, centered: bool = True,
               random_baseline: bool = True, patches: str = "keep", stop_at_flip: bool = False
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """S-RISE Table 1 on matching pairs: for each triplet the probe's S-RISE map against the mate
    (s_i^p of §3.2.2, black fill) for every mask count (one run, prefix sums), then deletion and
    insertion of the probe against the mate at ``threshold`` (mean-value fill, §3.3).

    Variants (column ``variant``): "s-rise" (the paper's map, raw scoring), "s-rise-centered"
    (the same run's centred map, see :func:`srise_prefix_maps`; when ``centered``) and "random" (a uniformly
    random pixel order, the floor any map should beat; ``masks`` = 0; when ``random_baseline``).

    ``stop_at_flip``: each curve scored only up to its flip (Table 1 reports flips only; the AUCs
    and the curves' later points are then NaN).

    Returns (per triplet, variant and count: flip fractions and AUCs; curves in long format:
    variant, masks, curve, fraction, score, triplet; {(variant, count): probe map of the first
    triplet} for the figure)."""
    from ..score import verification_score

    rows, curves, first_maps = [], [], {}
    for t, (probe, mate, _) in enumerate(triplets):
        x, y = faces.chip(probe, size), faces.chip(mate, size)
        f = verification_score(embedder, y)
        pm = srise_prefix_maps(f, x, counts, n_patches, kernel, sigma, 0.0, seed + t, patches,
                               batch_size)
        score = float(f(x[None])[0])
        todo = [("s-rise", c, m) for c, m in pm.maps.items()]
        if centered:
            todo += [("s-rise-centered", c, m) for c, m in pm.centered.items()]
        if random_baseline:
            g = torch.Generator().manual_seed(seed + 1000 + t)
            todo.append(("random", 0, torch.rand(x.shape[1:], generator=g)))
        for variant, c, smap in todo:
            if t == 0:
                first_maps[(variant, c)] = smap
            m = flip_metrics(f, x, smap, threshold, step, batch_size, stop_at_flip)
            rows.append({"triplet": t, "probe": Path(probe).name, "mate": Path(mate).name,
                         "patches": patches, "variant": variant, "masks": c, "similarity": score,
                         **{k: v for k, v in m.items() if not isinstance(v, np.ndarray)},
                         "srise_forward_total": pm.n_forward, "srise_seconds_total": pm.seconds})
            for curve in ("deletion", "insertion"):
                for fr, s in zip(m["fractions"], m[f"{curve}_scores"]):
                    curves.append((variant, c, curve, float(fr), float(s), t))
    per = pd.DataFrame(rows)
    cur = pd.DataFrame(curves, columns=["variant", "masks", "curve", "fraction", "score", "triplet"])
    return per, cur, first_maps


# ----------------------------------------------------------------------------- figures


def cscore_figure(res, fit, bins: int = 400):
    """X-Maps Fig. 2: genuine / imposter histograms of the cosine distance, their bin-wise ratio
    and the sigmoid (eq. 2) fitted to it, the threshold; right: each pair's C-Score (eq. 3)
    against its distance, correct and wrong decisions marked."""
    import matplotlib.pyplot as plt

    d, y = res.distances, res.same
    hist = fit.histogram
    lo, hi = float(d.min()), float(d.max())
    pad = 0.1 * (hi - lo)
    xs = np.linspace(max(0.0, lo - pad), hi + pad, 400)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    keep = (hist.centers >= xs[0]) & (hist.centers <= xs[-1])
    width = hist.edges[1] - hist.edges[0]
    ax.bar(hist.centers[keep], hist.genuine[keep], width=width, color="tab:green", alpha=0.6,
           label=f"genuine ({int(y.sum())})")
    ax.bar(hist.centers[keep], -hist.imposter[keep], width=width, color="tab:red", alpha=0.6,
           label=f"imposter ({int((~y).sum())})")
    ax.set_xlabel("cosine distance d (eq. 1)")
    ax.set_ylabel(f"pairs per bin ({bins} bins on [0, 2]; imposters downwards)")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{abs(v):.0f}"))
    ax2 = ax.twinx()
    ok = ~np.isnan(hist.ratio) & keep
    ax2.plot(hist.centers[ok], hist.ratio[ok], "k.", ms=4, label="ratio genuine/(genuine+imposter)")
    ax2.plot(xs, fit.curve(xs), "b-", lw=1.5, label="fitted sigmoid c(d) (eq. 2)")
    ax2.axvline(fit.threshold, color="gray", ls="--", label=f"threshold t={fit.threshold:.4f}")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("ratio / c(d)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    ax.set_title("X-Maps Fig. 2: distances, ratio and fitted sigmoid (all pairs)", fontsize=9)
    correct = res.correct
    for sel, mk, col, lab in ((correct & y, "o", "tab:green", "genuine, correct"),
                              (correct & ~y, "s", "tab:red", "imposter, correct"),
                              (~correct & y, "o", "k", "genuine, WRONG"),
                              (~correct & ~y, "s", "k", "imposter, WRONG")):
        bx.scatter(d[sel], res.C[sel], marker=mk, s=14 if "WRONG" in lab else 8,
                   facecolors=col if "WRONG" not in lab else "none", edgecolors=col, lw=0.8,
                   label=f"{lab} ({int(sel.sum())})")
    bx.axvline(float(np.mean(res.threshold)), color="gray", ls="--")
    bx.set_xlabel("cosine distance d")
    bx.set_ylabel("C-Score (eq. 3, fold-wise)")
    bx.set_ylim(0.45, 1.03)
    bx.set_title(f"C-Score per pair: accuracy {res.accuracy:.3f}, mean C correct "
                 f"{res.C[correct].mean():.3f} / wrong {res.C[~correct].mean() if (~correct).any() else float('nan'):.3f}",
                 fontsize=9)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fmt(x: float, digits: int = 3) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


__all__ = [
    "PAPER_SRISE_TABLE1", "identity_of", "pair_table", "accuracy_at",
    "make_triplets", "failed_verification", "explain_face",
    "flip_metrics", "run_table1", "cscore_figure",
    "MethodRun", "region_means", "fmt", "slug",
]


def slug(name: str) -> str:
    """A variant's name as a metrics key: ``"eq.10 combined"`` -> ``"eq10_combined"``."""
    return name.replace(" ", "_").replace(".", "").replace("(", "").replace(")", "")
