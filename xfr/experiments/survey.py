"""The survey (``002_…``) replicated, part 1 (notebook ``notebooks/survey.ipynb``): its Fig. 4
(every saliency family on the same faces), one leaderboard over the black-box and white-box
families, and the face-specific evaluation protocols of §2.5 and §6.

This module is the stage's glue: which faces, which methods, how each map is timed and scored,
the tables and figures. The explainers are :mod:`xfr.explain` (black-box) and
:mod:`xfr.explain.white_box`; the metrics :mod:`xfr.metrics`.

The survey's statements tested here (§2.2 "Level of detail", §2.5 "Randomised sanity checks"):

- "Integrated Gradients, Guided Backprop, and DeepLIFT show fine detail and resemble edge
  detectors" -> :data:`EDGE_METHODS` vs the rest: :func:`xfr.metrics.structure.edge_similarity`;
- "Class activation mapping-based approaches are coarse" -> :data:`CAM_METHODS` vs the rest:
  :func:`xfr.metrics.structure.map_coarseness`;
- (after Adebayo et al.) gradient maps change little when the model's weights are randomized ->
  :data:`GRADIENT_METHODS`: Spearman of ``|map|`` of the trained and of the fully randomized
  model.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .survey_statements import (  # noqa: F401 - EDGE_METHODS, STATEMENTS, statements: re-exported
    BLACK_BOX,
    CAM_METHODS,
    EDGE_METHODS,
    GRADIENT_METHODS,
    HYBRID_METHODS,
    PROPAGATION_METHODS,
    RANDOM,
    STATEMENTS,
    statements,
)

FAMILY = {**{m: "black-box" for m in BLACK_BOX}, **{m: "gradient" for m in GRADIENT_METHODS},
          **{m: "propagation" for m in PROPAGATION_METHODS}, **{m: "CAM" for m in CAM_METHODS},
          **{m: "guided CAM" for m in HYBRID_METHODS}}

LABELS = {"occlusion": "occlusion", "rise": "RISE", "lime-map": "LIME-map", "gradient": "gradient",
          "gradient-x-input": "gradient x input", "smoothgrad": "SmoothGrad",
          "integrated-gradients": "Integrated Gradients", "guided-backprop": "guided backprop",
          "deeplift": "DeepLIFT", "lrp": "LRP", "excitation-backprop": "excitation backprop",
          "grad-cam": "Grad-CAM", "grad-cam++": "Grad-CAM++", "score-cam": "ScoreCAM",
          "guided-grad-cam": "guided Grad-CAM"}


def method_label(method: str) -> str:
    return LABELS.get(method, method)


# ----------------------------------------------------------------------------- faces
@dataclass
class SurveyFace:
    """One face to explain: ``image`` [3,S,S] in [0,1], the ``target`` its explanations are for
    (a class index, or for verification the mate image [3,S,S]: cosine of the embeddings, MinPlus
    eq. 2) and what it is."""

    task: str
    name: str
    model_name: str
    image: Tensor
    target: int | Tensor
    label: str


def verification_faces(n: int, size: int, model_name: str = "dlib-resnet", skip: int = 0) -> list[SurveyFace]:
    """The first ``n`` LFW genuine pairs (after ``skip``) whose both faces MTCNN aligns: the probe
    (image a) is explained, its mate (image b) is the reference."""
    from ..data import lfw_pairs
    from ..models.align import NoFaceError, detect_and_align
    from .expressions import resize_face

    out = []
    for pair in [p for p in lfw_pairs() if p.same][skip:]:
        try:
            a = resize_face(detect_and_align(pair.a, "dlib150"), size)
            b = resize_face(detect_and_align(pair.b, "dlib150"), size)
        except NoFaceError:
            continue
        out.append(SurveyFace("verification", f"{pair.a.stem} vs {pair.b.stem}", model_name, a, b,
                              "genuine pair"))
        if len(out) == n:
            break
    return out


def expression_faces(model, model_name: str, classes: Sequence[str], size: int,
                     n_candidates: int = 64) -> list[SurveyFace]:
    """Per class the FER-2013 face the model classifies right with the highest probability
    (:func:`xfr.experiments.expressions.pick_confident_faces`), explained for that class."""
    from ..data import fer2013
    from ..io import load_image
    from .expressions import pick_confident_faces, resize_face

    rows = pick_confident_faces(model, fer2013(), classes, n_candidates=n_candidates)
    return [SurveyFace("expression", r.path.name, model_name, resize_face(load_image(r.path), size),
                       int(r.y), str(r.label)) for r in rows.itertuples()]


def gender_faces(model, model_name: str, n: int, size: int, seed: int = 0) -> list[SurveyFace]:
    """``n`` UTKFace faces (adults, alternately female and male, drawn with ``seed``) that the
    model classifies right, explained for their true class."""
    from ..data import utkface
    from ..io import load_image
    from ..score import female_index, predict
    from .expressions import resize_face

    table = utkface()
    table = table[table.age >= 18].sample(frac=1.0, random_state=seed)
    female = female_index(model.classes)
    out: list[SurveyFace] = []
    want = {1: (n + 1) // 2, 0: n // 2}
    for row in table.itertuples():
        if want[int(row.gender)] == 0:
            continue
        image = resize_face(load_image(row.path), size)
        k = female if row.gender == 1 else 1 - female
        if int(predict(model, image[None]).argmax(1)[0]) != k:
            continue
        want[int(row.gender)] -= 1
        out.append(SurveyFace("gender", row.path.name, model_name, image, k,
                              "female" if row.gender == 1 else "male"))
        if not any(want.values()):
            break
    return out


# ----------------------------------------------------------------------------- scores, passes
def black_box_score(model: nn.Module, face: SurveyFace) -> Callable[[Tensor], Tensor]:
    """The black-box score of the face (MinPlus eqs. 2-3): cosine to the mate, or P(class)."""
    from ..score import attribute_score, verification_score

    if isinstance(face.target, Tensor):
        return verification_score(model, face.target)
    return attribute_score(model, int(face.target))


class PassCounter:
    """Counts the images that go through ``model``'s forward (a forward hook): all of them, and
    those run with gradient tracking on an input that requires it (each is followed by one
    backward pass in the white-box methods)."""

    def __init__(self, model: nn.Module):
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        x = args[0] if args else None
        while isinstance(x, (tuple, list)) and x:  # captum's DeepLift passes the inputs as a tuple
            x = x[0]
        if isinstance(x, Tensor):
            self.forward += int(x.shape[0]) if x.dim() == 4 else 1
            if torch.is_grad_enabled() and x.requires_grad:
                self.backward += int(x.shape[0]) if x.dim() == 4 else 1

    def close(self) -> None:
        self._handle.remove()


LAYER_METHODS = ("grad-cam", "grad-cam++", "score-cam", "guided-grad-cam", "excitation-backprop")
SMALL_CNN_EBP_LAYER = "features.6"  # the ReLU of the second block (24 x 24 of the 48 input)


def small_cnn_layer(method: str, model: nn.Module) -> str | None:
    """The layer of a layer method on :class:`xfr.models.small_cnn.ExpressionCNN` (the zoo
    models have theirs in :func:`xfr.explain.cam.cam_setup`): its last convolution for the CAM
    family (Grad-CAM's choice), the mid-resolution ReLU for excitation backprop (Zhang et al. map
    at an intermediate layer); None for other models and methods."""
    from ..models.small_cnn import ExpressionCNN

    if method not in LAYER_METHODS or not isinstance(model, ExpressionCNN):
        return None
    if method == "excitation-backprop":
        return SMALL_CNN_EBP_LAYER
    return next(n for n, m in model.named_modules() if m is model.target_layer)


@dataclass
class MapRun:
    method: str
    map: np.ndarray
    seconds: float
    forward: int
    backward: int


def explain(method: str, model: nn.Module, face: SurveyFace, params: Mapping[str, Mapping],
            seed: int = 0, batch_size: int = 32) -> MapRun:
    """One map of ``face`` by ``method`` (black-box: :data:`xfr.explain.SINGLE_IMAGE_METHODS` on
    :func:`black_box_score`; white-box: :func:`xfr.explain.white_box.white_box_map`) with its
    wall time and the images that went through the model forward and backward."""
    from ..explain import SINGLE_IMAGE_METHODS
    from ..explain.white_box import white_box_map

    kwargs = dict(params.get(method) or {})
    counter = PassCounter(model)
    t0 = time.perf_counter()
    try:
        if method in BLACK_BOX:
            if method in RANDOM:
                kwargs.setdefault("seed", seed)
            explainer = cast(Callable[..., Tensor], SINGLE_IMAGE_METHODS[method])
            smap = explainer(black_box_score(model, face), face.image, batch_size=batch_size, **kwargs)
        else:
            layer = small_cnn_layer(method, model)
            if layer is not None:
                kwargs.setdefault("layer", layer)
            with warnings.catch_warnings():  # torch warns about TF32 each time oneDNN is switched off
                warnings.filterwarnings("ignore", message="TF32 acceleration")
                smap = white_box_map(method, model, face.image, face.target, model_name=face.model_name,
                                     batch_size=batch_size, seed=seed, **kwargs)
    finally:
        counter.close()
    arr = np.asarray(smap.detach().cpu() if isinstance(smap, Tensor) else smap, dtype=np.float32)
    return MapRun(method, arr, time.perf_counter() - t0, counter.forward, counter.backward)


# ----------------------------------------------------------------------------- the leaderboard
@dataclass
class FaceResult:
    """Every method's map of one face, the trained model's and the randomized ones'."""

    face: SurveyFace
    runs: dict[str, MapRun] = field(default_factory=dict)
    other_seed: dict[str, np.ndarray] = field(default_factory=dict)
    randomized: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # method -> depth -> map
    rows: list[dict] = field(default_factory=list)


