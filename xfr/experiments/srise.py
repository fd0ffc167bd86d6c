"""The S-RISE stage: the two readings of the S-RISE mask (patches kept / removed) and the two
scorings (raw, centred) on two recognition models, measured on the paper's own tests: the
randomization sanity check (§4.2, Fig. 2) with the same and with different masks, Table 1
(§4.4, deletion / insertion flip fractions at 10-1000 masks on 50 triplets) and the
self-occlusion test (§4.3, Fig. 5)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..explain.reliability import run_grouped, spearman
from ..faces.align import AlignedFaces
from ..jobs import ItemResult, ItemTask

SCORINGS = ("raw", "centred")


def lfw_triplets(pairs: Sequence, faces: AlignedFaces, n: int) -> list[tuple[Path, Path, Path]]:
    """(probe, mate, non-mate): the first ``n`` genuine LFW pairs whose faces were found, each
    with the second image of the next impostor pair whose identity differs from the probe's."""
    from .verification import identity_of

    genuine = [p for p in pairs if p.same and p.a in faces and p.b in faces]
    others = [p.b for p in pairs if not p.same and p.b in faces]
    out: list[tuple[Path, Path, Path]] = []
    j = 0
    for p in genuine:
        if len(out) >= n or j >= len(others):
            break
        while j < len(others) and identity_of(others[j]) == identity_of(p.a):
            j += 1
        if j < len(others):
            out.append((p.a, p.b, others[j]))
            j += 1
    return out


def decision_threshold(embedder, faces: AlignedFaces, triplets, size: int) -> tuple[float, float]:
    """(cosine threshold, accuracy): the threshold that best separates the triplets' mate pairs
    from their non-mate pairs (the decision whose flip Table 1 counts)."""
    from ..metrics.cscore import best_threshold
    from ..score import embed_chips

    paths = sorted({q for t in triplets for q in t})
    emb = dict(zip(paths, embed_chips(embedder, torch.stack([faces.chip(q, size) for q in paths]))))
    sims = [float(emb[p] @ emb[m]) for p, m, _ in triplets] + [float(emb[p] @ emb[n]) for p, _, n in triplets]
    same = np.array([True] * len(triplets) + [False] * len(triplets))
    t = best_threshold(1.0 - np.array(sims), same)  # on distances
    acc = float(np.mean((1.0 - np.array(sims) <= t) == same))
    return 1.0 - float(t), acc


class Table1Task(ItemTask):
    """One triplet ``[probe, mate, non-mate]`` of Table 1 (§4.4) as a job item: MTCNN + 5-point
    alignment of its three faces (:func:`xfr.faces.align.align_faces`, once), then
    :func:`xfr.experiments.verification.run_table1` on it for each reading of the mask
    (``readings``: S-RISE maps at every mask count, the deletion/insertion flips at the stage's
    decision ``threshold``; the random-order floor with the first reading). Records: one row per
    reading, variant and mask count (``triplet`` = the item index); no maps are kept."""

    columns = ("probe", "mate")
    has_records = True

    def __init__(self, spec):
        from .. import models
        from ..models.detect import MTCNNDetector

        super().__init__(spec)
        self._model = models.load(spec.model)
        self.detector = MTCNNDetector(min_face_size=50).eval()

    @property
    def model(self):
        return self._model

    def to(self, device) -> None:
        self._model.to(device)
        self.detector.to(device)

    @classmethod
    def normalize_item(cls, item, spec):
        if isinstance(item, (str, Path)) or len(item) != 3:
            raise ValueError(f"Table 1 items are [probe, mate, non-mate] paths, got {item!r}")
        return [str(q) for q in item]

    @classmethod
    def check(cls, spec) -> None:
        need = {"template", "size", "counts", "step", "n_patches", "kernel", "sigma", "readings", "threshold"}
        if missing := need - set(spec.options):
            raise ValueError(f"Table1Task options lack {sorted(missing)}")

    def explain(self, index, item, seed):
        from ..faces.align import align_faces
        from .verification import run_table1

        o = self.spec.options
        paths = [Path(q) for q in item]
        faces = align_faces(paths, self.detector, template=o["template"], pad=100, detect_scale=0.5)
        if missing := [q.name for q in paths if q not in faces]:
            raise ValueError(f"no face found in {', '.join(missing)}")
        frames, n_forward = [], 0
        for reading in o["readings"]:
            per, _, _ = run_table1(self._model, faces, [tuple(paths)], o["counts"], o["threshold"], o["size"],
                                   o["step"], o["n_patches"], o["kernel"], o["sigma"], seed, self.spec.batch_size,
                                   patches=reading, random_baseline=reading == o["readings"][0], stop_at_flip=True)
            frames.append(per.drop(columns="triplet"))
            n_forward += int(per.srise_forward_total.iloc[0])  # the S-RISE maps (the flip curves not counted)
        per = pd.concat(frames, ignore_index=True)
        return ItemResult(dict(score=float(per.similarity.iloc[0]), forward_passes=n_forward, probe=paths[0].name,
                               mate=paths[1].name), records=per.to_dict("records"))


