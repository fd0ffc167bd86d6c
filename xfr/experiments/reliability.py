"""The reliability stage: seed-to-seed Spearman of every random explainer as a function of the
number of masks, on real faces of every task (:mod:`xfr.explain.reliability`), and the mask
counts that reach rho = 0.9: the defaults of params.yaml and of the CLI come from this table."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import Tensor

from ..explain.reliability import masks_needed, prefix_maps, spearman


@dataclass
class TaskFaces:
    """The faces of one task and a factory of each face's score function."""

    task: str
    model: str
    names: list[str]
    images: list[Tensor]
    score: Callable[[int], Callable]  # face index -> f


def method_kwargs(method: str, spec: Mapping) -> dict:
    """The explainer arguments of a method entry of params (``method`` names the explainer)."""
    return {k: v for k, v in spec.items() if k != "method"}


def curves(tf: TaskFaces, methods: Mapping[str, Mapping], counts: Sequence[int], seeds: Sequence[int],
           scorings: Sequence[str], batch_size: int = 64, progress: bool = False) -> pd.DataFrame:
    """One row per (task, method, scoring, face, N): the Spearman correlation of the maps of
    seeds[0] and seeds[1] made of their first N masks, with the forward passes and seconds."""
    if len(seeds) != 2:
        raise ValueError(f"seeds must be two seeds, got {list(seeds)}")
    rows = []
    for i, (name, image) in enumerate(zip(tf.names, tf.images)):
        f = tf.score(i)
        for label, spec in methods.items():
            method = spec.get("method", label)
            kw = method_kwargs(method, spec)
            t0 = time.perf_counter()
            runs, n_forward = [], 0
            for seed in seeds:
                maps, nf = prefix_maps(f, image, method, counts, seed=seed, scorings=scorings,
                                       batch_size=batch_size, progress=progress, **kw)
                runs.append(maps)
                n_forward += nf
            secs = time.perf_counter() - t0
            for (scoring, n), a in runs[0].items():
                rows.append(dict(task=tf.task, model=tf.model, method=label, scoring=scoring, face=name,
                                 n_masks=n, spearman=spearman(a, runs[1][(scoring, n)]),
                                 forward_passes=n_forward, seconds=secs))
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, target: float = 0.9) -> pd.DataFrame:
    """Per (task, method, scoring): mean seed-to-seed Spearman at each N (wide), and the N at
    which the mean reaches ``target`` (measured, or predicted by Spearman-Brown)."""
    rows = []
    for (task, model, method, scoring), g in table.groupby(["task", "model", "method", "scoring"], sort=False):
        mean = g.groupby("n_masks")["spearman"].mean()
        low = g.groupby("n_masks")["spearman"].min()
        need, measured = masks_needed(mean.index, mean.values, target)
        row = dict(task=task, model=model, method=method, scoring=scoring, n_faces=g.face.nunique(),
                   masks_for_target=need, measured=measured,
                   seconds_per_face=float(g.drop_duplicates("face").seconds.mean()))
        row.update({f"rho_{n}": float(v) for n, v in mean.items()})
        row.update({f"min_rho_{n}": float(v) for n, v in low.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def chosen_defaults(summ: pd.DataFrame, scoring: str, cap: int, floor: int = 500) -> pd.DataFrame:
    """The mask count each (task, method) uses by default: the N that reaches the target under
    ``scoring``, rounded up to a multiple of 100 and at least ``floor`` (the papers' 500);
    ``None`` when it exceeds ``cap`` passes (the method is then reported unstable)."""
    s = summ[(summ.scoring == scoring) | (summ.method == "lime")]  # LIME's map has no scoring
    rows = []
    for r in s.itertuples():
        need = r.masks_for_target
        ok = np.isfinite(need) and need <= cap
        n = int(max(floor, np.ceil(need / 100.0) * 100)) if ok else None
        rows.append(dict(task=r.task, method=r.method, masks_for_target=need, measured=r.measured,
                         default_masks=n, stable_within_cap=bool(ok)))
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, target: float = 0.9):
    """Seed-to-seed Spearman vs number of masks, one panel per task, one line per method and
    scoring (mean over faces; band: min-max over faces)."""
    tasks = list(dict.fromkeys(table.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        t = table[table.task == task]
        for (method, scoring), g in t.groupby(["method", "scoring"], sort=False):
            m = g.groupby("n_masks")["spearman"]
            mean, lo, hi = m.mean(), m.min(), m.max()
            style = "-" if scoring == "centred" else ("--" if scoring == "raw" else ":")
            line, = ax.plot(mean.index, mean.values, style, marker="o", ms=3,
                            label=f"{method} ({scoring})" if method != "lime" else method)
            ax.fill_between(mean.index, lo.values, hi.values, color=line.get_color(), alpha=0.1)
        ax.axhline(target, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"{task} ({t.model.iloc[0]}, {t.face.nunique()} faces)")
        ax.set_xlabel("masks (samples) per map")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("seed-to-seed Spearman of the maps")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def metrics(summ: pd.DataFrame, defaults: pd.DataFrame) -> dict:
    """metrics.json: per task and method the N reaching the target and rho at the largest N."""
    out: dict = {}
    last = max(int(c.split("_")[1]) for c in summ.columns if c.startswith("rho_"))
    for r in summ.itertuples():
        key = r.method if r.method == "lime" else f"{r.method}_{r.scoring}"
        out.setdefault(r.task, {})[key] = dict(
            masks_for_rho_0_9=None if not np.isfinite(r.masks_for_target) else float(r.masks_for_target),
            measured=bool(r.measured), rho_at_max=getattr(r, f"rho_{last}"))
    for r in defaults.itertuples():
        out.setdefault(r.task, {}).setdefault("defaults", {})[r.method] = r.default_masks
    return out




# ----------------------------------------------------------------------------- verification scores
VERIFICATION_SCORES = ("cosine", "neg_euclidean", "centred_cosine", "cscore")


def score_values(emb: Tensor, ref: Tensor, mean: Tensor, cscore_fit) -> dict[str, np.ndarray]:
    """The candidate verification scores of raw descriptors ``emb`` [N, D] against ``ref`` [D]:
    cosine (eq. 2 of MinPlus, the default), negative euclidean distance (dlib's metric), cosine
    of descriptors centred on ``mean`` (the data set's mean descriptor), and the C-Score
    posterior P(genuine | cosine distance) of X-Maps eqs. 1-3 (``cscore_fit.curve``)."""
    import torch.nn.functional as F

    e, r = emb.double(), ref.double()
    cos = F.normalize(e, dim=1) @ F.normalize(r, dim=0)
    centred = F.normalize(e - mean.double(), dim=1) @ F.normalize(r - mean.double(), dim=0)
    return {"cosine": cos.numpy(), "neg_euclidean": (-(e - r).norm(dim=1)).numpy(),
            "centred_cosine": centred.numpy(), "cscore": np.asarray(cscore_fit.curve(1.0 - cos.numpy()))}


def separation(values: np.ndarray, same: np.ndarray) -> dict:
    """Genuine/impostor summary of one score: means, ranges, ROC AUC and d'."""
    from sklearn.metrics import roc_auc_score

    g, i = values[same], values[~same]
    pooled = np.sqrt((g.var(ddof=1) + i.var(ddof=1)) / 2)
    return dict(genuine_mean=float(g.mean()), genuine_min=float(g.min()), genuine_max=float(g.max()),
                impostor_mean=float(i.mean()), impostor_min=float(i.min()), impostor_max=float(i.max()),
                auc=float(roc_auc_score(same, values)), d_prime=float((g.mean() - i.mean()) / pooled))


def rescored_maps(run, scores: np.ndarray, scorings: Sequence[str], batch_size: int = 256) -> dict:
    """The RISE-family maps of ``run`` (:func:`xfr.explain.reliability.run_grouped`) with other
    per-mask scores (the masks are drawn again from their seed: same masks, new weights)."""
    import torch

    from ..explain.common import GroupedMaskSums

    acc = GroupedMaskSums(run.acc.hw)
    w = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    for start in range(0, run.n, batch_size):
        m = run.masks[start:min(start + batch_size, run.n)]
        acc(m, w[start:start + len(m)], start)
    return {sc: run.finish(acc, sc, None) for sc in scorings}


@dataclass
class ScoreStudy:
    separation: pd.DataFrame  # one row per score: genuine/impostor summary
    maps: pd.DataFrame  # one row per (pair, score, scoring): seed-to-seed Spearman, deletion AUC


def verification_score_study(embedder, mtcnn, pairs: Sequence, n_pairs: int, n_stability: int,
                             n_masks: int, seeds: Sequence[int], size: int, batch_size: int = 64,
                             cscore_bins: int = 40) -> ScoreStudy:
    """The candidate verification scores (:func:`score_values`) on the first ``n_pairs`` genuine
    and impostor ``pairs`` (aligned on the model's template, resized to ``size``), and RISE maps
    (``n_masks`` masks, two seeds) of the first ``n_stability`` genuine pairs under each score."""
    import torch

    from ..explain.reliability import run_grouped
    from ..metrics import deletion
    from ..metrics.cscore import fit_cscore
    from ..models.align import NoFaceError, detect_and_align
    from ..models.backends import accelerated
    from ..score import verification_score
    from .expressions import resize_face

    template = getattr(embedder, "template", "dlib150")
    chosen = [p for p in pairs if p.same][:n_pairs] + [p for p in pairs if not p.same][:n_pairs]
    chips: dict = {}
    for q in sorted({q for p in chosen for q in (p.a, p.b)}):
        try:
            chips[q] = resize_face(detect_and_align(q, template, mtcnn=mtcnn), size)
        except NoFaceError:
            continue
    chosen = [p for p in chosen if p.a in chips and p.b in chips]
    net = accelerated(embedder, "auto")

    def raw(images: Tensor) -> Tensor:
        with torch.inference_mode():
            return torch.cat([net(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])

    names = sorted(chips)
    emb = dict(zip(names, raw(torch.stack([chips[q] for q in names]))))
    mean = torch.stack(list(emb.values())).mean(0)
    same = np.array([p.same for p in chosen])
    a = torch.stack([emb[p.a] for p in chosen])
    b = torch.stack([emb[p.b] for p in chosen])
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double()).numpy()
    d = 1.0 - cos  # the histogram spans the distances seen (few pairs: few bins)
    fit = fit_cscore(d, same, bins=cscore_bins, range=(float(d.min()), float(d.max()) + 1e-9))
    per_pair = {s: np.array([score_values(a[i:i + 1], b[i], mean, fit)[s][0] for i in range(len(chosen))])
                for s in VERIFICATION_SCORES}
    sep = pd.DataFrame([dict(score=s, n_genuine=int(same.sum()), n_impostor=int((~same).sum()),
                             **separation(v, same)) for s, v in per_pair.items()])
    rows = []
    for p in [p for p in chosen if p.same][:n_stability]:
        x, y = chips[p.a], chips[p.b]
        ref = emb[p.b]
        f_cos = verification_score(embedder, y)
        maps = {}
        for seed in seeds:
            store: list[Tensor] = []

            def f(images: Tensor, store=store, ref=ref) -> Tensor:
                e = raw(images)
                store.append(e)
                return torch.nn.functional.cosine_similarity(e, ref[None].expand_as(e))

            run = run_grouped(f, x, "rise", n_masks, seed, batch_size=batch_size)
            values = score_values(torch.cat(store), ref, mean, fit)
            for s in VERIFICATION_SCORES:
                maps[(s, seed)] = rescored_maps(run, values[s], ("raw", "centred"))
        for s in VERIFICATION_SCORES:
            for scoring in ("raw", "centred"):
                m0, m1 = maps[(s, seeds[0])][scoring], maps[(s, seeds[1])][scoring]
                curve = deletion(f_cos, x, m0, step=0.05, batch_size=batch_size)
                rows.append(dict(pair=f"{p.a.name}|{p.b.name}", score=s, scoring=scoring,
                                 spearman=spearman(m0, m1), deletion_auc=curve.auc, n_masks=n_masks))
    return ScoreStudy(sep, pd.DataFrame(rows))


def confident_faces(model, table: pd.DataFrame, cls: str, n: int, n_candidates: int = 64,
                    batch_size: int = 64) -> pd.DataFrame:
    """The ``n`` faces of class ``cls`` among its first ``n_candidates`` (file-name order) that
    the model classifies correctly with the highest probability (columns path, y, prob)."""
    import torch

    sub = table[table["label"] == cls].sort_values("path").head(int(n_candidates))
    if sub.empty:
        raise ValueError(f"no images of class {cls!r}")
    from ..io import load_image

    images = torch.stack([load_image(p) for p in sub["path"]])
    k = int(sub["y"].iloc[0])
    with torch.inference_mode():
        probs = torch.cat([torch.softmax(model(images[i:i + batch_size]).float(), dim=1)
                           for i in range(0, len(images), batch_size)])
    out = sub.assign(prob=probs[:, k].numpy(), correct=(probs.argmax(dim=1) == k).numpy())
    out = out[out.correct].sort_values("prob", ascending=False, kind="stable").head(int(n))
    if len(out) < n:
        raise ValueError(f"only {len(out)} of the first {len(sub)} {cls!r} faces are classified "
                         f"correctly; raise n_candidates")
    return out.reset_index(drop=True)
