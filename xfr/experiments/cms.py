"""Canonical Saliency Maps experiments (John et al., the CMS paper, §3-§5; notebook
``notebooks/cms.ipynb``): the steps of the notebook (data sets, accuracies, the CIS runs of four
models, region readings, convergence, the alignment and patch-size ablations, the Grad-CAM family
comparison, the randomization check) and their nested metrics; the paper's figures are in
:mod:`xfr.experiments.cms_figures`.

The building blocks live in the package: working frames and face preparation in
:mod:`xfr.faces.mesh`, the score functions (eqs. 1, 8) in :mod:`xfr.score`, CIS / CMS and CIS runs
in :mod:`xfr.explain.canonical`, canonical regions in :mod:`xfr.explain.canonical_regions`, the
Grad-CAM family in :mod:`xfr.explain.cam`, samplers in :mod:`xfr.data`.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .. import data
from ..data import sample_pairs, sample_rows
from ..engine import ScoreFn
from ..explain.cam import CAM_LABELS, CAM_METHODS, VerificationTarget, cam_maps, cam_setup, layer_channels
from ..explain.canonical import CISRun, images_to_converge, run_cis, spearman_brown_n
from ..explain.canonical_regions import (
    canvas_coverage,
    masked_spearman,
    positive,
    region_masks,
    region_mass,
    spread_landmarks,
)
from ..faces.mesh import (
    WORK_SIZE,
    frame_matrix,
    frame_to_chip,
    pair_canvas,
    pair_mesh,
    prepare_faces,
    transform_continuous,
    warp_map,
    warp_replicate,
)
from ..jobs import ItemResult, ItemTask
from ..models.align import invert_affine
from ..score import (
    class_score,
    cosine_tau,
    decided_correctly,
    mate_confidence,
    pair_confidence,
    predict,
    unit_embeddings,
    warped_score,
)


# ----------------------------------------------------------------------------- tables
def confidence_table(task: str, results: Sequence, costs: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Eqs. 11-13 over images that each have their own score function (verification: its
    mate; classification: its ground-truth class), i.e. one
    :func:`xfr.metrics.confidence_metrics` result per image, all with the same methods.

    One row per method: task, method, forward_passes and seconds_per_image (``costs[method]``),
    n_images, average_drop, increase_in_confidence, win (in %)."""
    from ..metrics import average_drop, increase_in_confidence, win

    if not results:
        raise ValueError("no results to summarize")
    methods = list(results[0].methods)
    if any(list(r.methods) != methods for r in results):
        raise ValueError("every result must have the same methods in the same order")
    mi = np.concatenate([r.m_image for r in results])
    me = np.concatenate([r.m_explained for r in results])
    drop, inc, wins = average_drop(mi, me), increase_in_confidence(mi, me), win(me)
    rows = []
    for j, m in enumerate(methods):
        passes, secs = costs.get(m, (np.nan, np.nan))
        rows.append(dict(task=task, method=m, forward_passes=float(passes), seconds_per_image=float(secs),
                         n_images=len(mi), average_drop=float(np.nanmean(drop[:, j])),
                         increase_in_confidence=float(np.mean(inc[:, j])), win=float(np.mean(wins[:, j]))))
    return pd.DataFrame(rows)


def confidence_per_image(task: str, results: Sequence, names: Sequence[str]) -> pd.DataFrame:
    """The per-image terms behind :func:`confidence_table` (the items the claims table
    bootstraps, :mod:`xfr.experiments.claims`): one row per image and method with task, image
    (``names[i]``), method, M(I), M(E) and the eq. 11-13 terms (``average_drop`` in %, NaN where
    M(I) <= 0; ``increase`` 0 or 100; ``win`` 0-100, ties shared)."""
    from ..metrics import average_drop, increase_in_confidence, win

    if len(results) != len(names):
        raise ValueError(f"{len(results)} results for {len(names)} image names")
    rows = []
    for res, name in zip(results, names):
        mi, me = np.asarray(res.m_image, dtype=np.float64), np.asarray(res.m_explained, dtype=np.float64)
        drop, inc, wins = average_drop(mi, me), increase_in_confidence(mi, me), win(me)
        for i in range(len(mi)):
            img = name if len(mi) == 1 else f"{name}#{i}"
            for j, m in enumerate(res.methods):
                rows.append(dict(task=task, image=img, method=m, m_image=float(mi[i]), m_explained=float(me[i, j]),
                                 average_drop=float(drop[i, j]), increase=float(inc[i, j]), win=float(wins[i, j])))
    return pd.DataFrame(rows, columns=["task", "image", "method", "m_image", "m_explained", "average_drop",
                                       "increase", "win"])


