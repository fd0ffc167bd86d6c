"""The gender-model make-up bias study of the CMS paper (John et al., "Canonical Saliency Maps:
Decoding Deep Face Models", §5.2 and Fig. 17), on real data with the two gender models of the zoo
(``faceres-gender`` and ``mini-xception-gender``); the ``bias`` stage (``notebooks/bias.ipynb``).

The paper saw the CMS map of its gender model fixate on the eye corners, hypothesized that the
model had learned eye make-up as a cue for 'female', and tested it qualitatively (Fig. 17) on a
few internet photos of the same people with and without real eye make-up: 'male' confidence
dropped when men wore make-up, 'female' confidence dropped a little for women without it, with a
few flipped decisions, "especially [for] males of Asian origin ... from the far East".

**Deviation (data):** we have no such photo pairs. We measure instead

1. the distribution of P(female) on CelebA faces labelled ``Heavy_Makeup`` vs not, per gender
   (:func:`group_table`, :func:`makeup_effect`), with the confounds that come with the label
   (lipstick, age, smiling, attractiveness ...) handled by a linear model of logit P(female)
   (:func:`makeup_regression`) and by exact matching on a few attributes
   (:func:`matched_makeup_effect`);
2. a controlled synthetic edit: the canonical eye region (the ring around each eye opening:
   lids, lash lines and eye corners, where eye make-up goes; :func:`xfr.faces.edits.edit_regions`) reprojected
   onto each real face through its FaceMesh mesh (:func:`xfr.explain.canonical.canonical_to_image`) as a
   soft mask, in which luminance is multiplied by ``factor`` (< 1 darkens, an "eye make-up" edit;
   > 1 lightens, clipped to [0, 1]) (:func:`xfr.faces.edits.luminance_edit`). The CONTROL is the same edit on a
   region of equal canonical area that is not the eyes (the cheeks by default), so that "any
   darkening of the face moves P(female)" is separated from "darkening the eyes does"
   (:func:`edit_scores`, :func:`edit_table`, :func:`eye_vs_control`);
3. the same on UTKFace, balanced over gender x race (White, Black, Asian, Indian, Others), where
   the paper's claim about East Asian men can be checked (UTKFace's "Asian" is mostly East Asian);
   adults only by default (:func:`xfr.data.utkface_table` ``min_age``): the balanced set is 43% children.

Neither zoo model is the paper's (a gender model fine-tuned on CelebA): faceres-gender is HSE's
MobileNet trained on VGGFace2, mini-xception-gender is Arriaga et al.'s net trained on IMDB.

Model inputs. Both models take the whole image of each data set and resize it themselves. The
mini-Xception gender net was trained on loose IMDB crops with hair and background; CelebA's
aligned 178x218 crops (here 89x109) already are such crops, UTKFace's 200x200 chips are tight,
so UTKFace faces are padded by ``context`` = 0.3 of their size (edge replication,
:func:`xfr.models.xception.pad_context`, the README's model note) before *both* models, and
CelebA faces are not. Measured on 200-face probes (all ages): mini-Xception 50% on bare UTKFace
chips vs 66% padded, 93% on bare CelebA vs 73% padded; faceres 77% on UTKFace either way and 99%
on bare CelebA (69% padded). The padding is applied inside
the score function, after the edit, so edits are made in the data set's own image.
P(female) is the softmax probability of class 'female' (faceres) / 'woman' (mini-Xception); a
face is called female when P(female) > 0.5.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import data as xdata
from ..data import _require
from ..engine import score_images
from ..faces.edits import EDITS_DEFAULT, EditRegions, _check_edits, edited_variants, face_meshes, image_masks
from ..io import load_image
from ..report import set_nested
from ..score import GenderModel
from ..stats import (
    _check_boot,
    _interval,
    bootstrap_ci,
    bootstrap_diff_ci,
    bootstrap_distribution,
    logit,
    mann_whitney_p,
    ols,
    wilcoxon_p,
)

GENDERS = ("female", "male")
DEFAULT_COVARIATES = ("Smiling", "Young", "Attractive", "Eyeglasses", "Bangs", "Blond_Hair")


# ----------------------------------------------------------------------------- tables
def score_table(models: Mapping[str, GenderModel], table: pd.DataFrame, context: float = 0.0,
                batch_size: int = 64) -> pd.DataFrame:
    """P(female) of every face of ``table`` (``path``, ``gender`` ...) under each model: the
    table's rows repeated per model, plus ``model``, ``p_female``, ``pred`` ('female' when
    P(female) > 0.5) and ``correct``."""
    _require(table, ["path", "gender"], "table")
    if not models:
        raise ValueError("no models given")
    fns = {k: m.score_fn(context) for k, m in models.items()}
    scores: dict[str, list[Tensor]] = {k: [] for k in fns}
    paths = list(table["path"])
    for start in range(0, len(paths), batch_size):
        batch = xdata.load_batch(paths[start:start + batch_size])
        for k, f in fns.items():
            scores[k].append(score_images(f, batch, batch_size))
    parts = []
    for k in fns:
        part = table.copy()
        part["model"] = k
        part["p_female"] = torch.cat(scores[k]).numpy().astype(np.float64)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["pred"] = np.where(out["p_female"] > 0.5, "female", "male")
    out["correct"] = out["pred"] == out["gender"]
    return out


def group_table(df: pd.DataFrame, by: Sequence[str], value: str = "p_female", n_boot: int = 2000,
                level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by`` (plus ``model`` when the frame has it): ``n``, ``mean``,
    ``median``, ``ci_lo``/``ci_hi`` (bootstrap CI of the mean) of ``value``, and ``accuracy``
    (mean of ``correct``) when the frame has that column."""
    by = [by] if isinstance(by, str) else list(by)
    keys = (["model"] if "model" in df.columns and "model" not in by else []) + by
    _require(df, keys + [value])
    if df.empty:
        raise ValueError("empty frame: nothing to group")
    rows = []
    for gkey, g in df.groupby(keys, sort=True):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        x = g[value].to_numpy(float)
        lo, hi = bootstrap_ci(x, "mean", n_boot, level, seed)
        row = dict(zip(keys, gkey))
        row.update(n=len(x), mean=float(x.mean()), median=float(np.median(x)), ci_lo=lo, ci_hi=hi)
        if "correct" in g.columns:
            row["accuracy"] = float(g["correct"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def makeup_effect(df: pd.DataFrame, value: str = "p_female", n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """Per model and gender: mean ``value`` with heavy make-up minus without (``diff``), its
    bootstrap CI (independent resampling of the two groups) and the two-sided Mann-Whitney U
    p-value; NaN where a group is empty."""
    _require(df, ["model", "gender", "makeup", value])
    rows = []
    for (model, gender), g in df.groupby(["model", "gender"], sort=True):
        a = g.loc[g["makeup"].astype(bool), value].to_numpy(float)
        b = g.loc[~g["makeup"].astype(bool), value].to_numpy(float)
        row = dict(model=model, gender=gender, n_makeup=len(a), n_none=len(b),
                   mean_makeup=float(a.mean()) if len(a) else float("nan"),
                   mean_none=float(b.mean()) if len(b) else float("nan"))
        if len(a) and len(b):
            row["diff"] = row["mean_makeup"] - row["mean_none"]
            row["ci_lo"], row["ci_hi"] = bootstrap_diff_ci(a, b, "mean", n_boot, level, seed)
            row["p_mannwhitney"] = mann_whitney_p(a, b)
        else:
            row.update(diff=float("nan"), ci_lo=float("nan"), ci_hi=float("nan"),
                       p_mannwhitney=float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def makeup_regression(df: pd.DataFrame, covariates: Sequence[str] = DEFAULT_COVARIATES,
                      n_boot: int = 1000, level: float = 0.95, seed: int = 0, eps: float = 1e-4
                      ) -> pd.DataFrame:
    """The make-up effect adjusted for confounds: per model and gender, the linear model
    logit P(female) ~ 1 + Heavy_Makeup + covariates (least squares; CelebA attributes as 0/1),
    with case-resampling bootstrap CIs (resamples in which the design is rank-deficient, e.g. no
    made-up face drawn, are left out; ``n_boot_used``). Covariates that are constant within a
    gender or collinear with the terms before them (e.g. lipstick among CelebA's men, worn only
    by the 3 labelled Heavy_Makeup) are dropped and listed in ``dropped``.
    Returns one row per model x gender x term: ``coef``, ``ci_lo``, ``ci_hi``, plus ``n`` and
    ``n_makeup``; the unadjusted make-up difference of logits is the row ``term`` = 'unadjusted'.
    """
    covariates = list(covariates)
    _require(df, ["model", "gender", "Heavy_Makeup", "p_female"] + covariates)
    _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    rows = []
    for (model, gender), g in df.groupby(["model", "gender"], sort=True):
        y = logit(g["p_female"].to_numpy(float), eps)
        mk = g["Heavy_Makeup"].to_numpy(bool)
        if mk.all() or not mk.any():
            continue
        cols, terms, dropped = [np.ones(len(g)), mk.astype(float)], ["Heavy_Makeup"], []
        for c in covariates:
            x = g[c].to_numpy(float)
            if np.linalg.matrix_rank(np.column_stack(cols + [x])) > len(cols):
                cols.append(x)
                terms.append(c)
            else:
                dropped.append(c)
        X = np.column_stack(cols)
        base = dict(model=model, gender=gender, n=len(g), n_makeup=int(mk.sum()),
                    dropped="+".join(dropped))
        coef = ols(y, X)
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        boot = np.stack([ols(y[i], X[i]) if np.linalg.matrix_rank(X[i]) == X.shape[1]
                         else np.full(X.shape[1], np.nan) for i in idx])
        ok = np.isfinite(boot[:, 0])
        if not ok.any():
            raise ValueError(f"{model}/{gender}: no bootstrap resample identifies every coefficient")
        unadj = y[mk].mean() - y[~mk].mean()
        boot_u = np.array([y[i][mk[i]].mean() - y[i][~mk[i]].mean() if mk[i].any() and (~mk[i]).any()
                           else np.nan for i in idx])
        lo_u, hi_u = _interval(boot_u[np.isfinite(boot_u)], level)
        rows.append(dict(base, term="unadjusted", coef=float(unadj), ci_lo=lo_u, ci_hi=hi_u,
                         n_boot_used=int(np.isfinite(boot_u).sum())))
        for j, t in enumerate(["intercept"] + terms):
            lo, hi = _interval(boot[ok, j], level)
            rows.append(dict(base, term=t, coef=float(coef[j]), ci_lo=lo, ci_hi=hi,
                             n_boot_used=int(ok.sum())))
    return pd.DataFrame(rows)


def matched_makeup_effect(df: pd.DataFrame, strata: Sequence[str], value: str = "p_female",
                          n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Exact matching on the attributes ``strata`` within each model x gender: the mean over
    matched strata (weighted by their number of make-up faces, i.e. the effect on the made-up)
    of mean ``value`` with make-up minus without; strata lacking either group are left out.
    Bootstrap CI by resampling faces within each stratum x make-up cell."""
    strata = list(strata)
    if not strata:
        raise ValueError("strata must name at least one attribute column")
    _require(df, ["model", "gender", "makeup", value] + strata)
    _check_boot(n_boot, level)
    rows = []
    for (model, gender), g in df.groupby(["model", "gender"], sort=True):
        est, boot, w_sum, n_m, n_n, k = 0.0, np.zeros(n_boot), 0, 0, 0, 0
        for _, s in g.groupby(strata, sort=True):
            a = s.loc[s["makeup"].astype(bool), value].to_numpy(float)
            b = s.loc[~s["makeup"].astype(bool), value].to_numpy(float)
            if not len(a) or not len(b):
                continue
            w = len(a)
            est += w * (a.mean() - b.mean())
            boot += w * (bootstrap_distribution(a, "mean", n_boot, seed + 2 * k)
                         - bootstrap_distribution(b, "mean", n_boot, seed + 2 * k + 1))
            w_sum, n_m, n_n, k = w_sum + w, n_m + len(a), n_n + len(b), k + 1
        row = dict(model=model, gender=gender, strata="+".join(strata), n_strata=k,
                   n_makeup=n_m, n_none=n_n)
        if w_sum:
            lo, hi = _interval(boot / w_sum, level)
            row.update(diff=est / w_sum, ci_lo=lo, ci_hi=hi)
        else:
            row.update(diff=float("nan"), ci_lo=float("nan"), ci_hi=float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def edit_scores(models: Mapping[str, GenderModel], table: pd.DataFrame, meshes: Sequence,
                regions: EditRegions, edits: Mapping[str, float] = EDITS_DEFAULT,
                context: float = 0.0, supersample: int = 1, batch_size: int = 64,
                chunk: int = 32, base: pd.DataFrame | None = None) -> pd.DataFrame:
    """The controlled edit on every face of ``table`` with a mesh: P(female) of the original and
    of each (region, edit) variant under each model. Returns one row per face x model x region x
    edit with the table's columns plus ``p_original``, ``p_edited``, ``delta`` (edited -
    original), ``delta_logit`` (the same on the logit scale, :func:`xfr.stats.logit`, which does not shrink
    near P = 0 or 1), ``flipped`` (decision at 0.5 changed), ``mask_area`` (sum of the soft mask
    in image pixels); faces without a mesh are left out. ``base``: a :func:`score_table` frame
    (same models and ``context``) to take the originals' P(female) from instead of rescoring."""
    _require(table, ["path", "face", "gender"], "table")
    if len(meshes) != len(table):
        raise ValueError(f"{len(meshes)} meshes for {len(table)} faces")
    edits = _check_edits(edits)
    fns = {k: m.score_fn(context) for k, m in models.items()}
    known = None
    if base is not None:
        _require(base, ["face", "model", "p_female"], "base")
        known = {(f, m): p for f, m, p in zip(base["face"], base["model"], base["p_female"])}
        missing = [(f, m) for f in table["face"] for m in fns if (f, m) not in known]
        if missing:
            raise ValueError(f"base lacks P(female) of {len(missing)} face x model pairs, e.g. "
                             f"{missing[0]}; score them with score_table or pass base=None")
    rows = []
    todo = [i for i, m in enumerate(meshes) if m is not None]
    for start in range(0, len(todo), chunk):
        idx = todo[start:start + chunk]
        batch, meta = [], []
        for i in idx:
            img = load_image(table["path"].iloc[i])
            masks = image_masks(regions, meshes[i], tuple(img.shape[1:]), supersample)
            keys, var = edited_variants(img, masks, edits)
            batch.append(var if known is not None else torch.cat([img[None], var]))
            meta.append((i, keys, {r: float(m.sum()) for r, m in masks.items()}))
        x = torch.cat(batch)
        off = 0 if known is not None else 1
        for mk, f in fns.items():
            p = score_images(f, x, batch_size).numpy().astype(np.float64)
            pos = 0
            for i, keys, areas in meta:
                p0 = known[(table["face"].iloc[i], mk)] if known is not None else p[pos]
                for j, (region, edit) in enumerate(keys):
                    rows.append(dict(row=i, model=mk, region=region, edit=edit, factor=edits[edit],
                                     p_original=float(p0), p_edited=p[pos + off + j],
                                     mask_area=areas[region]))
                pos += off + len(keys)
    res = pd.DataFrame(rows)
    if res.empty:
        raise ValueError("no face had a mesh: nothing was edited")
    res["delta"] = res["p_edited"] - res["p_original"]
    res["delta_logit"] = logit(res["p_edited"].to_numpy()) - logit(res["p_original"].to_numpy())
    res["flipped"] = (res["p_edited"] > 0.5) != (res["p_original"] > 0.5)
    res["to_female"] = (res["p_edited"] > 0.5) & (res["p_original"] <= 0.5)
    res["to_male"] = (res["p_edited"] <= 0.5) & (res["p_original"] > 0.5)
    meta_cols = [c for c in table.columns if c != "path"]
    out = table[meta_cols].reset_index(drop=True).iloc[res["row"]].reset_index(drop=True)
    return pd.concat([out, res.drop(columns="row")], axis=1)


def edit_table(edits: pd.DataFrame, by: Sequence[str] = ("gender",), n_boot: int = 2000,
               level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per model x region x edit x ``by``: ``n`` faces, mean and median ΔP(female) with a
    bootstrap CI of the mean (faces resampled), the mean Δlogit P(female) with its CI
    (``mean_delta_logit``, ``logit_ci_lo``/``_hi``), the fraction of decisions flipped, and of
    faces called male before and female after (``to_female``) / the reverse (``to_male``)."""
    by = [by] if isinstance(by, str) else list(by)
    keys = ["model", "region", "edit"] + by
    _require(edits, keys + ["delta", "flipped", "to_female", "to_male"], "edits")
    rows = []
    for gkey, g in edits.groupby(keys, sort=True):
        d = g["delta"].to_numpy(float)
        lo, hi = bootstrap_ci(d, "mean", n_boot, level, seed)
        dl = g["delta_logit"].to_numpy(float) if "delta_logit" in g.columns else np.full(len(d), np.nan)
        llo, lhi = bootstrap_ci(dl, "mean", n_boot, level, seed) if np.isfinite(dl).all() else (np.nan, np.nan)
        rows.append(dict(zip(keys, gkey), n=len(d), mean_delta=float(d.mean()),
                         median_delta=float(np.median(d)), ci_lo=lo, ci_hi=hi,
                         mean_delta_logit=float(dl.mean()), logit_ci_lo=llo, logit_ci_hi=lhi,
                         flip_rate=float(g["flipped"].mean()), to_female=float(g["to_female"].mean()),
                         to_male=float(g["to_male"].mean()),
                         mean_p_original=float(g["p_original"].mean())))
    return pd.DataFrame(rows)


def eye_vs_control(edits: pd.DataFrame, by: Sequence[str] = ("gender",), n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Paired per face: ΔP(female) of the eye edit minus that of the same edit on the control
    region; mean with bootstrap CI and the Wilcoxon signed-rank p-value, per model x edit x ``by``.
    A CI away from 0 means the eyes matter beyond "any darkening of the face"."""
    by = [by] if isinstance(by, str) else list(by)
    _require(edits, ["face", "model", "region", "edit", "delta"] + by, "edits")
    wide = edits.pivot_table(index=["face", "model", "edit"] + by, columns="region", values="delta",
                             aggfunc="first").reset_index()
    if not {"eyes", "control"} <= set(wide.columns):
        raise ValueError("edits must contain both regions 'eyes' and 'control'")
    wide = wide.dropna(subset=["eyes", "control"])
    wide["diff"] = wide["eyes"] - wide["control"]
    rows = []
    for gkey, g in wide.groupby(["model", "edit"] + by, sort=True):
        d = g["diff"].to_numpy(float)
        lo, hi = bootstrap_ci(d, "mean", n_boot, level, seed)
        rows.append(dict(zip(["model", "edit"] + by, gkey), n=len(d), mean_eyes=float(g["eyes"].mean()),
                         mean_control=float(g["control"].mean()), diff=float(d.mean()), ci_lo=lo,
                         ci_hi=hi, p_wilcoxon=wilcoxon_p(d)))
    return pd.DataFrame(rows)


def edit_dataset(models: Mapping[str, GenderModel], table: pd.DataFrame, by: Sequence[str],
                 per_group: int | None, regions: EditRegions, edits: Mapping[str, float] = EDITS_DEFAULT,
                 context: float = 0.0, mesh_scale: int = 1, supersample: int = 1, batch_size: int = 64,
                 base: pd.DataFrame | None = None, seed: int = 0) -> tuple[pd.DataFrame, list, pd.DataFrame, dict]:
    """The edit on ``per_group`` faces per group of ``by`` of ``table``
    (:func:`xfr.data.sample_per_group`): (those faces, their meshes (:func:`face_meshes` of the
    images upsampled ``mesh_scale`` x), their :func:`edit_scores`, seconds {'mesh_s', 'edit_s'})."""
    faces = xdata.sample_per_group(table, by, per_group, seed=seed)
    meshes, mesh_s = face_meshes(faces.path, scale=mesh_scale)
    t0 = time.perf_counter()
    scores = edit_scores(models, faces, meshes, regions, edits, context=context, supersample=supersample,
                         batch_size=batch_size, base=base)
    return faces, meshes, scores, {"mesh_s": mesh_s, "edit_s": time.perf_counter() - t0}


def area_ratio(edits: pd.DataFrame) -> float:
    """Mean over faces x models x edits of the image-area ratio of the eye mask to the control."""
    return float((edits[edits.region == "eyes"].mask_area.to_numpy()
                  / edits[edits.region == "control"].mask_area.to_numpy()).mean())


# ----------------------------------------------------------------------------- metrics
def _slug(v) -> str:
    return str(v).lower().replace(" ", "_").replace("-", "_")


def _finite(v) -> bool:
    return v is not None and np.isfinite(float(v))


def headline_metrics(groups: pd.DataFrame | None = None, effects: pd.DataFrame | None = None,
                     regression: pd.DataFrame | None = None, matched: pd.DataFrame | None = None,
                     edits: pd.DataFrame | None = None, eye_control: pd.DataFrame | None = None,
                     utk_groups: pd.DataFrame | None = None, race_edits: pd.DataFrame | None = None,
                     race_eye_control: pd.DataFrame | None = None, race_edit: str = "dark",
                     prefix: str = "bias") -> dict:
    """The headline numbers for metrics.json as a nested dict ``{prefix: {...}}`` (the full
    tables go to CSV); :func:`xfr.report.flatten_metrics` joins its keys with '_' into:

    - ``celeba_{model}_{gender}_{makeup|nomakeup}_{mean_pfemale,ci_lo,ci_hi,n,acc}``;
    - ``celeba_{model}_{gender}_makeup_diff[_ci_lo,_ci_hi,_p]`` (:func:`makeup_effect`),
      ``..._makeup_logit_adjusted[_ci_lo,_ci_hi]`` (:func:`makeup_regression`),
      ``..._makeup_matched_diff[_ci_lo,_ci_hi]`` (:func:`matched_makeup_effect`, where defined);
    - ``edit_{dataset}_{model}_{gender}_{region}_{edit}_{mean_delta,mean_delta_logit,flip}``
      (:func:`edit_table`),
      ``edit_{dataset}_{model}_{gender}_{edit}_eyes_minus_control[_ci_lo,_ci_hi,_p]``;
    - ``utk_{model}_{race}_{gender}_acc``; for the ``race_edit`` edit:
      ``utk_{model}_{race}_{gender}_{region}_{edit}_{mean_delta,mean_delta_logit}``,
      ``..._eyes_{edit}_flip`` and
      ``..._eyes_minus_control``.
    """
    m: dict = {}
    if groups is not None:
        for r in groups.itertuples():
            leaves = {"mean_pfemale": r.mean, "ci_lo": r.ci_lo, "ci_hi": r.ci_hi, "n": r.n}
            if hasattr(r, "accuracy"):
                leaves["acc"] = r.accuracy
            set_nested(m, ["celeba", r.model, r.gender, "makeup" if r.makeup else "nomakeup"], leaves)
    if effects is not None:
        for r in effects.itertuples():
            k = "makeup_diff"
            set_nested(m, ["celeba", r.model, r.gender], {k: r.diff, f"{k}_ci_lo": r.ci_lo, f"{k}_ci_hi": r.ci_hi,
                                                     f"{k}_p": r.p_mannwhitney})
    if regression is not None and not regression.empty:
        for r in regression[regression.term == "Heavy_Makeup"].itertuples():
            k = "makeup_logit_adjusted"
            set_nested(m, ["celeba", r.model, r.gender], {k: r.coef, f"{k}_ci_lo": r.ci_lo, f"{k}_ci_hi": r.ci_hi})
    if matched is not None:
        for r in matched.itertuples():
            if _finite(r.diff):
                k = "makeup_matched_diff"
                set_nested(m, ["celeba", r.model, r.gender], {k: r.diff, f"{k}_ci_lo": r.ci_lo, f"{k}_ci_hi": r.ci_hi})
    if edits is not None:
        for r in edits.itertuples():
            ds = [_slug(r.dataset)] if hasattr(r, "dataset") else []
            set_nested(m, ["edit", *ds, r.model, r.gender, r.region, r.edit],
                 {"mean_delta": r.mean_delta, "mean_delta_logit": r.mean_delta_logit, "flip": r.flip_rate})
    if eye_control is not None:
        for r in eye_control.itertuples():
            ds = [_slug(r.dataset)] if hasattr(r, "dataset") else []
            k = "eyes_minus_control"
            set_nested(m, ["edit", *ds, r.model, r.gender, r.edit],
                 {k: r.diff, f"{k}_ci_lo": r.ci_lo, f"{k}_ci_hi": r.ci_hi, f"{k}_p": r.p_wilcoxon})
    if utk_groups is not None:
        for r in utk_groups.itertuples():
            set_nested(m, ["utk", r.model, _slug(r.race), r.gender], {"acc": r.accuracy})
    if race_edits is not None:
        for r in race_edits[race_edits.edit == race_edit].itertuples():
            leaves = {"mean_delta": r.mean_delta, "mean_delta_logit": r.mean_delta_logit}
            if r.region == "eyes":
                leaves["flip"] = r.flip_rate
            set_nested(m, ["utk", r.model, _slug(r.race), r.gender, r.region, r.edit], leaves)
    if race_eye_control is not None:
        for r in race_eye_control[race_eye_control.edit == race_edit].itertuples():
            set_nested(m, ["utk", r.model, _slug(r.race), r.gender, r.edit], {"eyes_minus_control": r.diff})
    return {prefix: m} if prefix else m


# ----------------------------------------------------------------------------- figures
GROUP_ORDER = (("female", True), ("female", False), ("male", True), ("male", False))


def fig_distributions(scores: pd.DataFrame, title: str = ""):
    """Violin + box plots of P(female) per gender x heavy make-up group, one panel per model."""
    import matplotlib.pyplot as plt

    _require(scores, ["model", "gender", "makeup", "p_female"], "scores")
    models = list(dict.fromkeys(scores["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    colours = {True: "#c2185b", False: "#607d8b"}
    for ax, mk in zip(axes[0], models):
        s = scores[scores["model"] == mk]
        data, labels, cols, pos = [], [], [], []
        for j, (g, mu) in enumerate(GROUP_ORDER):
            x = s.loc[(s["gender"] == g) & (s["makeup"].astype(bool) == mu), "p_female"].to_numpy(float)
            if len(x):
                data.append(x)
                pos.append(j)
                cols.append(colours[mu])
                labels.append(f"{g}\n{'make-up' if mu else 'no make-up'}\nn={len(x)}")
        if any(len(x) > 1 for x in data):
            vp = ax.violinplot([x if len(x) > 1 else np.repeat(x, 2) for x in data], positions=pos,
                               widths=0.8, showextrema=False, bw_method=0.2)
            for body, c in zip(vp["bodies"], cols):
                body.set_facecolor(c)
                body.set_alpha(0.35)
        ax.boxplot(data, positions=pos, widths=0.22, showfliers=False, medianprops=dict(color="k"))
        for x, p_, c in zip(data, pos, cols):
            jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(x))
            ax.scatter(p_ + jitter, x, s=4 if len(x) > 20 else 16, color=c, alpha=0.5, zorder=3)
            ax.plot([p_ - 0.3, p_ + 0.3], [x.mean()] * 2, color=c, lw=2)
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, fontsize=8)
        ax.axhline(0.5, color="0.5", ls=":", lw=1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("P(female)")
        ax.set_title(mk)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_edit_regions(regions: EditRegions):
    """The eye (red) and control (blue) soft regions on the canonical face template."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 1, figsize=(3.2, 3.2))
    tpl = regions.face.template().permute(1, 2, 0).numpy()
    for name, colour in (("eyes", (1.0, 0.0, 0.0)), ("control", (0.0, 0.3, 1.0))):
        a = regions.soft[name].numpy()[..., None] * 0.7
        tpl = tpl * (1 - a) + a * np.array(colour)
    ax.imshow(tpl)
    ax.set_axis_off()
    ax.set_title("edit regions: eyes (red), control (blue)", fontsize=8)
    return fig


def _bar_panel(ax, tab: pd.DataFrame, groups: Sequence, group_col: str, series: Sequence[tuple],
               ylabel: str):
    width = 0.8 / len(series)
    for j, (region, edit, colour, hatch) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            r = tab[(tab[group_col] == g) & (tab["region"] == region) & (tab["edit"] == edit)]
            if len(r):
                r = r.iloc[0]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(r.mean_delta)
                lo.append(r.mean_delta - r.ci_lo)
                hi.append(r.ci_hi - r.mean_delta)
        ax.bar(xs, ys, width, yerr=[lo, hi], color=colour, hatch=hatch, edgecolor="k", lw=0.5,
               capsize=2, label=f"{region} {edit}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)


SERIES = (("eyes", "dark", "#4a148c", None), ("control", "dark", "#b39ddb", "//"),
          ("eyes", "light", "#f9a825", None), ("control", "light", "#fff59d", "//"))


def fig_edit_effects(tab: pd.DataFrame, title: str = ""):
    """Mean ΔP(female) (95% bootstrap CI) of each (region, edit) per gender; one panel per
    model (columns) and data set (rows, when ``tab`` has a ``dataset`` column)."""
    import matplotlib.pyplot as plt

    _require(tab, ["model", "region", "edit", "gender", "mean_delta", "ci_lo", "ci_hi"], "tab")
    datasets = list(dict.fromkeys(tab["dataset"])) if "dataset" in tab.columns else [None]
    models = list(dict.fromkeys(tab["model"]))
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(4.6 * len(models), 3.4 * len(datasets)),
                             squeeze=False)
    series = [s for s in SERIES if ((tab["region"] == s[0]) & (tab["edit"] == s[1])).any()]
    for r, ds in enumerate(datasets):
        for c, mk in enumerate(models):
            t = tab[(tab["model"] == mk) & ((tab["dataset"] == ds) if ds is not None else True)]
            genders = [g for g in GENDERS if (t["gender"] == g).any()]
            _bar_panel(axes[r, c], t, genders, "gender", series, "ΔP(female)")
            axes[r, c].set_title(f"{mk}" + (f" — {ds}" if ds else ""), fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_race_effects(tab: pd.DataFrame, title: str = "", edit: str = "dark"):
    """UTKFace: mean ΔP(female) (95% CI) of the eye edit and its control per race, men and
    women in separate rows, one column per model."""
    import matplotlib.pyplot as plt

    _require(tab, ["model", "region", "edit", "gender", "race", "mean_delta", "ci_lo", "ci_hi"], "tab")
    models = list(dict.fromkeys(tab["model"]))
    races = [r for r in xdata.UTK_RACES if (tab["race"] == r).any()]
    fig, axes = plt.subplots(2, len(models), figsize=(5.2 * len(models), 6.2), squeeze=False, sharey=True)
    series = [s for s in SERIES if s[1] == edit]
    for c, mk in enumerate(models):
        for r, g in enumerate(("male", "female")):
            t = tab[(tab["model"] == mk) & (tab["gender"] == g)]
            _bar_panel(axes[r, c], t, races, "race", series, "ΔP(female)")
            axes[r, c].set_title(f"{mk} — {g} faces, edit '{edit}'", fontsize=9)
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@dataclass
class Example:
    """One face of the before/after figure: the image, its masks, the variants and P(female)."""

    face: str
    label: str
    image: Tensor
    masks: dict
    variants: dict  # (region, edit) -> image
    p: dict  # model -> {"original": p, (region, edit): p}


def edit_examples(models: Mapping[str, GenderModel], table: pd.DataFrame, meshes: Sequence,
                  rows: Sequence[int], regions: EditRegions, edits: Mapping[str, float] = EDITS_DEFAULT,
                  context: float = 0.0, supersample: int = 1) -> list[Example]:
    """The edit on the faces ``rows`` (positions in ``table``) with every model's P(female),
    for :func:`fig_edit_examples` (Fig. 17 style)."""
    out = []
    for i in rows:
        if meshes[i] is None:
            continue
        row = table.iloc[i]
        img = load_image(row["path"])
        masks = image_masks(regions, meshes[i], tuple(img.shape[1:]), supersample)
        keys, var = edited_variants(img, masks, edits)
        x = torch.cat([img[None], var])
        p: dict[str, dict[str | tuple[str, str], float]] = {}
        for mk, m in models.items():
            s = score_images(m.score_fn(context), x).tolist()
            p[mk] = {"original": s[0], **{k: v for k, v in zip(keys, s[1:])}}
        label = " ".join(str(row[c]) for c in ("gender", "race") if c in row.index)
        if "makeup" in row.index:
            label += ", heavy make-up" if row["makeup"] else ", no make-up"
        out.append(Example(str(row["face"]), label, img, masks, dict(zip(keys, var)), p))
    return out


def fig_edit_examples(examples: Sequence[Example], title: str = "", columns: Sequence[tuple] | None = None):
    """Fig. 17 style: per face (rows) the original with the eye (red) and control (blue) masks,
    then the edited images, each titled with P(female) of every model."""
    import matplotlib.pyplot as plt

    if not examples:
        raise ValueError("no examples to draw")
    columns = list(columns) if columns is not None else list(examples[0].variants)
    ncol = 2 + len(columns)
    fig, axes = plt.subplots(len(examples), ncol, figsize=(1.9 * ncol, 2.3 * len(examples)), squeeze=False)
    for r, ex in enumerate(examples):
        rgb = ex.image.permute(1, 2, 0).numpy()
        # (title, image, key of the P(female) to print: "original", a variant key, or None)
        panels: list[tuple[str, np.ndarray, str | tuple | None]] = [("original", rgb, "original")]
        ov = rgb.copy()
        for name, colour in (("eyes", (1.0, 0.0, 0.0)), ("control", (0.0, 0.3, 1.0))):
            a = ex.masks[name].numpy()[..., None] * 0.6
            ov = ov * (1 - a) + a * np.array(colour)
        panels.append(("masks", ov, None))
        for col in columns:
            panels.append((f"{col[0]} {col[1]}", ex.variants[col].permute(1, 2, 0).numpy(), col))
        for c, (name, im, key) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if key is None:
                ax.set_title("eyes (red) / control (blue)", fontsize=6.5)
            else:
                ax.set_title((name + "\n" if r == 0 else "") + "\n".join(
                    f"{mk} {pp[key]:.2f}" for mk, pp in ex.p.items()), fontsize=6.5)
        axes[r, 0].set_ylabel(f"{ex.face}\n{ex.label}", fontsize=6.5)
    fig.suptitle(title or "P(female) before and after the edit", fontsize=9)
    fig.tight_layout()
    return fig


def pick_examples(table: pd.DataFrame, meshes: Sequence, n_per_group: int = 1,
                  by: Sequence[str] = ("gender",), seed: int = 0, exclude: Sequence[str] = ()
                  ) -> list[int]:
    """Positions of ``n_per_group`` faces with a mesh per group of ``by`` (seeded), leaving out
    faces where any boolean column of ``exclude`` (e.g. CelebA's 'Eyeglasses') is true."""
    by, exclude = list(by), list(exclude)
    _require(table, by + exclude, "table")
    keep = np.array([m is not None for m in meshes])
    for c in exclude:
        keep &= ~table[c].to_numpy(bool)
    ok = table.assign(_pos=range(len(table)))[keep]
    picks = []
    for _, g in ok.groupby(by, sort=True):
        picks += g.sample(min(n_per_group, len(g)), random_state=seed)["_pos"].tolist()
    return picks