def table1_job(model_name: str, triplets, out_dir, *, template: str, size: int, counts, step: float, n_patches: int,
               kernel: int, sigma: float, readings: Sequence[str], threshold: float, seed: int, batch_size: int,
               workers: int, shard_size: int):
    """Table 1 of ``triplets`` on ``model_name`` for every reading of the mask as a data-set job
    into ``out_dir`` (resumed when its shards are there, redone when the parameters or the code
    changed). Returns (the per triplet rows as :func:`run_table1` gives them, column ``patches``
    the reading, ``triplet`` = the triplet's index; the job summary)."""
    from ..jobs import load_records, package_code_hash, run_job

    opts = dict(template=template, size=size, counts=list(counts), step=step, n_patches=n_patches, kernel=kernel,
                sigma=sigma, readings=list(readings), threshold=float(threshold), code=package_code_hash())
    summary = run_job([[str(q) for q in t] for t in triplets], Table1Task, model_name, None, out_dir, seed=seed,
                      batch_size=batch_size, workers=workers, shard_size=shard_size, options=opts,
                      replace_other=True, progress=False)
    per = load_records(out_dir).rename(columns={"index": "triplet"})
    return per, summary


def fully_randomized(model, seed: int = 0):
    """The model with every parameter layer re-initialized (the last step of the cascade of
    :func:`xfr.metrics.randomization.cascading_randomization`). A converted graph whose weights
    are buffers (mobileface) has no layers to re-initialize: each of its weight tensors (more
    than one element) is re-drawn from N(0, its own standard deviation), the same test."""
    import copy

    from ..metrics.randomization import cascading_randomization, parameter_layers

    if parameter_layers(model):
        *_, (_, last) = cascading_randomization(model, seed=seed)
        return last.eval()
    from ..models import load

    # a fresh instance (a deep copy would keep the compiled graph's references to the original
    # tensors), changed in place; no longer the zoo model, so backend "auto" runs it in PyTorch
    name = getattr(model, "registry_name", None)
    work = load(name) if name else copy.deepcopy(model)
    work.__dict__.pop("registry_name", None)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, b in work.named_buffers():
            if b.is_floating_point() and b.numel() > 1:
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * b.std())
        probe = torch.rand(2, 3, 112, 112, generator=g)
        if torch.allclose(work(probe), model(probe)):
            raise ValueError(f"randomizing the buffers of {type(model).__name__} does not change its output")
    return work.eval()


def sanity_rows(model_name: str, embedder, randomized, faces: AlignedFaces, triplets, size: int,
                patches: str, n_masks: int, seed: int, batch_size: int, **srise_kw) -> list[dict]:
    """Randomization sanity check of S-RISE on probe-mate pairs: Spearman between the trained
    model's map and the fully randomized model's map with the same masks (seed) and with other
    masks (seed + 1); the trained model's own seed-to-seed Spearman (the reference) is the
    reliability stage's. The randomized copy runs on OpenVINO (exported like the zoo models;
    the same maps as PyTorch up to float rounding, 1.7x faster on dlib-resnet)."""
    from ..score import verification_score

    rows = []
    for t, (p, m, _) in enumerate(triplets):
        x, y = faces.chip(p, size), faces.chip(m, size)
        runs = {}
        for key, net, s, backend in (("trained", embedder, seed, "auto"),
                                     ("randomized", randomized, seed, "openvino"),
                                     ("randomized_other_seed", randomized, seed + 1, "openvino")):
            f = verification_score(net, y, backend=backend)
            runs[key] = run_grouped(f, x, "s-rise", n_masks, s, batch_size=batch_size, patches=patches,
                                    normalize=False, **srise_kw)
        for scoring in SCORINGS:
            maps = {k: r.map(scoring) for k, r in runs.items()}
            rows.append(dict(model=model_name, patches=patches, scoring=scoring, pair=t,
                             probe=Path(p).name, mate=Path(m).name,
                             rho_randomized_same_masks=spearman(maps["trained"], maps["randomized"]),
                             rho_randomized_other_masks=spearman(maps["trained"], maps["randomized_other_seed"])))
    return rows