def method_list(methods: Sequence[str], model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """(the methods that run on ``model``, {method: why not} for the others)."""
    from ..explain.white_box import white_box_support

    ok, skipped = [], {}
    for m in methods:
        why = None if m in BLACK_BOX else white_box_support(m, model)
        if why:
            skipped[m] = why
        else:
            ok.append(m)
    return ok, skipped


def explain_face(model: nn.Module, face: SurveyFace, methods: Sequence[str], params: Mapping[str, Mapping],
                 seed: int = 0, batch_size: int = 32, random_depths: Sequence[int] = (),
                 randomization_seed: int = 0) -> FaceResult:
    """All ``methods`` on one face: the trained model's maps, a second seed's for the random
    methods, and the maps of the cascading randomization (Adebayo et al.; survey §2.5) at
    ``random_depths`` (top layers re-initialized; -1 = all)."""
    from ..metrics.randomization import cascading_randomization, check_depths, parameter_layers

    res = FaceResult(face)
    for m in methods:
        res.runs[m] = explain(m, model, face, params, seed, batch_size)
        if m in RANDOM:
            res.other_seed[m] = explain(m, model, face, params, seed + 1, batch_size).map
    if random_depths:
        layers = parameter_layers(model)
        wanted = check_depths(random_depths, len(layers))
        for depth, (_, net) in enumerate(cascading_randomization(model, layers[:max(wanted)],
                                                                 seed=randomization_seed), start=1):
            if depth not in wanted:
                continue
            net.eval()
            for m in methods:
                res.randomized.setdefault(m, {})[depth] = explain(m, net, face, params, seed, batch_size).map
    return res


def score_face(model: nn.Module, res: FaceResult, step: float = 0.05, batch_size: int = 64) -> list[dict]:
    """Per method one row of per-face metrics: deletion / insertion AUC (Petsiuk et al.; the
    survey's "hiding game"), Average Drop / % Increase / Win (CMS eqs. 9-13, all methods of the
    face against each other), edge similarity and coarseness (survey §2.2), seed-to-seed
    Spearman (random methods), Spearman / SSIM with the randomized models' maps, and the cost."""
    from ..metrics import confidence_metrics, deletion, insertion, map_ssim, spearman
    from ..metrics.structure import edge_similarity, map_coarseness

    face = res.face
    f = black_box_score(model, face)
    conf = confidence_metrics(f, [face.image], {m: [r.map] for m, r in res.runs.items()},
                              batch_size=batch_size)
    rows = []
    for k, (m, run) in enumerate(res.runs.items()):
        d = deletion(f, face.image, run.map, step=step, batch_size=batch_size)
        ins = insertion(f, face.image, run.map, step=step, batch_size=batch_size)
        row = dict(task=face.task, face=face.name, model=face.model_name, method=m, family=FAMILY.get(m, ""),
                   score=float(d.scores[0]), deletion_auc=d.auc, insertion_auc=ins.auc,
                   average_drop=float(conf.drop[0, k]), increase_in_confidence=float(conf.increase[0, k]),
                   win=float(conf.win[0, k]), edge_similarity=edge_similarity(run.map, face.image),
                   map_coarseness=map_coarseness(run.map), seconds=run.seconds, forward_passes=run.forward,
                   backward_passes=run.backward)
        if m in res.other_seed:
            row["seed_spearman"] = spearman(run.map, res.other_seed[m])
        for depth, rmap in sorted(res.randomized.get(m, {}).items()):
            tag = "all" if depth == max(res.randomized[m]) else f"top{depth}"
            row[f"rand_{tag}_spearman"] = spearman(run.map, rmap)
            rho_abs = spearman(np.abs(run.map), np.abs(rmap))
            row[f"rand_{tag}_spearman_abs"] = rho_abs
            # the check's reading: how strongly the maps still relate, whichever the direction (a
            # map that flips under randomization is as tied to the image as one that stays)
            row[f"rand_{tag}_dependence"] = abs(rho_abs)
            row[f"rand_{tag}_ssim"] = map_ssim(run.map, rmap)
        rows.append(row)
    res.rows = rows
    return rows


LEADERBOARD_COLUMNS = {  # column -> higher is better (from the metrics' declarations)
    "deletion_auc": False, "insertion_auc": True, "average_drop": True, "increase_in_confidence": False,
    "win": True, "rand_all_dependence": False, "seed_spearman": True, "edge_similarity": False,
    "map_coarseness": False,
}


def leaderboard(per_face: pd.DataFrame) -> pd.DataFrame:
    """Per task and method the mean of every per-face metric, the cost, and ranks by deletion
    AUC (lower is better) and by the randomization check (the absolute Spearman correlation of
    |map| with the fully randomized model's, lower = depends more on the weights)."""
    value_cols = [c for c in per_face.columns if c not in ("task", "face", "model", "method", "family")]
    table = (per_face.groupby(["task", "model", "method", "family"], sort=False)[value_cols].mean()
             .reset_index())
    table.insert(4, "n_faces", per_face.groupby(["task", "model", "method", "family"], sort=False)
                 .size().to_numpy())
    for col, rank_col in (("deletion_auc", "rank_deletion"), ("rand_all_dependence", "rank_randomization")):
        if col in table:
            table[rank_col] = table.groupby("task")[col].rank(method="min").astype("Int64")
    return table


def methods_rows(board: pd.DataFrame) -> pd.DataFrame:
    """The comparison stage's ``methods.csv`` columns (task, method, forward_passes,
    seconds_per_image, ...) from the leaderboard."""
    out = board.rename(columns={"seconds": "seconds_per_image", "n_faces": "n_images",
                                "rand_all_spearman": "spearman_randomized",
                                "rand_all_ssim": "ssim_randomized"}).copy()
    out["task"] = "survey_" + out["task"]
    out["method"] = out["method"].map(method_label)
    keep = ["task", "method", "forward_passes", "backward_passes", "seconds_per_image", "n_images",
            "deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "win",
            "spearman_randomized", "ssim_randomized", "edge_similarity", "map_coarseness", "seed_spearman"]
    return out[[c for c in keep if c in out.columns]]


# ----------------------------------------------------------------------------- figures
def map_panel(image: Tensor, smap: np.ndarray) -> np.ndarray:
    """A map over its image: signed maps (values of both signs) on a symmetric blue-white-red
    scale (red raises, blue lowers the score), the others min-max scaled (jet)."""
    from ..viz import overlay, overlay_fixed

    if smap.min() < 0 < smap.max():
        lim = float(np.abs(smap).max()) or 1.0
        return overlay_fixed(image, smap, -lim, lim, cmap="bwr")
    return overlay(image, smap)


def fig4(results: Sequence[FaceResult], methods: Sequence[str], title: str):
    """Survey Fig. 4 on our models: per row one face (task, model), per column one method's map
    over the face, titled."""
    from ..viz import image_panel, map_grid

    rows, row_labels = [], []
    for res in results:
        row = [("input", image_panel(res.face.image))]
        for m in methods:
            if m not in res.runs:
                row.append((f"{method_label(m)}\n(n/a)", np.full_like(image_panel(res.face.image), 255)))
                continue
            row.append((method_label(m), map_panel(res.face.image, res.runs[m].map)))
        rows.append(row)
        row_labels.append(f"{res.face.task}\n{res.face.model_name}")
    return map_grid(rows, row_labels, title=title)


def fig_leaderboard(board: pd.DataFrame):
    """Per task, each method's deletion AUC (lower is better) against its randomization
    Spearman (lower = depends more on the weights), coloured by family."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(board["task"]))
    colours = {"black-box": "tab:green", "gradient": "tab:blue", "propagation": "tab:purple",
               "CAM": "tab:red", "guided CAM": "tab:orange"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = board[board.task == task]
        y = sub["rand_all_dependence"] if "rand_all_dependence" in sub else np.zeros(len(sub))
        for (_, r), yy in zip(sub.iterrows(), y):
            ax.scatter(r.deletion_auc, yy, color=colours.get(r.family, "gray"), s=30)
            ax.annotate(method_label(r.method), (r.deletion_auc, yy), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xlabel("deletion AUC (lower is better)")
        ax.set_ylabel("|Spearman| of |map|, trained vs all layers randomized")
        ax.set_title(f"{task} ({sub.model.iloc[0]})", fontsize=9)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f) for f, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(colours), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# ----------------------------------------------------------------------------- §2.5 inpainting game
def fitted_tau(embed_fn, probes: Tensor, mates: Tensor, nonmates: Tensor, batch_size: int = 64) -> float:
    """The cosine threshold with the best accuracy on the triplets' genuine (probe, mate) and
    impostor (probe, non-mate) pairs (:func:`xfr.score.cosine_tau`)."""
    from ..metrics.base import embed_batches
    from ..score import cosine_tau

    e = embed_batches(embed_fn, torch.cat([probes, mates, nonmates]), batch_size)
    n = len(probes)
    ep, em, en = e[:n], e[n:2 * n], e[2 * n:]
    sims = torch.cat([(ep * em).sum(1), (ep * en).sum(1)]).numpy()
    return cosine_tau(sims, np.r_[np.ones(n, bool), np.zeros(n, bool)])


def kept_round_robin(inset, max_items: int) -> list[int]:
    """Up to ``max_items`` kept items of an :class:`xfr.metrics.inpainting.InpaintingSet`, taking
    the regions in turn (the first kept item of each region, then the second, ...)."""
    by_region: dict[str, list[int]] = {}
    for i in inset.kept_items():
        by_region.setdefault(str(inset.region[i]), []).append(int(i))
    out: list[int] = []
    while len(out) < max_items and any(by_region.values()):
        for items in by_region.values():
            if items and len(out) < max_items:
                out.append(items.pop(0))
    return out


def inpainting_game(model: nn.Module, model_name: str, inset, items: Sequence[int], methods: Sequence[str],
                    params: Mapping[str, Mapping], seed: int = 0, batch_size: int = 32
                    ) -> tuple[pd.DataFrame, dict]:
    """The inpainting game (Williford et al. 2020; survey §2.5) on the items of ``inset`` whose
    decision changed: each method explains f(X) = cos(e(X), e(non-mate)) on the inpainted probe X
    (which pixels make it look like the non-mate), and its map is scored as a pixel classifier
    of the replaced region (:func:`xfr.metrics.inpainting.inpainting_score`: ROC AUC, AP; 0.5 =
    chance). Deviation: Williford et al. sweep a threshold over the map and blend probes; the
    AUC against the region is the threshold-free summary of the same sweep. Returns (one row per
    item and method, {item: {method: map}})."""
    from ..metrics.inpainting import inpainting_score

    rows: list[dict] = []
    maps: dict[int, dict[str, np.ndarray]] = {}
    for i in items:
        t = int(inset.triplet[i])
        face = SurveyFace("inpainting", f"triplet {t} {inset.region[i]}", model_name, inset.inpainted[i],
                          inset.nonmates[t], str(inset.region[i]))
        maps[i] = {}
        for m in methods:
            run = explain(m, model, face, params, seed, batch_size)
            sc = inpainting_score(run.map, inset.masks[i].numpy())
            maps[i][m] = run.map
            rows.append(dict(item=i, triplet=t, region=str(inset.region[i]), method=m, family=FAMILY.get(m, ""),
                             inpainting_auc=float(sc.auc[0]), inpainting_ap=float(sc.ap[0]),
                             region_fraction=float(inset.masks[i].float().mean()), seconds=run.seconds))
    return pd.DataFrame(rows), maps


def fig_inpainting(inset, items: Sequence[int], maps: Mapping[int, Mapping[str, np.ndarray]],
                   methods: Sequence[str], title: str):
    """Per item: probe, mate, non-mate, the inpainted probe with the replaced region outlined, and
    each method's map of the inpainted probe."""
    from ..viz import image_panel, map_grid

    rows, labels = [], []
    for i in items:
        t = int(inset.triplet[i])
        inp = image_panel(inset.inpainted[i]).copy()
        edge = inset.masks[i].numpy() ^ np.roll(inset.masks[i].numpy(), 1, axis=0)
        inp[edge] = (255, 255, 0)
        row = [("probe", image_panel(inset.probes[t])), ("mate", image_panel(inset.mates[t])),
               ("non-mate", image_panel(inset.nonmates[t])), (f"inpainted {inset.region[i]}", inp)]
        row += [(method_label(m), map_panel(inset.inpainted[i], maps[i][m])) for m in methods if m in maps[i]]
        rows.append(row)
        labels.append(f"triplet {t}")
    return map_grid(rows, labels, title=title)


# ----------------------------------------------------------------------------- §6 item-response curves
def item_response(models_by_name: Mapping[str, nn.Module], triplets, strengths: Sequence[float],
                  batch_size: int = 64, herding: bool = True) -> tuple[pd.DataFrame, dict]:
    """Item-response curves (survey §6; :func:`xfr.metrics.item_response.item_response_curves`)
    of each verification model on the genuine (mate, probe) pairs of ``triplets``
    (:func:`xfr.experiments.lfw_regions.lfw_region_triplets`): blur, noise, contrast and the
    occlusion of each FaceMesh region of the probe, at each strength, after herding out the pairs
    that fail unperturbed at the model's threshold (fitted on the triplets' genuine and impostor
    pairs). Returns (the curves, one row per model, perturbation and strength; {model: tau, n,
    herded out, forward passes, seconds})."""
    from ..metrics.item_response import item_response_curves, standard_perturbations
    from ..score import unit_embeddings

    frames, info = [], {}
    for name, model in models_by_name.items():
        embed = unit_embeddings(model)
        tau = fitted_tau(embed, triplets.probes, triplets.mates, triplets.nonmates, batch_size)
        res = item_response_curves(embed, (triplets.mates, triplets.probes),
                                   standard_perturbations(triplets.region_masks), strengths, tau,
                                   batch_size=batch_size, herding=herding)
        frames.append(res.table.assign(model=name, tau=tau))
        info[name] = dict(tau=tau, n_pairs=len(res.kept), n_kept=int(res.kept.sum()),
                          herded_out=res.n_herded_out, forward_passes=res.n_forward, seconds=res.seconds)
    table = pd.concat(frames, ignore_index=True)
    return table[["model", *[c for c in table.columns if c != "model"]]], info


def fig_item_response(table: pd.DataFrame):
    """One panel per perturbation: match rate (Wilson 95 % band) against strength, one line per
    model."""
    import matplotlib.pyplot as plt

    perts = list(dict.fromkeys(table["perturbation"]))
    cols = min(4, len(perts))
    rows = (len(perts) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, p in zip(axes.flat, perts):
        for model, g in table[table.perturbation == p].groupby("model", sort=False):
            ax.plot(g.strength, g.match_rate, marker="o", ms=3, label=f"{model} (n {int(g.n.iloc[0])})")
            ax.fill_between(g.strength, g.ci_low, g.ci_high, alpha=0.15)
        ax.set_title(p, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("strength")
        ax.set_ylabel("genuine match rate")
    for ax in list(axes.flat)[len(perts):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Item-response curves (survey §6): match rate of herded genuine LFW pairs, one image perturbed",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- §2.5 data randomization
@dataclass
class DataRandomization:
    """The data randomization test: the two networks' accuracies and, per face and method, the
    similarity of the true-label network's map to the shuffled-label network's."""

    accuracy: pd.DataFrame
    similarity: pd.DataFrame
    faces: list
    maps: dict  # (net, face index) -> {method: map}
    seconds_training: float


def data_randomization(epochs: int, n_faces: int, methods: Sequence[str], params: Mapping[str, Mapping],
                       held_out: float = 0.2, seed: int = 0, batch_size: int = 32, threads: int | None = None
                       ) -> DataRandomization:
    """Adebayo et al.'s data randomization test (survey §2.5): :class:`xfr.models.small_cnn.ExpressionCNN`
    trained on the shared FER-2013 faces with their labels and with the labels shuffled (same
    seed, same schedule), then every method on ``n_faces`` held-out faces that the true-label
    network classifies right, for their true class, on both networks; per face and method the
    Spearman (signed and of |map|) and SSIM of the two maps (:func:`xfr.metrics.data_randomization.map_similarity`;
    low = the method depends on what the labels taught the network)."""
    from ..data import fer2013
    from ..metrics.data_randomization import map_similarity
    from ..models.small_cnn import load_fer_images, stratified_split, train_expression_cnn

    images, labels = load_fer_images(fer2013())
    train, test = stratified_split(labels, held_out, seed)
    t0 = time.perf_counter()
    nets, acc_rows = {}, []
    for name, shuffled in (("true labels", False), ("shuffled labels", True)):
        net, hist = train_expression_cnn(images[train], labels[train], epochs=epochs, seed=seed,
                                         shuffle_labels=shuffled, threads=threads,
                                         held_out=(images[test], labels[test]))
        net.eval()
        nets[name] = net
        acc_rows.append(dict(network=name, epochs=epochs, n_train=len(train), n_held_out=len(test),
                             train_accuracy_own_labels=hist.train_accuracy[-1],
                             train_accuracy_true_labels=hist.train_accuracy_true[-1],
                             held_out_accuracy=hist.held_out_accuracy[-1], seconds=hist.seconds))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred = nets["true labels"](images[test]).argmax(1)
    right = [int(i) for i, ok in zip(test, (pred == labels[test]).tolist()) if ok][:n_faces]
    from ..data import FER_CLASSES

    faces = [SurveyFace("data randomization", f"FER {i}", "expression-cnn", images[i].expand(3, -1, -1).clone(),
                        int(labels[i]), FER_CLASSES[int(labels[i])]) for i in right]
    maps, rows = {}, []
    for k, face in enumerate(faces):
        for name, net in nets.items():
            ok, _ = method_list(methods, net)
            maps[(name, k)] = {m: explain(m, net, face, params, seed, batch_size).map for m in ok}
        for m in maps[("true labels", k)]:
            if m not in maps[("shuffled labels", k)]:
                continue
            sim = map_similarity([maps[("true labels", k)][m]], [maps[("shuffled labels", k)][m]])
            rows.append(dict(face=face.name, label=face.label, method=m, family=FAMILY.get(m, ""),
                             spearman=float(sim.spearman[0]), spearman_abs=float(sim.spearman_abs[0]),
                             ssim=float(sim.ssim[0])))
    return DataRandomization(pd.DataFrame(acc_rows), pd.DataFrame(rows), faces, maps, seconds)


def fig_data_randomization(dr: DataRandomization, methods: Sequence[str], face: int = 0):
    """One held-out face: every method's map under the network trained on the true labels (top
    row) and under the one trained on shuffled labels (bottom), titled with their Spearman."""
    from ..viz import image_panel, map_grid

    f = dr.faces[face]
    sim = dr.similarity[dr.similarity.face == f.name].set_index("method")
    rows = []
    for net in ("true labels", "shuffled labels"):
        maps = dr.maps[(net, face)]
        row = [(f"input ({f.label})", image_panel(f.image))]
        for m in methods:
            if m not in maps:
                continue
            rho = f"\nrho |map| {sim.loc[m, 'spearman_abs']:.2f}" if m in sim.index and net != "true labels" else ""
            row.append((method_label(m) + rho, map_panel(f.image, maps[m])))
        rows.append(row)
    acc = dr.accuracy.set_index("network").held_out_accuracy
    return map_grid(rows, [f"{n}\n(held-out acc. {acc[n]:.2f})" for n in ("true labels", "shuffled labels")],
                    title="Data randomization test (Adebayo et al.): the same CNN trained on true and on "
                          "shuffled FER-2013 labels")