# ----------------------------------------------------------------------------- metrics
def _metric(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


# ----------------------------------------------------------------------------- §3.1 faces
def prepare_sets(mtcnn, fer_images: int | None, utk_images: int | None, celeba_images: int | None,
                 n_pairs: int | None, seed: int = 0, crop_scale: float = 1.4,
                 max_mesh_error: float = 0.15, work_size: int = WORK_SIZE):
    """The four data sets sampled (FER-2013 stratified by class, UTKFace by gender x race,
    CelebA by gender, LFW fold-1 pairs half genuine) and prepared in their working frames
    (:func:`xfr.faces.mesh.prepare_faces`). Labels: FER class index; gender 0 = woman/female,
    1 = man/male (both models' class order).

    Returns (sets: name -> PreparedSet, sampled pairs, kept pairs (pair, face a, face b) with both
    faces prepared, the preparation table) and, as ``metrics``, the nested face counts."""
    fer_rows, utk_rows = sampled_rows(fer_images, utk_images, seed)
    celeba_rows = sample_rows(data.celeba(), celeba_images, seed, stratify=["Male"])
    pairs = sample_pairs(data.lfw_pairs(), n_pairs, seed)
    lfw_paths = list(dict.fromkeys([p for pr in pairs for p in (pr.a, pr.b)]))
    sets = {
        "FER-2013": prepare_faces(list(fer_rows.path), list(fer_rows.y), "fer2013", "full", mtcnn,
                                  max_mesh_error=max_mesh_error, size=work_size),
        "UTKFace": prepare_faces(list(utk_rows.path), list(1 - utk_rows.gender), "utkface", "crop", mtcnn,
                                 crop_scale=crop_scale, max_mesh_error=max_mesh_error, size=work_size,
                                 metas=utk_rows[["gender", "race", "age"]].to_dict("records")),
        "CelebA": prepare_faces(list(celeba_rows.path), list(celeba_rows.Male.astype(int)), "celeba", "crop",
                                mtcnn, crop_scale=crop_scale, max_mesh_error=max_mesh_error, size=work_size,
                                metas=celeba_rows[["Male", "Heavy_Makeup"]].to_dict("records")),
        "LFW": prepare_faces(lfw_paths, [0] * len(lfw_paths), "lfw", "align", mtcnn, template="dlib150",
                             max_mesh_error=max_mesh_error, size=work_size),
    }
    lfw_face = {f.name: f for f in sets["LFW"].faces}
    kept_pairs = [(pr, lfw_face[pr.a.name], lfw_face[pr.b.name]) for pr in pairs
                  if pr.a.name in lfw_face and pr.b.name in lfw_face]
    prep = pd.DataFrame([s.summary(k) for k, s in sets.items()])
    return sets, pairs, kept_pairs, prep


def sampled_rows(fer_images: int | None, utk_images: int | None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The FER-2013 (stratified by class) and UTKFace (by gender x race) rows of the CMS runs."""
    return (sample_rows(data.fer2013(), fer_images, seed, stratify=["label"]),
            sample_rows(data.utkface(), utk_images, seed, stratify=["gender", "race"]))


def face_metrics(prep: pd.DataFrame, pairs: Sequence, kept_pairs: Sequence) -> dict:
    """{"faces": {data set: {input, kept, no_face, bad_mesh}}, "lfw_pairs": {sampled, kept}}."""
    faces = {r.dataset.lower().replace("-", ""): dict(input=r.input, kept=r.kept, no_face=r.no_face,
                                                      bad_mesh=r.bad_mesh) for r in prep.itertuples()}
    return {"faces": faces, "lfw_pairs": dict(sampled=len(pairs), kept=len(kept_pairs))}


def coverages(points: Tensor, face) -> tuple[dict, int]:
    """Face coverage of the spread landmarks and of every k-th landmark (same count) for recorded
    patches of 12 and 16 px: ({"12px", "16px", "strided": {"12px", "16px"}}, k)."""
    k = max(1, round(468 / len(points)))
    cover = {fs: canvas_coverage(points, fs, face) for fs in (12, 16)}
    strided = {fs: canvas_coverage(torch.arange(0, 468, k), fs, face) for fs in (12, 16)}
    return {"12px": cover[12], "16px": cover[16],
            "strided": {"12px": strided[12], "16px": strided[16]}}, k


# ----------------------------------------------------------------------------- models, scores
def _stack(faces) -> Tensor:
    return torch.stack([f.image for f in faces])


def _labels(faces) -> Tensor:
    return torch.tensor([f.label for f in faces])


def accuracy_table(fer_model, gender_mini, faceres, dlib, sets: Mapping, kept_pairs: Sequence,
                   gender_context: float = 0.0) -> tuple[pd.DataFrame, float]:
    """Each model's accuracy on the prepared faces (the gender mini-Xception with and without
    extra context) and tau of eq. 8 (best accuracy on the sampled pairs, 224 working chips)."""
    acc_rows = []
    X, y = _stack(sets["FER-2013"].faces), _labels(sets["FER-2013"].faces)
    acc_rows.append(dict(model="mini-xception-fer2013", data="FER-2013", context=0.0, n=len(y),
                         accuracy=float((predict(fer_model, X).argmax(1) == y).float().mean())))
    for ds in ("UTKFace", "CelebA"):
        X, y = _stack(sets[ds].faces), _labels(sets[ds].faces)
        for ctx in sorted({0.0, 0.3, float(gender_context)}):
            acc_rows.append(dict(model="mini-xception-gender", data=ds, context=ctx, n=len(y),
                                 accuracy=float((predict(gender_mini, X, ctx).argmax(1) == y).float().mean())))
        acc_rows.append(dict(model="faceres-gender", data=ds, context=0.0, n=len(y),
                             accuracy=float((predict(faceres, X).argmax(1) == y).float().mean())))
    chips_a = _stack([fa for _, fa, _ in kept_pairs])
    chips_b = _stack([fb for _, _, fb in kept_pairs])
    embed = unit_embeddings(dlib)
    with torch.inference_mode():
        cos_pairs = (embed(chips_a) * embed(chips_b)).sum(1).numpy()
    same = np.array([pr.same for pr, _, _ in kept_pairs])
    tau = cosine_tau(cos_pairs, same)
    pair_correct = (cos_pairs > tau) == same
    acc_rows.append(dict(model="dlib-resnet", data="LFW pairs", context=0.0, n=len(same),
                         accuracy=float(pair_correct.mean())))
    return pd.DataFrame(acc_rows), tau


def accuracy_metrics(accuracy: pd.DataFrame) -> dict:
    """{model: {data: {"ctx<c>": accuracy}}}."""
    out: dict = {}
    for r in accuracy.itertuples():
        data_key = r.data.split()[0].lower().replace("-", "")
        out.setdefault(r.model, {}).setdefault(data_key, {})[f"ctx{r.context:g}"] = r.accuracy
    return out


# ----------------------------------------------------------------------------- §3 CMS of the models
def cis_runs(fer_model, gender_mini, faceres, dlib, sets: Mapping, kept_pairs: Sequence, tau: float,
             points: Tensor, face, patch: int = 15, canvas_patch: int | None = 16, batch_size: int = 64,
             gender_context: float = 0.0, faceres_images: int | None = None,
             work_size: int = WORK_SIZE, done: Mapping[str, CISRun] | None = None) -> dict[str, CISRun]:
    """The CIS maps (Algorithm 1) of the four models: expression (FER-2013), the two gender models
    on UTKFace and CelebA (faceres-gender on the first ``faceres_images`` faces), verification
    (eq. 8 on the LFW pair canvases). ``done``: runs already computed (the jobs' runs, read by
    :func:`run_from_job`), kept as they are."""
    kw = dict(patch=patch, points=points, canvas_patch=canvas_patch, batch_size=batch_size, face=face)

    def classifier_run(task, name, model, faces, context=0.0):
        return run_cis(task, name, faces, lambda fc: class_score(model, fc.label, context),
                       lambda fc: fc.image, lambda fc: fc.mesh, **kw)

    done = dict(done or {})
    runs = {}
    runs["expression_fer2013"] = done.get("expression_fer2013") or classifier_run(
        "expression, FER-2013", "mini-xception-fer2013", fer_model, sets["FER-2013"].faces)
    for ds in ("UTKFace", "CelebA"):
        key = ds.lower()
        runs[f"gender_mini_{key}"] = done.get(f"gender_mini_{key}") or classifier_run(
            f"gender, {ds}", "mini-xception-gender", gender_mini, sets[ds].faces, gender_context)
        runs[f"gender_faceres_{key}"] = classifier_run(f"gender, {ds}", "faceres-gender", faceres,
                                                       sets[ds].faces[:faceres_images])
    runs["verification_lfw"] = run_cis(
        "verification, LFW", "dlib-resnet", kept_pairs,
        lambda it: pair_confidence(dlib, tau, it[0].same),
        lambda it: pair_canvas(it[1].image, it[2].image),
        lambda it: pair_mesh(it[1].mesh, it[2].mesh, work_size), **kw)
    return runs


# ----------------------------------------------------------------------------- §3 at scale: xfr.jobs
# The two large CIS runs (>= 1,000 faces per mini-Xception model, the Fig. 5 convergence claim)
# run as data-set jobs (xfr.jobs: shards, resumable, Ray workers); the notebook reads their shards.
JOB_RUNS = {  # run key -> (model, task, data set, face preparation mode)
    "expression_fer2013": ("mini-xception-fer2013", "expression, FER-2013", "fer2013", "full"),
    "gender_mini_utkface": ("mini-xception-gender", "gender, UTKFace", "utkface", "crop"),
}


class CISTask(ItemTask):
    """One face of a CMS run as a job item ``[path, label]``: face preparation (MTCNN, working
    frame, FaceMesh; :func:`xfr.faces.mesh.prepare_faces`, a face it drops is a failed item with
    the reason) and its CIS (Algorithm 1) on the class score (eq. 1). Maps: ``cis`` (the CIS on
    the canonical face, eq. 5) for every face, ``image_map`` (the drops in the image) for the
    first ``image_map_items`` (the CAM comparison and the examples read those); float16."""

    columns = ("name", "label", "canvas_patch", "mesh_error", "cis_seconds")

    def __init__(self, spec):
        from .. import models
        from ..explain.canonical import canonical_face

        super().__init__(spec)
        o = spec.options
        self._model = models.load(spec.model)
        self.detector = models.load("mtcnn")
        self.face = canonical_face(o["canvas_size"])
        self.points = spread_landmarks(o["cis_points"], self.face)

    @property
    def model(self):
        return self._model

    def to(self, device) -> None:
        self._model.to(device)
        self.detector.to(device)

    @classmethod
    def normalize_item(cls, item, spec):
        path, label = item
        return [str(path), int(label)]

    @classmethod
    def check(cls, spec) -> None:
        need = {"dataset", "mode", "context", "canvas_size", "cis_points", "patch", "canvas_patch", "crop_scale",
                "max_mesh_error", "work_size", "image_map_items"}
        if missing := need - set(spec.options):
            raise ValueError(f"CISTask options lack {sorted(missing)}")

    def explain(self, index, item, seed):
        from ..explain.canonical import cis

        o = self.spec.options
        path, label = item
        prepared = prepare_faces([path], [label], o["dataset"], o["mode"], self.detector, crop_scale=o["crop_scale"],
                                 max_mesh_error=o["max_mesh_error"], size=o["work_size"])
        if not prepared.faces:
            reason = "no face found" if prepared.dropped["no_face"] else (
                f"face mesh error above max_mesh_error {o['max_mesh_error']}")
            raise ValueError(reason)
        fc = prepared.faces[0]
        r = cis(class_score(self._model, fc.label, o["context"]), fc.image, fc.mesh, patch=o["patch"],
                points=self.points, face=self.face, batch_size=self.spec.batch_size, canvas_patch=o["canvas_patch"])
        maps = {"cis": r.canonical, "drops": r.drops}
        if index < o["image_map_items"]:
            maps["image_map"] = r.image_map
        return ItemResult(dict(score=r.base_score, forward_passes=r.n_forward, name=fc.name, label=fc.label,
                               canvas_patch=r.canvas_patch, mesh_error=fc.mesh_error, cis_seconds=r.seconds), maps)


def cis_job(key: str, rows: pd.DataFrame, labels: Sequence[int], out_dir, *, seed: int, batch_size: int,
            workers: int, shard_size: int, context: float, image_map_items: int, **options):
    """The CIS job of run ``key`` (:data:`JOB_RUNS`) on ``rows`` (their ``path``) into ``out_dir``:
    resumed when its shards are there, redone when the parameters or the code changed."""
    from ..jobs import package_code_hash, run_job

    model, _, dataset, mode = JOB_RUNS[key]
    opts = dict(dataset=dataset, mode=mode, context=float(context), image_map_items=int(image_map_items),
                code=package_code_hash(), **options)
    return run_job([[str(p), int(y)] for p, y in zip(rows.path, labels)], CISTask, model, None, out_dir,
                   seed=seed, batch_size=batch_size, workers=workers, shard_size=shard_size, options=opts,
                   replace_other=True, progress=False)


def image_map_items(rows: pd.DataFrame, faces: Sequence, n: int) -> int:
    """How many of the job's first items keep their image maps so that the first ``n`` faces
    the notebook's preparation kept (``faces``, in the order of ``rows``) have them."""
    from pathlib import Path

    kept = {f.name for f in faces}
    positions = [i for i, p in enumerate(rows.path) if Path(p).name in kept]
    margin = 5  # kept faces to spare, should the job's preparation drop one the notebook kept
    return positions[n - 1 + margin] + 1 if 0 < n + margin <= len(positions) else len(rows)


def run_from_job(out_dir, key: str, faces: Sequence) -> tuple[CISRun, dict]:
    """The :class:`CISRun` of job run ``key`` from its shards, on the notebook's prepared
    ``faces`` (matched by file name and label; both prepare the same sampled rows the same way),
    and {"job_faces", "matched", "failed": {reason: n}, "seconds" (CIS only, face preparation
    excluded), "forward_passes"}."""
    import json
    from pathlib import Path

    from ..explain.canonical import CISResult
    from ..jobs import load_maps

    model, task, _, _ = JOB_RUNS[key]
    table, maps = load_maps(out_dir)
    patch = int(json.loads((Path(out_dir) / "manifest.json").read_text())["job"]["options"]["patch"])
    by_key = {(f.name, int(f.label)): f for f in faces}
    results, kept, base = [], [], []
    ok = table[table.status == "ok"].sort_values("index")
    for r in ok.itertuples():
        fc = by_key.get((str(r.name), int(r.label)))
        if fc is None:
            continue
        i = int(r.index)
        cis_map = torch.from_numpy(maps[f"cis/{i}"].astype(np.float32))
        image_map = maps.get(f"image_map/{i}")
        results.append(CISResult(
            canonical=cis_map, count=torch.zeros(0), drops=torch.from_numpy(maps[f"drops/{i}"].astype(np.float32)),
            points=torch.zeros(0, dtype=torch.long), base_score=float(r.score), n_forward=int(r.forward_passes),
            image_map=None if image_map is None else torch.from_numpy(image_map.astype(np.float32)),  # type: ignore[arg-type]
            patch=patch, canvas_patch=int(r.canvas_patch), seconds=float(r.cis_seconds)))
        kept.append(fc)
        base.append(float(r.score))
    failed = table[table.status != "ok"].status.value_counts().to_dict()
    seconds = float(sum(x.seconds for x in results))  # the CIS maps' time (the CAM comparison's cost)
    info = dict(job_faces=int(len(ok)), matched=len(kept), failed={str(k): int(v) for k, v in failed.items()},
                seconds=seconds, forward_passes=int(table.forward_passes.sum()))
    run = CISRun(task, model, kept, results, np.array(base), np.ones(len(kept), bool), seconds)
    return run, info


def run_table(runs: Mapping[str, CISRun]) -> pd.DataFrame:
    """Per run: images, forward passes and seconds per image, mean f(I), mean canvas patch."""
    return pd.DataFrame([dict(key=k, task=r.task, model=r.model, n_images=len(r.results),
                              forward_passes_per_image=r.n_forward / len(r.results),
                              seconds_per_image=r.seconds / len(r.results),
                              mean_base_score=float(r.base_scores.mean()),
                              mean_canvas_patch=float(np.mean([x.canvas_patch for x in r.results])))
                         for k, r in runs.items()])


def region_table(cms_maps: Mapping[str, Tensor], runs: Mapping[str, CISRun], face) -> pd.DataFrame:
    """:func:`xfr.explain.canonical_regions.region_mass` of every model's CMS, one table."""
    masks = region_masks(face)
    region_rows = []
    for k, m in cms_maps.items():
        t = region_mass(m, face, masks)
        t.insert(0, "model", runs[k].model)
        t.insert(0, "key", k)
        region_rows.append(t)
    return pd.concat(region_rows, ignore_index=True)


def region_table_per_image(runs: Mapping[str, CISRun], face) -> pd.DataFrame:
    """Per run and CIS map (image): the map's mean value in each canonical region and on the
    whole face (region ``face``). The CMS is the mean of the CIS maps (eq. 6), so a region's
    mean over the images is the CMS's region mean, and mean(region) / mean(face) over the images
    is the CMS's enrichment where it is positive: the items the claims table bootstraps."""
    masks = region_masks(face)
    fm = face.face_mask
    rows = []
    for k, r in runs.items():
        names = _item_names(r.faces)
        for name, m in zip(names, r.maps):
            t = region_mass(m, face, masks)
            for reg in t.itertuples():
                rows.append(dict(key=k, model=r.model, image=name, region=reg.region, mean_value=reg.mean_value))
            rows.append(dict(key=k, model=r.model, image=name, region="face",
                             mean_value=float(torch.as_tensor(m, dtype=torch.float64)[fm].mean())))
    return pd.DataFrame(rows, columns=["key", "model", "image", "region", "mean_value"])


def _item_names(items: Sequence) -> list[str]:
    """A name per CIS item: the face's name, or "a|b" for a pair (pair, face a, face b)."""
    out = []
    for i, it in enumerate(items):
        if isinstance(it, tuple) and len(it) == 3:
            out.append(f"{getattr(it[1], 'name', i)}|{getattr(it[2], 'name', i)}")
        else:
            out.append(str(getattr(it, "name", i)))
    return out


# the paper's readings: recognition looks at the eye-nose triangle, gender at the eye corners,
# expression between the eyebrows
PAPER_REGIONS = {"verification_lfw": "eye_nose_triangle", "expression_fer2013": "glabella",
                 "gender_mini_utkface": "eye_corners", "gender_mini_celeba": "eye_corners",
                 "gender_faceres_utkface": "eye_corners", "gender_faceres_celeba": "eye_corners"}


def region_claims(regions: pd.DataFrame, runs: Mapping[str, CISRun],
                  claims: Mapping[str, str] = PAPER_REGIONS) -> pd.DataFrame:
    """Per run: the enrichment and rank of the region the paper reads off its CMS, the mouth's
    enrichment and the face part (not a claim region) with the highest enrichment."""
    top = regions[~regions.region.isin(["eye_corners", "glabella", "eye_nose_triangle"])]
    return pd.DataFrame([dict(key=k, model=runs[k].model, paper_region=reg,
                              paper_region_enrichment=float(regions[(regions.key == k) & (regions.region == reg)].enrichment.iloc[0]),
                              mouth_enrichment=float(regions[(regions.key == k) & (regions.region == "mouth")].enrichment.iloc[0]),
                              paper_region_rank=int((regions[regions.key == k].enrichment >
                                                     float(regions[(regions.key == k) & (regions.region == reg)].enrichment.iloc[0])).sum() + 1),
                              top_part=top[top.key == k].sort_values("enrichment").region.iloc[-1])
                         for k, reg in claims.items()])


def cms_metrics(regions: pd.DataFrame, claims: pd.DataFrame) -> dict:
    """{run key: {region: {mass_share, enrichment}, "paper_region_rank": rank}}."""
    out: dict = {}
    for r in regions.itertuples():
        out.setdefault(r.key, {})[r.region] = dict(mass_share=r.mass_share, enrichment=r.enrichment)
    for r in claims.itertuples():
        out.setdefault(r.key, {})["paper_region_rank"] = r.paper_region_rank
    return out


def cis_example_rows(runs: Mapping[str, CISRun], cms_maps: Mapping[str, Tensor], face,
                     keys: Sequence[str] = ("expression_fer2013", "gender_mini_celeba",
                                            "gender_faceres_celeba", "verification_lfw"),
                     work_size: int = WORK_SIZE) -> list[dict]:
    """The rows of :func:`fig_cis_examples`: the first face of each run."""
    from ..explain.canonical import canonical_to_image

    example_rows = []
    for k in keys:
        r = runs[k]
        if not r.results:
            continue
        it, res = r.faces[0], r.results[0]
        if k == "verification_lfw":
            img = pair_canvas(it[1].image, it[2].image)
            mesh = pair_mesh(it[1].mesh, it[2].mesh, work_size)
            lab = f"{r.model}\n{it[1].name[:14]} / {it[2].name[:14]}"
        else:
            img, mesh, lab = it.image, it.mesh, f"{r.model}\n{it.name[:20]}"
        example_rows.append(dict(label=lab, image=img, image_map=res.image_map, cis=res.canonical,
                                 cms=cms_maps[k],
                                 reprojected=canonical_to_image(cms_maps[k], mesh, img.shape[1:], face)))
    return example_rows


# ----------------------------------------------------------------------------- Fig. 5 convergence
N_BOOT = 1000  # bootstrap resamples of the images-needed interval


def convergence(runs: Mapping[str, CISRun], face, seed: int = 0,
                levels: Sequence[float] = (0.95, 0.99)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run with >= 2 maps: the :func:`xfr.explain.canonical.cms_convergence` curve and a row
    of split-half Pearson correlation (face pixels), images to converge per level and the
    Spearman-Brown projection of the images per map needed for each level (from one split, and
    averaged over 100 splits with a 95 % bootstrap interval over images: ``n_needed_<level>``,
    :func:`xfr.explain.canonical.images_needed`)."""
    from ..explain.canonical import cms, cms_convergence, images_needed

    curves: list[pd.DataFrame] = []
    conv: dict[str, dict[str, float | None]] = {}
    rng = np.random.default_rng(seed)
    for k, r in runs.items():
        if len(r.maps) < 2:
            continue
        c = cms_convergence(r.maps, seed=seed)
        c.insert(0, "model", k)
        curves.append(c)
        perm = rng.permutation(len(r.maps))
        half = len(perm) // 2
        a, b = cms([r.maps[i] for i in perm[:half]]), cms([r.maps[i] for i in perm[half:2 * half]])
        fm = face.face_mask
        split = float(np.corrcoef(a[fm].numpy(), b[fm].numpy())[0, 1])
        row: dict[str, float | None] = dict(
            n_images=len(r.maps), split_half_pearson=split,
            **{f"n_pearson_{lv}": images_to_converge(c, lv) for lv in levels},
            **{f"n_split_half_{lv}_projected": spearman_brown_n(split, half, lv) for lv in levels})
        if len(r.maps) >= 4:  # the projection averaged over splits, with its bootstrap interval (claims)
            for lv in levels:
                need, low, high = images_needed(r.maps, lv, fm, n_boot=N_BOOT, seed=seed)
                row[f"n_needed_{lv}"], row[f"n_needed_{lv}_ci_low"], row[f"n_needed_{lv}_ci_high"] = need, low, high
        conv[k] = row
    return pd.concat(curves, ignore_index=True), pd.DataFrame(conv).T


def convergence_metrics(conv: pd.DataFrame) -> dict:
    """{run key: {column: value or None}}."""
    return {k: {col: _metric(v) for col, v in r.items()} for k, r in conv.iterrows()}


# ----------------------------------------------------------------------------- §5.6 alignment
@dataclass
class AlignmentAblation:
    """The three model-level maps of :func:`alignment_ablation` and their metrics table."""

    table: pd.DataFrame
    model_none: Tensor  # no alignment, raw frame
    mean_raw: Tensor
    model_kp: Tensor  # 5-point alignment, chip frame
    mean_chip: Tensor
    model_cms: Tensor
    n_probes: int
    scores: list = field(default_factory=list)  # ConfidenceResult per probe (one image each)
    names: list = field(default_factory=list)  # the probes' names


def alignment_ablation(kept_pairs: Sequence, dlib, tau: float, points: Tensor, face, patch: int = 15,
                       canvas_patch: int | None = 16, stride: int = 15, batch_size: int = 64,
                       work_size: int = WORK_SIZE) -> AlignmentAblation:
    """§5.6 (Figs. 20-21) on LFW probes (the first face of each pair, eq. 8 with its mate
    fixed): sliding-window occlusion on the raw frame (no alignment) and on the 5-point chip,
    and CIS on the chip (canonical); each model-level map made a per-image explanation in the raw
    frame and scored with Average Drop %, % Increase and Win % (maps clipped at 0)."""
    from ..explain import occlusion
    from ..explain.canonical import canonical_to_image, cms
    from ..io import load_image
    from ..metrics import confidence_metrics

    raw_imgs, chip_maps, raw_maps, cis_maps, f_raws, meshes_raw, mats = [], [], [], [], [], [], []
    cost = {"no alignment": [0, 0.0], "keypoint": [0, 0.0], "canonical": [0, 0.0]}
    for pr, fa, fb in kept_pairs:
        src = load_image(pr.a)
        mat = frame_to_chip(fa, tuple(src.shape[1:]), work_size)  # raw frame -> aligned chip
        raw = warp_replicate(src, frame_matrix("full", tuple(src.shape[1:]), size=work_size), work_size)
        f_chip = mate_confidence(dlib, fb.image, tau, pr.same)
        f_raw = warped_score(f_chip, mat, work_size)
        t = time.perf_counter()
        m_none = occlusion(f_raw, raw, patch=patch, stride=stride, batch_size=batch_size)
        cost["no alignment"][1] += time.perf_counter() - t
        t = time.perf_counter()
        m_kp = occlusion(f_chip, fa.image, patch=patch, stride=stride, batch_size=batch_size)
        cost["keypoint"][1] += time.perf_counter() - t
        t = time.perf_counter()
        res = run_cis("", "", [fa], lambda _, f=f_chip: f, lambda x: x.image, lambda x: x.mesh, patch=patch,
                      points=points, canvas_patch=canvas_patch, batch_size=batch_size, face=face).results[0]
        cost["canonical"][1] += time.perf_counter() - t
        cost["canonical"][0] += res.n_forward
        raw_imgs.append(raw)
        raw_maps.append(m_none)
        chip_maps.append(m_kp)
        cis_maps.append(res.canonical)
        f_raws.append(f_raw)
        mats.append(mat)
        meshes_raw.append(torch.from_numpy(transform_continuous(invert_affine(mat), fa.mesh)).float())
    n = len(kept_pairs)
    n_slide = len(range(0, work_size - patch + 1, stride)) + int((work_size - patch) % stride > 0)
    cost["no alignment"][0] = cost["keypoint"][0] = (n_slide ** 2 + 1) * n
    model_none = torch.stack(raw_maps).mean(0)
    model_kp = torch.stack(chip_maps).mean(0)
    model_cms = cms(cis_maps)
    expl: dict[str, list[np.ndarray]] = {"no alignment": [], "keypoint": [], "canonical": []}
    for i in range(n):
        expl["no alignment"].append(positive(model_none))
        expl["keypoint"].append(warp_map(positive(model_kp), mats[i], (work_size, work_size)).numpy())
        expl["canonical"].append(canonical_to_image(torch.from_numpy(positive(model_cms)).float(),
                                                    meshes_raw[i], (work_size, work_size), face).numpy())
    abl_scores = []
    for i in range(n):  # each image has its own score function (its mate)
        abl_scores.append(confidence_metrics(f_raws[i], [raw_imgs[i]], {k: [v[i]] for k, v in expl.items()},
                                             batch_size=batch_size))
    abl = confidence_table("cms_alignment_lfw", abl_scores, {m: (c[0] / n, c[1] / n) for m, c in cost.items()})
    mean_chip = torch.stack([fa.image for _, fa, _ in kept_pairs]).mean(0)
    return AlignmentAblation(abl, model_none, torch.stack(raw_imgs).mean(0), model_kp, mean_chip, model_cms, n,
                             abl_scores, [str(getattr(fa, "name", i)) for i, (_, fa, _) in enumerate(kept_pairs)])


def alignment_metrics(abl: AlignmentAblation) -> dict:
    """{method: {average_drop, increase_in_confidence, win}, "n_probes": n}."""
    out: dict = {r.method.replace(" ", "_"): {col: getattr(r, col) for col in _CONFIDENCE}
                 for r in abl.table.itertuples()}
    out["n_probes"] = abl.n_probes
    return out


_CONFIDENCE = ("average_drop", "increase_in_confidence", "win")


# ----------------------------------------------------------------------------- §5.5 patch size
def patch_ablation(pface, f: ScoreFn, patch_sizes: Sequence[int], patch_points: Sequence[int], face,
                   batch_size: int = 64) -> tuple[list, pd.DataFrame, object]:
    """The CIS of one face for each occluder size with its number of spread landmarks: (the
    CISResults, a table of coverage and Pearson correlation with the 15 px map (face pixels
    covered by both), the reference result)."""
    patch_runs = [run_cis("", "", [pface], lambda _: f, lambda x: x.image, lambda x: x.mesh, patch=ps,
                          points=spread_landmarks(npts, face), batch_size=batch_size, face=face).results[0]
                  for ps, npts in zip(patch_sizes, patch_points)]
    patch_sizes = list(patch_sizes)
    ref = patch_runs[patch_sizes.index(15)] if 15 in patch_sizes else patch_runs[len(patch_runs) // 2]
    fm = face.face_mask
    table = pd.DataFrame([dict(patch=r.patch, points=len(r.points), canvas_patch=r.canvas_patch,
                               coverage=float((r.count > 0)[fm].float().mean()),
                               pearson_with_reference=float(np.corrcoef(r.canonical[fm & (r.count > 0) & (ref.count > 0)].numpy(),
                                                                        ref.canonical[fm & (r.count > 0) & (ref.count > 0)].numpy())[0, 1]),
                               forward_passes=r.n_forward) for r in patch_runs])
    return patch_runs, table, ref


def patch_metrics(table: pd.DataFrame, ref) -> dict:
    """{"patch<p>": {"pearson_with_patch<ref>": r}}."""
    return {f"patch{r.patch}": {f"pearson_with_patch{ref.patch}": r.pearson_with_reference}
            for r in table.itertuples()}


# ----------------------------------------------------------------------------- §4.2 Grad-CAM family
@dataclass
class CamTask:
    """One task of the Grad-CAM comparison: model, faces, score and Grad-CAM target per face, the
    CIS run whose CMS and image maps it uses, the context padding of the model input."""

    task: str
    model_name: str
    model: nn.Module
    faces: list
    scores: list
    targets: list
    run_key: str
    cis_image_maps: list
    context: float = 0.0


def cam_tasks(runs: Mapping[str, CISRun], fer_model, gender_mini, faceres, dlib, sets: Mapping,
              kept_pairs: Sequence, tau: float, cam_fer: int, cam_celeba_mini: int,
              cam_celeba_faceres: int, cam_lfw: int, faceres_images: int | None = None,
              gender_context: float = 0.0, work_size: int = WORK_SIZE) -> list[CamTask]:
    """The tasks of Figs. 10-12: expression (FER-2013), the gender models on CelebA and LFW
    verification (eq. 8, the probe perturbed, the mate fixed); a count of 0 skips a task."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def image_maps(key, n):
        maps = [r.image_map for r in runs[key].results[:n]]
        if any(m is None for m in maps):
            raise ValueError(f"run {key}: the image maps of its first {n} faces were not kept (cis_job image_map_items)")
        return maps

    specs = []
    if cam_fer > 0:
        fs = sets["FER-2013"].faces[:cam_fer]
        specs.append(CamTask("expression_fer2013", "mini-xception-fer2013", fer_model, fs,
                             [class_score(fer_model, f.label) for f in fs],
                             [ClassifierOutputTarget(f.label) for f in fs],
                             "expression_fer2013", image_maps("expression_fer2013", len(fs))))
    if cam_celeba_mini > 0:
        fs = sets["CelebA"].faces[:cam_celeba_mini]
        specs.append(CamTask("gender_celeba_mini_xception", "mini-xception-gender", gender_mini, fs,
                             [class_score(gender_mini, f.label, gender_context) for f in fs],
                             [ClassifierOutputTarget(f.label) for f in fs], "gender_mini_celeba",
                             image_maps("gender_mini_celeba", len(fs)), gender_context))
    if cam_celeba_faceres > 0:
        assert faceres_images is not None, "cam_celeba_faceres > 0 needs faceres_images"
        fs = sets["CelebA"].faces[:min(cam_celeba_faceres, faceres_images)]
        specs.append(CamTask("gender_celeba_faceres", "faceres-gender", faceres, fs,
                             [class_score(faceres, f.label) for f in fs],
                             [ClassifierOutputTarget(f.label) for f in fs],
                             "gender_faceres_celeba", image_maps("gender_faceres_celeba", len(fs))))
    if cam_lfw > 0:
        its = kept_pairs[:cam_lfw]
        with torch.inference_mode():
            mates = dlib(torch.stack([fb.image for _, _, fb in its]))
        specs.append(CamTask("verification_lfw", "dlib-resnet", dlib, [fa for _, fa, _ in its],
                             [mate_confidence(dlib, fb.image, tau, pr.same) for pr, _, fb in its],
                             [VerificationTarget(mates[i], tau, its[i][0].same) for i in range(len(its))],
                             "verification_lfw",  # the probe's half of the pair's image map
                             [r.image_map[:, :work_size] for r in runs["verification_lfw"].results[:len(its)]]))
    return specs


@dataclass
class CamComparison:
    """The result of :func:`compare_with_cams` on one task (faces: the correctly decided ones)."""

    task: str
    model_name: str
    layer: str
    faces: list
    maps: dict
    cost: dict
    res4: list  # ConfidenceResult per face: CMS and the Grad-CAM family
    res5: list  # the same with the image-level CIS map as a fifth method


def compare_with_cams(spec: CamTask, cms_map: Tensor, cis_cost: Sequence[float], face,
                      scorecam_batch: int = 32, batch_size: int = 64,
                      work_size: int = WORK_SIZE) -> CamComparison:
    """Grad-CAM, Grad-CAM++, ScoreCAM and the CMS reprojected onto each face (clipped at 0) as
    negative explanations (eqs. 9-13), only on the faces the model decides correctly (M(I) is
    then the confidence of its own decision: eq. 11 divides by it, eq. 8 is negative for wrong
    decisions)."""
    from ..explain.canonical import canonical_to_image
    from ..metrics import confidence_metrics

    keep = [i for i, f in enumerate(spec.scores) if decided_correctly(f, spec.faces[i].image)]
    faces, scores = [spec.faces[i] for i in keep], [spec.scores[i] for i in keep]
    targets, cis_image_maps = [spec.targets[i] for i in keep], [spec.cis_image_maps[i] for i in keep]
    net, layer, layer_name = cam_setup(spec.model_name, spec.model)
    if not faces:
        return CamComparison(spec.task, spec.model_name, layer_name, faces, {}, {}, [], [])
    images = torch.stack([fc.image for fc in faces])
    maps, cost = {}, {}
    for meth in CAM_METHODS:
        t = time.perf_counter()
        maps[CAM_LABELS[meth]] = list(cam_maps(meth, net, layer, images, targets, context=spec.context,
                                               batch_size=scorecam_batch))
        cost[CAM_LABELS[meth]] = [1 if meth != "scorecam" else layer_channels(net, layer, images[:1]) + 1,
                                  (time.perf_counter() - t) / len(faces)]
    pos = torch.from_numpy(positive(cms_map)).float()
    maps["CMS"] = [canonical_to_image(pos, fc.mesh, (work_size, work_size), face).numpy() for fc in faces]
    cost["CMS"] = list(cis_cost)
    res4 = [confidence_metrics(scores[i], [images[i]], {k: [v[i]] for k, v in maps.items()},
                               batch_size=batch_size) for i in range(len(faces))]
    maps5 = dict(maps, **{"CIS (image)": [positive(m) for m in cis_image_maps]})
    res5 = [confidence_metrics(scores[i], [images[i]], {k: [v[i]] for k, v in maps5.items()},
                               batch_size=batch_size) for i in range(len(faces))]
    return CamComparison(spec.task, spec.model_name, layer_name, faces, maps, cost, res4, res5)


def cam_comparison(specs: Sequence[CamTask], runs: Mapping[str, CISRun], cms_maps: Mapping[str, Tensor],
                   face, scorecam_batch: int = 32, batch_size: int = 64, work_size: int = WORK_SIZE):
    """:func:`compare_with_cams` of every task; the CMS cost is that of its CIS run per image.
    Returns (comparisons of the tasks with correctly decided faces, skipped task names, the
    four-method table, the five-method table)."""
    done, skipped, tables, tables5 = [], [], [], []
    for spec in specs:
        run = runs[spec.run_key]
        cis_cost = (run.n_forward / len(run.results), run.seconds / len(run.results))
        c = compare_with_cams(spec, cms_maps[spec.run_key], cis_cost, face, scorecam_batch, batch_size,
                              work_size)
        if not c.faces:
            skipped.append(spec.task)
            continue
        done.append(c)
        tables.append(confidence_table(f"cms_{spec.task}", c.res4, c.cost))
        tables5.append(confidence_table(f"cms_{spec.task}", c.res5, c.cost))
    cam_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    cam5_table = pd.concat(tables5, ignore_index=True) if tables5 else pd.DataFrame()
    return done, skipped, cam_table, cam5_table


def confidence_table_per_image(done: Sequence[CamComparison], abl: AlignmentAblation | None = None) -> pd.DataFrame:
    """``cms_confidence_per_image.csv``: :func:`confidence_per_image` of every Grad-CAM
    comparison (task ``cms_<task>``, four methods) and of the alignment ablation
    (``cms_alignment_lfw``, three alignments), the per-image values behind ``methods.csv``."""
    frames = [confidence_per_image(f"cms_{c.task}", c.res4, [str(getattr(f, "name", i)) for i, f in enumerate(c.faces)])
              for c in done]
    if abl is not None and abl.scores:
        frames.append(confidence_per_image("cms_alignment_lfw", abl.scores, abl.names))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else confidence_per_image("", [], [])


def cam_claims(cam_table: pd.DataFrame) -> pd.DataFrame:
    """Per task: whether CMS has the highest Average Drop %, the lowest % Increase and the highest
    Win % (the paper's claim of Figs. 10-12; ties count as wins)."""
    if not len(cam_table):
        return pd.DataFrame()
    return pd.DataFrame([dict(task=t, n_images=int(sub.n_images.iloc[0]),
                              cms_highest_average_drop=bool(float(sub[sub.method == "CMS"].average_drop.iloc[0]) >= sub.average_drop.max()),
                              cms_lowest_increase=bool(float(sub[sub.method == "CMS"].increase_in_confidence.iloc[0]) <= sub.increase_in_confidence.min()),
                              cms_highest_win=bool(float(sub[sub.method == "CMS"].win.iloc[0]) >= sub.win.max()))
                         for t, sub in cam_table.groupby("task", sort=False)])


def cam_metrics(cam_table: pd.DataFrame, cam5_table: pd.DataFrame, claims: pd.DataFrame) -> dict:
    """{"cam": {task: {method: {metric}, claim: 0/1}}, "cam5": {task: {cms|cis_image: {...}}}}."""
    cam: dict = {}
    for r in cam_table.itertuples():
        method = r.method.lower().replace("-", "").replace("+", "p")
        cam.setdefault(r.task.replace("cms_", "", 1), {})[method] = {col: getattr(r, col) for col in _CONFIDENCE}
    for r in claims.itertuples():
        cam.setdefault(r.task.replace("cms_", "", 1), {}).update(
            {col: int(getattr(r, col)) for col in ("cms_highest_average_drop", "cms_lowest_increase", "cms_highest_win")})
    cam5: dict = {}
    for r in cam5_table[cam5_table.method.isin(["CMS", "CIS (image)"])].itertuples() if len(cam5_table) else []:
        method = "cms" if r.method == "CMS" else "cis_image"
        cam5.setdefault(r.task.replace("cms_", "", 1), {})[method] = {col: getattr(r, col) for col in ("average_drop", "win")}
    return {"cam": cam, "cam5": cam5}


# ----------------------------------------------------------------------------- §4.1.3 randomization
def randomization(model: nn.Module, faces: Sequence, points: Tensor, face, layers: int, seed: int = 0,
                  patch: int = 15, canvas_patch: int | None = 16, batch_size: int = 64):
    """Fig. 8: the CMS of ``faces`` for the trained classifier and after re-initializing its top
    1, 2, ... ``layers`` layers cumulatively (:func:`xfr.metrics.randomization_test`), with
    Spearman on the face pixels. Returns (the RandomizationResult, its table with the trained row
    first, the per-image table: each face's CIS under the randomized network against its CIS
    under the trained one, Spearman on the face pixels, per depth)."""
    from ..explain.canonical import cms
    from ..metrics import parameter_layers, randomization_test

    per_net: list[list[Tensor]] = []  # the CIS maps of every network explained, trained first

    def explain_cms(net):
        net.eval()
        per_net.append([run_cis("", "", [fc], lambda x: class_score(net, x.label), lambda x: x.image,
                                lambda x: x.mesh, patch=patch, points=points, canvas_patch=canvas_patch,
                                batch_size=batch_size, face=face).results[0].canonical for fc in faces])
        return cms(per_net[-1]).numpy()

    rlayers = parameter_layers(model)[:layers]
    rand = randomization_test(model, explain_cms, layers=rlayers, seed=seed)
    fm = face.face_mask.numpy()
    table = pd.DataFrame([dict(depth=j + 1, layer=rand.layers[j], spearman=rand.spearman[j], ssim=rand.ssim[j],
                               spearman_face=masked_spearman(rand.original_map, m, fm))
                          for j, m in enumerate(rand.maps)])
    table = pd.concat([pd.DataFrame([dict(depth=0, layer="none (trained)", spearman=1.0, ssim=1.0, spearman_face=1.0)]),
                       table], ignore_index=True)
    names = _item_names(faces)
    per_image = pd.DataFrame([dict(depth=j, layer=rand.layers[j - 1], image=names[i],
                                   spearman_face=masked_spearman(per_net[0][i].numpy(), per_net[j][i].numpy(), fm))
                              for j in range(1, len(per_net)) for i in range(len(faces))],
                             columns=["depth", "layer", "image", "spearman_face"])
    return rand, table, per_image


def randomization_metrics(table: pd.DataFrame) -> dict:
    """{"top<d>": {spearman_face, ssim}} of the randomized rows."""
    return {f"top{r.depth}": dict(spearman_face=r.spearman_face, ssim=r.ssim) for r in table.iloc[1:].itertuples()}


def cis_metrics(runs_table: pd.DataFrame) -> dict:
    """{run key: {n_images, seconds_per_image}}."""
    return {k: dict(n_images=int(r.n_images), seconds_per_image=r.seconds_per_image)
            for k, r in runs_table.set_index("key").iterrows()}


def methods_table(alignment: pd.DataFrame, cam_table: pd.DataFrame) -> pd.DataFrame:
    """``methods.csv``: the alignment ablation's rows, then the Grad-CAM comparison's (forward
    passes and seconds per image, Average Drop %, % Increase, Win %)."""
    return pd.DataFrame(alignment.to_dict("records") + cam_table.to_dict("records"))