def occlusion_rows(model_name: str, embedder, faces: AlignedFaces, triplets, size: int, patches: str,
                   n_masks: int, seed: int, batch_size: int, **srise_kw) -> tuple[list[dict], dict]:
    """S-RISE §4.3 / Fig. 5: the mate occluded by a surgical mask or by sunglasses, explained
    against the probe; the mean of the min-max scaled map inside the occluder over its mean
    outside (an explanation that neglects the occluded region gives a ratio < 1). Also returns
    {(kind, scoring): (image, map)} of the first pair for the figure."""
    from ..explain.common import minmax
    from ..faces.occluders import occlude
    from ..score import verification_score

    rows, first = [], {}
    for t, (p, m, _) in enumerate(triplets):
        x, y = faces.chip(p, size), faces.chip(m, size)
        f = verification_score(embedder, x)
        for kind in ("mask", "sunglasses"):
            img, alpha = occlude(y, faces.landmarks_of(m, size), kind)
            region = alpha > 0.5
            run = run_grouped(f, img, "s-rise", n_masks, seed + t, batch_size=batch_size, patches=patches,
                              normalize=False, **srise_kw)
            for scoring in SCORINGS:
                smap = minmax(run.map(scoring))
                inside, outside = float(smap[region].mean()), float(smap[~region].mean())
                rows.append(dict(model=model_name, patches=patches, scoring=scoring, pair=t, occluder=kind,
                                 similarity=float(f(img[None])[0]), saliency_inside=inside,
                                 saliency_outside=outside, ratio=inside / max(outside, 1e-12),
                                 occluded_fraction=float(region.float().mean())))
                if t == 0:
                    first[(kind, scoring)] = (img, smap)
    return rows, first


def table1_summary(per: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """Mean deletion / insertion flip fractions per model, reading, variant and mask count, with
    the paper's values (Table 1) beside them."""
    g = per.groupby(["model", "patches", "variant", "masks"], sort=False)
    t = g[["deletion", "insertion"]].mean().reset_index()
    t["n_triplets"] = g.size().values
    t["deletion_sem"] = g["deletion"].sem().values
    t["paper_deletion"] = [paper.get(int(k), (np.nan, np.nan))[0] if v != "random" else np.nan
                           for v, k in zip(t.variant, t.masks)]
    t["paper_insertion"] = [paper.get(int(k), (np.nan, np.nan))[1] if v != "random" else np.nan
                            for v, k in zip(t.variant, t.masks)]
    return t


def trend(per: pd.DataFrame, low: int, high: int) -> pd.DataFrame:
    """Per model, reading and variant: the paired per-triplet drop of the deletion flip fraction
    from ``low`` to ``high`` masks (the paper: 0.45 -> 0.21, a drop of 0.24)."""
    from ..stats import bootstrap_ci

    rows = []
    for (model, patches, variant), g in per[per.variant != "random"].groupby(["model", "patches", "variant"], sort=False):
        a = g[g.masks == low].set_index("triplet")["deletion"]
        b = g[g.masks == high].set_index("triplet")["deletion"]
        d = (a - b).dropna().to_numpy()
        lo, hi = bootstrap_ci(d) if len(d) else (np.nan, np.nan)
        rows.append(dict(model=model, patches=patches, variant=variant, n=len(d), drop=float(d.mean()),
                         ci_low=lo, ci_high=hi))
    return pd.DataFrame(rows)


def figure_table1(summary: pd.DataFrame, title: str):
    """Deletion and insertion flip fraction vs masks, one line per model / reading / variant."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, col in zip(axes, ("deletion", "insertion")):
        for (model, patches, variant), g in summary[summary.variant != "random"].groupby(
                ["model", "patches", "variant"], sort=False):
            ax.errorbar(g.masks, g[col], yerr=g["deletion_sem"] if col == "deletion" else None, marker="o",
                        ms=3, label=f"{model} {patches} {variant}")
        rnd = summary[summary.variant == "random"]
        for _, g in rnd.groupby("model"):
            ax.axhline(float(g[col].mean()), ls=":", lw=0.8, color="gray")
        paper = summary.dropna(subset=[f"paper_{col}"]).drop_duplicates("masks")
        ax.plot(paper.masks, paper[f"paper_{col}"], "k*--", label="paper (ArcFace R50)")
        ax.set_xscale("log")
        ax.set_xlabel("masks")
        ax.set_title(f"{col} flip fraction (lower = better; dotted: random order)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
