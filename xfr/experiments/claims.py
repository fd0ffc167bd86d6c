"""The papers' claims that the pipeline tests, each decided by a bootstrap confidence interval
(the comparison stage's ``results/claims.csv``, notebook ``notebooks/comparison.ipynb``).

Every claim is one :class:`Spec`: where the paper makes it, one sentence, the statistic we
compute from committed per-item result files under ``results/<stage>/`` (never a model), and
the claim as "statistic > threshold" or "< threshold". Its 95 % percentile bootstrap interval
over the items (faces, pairs, images, triplets; resampled jointly when several methods are
measured on the same items: :func:`xfr.stats.ranking_test`) decides the verdict
(:func:`xfr.stats.verdict`): entirely on the claim's side -> reproduced, entirely on the other
side -> not reproduced, otherwise inconclusive, and "inconclusive (n too small)" whenever the
items are fewer than ``n_required``. Kinds of statistic:

- rankings ("A ranks first", "A > B > C"): the margin of the claimed order (A's mean minus the
  runner-up's, or the smallest gap of the order), > 0; the fraction of resamples in which the
  order holds is in ``note``;
- paired or two-sample differences of means, > 0 or < 0;
- values the paper prints: |our mean - the paper's| < a tolerance (the interval of the absolute
  deviation is the image of the signed one, :func:`xfr.stats.abs_interval`).

``n_required``: the paper's number of items where it states one for that result (MinPlus
Table 1: 20 images; MinPlus Fig. 4: 5 runs = 10 run pairs; S-RISE Table 1: 50 triplets; CMS
Fig. 5: 1,000 images); otherwise :data:`MIN_ITEMS`, below which a percentile interval is little
more than the sample's range. A claim whose per-item file is absent (a stage not rerun since it
started writing one) is inconclusive with the aggregate value, if any, and a note in ``source``.

S-RISE's own tests (the srise stage) are claims per model and reading, ids ending in
``_{model}_{patches}_{scoring}``: the paper's literal reading (patches keep, raw H = sum s_i M_i)
and the suite's default (:data:`xfr.explain.srise.PATCHES_DEFAULT`, centred scoring). Seed-to-seed
stability (S-RISE §4.4, MinPlus Fig. 4 at 500 masks) comes from the reliability stage.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from ..explain.srise import PATCHES_DEFAULT
from ..stats import (
    CLAIM_COLUMNS,
    VERDICTS,
    Claim,
    ClaimStatement,
    abs_interval,
    bootstrap_ci,
    bootstrap_diff_ci,
    joint_bootstrap,
    percentile_interval,
    ranking_test,
)

MIN_ITEMS = 10  # items a claim needs when the paper states no number for it

MINPLUS, SRISE, SURVEY, CMS, XMAPS = ("MinPlus (000)", "S-RISE (001)", "Survey (002)", "CMS (003)",
                                      "X-Maps (004)")


@dataclass(frozen=True)
class Boot:
    """The bootstrap's settings (section ``comparison`` of params.yaml)."""

    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a claim's computation found: our value, its interval, the number of items, a note
    and, if it differs from the spec's, the source actually read."""

    ours: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int | None = None
    note: str = ""
    source: str | None = None


class Missing(Exception):
    """A results file, or the rows a claim needs, is absent; ``outcome`` carries the aggregate
    value that is there, if any."""

    def __init__(self, message: str, outcome: Outcome | None = None, rel: str | None = None):
        super().__init__(message)
        self.outcome = outcome
        self.rel = rel  # the results file concerned, if one


Compute = Callable[[Path, Boot], Outcome]


@dataclass(frozen=True)
class Spec(ClaimStatement):
    """One claim (:class:`xfr.stats.ClaimStatement`), the files it reads (``sources``, relative
    to the results root) and the function that computes it."""

    sources: tuple[str, ...]
    compute: Compute
    paper_value: str = ""


# ----------------------------------------------------------------------------- reading results
def _path(root: Path, rel: str) -> Path:
    return Path(root) / rel.removeprefix("results/")


def _csv(root: Path, rel: str, fallback: Outcome | None = None) -> pd.DataFrame:
    path = _path(root, rel)
    if not path.is_file():
        raise Missing(f"{rel} absent", fallback, rel)
    return pd.read_csv(path)


def _json(root: Path, rel: str) -> dict:
    path = _path(root, rel)
    if not path.is_file():
        raise Missing(f"{rel} absent", rel=rel)
    return json.loads(path.read_text())


def _get(tree: dict, *keys: str, where: str = ""):
    for k in keys:
        if not isinstance(tree, dict) or k not in tree or tree[k] is None:
            raise Missing(f"{where} has no {'/'.join(keys)}")
        tree = tree[k]
    return tree


def _rows(frame: pd.DataFrame, what: str, **eq) -> pd.DataFrame:
    sel = frame
    for col, val in eq.items():
        sel = sel[sel[col] == val]
    if sel.empty:
        raise Missing(f"no rows with {eq} in {what}")
    return sel


# ----------------------------------------------------------------------------- statistics
def _mean(values, boot: Boot, note: str = "") -> Outcome:
    """Mean of per-item values and its bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise Missing("no finite per-item values")
    lo, hi = bootstrap_ci(x, "mean", boot.n_boot, boot.level, boot.seed)
    return Outcome(float(x.mean()), lo, hi, int(x.size), note)


def _two_sample(a, b, boot: Boot, note: str = "") -> Outcome:
    """mean(a) - mean(b) of two independent groups, each resampled on its own; n = the smaller
    group."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        raise Missing(f"a group is empty (sizes {a.size}, {b.size})")
    lo, hi = bootstrap_diff_ci(a, b, "mean", boot.n_boot, boot.level, boot.seed)
    return Outcome(float(a.mean() - b.mean()), lo, hi, int(min(a.size, b.size)),
                   f"{note}means {a.mean():.4g} vs {b.mean():.4g} (n {a.size} vs {b.size})")


def _deviation(values, paper: float, boot: Boot) -> Outcome:
    """|mean(values) - paper| with the image of the signed interval."""
    out = _mean(np.asarray(values, dtype=np.float64) - paper, boot)
    lo, hi = abs_interval(out.ci_low, out.ci_high)
    return Outcome(abs(out.ours), lo, hi, out.n, f"ours {out.ours + paper:.4g} vs paper {paper:.4g}")


def _ranking(wide: pd.DataFrame, order: Sequence[object], boot: Boot, higher: bool = True,
             first_only: bool = False) -> Outcome:
    """The joint-bootstrap ranking test of the columns ``order`` of ``wide`` (items x methods):
    the margin of the claimed order (``first_only``: order[0] against every other column)."""
    missing = [m for m in order if m not in wide.columns]
    if missing:
        raise Missing(f"methods {missing} absent")
    cols = list(order) + [c for c in wide.columns if c not in order] if first_only else list(order)
    x = wide[cols].to_numpy(dtype=np.float64)
    t = ranking_test(x, [0] if first_only else list(range(len(order))), higher, first_only,
                     "mean", boot.n_boot, boot.level, boot.seed)
    means = ", ".join(f"{c} {v:.4g}" for c, v in zip(cols, np.nanmean(x, axis=0)))
    return Outcome(t.margin, t.ci_low, t.ci_high, t.n,
                   f"order held in {t.order_fraction:.0%} of resamples; means: {means}")


def _aggregate(ours: float, n: int | None, note: str) -> Outcome:
    """A point value without interval (only an aggregate exists)."""
    return Outcome(float(ours), math.nan, math.nan, n, note)


# ----------------------------------------------------------------------------- MinPlus (000)
TABLE1 = "results/masks/table1.csv"
MASKS_METRICS = "results/masks/metrics.json"
TABLE1_ORDER = ("MinPlus", "RISEgauss", "RISE", "LIME-map")  # the paper's means 0.90 > 0.86 > 0.83 > 0.67
TABLE1_KEYS = {"MinPlus": "minplus", "LIME-map": "lime_map", "RISEgauss": "rise_gauss", "RISE": "rise"}  # metrics.json
TABLE1_PAPER = {"MinPlus": "0.90", "LIME-map": "0.67", "RISEgauss": "0.86", "RISE": "0.83"}  # as printed
VALUE_TOLERANCE = 0.05  # |ours - paper's| for printed values: below the paper's own gaps between methods


def _table1(root: Path) -> pd.DataFrame:
    return _csv(root, TABLE1).set_index("image")


def minplus_table1_first(root: Path, boot: Boot) -> Outcome:
    return _ranking(_table1(root), ["MinPlus"], boot, first_only=True)


def minplus_table1_order(root: Path, boot: Boot) -> Outcome:
    return _ranking(_table1(root), TABLE1_ORDER, boot)


def _table1_value(method: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        paper = float(_get(_json(root, MASKS_METRICS), TABLE1_KEYS[method], "box_ap_paper", where=MASKS_METRICS))
        table = _table1(root)
        if method not in table.columns:
            raise Missing(f"{method} absent from {TABLE1}")
        return _deviation(table[method], paper, boot)
    return compute


STABILITY_PAIRS = "results/expressions/stability_pairs.csv"
STABLE_BELOW = 0.8  # mean Spearman between runs below which maps are "very different"


def _stability(root: Path) -> pd.DataFrame:
    return _csv(root, STABILITY_PAIRS)


def minplus_fig4_deterministic(root: Path, boot: Boot) -> Outcome:
    rows = _rows(_stability(root), STABILITY_PAIRS, method="MinPlus")
    return _mean(rows.spearman, boot, "Spearman of MinPlus maps of runs with different seeds")


def _fig4_unstable(method: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _rows(_stability(root), STABILITY_PAIRS, method=method)
        return _mean(rows.spearman, boot, "run pairs share runs: the interval is optimistic")
    return compute


def minplus_fig4_first(root: Path, boot: Boot) -> Outcome:
    """MinPlus (one deterministic pair) against the random methods' run pairs, resampled
    jointly by pair index; MinPlus's value repeats on every pair."""
    pairs = _stability(root)
    mp = _rows(pairs, STABILITY_PAIRS, method="MinPlus").spearman.to_numpy(dtype=np.float64)
    wide = pairs[pairs.method != "MinPlus"].pivot_table(index=["run_a", "run_b"], columns="method",
                                                       values="spearman", aggfunc="first")
    if wide.empty:
        raise Missing("no random method's run pairs")
    wide.insert(0, "MinPlus", float(mp.mean()))
    return _ranking(wide, ["MinPlus"], boot, first_only=True)


DETECTION = "results/detection/ap_per_face.csv"


def minplus_fig5_detection(root: Path, boot: Boot) -> Outcome:
    wide = _csv(root, DETECTION).pivot_table(index="face", columns="method", values="ap", aggfunc="first")
    return _ranking(wide, ["MinPlus"], boot, first_only=True)


METHOD_COMPARISON = "results/verification/method_comparison.csv"


def minplus_fig2_vs_avg(root: Path, boot: Boot) -> Outcome:
    wide = _csv(root, METHOD_COMPARISON).pivot_table(index="face", columns="method", values="deletion",
                                                     aggfunc="first").dropna()
    return _ranking(wide, ["avg", "minplus"], boot, higher=True, first_only=False)


# ----------------------------------------------------------------------------- S-RISE (001)
LOW_RANK_CORRELATION = 0.5  # Spearman below which a randomized model's map "differs" (Adebayo et al.)

# The srise stage (notebooks/srise.ipynb): S-RISE's own tests on two models, each under both mask
# readings (patches keep / remove) and both scorings (raw = the paper's H = sum s_i M_i, centred).
SRISE_SANITY = "results/srise/sanity.csv"
SRISE_OCCLUSION = "results/srise/occlusion.csv"
SRISE_TABLE1 = "results/srise/table1_per_triplet.csv"
SRISE_MODELS = ("dlib-resnet", "mobileface")  # params.yaml srise.model_names
# (patches, scoring): the paper's literal reading, then the suite's default (xfr.explain.srise)
SRISE_READINGS = tuple(dict.fromkeys((("keep", "raw"), (PATCHES_DEFAULT, "centred"))))
# S-RISE Table 1 (ArcFace R50, 50 LFW triplets): masks -> (deletion, insertion), flip fractions,
# lower is better (= xfr.experiments.verification.PAPER_SRISE_TABLE1, checked by a test)
PAPER_SRISE_TABLE1 = {10: (0.4466, 0.3582), 100: (0.2617, 0.1983), 500: (0.2071, 0.1459), 1000: (0.2077, 0.1384)}
SRISE_TABLE1_METRICS = ("deletion", "insertion")
SRISE_FEW, SRISE_MANY = 10, 1000  # Table 1's mask counts compared by the trend claims
SRISE_STEP = 0.02  # the resolution of our deletion / insertion (srise.table1_step)


def _reading(model: str, patches: str, scoring: str) -> str:
    return f"{model}, patches {patches}, {scoring} scoring"


def _srise_sanity(model: str, patches: str, scoring: str, masks: str) -> Compute:
    """Fig. 2: Spearman between the trained and the fully randomized model's maps (``masks``:
    "same" or "other" mask seed), per pair."""
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _rows(_csv(root, SRISE_SANITY), SRISE_SANITY, model=model, patches=patches, scoring=scoring)
        return _mean(rows[f"rho_randomized_{masks}_masks"], boot,
                     f"{_reading(model, patches, scoring)}; per probe-mate pair (the trained model's own "
                     f"seed-to-seed Spearman: results/reliability)")
    return compute


def _srise_occlusion(model: str, patches: str, scoring: str, occluder: str) -> Compute:
    """Fig. 5: mean of the occluded mate's min-max scaled map inside the occluder / outside, per pair."""
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _rows(_csv(root, SRISE_OCCLUSION), SRISE_OCCLUSION, model=model, patches=patches, scoring=scoring,
                     occluder=occluder)
        return _mean(rows.ratio, boot,
                     f"{_reading(model, patches, scoring)}; per pair; mean inside {rows.saliency_inside.mean():.3f}, "
                     f"outside {rows.saliency_outside.mean():.3f}, occluded fraction {rows.occluded_fraction.mean():.2f}")
    return compute


def _srise_table1(root: Path, model: str, patches: str, variant: str, metric: str) -> pd.DataFrame:
    """Triplets x mask counts of ``metric`` (deletion, insertion or their mean "average")."""
    t = _rows(_csv(root, SRISE_TABLE1), SRISE_TABLE1, model=model, patches=patches, variant=variant)
    t = t.assign(average=(t.deletion + t.insertion) / 2)
    return t.pivot_table(index="triplet", columns="masks", values=metric, aggfunc="first")


def _srise_trend(model: str, patches: str, scoring: str, metric: str) -> Compute:
    """Table 1: ``metric`` with 10 minus with 1000 masks (else the fewest / most present), paired
    per triplet; positive = more masks flip the decision sooner (better)."""
    def compute(root: Path, boot: Boot) -> Outcome:
        w = _srise_table1(root, model, patches, scoring, metric)
        counts = sorted(w.columns)
        lo = SRISE_FEW if SRISE_FEW in counts else counts[0]
        hi = SRISE_MANY if SRISE_MANY in counts else counts[-1]
        if lo >= hi:
            raise Missing(f"one mask count only ({lo}) for {_reading(model, patches, scoring)} in {SRISE_TABLE1}")
        w = w[[lo, hi]].dropna()
        if w.empty:
            raise Missing(f"no triplet with both {lo} and {hi} masks in {SRISE_TABLE1}")
        out = _ranking(w, [lo, hi], boot, higher=True)
        return Outcome(out.ours, out.ci_low, out.ci_high, out.n,
                       f"{_reading(model, patches, scoring)}; {metric} with {lo} minus {hi} masks, paired per "
                       f"triplet; {out.note}")
    return compute


def _srise_value(model: str, patches: str, scoring: str, metric: str, masks: int) -> Compute:
    """Table 1: |our mean ``metric`` with ``masks`` masks - the paper's|."""
    paper = PAPER_SRISE_TABLE1[masks][SRISE_TABLE1_METRICS.index(metric)]

    def compute(root: Path, boot: Boot) -> Outcome:
        w = _srise_table1(root, model, patches, scoring, metric)
        if masks not in w.columns:
            raise Missing(f"{masks} masks absent for {_reading(model, patches, scoring)} in {SRISE_TABLE1}")
        out = _deviation(w[masks].dropna(), paper, boot)
        return Outcome(out.ours, out.ci_low, out.ci_high, out.n,
                       f"{_reading(model, patches, scoring)}; {out.note} (ArcFace R50 there)")
    return compute


def _srise_converged(model: str, patches: str, scoring: str) -> Compute:
    """Table 1 / Fig. 6: |mean (deletion + insertion) / 2 with 500 minus 1000 masks|, paired per triplet."""
    def compute(root: Path, boot: Boot) -> Outcome:
        w = _srise_table1(root, model, patches, scoring, "average")
        if 500 not in w.columns or 1000 not in w.columns:
            raise Missing(f"500 or 1000 masks absent for {_reading(model, patches, scoring)} in {SRISE_TABLE1}")
        out = _mean(w[500] - w[1000], boot)
        lo, hi = abs_interval(out.ci_low, out.ci_high)
        return Outcome(abs(out.ours), lo, hi, out.n,
                       f"{_reading(model, patches, scoring)}; signed mean change {out.ours:+.4f} (500 minus 1000 masks)")
    return compute


def _srise_beats_random(model: str, patches: str, scoring: str, metric: str = "deletion") -> Compute:
    """Table 1's floor: ``metric`` of a uniformly random pixel order (variant "random", masks 0,
    written with the stage's first reading only, hence matched on model and triplet) minus that of
    the map with 1000 masks (else the most present), paired per triplet."""
    def compute(root: Path, boot: Boot) -> Outcome:
        t = _csv(root, SRISE_TABLE1)
        rnd = _rows(t, SRISE_TABLE1, model=model, variant="random")
        rnd = rnd.drop_duplicates("triplet").set_index("triplet")[metric]
        w = _srise_table1(root, model, patches, scoring, metric)
        hi = SRISE_MANY if SRISE_MANY in w.columns else max(w.columns)
        wide = pd.DataFrame({"random": rnd, "map": w[hi]}).dropna()
        if wide.empty:
            raise Missing(f"no triplet with both a random order and {hi} masks in {SRISE_TABLE1}")
        out = _ranking(wide, ["random", "map"], boot, higher=True)
        return Outcome(out.ours, out.ci_low, out.ci_high, out.n,
                       f"{_reading(model, patches, scoring)}; {metric} of a random pixel order minus the map's with "
                       f"{hi} masks, paired per triplet; {out.note}")
    return compute


SRISE_TRIPLETS = "results/verification/srise_triplets.csv"


def _srise_fig3(a: str, b: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        t = _csv(root, SRISE_TRIPLETS)
        t = t[~t.triplet.astype(str).str.startswith("FAILED")]
        if t.empty:
            raise Missing(f"no correctly verified triplet in {SRISE_TRIPLETS}")
        return _mean(t[a] - t[b], boot, "Fig. 4's failed triplet left out")
    return compute


# ----------------------------------------------------------------------------- seed-to-seed reliability
# The reliability stage (notebooks/reliability.ipynb): per task, method, scoring and face, the
# Spearman between the maps of seeds 0 and 1 made of their first n_masks masks.
RELIABILITY = "results/reliability/reliability_curves.csv"
RELIABLE_RHO = 0.9  # seed-to-seed Spearman of a stable map (params.yaml reliability.target)
PAPER_MASKS = 500  # S-RISE §4.1.2 and MinPlus §3.2: 500 masks / samples


def _reliability(task: str, method: str, scoring: str, masks: int = PAPER_MASKS) -> Compute:
    """Mean over faces of the seed-to-seed Spearman with ``masks`` masks (else the most present
    below). LIME's map ignores the scoring: its rows are used whatever their scoring."""
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _rows(_csv(root, RELIABILITY), RELIABILITY, task=task, method=method)
        if (rows.scoring == scoring).any():
            rows, which = rows[rows.scoring == scoring], f"{scoring} scoring"
        elif method == "lime":
            which = "LIME's one map (no scoring)"
        else:
            raise Missing(f"no {scoring} rows of {task} / {method} in {RELIABILITY}")
        counts = sorted(int(n) for n in rows.n_masks.unique() if n <= masks)
        if not counts:
            raise Missing(f"no mask count <= {masks} for {task} / {method} in {RELIABILITY}")
        n = counts[-1]
        at = rows[rows.n_masks == n].drop_duplicates(["model", "face"])
        models = ", ".join(sorted(at.model.astype(str).unique()))
        return _mean(at.spearman, boot,
                     f"{task} ({models}), {method}, {which}, {n} masks{'' if n == masks else f' ({masks} absent)'}; "
                     "per face, one pair of seeds (0, 1)")
    return compute


# ----------------------------------------------------------------------------- CMS (003)
CMS_METHODS = "results/cms/methods.csv"
CMS_PER_IMAGE = "results/cms/cms_confidence_per_image.csv"
CAM_METHODS = ("CMS", "Grad-CAM", "Grad-CAM++", "ScoreCAM")
ALIGNMENTS = ("canonical", "keypoint", "no alignment")
# per-image column, methods.csv column, higher is better (eqs. 11-13: Average Drop % and Win %
# higher, % Increase in confidence lower)
CONFIDENCE_METRICS = {"average_drop": ("average_drop", True), "increase": ("increase_in_confidence", False),
                      "win": ("win", True)}


def _confidence_claim(task: str, metric: str, methods: Sequence[str]) -> Compute:
    column, higher = CONFIDENCE_METRICS[metric]

    def aggregate(root: Path) -> Outcome | None:
        try:
            agg = _rows(_csv(root, CMS_METHODS), CMS_METHODS, task=task).set_index("method")
        except Missing:
            return None
        if not set(methods) <= set(agg.index):
            return None
        v = agg[column]
        others = [v[m] for m in methods[1:]]
        margin = (v[methods[0]] - max(others)) if higher else (min(others) - v[methods[0]])
        return _aggregate(margin, int(agg.n_images.iloc[0]),
                          "aggregate of methods.csv, no interval: " + ", ".join(f"{m} {v[m]:.4g}" for m in methods))

    def compute(root: Path, boot: Boot) -> Outcome:
        per = _csv(root, CMS_PER_IMAGE, aggregate(root))
        rows = per[per.task == task]
        if rows.empty:
            raise Missing(f"task {task} absent from {CMS_PER_IMAGE}", aggregate(root), CMS_PER_IMAGE)
        wide = rows.pivot_table(index="image", columns="method", values=metric, aggfunc="first", dropna=False)
        return _ranking(wide, list(methods), boot, higher=higher, first_only=True)
    return compute


CMS_METRICS = "results/cms/metrics.json"
CONVERGED_IMAGES = 1000  # "after 1000 images, the CMS is practically unchanged"


def _cms_convergence(run: str) -> Compute:
    """Fig. 5: images per map at which two CMS maps of independent images correlate at 0.99 (the
    cms stage's split-half projection, with its bootstrap interval over images)."""
    def compute(root: Path, boot: Boot) -> Outcome:
        conv = _get(_json(root, CMS_METRICS), "convergence", where=CMS_METRICS)
        row = _get(conv, run, where=CMS_METRICS)
        need = row.get("n_needed_0.99")
        if need is None:  # fewer than 4 maps (or no signal): the split-half projection, no interval
            if row.get("n_split_half_0.99_projected") is None:
                raise Missing(f"no convergence estimate for {run} in {CMS_METRICS}")
            return _aggregate(float(row["n_split_half_0.99_projected"]), int(row["n_images"]),
                              f"split-half Pearson {row['split_half_pearson']:.3f} of {int(row['n_images'])} "
                              "images, Spearman-Brown projection")
        bound = lambda v: math.inf if v is None else float(v)  # noqa: E731  (None: inf, no signal)
        return Outcome(float(need), bound(row["n_needed_0.99_ci_low"]), bound(row["n_needed_0.99_ci_high"]),
                       int(row["n_images"]),
                       f"{int(row['n_images'])} images; split-half Spearman-Brown projection (mean of 100 splits), "
                       f"95 % bootstrap over images")
    return compute


CONVERGENCE_RUNS = {"verification_lfw": "dlib-resnet on LFW", "expression_fer2013": "mini-Xception on FER-2013",
                    "gender_mini_utkface": "gender mini-Xception on UTKFace"}


CMS_RANDOMIZATION = "results/cms/cms_randomization.csv"
CMS_RANDOMIZATION_PER_IMAGE = "results/cms/cms_randomization_per_image.csv"


def _cms_randomization_aggregate(root: Path, depth: str) -> Outcome | None:
    try:
        t = _csv(root, CMS_RANDOMIZATION)
    except Missing:
        return None
    t = t[t.depth > 0]
    if t.empty:
        return None
    if depth == "deepest":
        return _aggregate(float(t.spearman_face.iloc[-1]), None, "CMS-level Spearman (one map), no interval")
    return _aggregate(float(t.spearman_face.iloc[0] - t.spearman_face.iloc[-1]), None,
                      "CMS-level Spearman, top layer minus all layers (one map each), no interval")


def cms_fig8_randomized(root: Path, boot: Boot) -> Outcome:
    per = _csv(root, CMS_RANDOMIZATION_PER_IMAGE, _cms_randomization_aggregate(root, "deepest"))
    if per.empty:
        raise Missing(f"{CMS_RANDOMIZATION_PER_IMAGE} is empty", _cms_randomization_aggregate(root, "deepest"))
    deepest = per[per.depth == per.depth.max()]
    return _mean(deepest.spearman_face, boot, f"top {int(per.depth.max())} layers randomized")


def cms_fig8_progressive(root: Path, boot: Boot) -> Outcome:
    per = _csv(root, CMS_RANDOMIZATION_PER_IMAGE, _cms_randomization_aggregate(root, "trend"))
    if per.empty or per.depth.nunique() < 2:
        raise Missing("fewer than two randomization depths", _cms_randomization_aggregate(root, "trend"))
    wide = per.pivot_table(index="image", columns="depth", values="spearman_face", aggfunc="first").dropna()
    lo, hi = min(wide.columns), max(wide.columns)
    out = _ranking(wide, [lo, hi], boot, higher=True)
    return Outcome(out.ours, out.ci_low, out.ci_high, out.n, f"depth {lo} minus depth {hi}, paired per image; {out.note}")


CMS_REGIONS = "results/cms/cms_regions.csv"
CMS_REGIONS_PER_IMAGE = "results/cms/cms_regions_per_image.csv"


def _cms_region(key: str, region: str) -> Compute:
    def aggregate(root: Path) -> Outcome | None:
        try:
            r = _rows(_csv(root, CMS_REGIONS), CMS_REGIONS, key=key, region=region)
        except Missing:
            return None
        return _aggregate(float(r.enrichment.iloc[0]), None, "CMS enrichment of cms_regions.csv, no interval")

    def compute(root: Path, boot: Boot) -> Outcome:
        per = _csv(root, CMS_REGIONS_PER_IMAGE, aggregate(root))
        rows = per[(per.key == key) & per.region.isin([region, "face"])]
        wide = rows.pivot_table(index="image", columns="region", values="mean_value", aggfunc="first").dropna()
        if wide.empty or not {region, "face"} <= set(wide.columns):
            raise Missing(f"{key}/{region} absent from {CMS_REGIONS_PER_IMAGE}", aggregate(root))
        x = wide[[region, "face"]].to_numpy(dtype=np.float64)
        ratio = lambda r: r[..., 0].mean(axis=-1) / r[..., 1].mean(axis=-1)  # noqa: E731
        dist = joint_bootstrap(x, ratio, boot.n_boot, boot.seed)
        lo, hi = percentile_interval(dist, boot.level)
        return Outcome(float(ratio(x)), lo, hi, int(len(x)),
                       "mean over images of the region's CIS mean / of the face's (= the CMS's region mean / face mean)")
    return compute


# ----------------------------------------------------------------------------- X-Maps (004)
VERIFICATION_METRICS = "results/verification/metrics.json"
CSCORE_PAIRS = "results/verification/cscore_pairs.csv"
CALIBRATION_TOLERANCE = 0.05  # |mean C - accuracy| for "C is a probability of correctness"


def xmaps_cscore_correct(root: Path, boot: Boot) -> Outcome:
    t = _csv(root, CSCORE_PAIRS)
    ok = t.correct.astype(bool)
    return _two_sample(t.C[ok], t.C[~ok], boot, "correct vs wrong decisions: ")


def xmaps_cscore_calibration(root: Path, boot: Boot) -> Outcome:
    t = _csv(root, CSCORE_PAIRS)
    out = _mean(t.C.to_numpy(dtype=np.float64) - t.correct.astype(float).to_numpy(), boot)
    lo, hi = abs_interval(out.ci_low, out.ci_high)
    return Outcome(abs(out.ours), lo, hi, out.n,
                   f"mean C {t.C.mean():.4f} vs accuracy {t.correct.astype(float).mean():.4f}")


XMAPS_PAIRS = "results/verification/xmaps_pairs.csv"


def xmaps_fig3_imposter(root: Path, boot: Boot) -> Outcome:
    t = _rows(_csv(root, XMAPS_PAIRS), XMAPS_PAIRS, method=3, image=1)
    return _two_sample(t[t.label == "imposter"].negative_fraction, t[t.label == "genuine"].negative_fraction,
                       boot, "share of dissimilar (negative) pixels, method III, imposter vs genuine: ")


def xmaps_fig5_cut(root: Path, boot: Boot) -> Outcome:
    c = _get(_json(root, VERIFICATION_METRICS), "xmaps", "cut", where=VERIFICATION_METRICS)
    out = _mean([float(c["region_mean_after"]) - float(c["region_mean_before"])], boot)
    return Outcome(out.ours, out.ci_low, out.ci_high, out.n,
                   f"one imposter pair; distance {c['distance_before']:.3f} -> {c['distance_after']:.3f}")


XMAPS_SENSITIVITY = "results/verification/xmaps_sensitivity.csv"


def _sensitivity(root: Path) -> pd.DataFrame:
    s = _csv(root, XMAPS_SENSITIVITY).drop_duplicates("variant").set_index("variant")
    return s


def _one_pair(value: float, boot: Boot, note: str) -> Outcome:
    out = _mean([value], boot)
    return Outcome(out.ours, out.ci_low, out.ci_high, out.n, f"one genuine pair; {note}")


def xmaps_fig6_patch(root: Path, boot: Boot) -> Outcome:
    s = _sensitivity(root)
    patches = [v for v in s.index if v.startswith("p=")]
    ref = s.index[s.pearson_to_reference >= 1.0 - 1e-9]
    others = [v for v in patches if v not in ref]
    if not others:
        raise Missing("no patch size besides the reference")
    r = s.loc[others, "pearson_to_reference"]
    return _one_pair(float(r.mean()), boot, ", ".join(f"{v}: r {x:.3f}" for v, x in r.items()))


COLOURS = ("gray", "white", "noise")


def xmaps_fig6_black_weakest(root: Path, boot: Boot) -> Outcome:
    s = _sensitivity(root)
    ref = s.index[s.index.str.startswith("p=") & (s.pearson_to_reference >= 1.0 - 1e-9)]
    if len(ref) == 0 or not set(COLOURS) <= set(s.index):
        raise Missing("colour variants absent")
    black = float(s.loc[ref[0], "abs_mean"])
    other = s.loc[list(COLOURS), "abs_mean"]
    return _one_pair(black - float(other.min()), boot,
                     f"mean |map| black {black:.3g}, " + ", ".join(f"{v} {x:.3g}" for v, x in other.items()))


def xmaps_fig6_shape(root: Path, boot: Boot) -> Outcome:
    s = _sensitivity(root)
    shape = [v for v in s.index if v.startswith("gaussian")]
    ref = s.index[s.pearson_to_reference >= 1.0 - 1e-9]
    single = [v for v in s.index if (v.startswith("p=") or v in COLOURS) and v not in ref]
    if not shape or not single:
        raise Missing("shape or single-factor variants absent")
    r_shape = float(s.loc[shape[0], "pearson_to_reference"])
    best = s.loc[single, "pearson_to_reference"]
    return _one_pair(r_shape - float(best.max()), boot,
                     f"r round {r_shape:.3f} vs closest other factor {best.idxmax()} {best.max():.3f}")


# ----------------------------------------------------------------------------- CMS §5.2 make-up bias
BIAS_EDITS = "results/bias/bias_edit_per_face.csv"
BIAS_SCORES = "results/bias/bias_celeba_scores.csv"
BIAS_MODELS = {"faceres": "faceres-gender", "xception": "mini-xception-gender"}
UTK_ASIAN = 2  # UTKFace file names: age_gender_race_date, race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others


def _edits(root: Path, model: str, **eq) -> pd.DataFrame:
    return _rows(_csv(root, BIAS_EDITS), BIAS_EDITS, model=model, **eq)


def _bias_edit(model: str, gender: str, edit: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _edits(root, model, region="eyes", edit=edit, gender=gender)
        return _mean(rows.delta, boot, f"ΔP(female), CelebA and UTKFace faces ({', '.join(sorted(rows.dataset.unique()))})")
    return compute


def _bias_eye_vs_control(model: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _edits(root, model, edit="dark", gender="male")
        wide = rows.pivot_table(index=["dataset", "face"], columns="region", values="delta", aggfunc="first").dropna()
        out = _ranking(wide, ["eyes", "control"], boot, higher=True)
        return Outcome(out.ours, out.ci_low, out.ci_high, out.n, f"paired per face; {out.note}")
    return compute


def _race_code(face: str) -> int:
    parts = str(face).split("/")[-1].split("_")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else -1


def _bias_asian(model: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _edits(root, model, region="eyes", edit="dark", gender="male", dataset="utkface")
        asian = rows.face.map(_race_code) == UTK_ASIAN
        return _two_sample(rows.delta[asian], rows.delta[~asian], boot, "ΔP(female), Asian vs other men: ")
    return compute


def _bias_makeup(model: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        rows = _rows(_csv(root, BIAS_SCORES), BIAS_SCORES, model=model, gender="female")
        made_up = rows.makeup.astype(str).str.lower() == "true"
        return _two_sample(rows.p_female[made_up], rows.p_female[~made_up], boot,
                           "P(female), Heavy_Makeup vs none: ")
    return compute


# ----------------------------------------------------------------------------- the survey (002)
SURVEY_PER_FACE = "results/survey/leaderboard_per_face.csv"


def _survey_statement(name: str) -> Compute:
    """A statement of :data:`xfr.experiments.survey.STATEMENTS`: per face, the mean of its
    methods minus that of the other methods (paired over faces, all tasks pooled)."""
    from .survey_statements import statement_differences

    def compute(root: Path, boot: Boot) -> Outcome:
        d = statement_differences(_csv(root, SURVEY_PER_FACE), name)
        if not len(d):
            raise Missing(f"no faces with the statement's methods in {SURVEY_PER_FACE}")
        return _mean(d.to_numpy(), boot, f"faces of {', '.join(sorted({k.split(' / ')[0] for k in d.index}))}")
    return compute


# ----------------------------------------------------------------------------- the survey's structure (002 §4-§5)
STRUCTURE_INVERSIONS = "results/structure/inversions.csv"
STRUCTURE_TEMPLATE = "results/structure/template.csv"
STRUCTURE_TCAV = "results/structure/tcav.csv"
STRUCTURE_JUDGES = ("faceres",)  # independent of dlib-resnet, whose own cosine is the inversion's target
TCAV_GENDER = {"mini-xception-gender": "the gender mini-Xception", "faceres-gender": "faceres-gender"}
TCAV_RELATIVE = ("Heavy_Makeup", "Wearing_Lipstick")


def structure_inversion_depth(root: Path, boot: Boot) -> Outcome:
    """Per (model, face): pixel correlation of the inversion from the shallowest layer minus
    that from the deepest (the output)."""
    inv = _csv(root, STRUCTURE_INVERSIONS)
    d = []
    for _, g in inv.groupby(["model", "face"]):
        g = g.sort_values("depth")
        if len(g) >= 2:
            d.append(float(g.pixel_correlation.iloc[0] - g.pixel_correlation.iloc[-1]))
    return _mean(d, boot, f"{inv.model.nunique()} models x {inv.face.nunique()} faces")


def _template_identity(judge: str) -> Compute:
    def compute(root: Path, boot: Boot) -> Outcome:
        t = _csv(root, STRUCTURE_TEMPLATE)
        if f"identity_{judge}" not in t:
            raise Missing(f"no judge {judge} in {STRUCTURE_TEMPLATE}", rel=STRUCTURE_TEMPLATE)
        d = (t[f"identity_{judge}"] - t[f"impostor_{judge}"]).to_numpy()
        return _mean(d, boot, f"genuine level {t[f'genuine_{judge}'].mean():.3f}, impostor level "
                              f"{t[f'impostor_{judge}'].mean():.3f}, inversion {t[f'identity_{judge}'].mean():.3f}; ")
    return compute


def _tcav_relative(model: str, concept: str) -> Compute:
    """Deepest TCAV layer of ``model``, relative concept (women with vs without): the TCAV scores
    against the negative sets minus the random-vs-random scores."""
    def compute(root: Path, boot: Boot) -> Outcome:
        t = _csv(root, STRUCTURE_TCAV)
        rows = t[(t.model == model) & (t.kind == "relative") & (t.concept == concept)]
        if not len(rows):
            raise Missing(f"no relative TCAV row of {model} / {concept}", rel=STRUCTURE_TCAV)
        r = rows.iloc[-1]  # layers in params order, shallow to deep
        scores = np.array(str(r.scores).split(), dtype=float)
        rand = np.array(str(r.random_scores).split(), dtype=float)
        return _two_sample(scores, rand, boot, f"{r.layer}, t-test p {r.p_value:.3g}; ")
    return compute


# ----------------------------------------------------------------------------- the claims
def _slug(name: str) -> str:
    """``name`` as a part of a claim id: "dlib-resnet" -> "dlib_resnet"."""
    return name.lower().replace("-", "_").replace(" ", "_")


def _specs() -> list[Spec]:
    s: list[Spec] = []
    add = lambda *a, **k: s.append(Spec(*a, **k))  # noqa: E731
    # MinPlus (Mery 2022)
    add("minplus_table1_first", MINPLUS, "Table 1, §3.4",
        "MinPlus gives the highest AP of the saliency map against the detected box in masked-face detection.",
        "mean AP of MinPlus minus that of the best other method (20 images, joint bootstrap)", ">", 0.0, 20,
        (TABLE1,), minplus_table1_first, "mean AP: MinPlus 0.90, LIME-map 0.67, RISEgauss 0.86, RISE 0.83")
    add("minplus_table1_order", MINPLUS, "Table 1",
        "Mean AP ranks MinPlus > RISEgauss > RISE > LIME-map.",
        "smallest gap between consecutive methods of that order in mean AP (joint bootstrap)", ">", 0.0, 20,
        (TABLE1,), minplus_table1_order, "0.90 > 0.86 > 0.83 > 0.67")
    for method in ("MinPlus", "LIME-map", "RISEgauss", "RISE"):
        add(f"minplus_table1_value_{method.lower().replace('-', '_')}", MINPLUS, "Table 1",
            f"{method}'s mean AP against the box is the paper's value (our 20 test images, not the paper's).",
            f"|our mean AP of {method} - the paper's|", "<", VALUE_TOLERANCE, 20, (TABLE1, MASKS_METRICS),
            _table1_value(method), f"mean AP {TABLE1_PAPER[method]}")
    add("minplus_fig4_deterministic", MINPLUS, "Fig. 4, §3.2, §3.5",
        "MinPlus has no random component: runs with different seeds give the same map.",
        "Spearman between MinPlus maps of two runs", ">", 0.99, 1, (STABILITY_PAIRS,),
        minplus_fig4_deterministic, "no random component (identical maps)")
    for method in ("LIME", "RISEgauss", "RISE"):
        add(f"minplus_fig4_unstable_{method.lower()}", MINPLUS, "Fig. 4",
            f"Five runs of {method} (500 masks each) give very different maps.",
            f"mean Spearman between maps of two runs of {method} (10 run pairs)", "<", STABLE_BELOW, 10,
            (STABILITY_PAIRS,), _fig4_unstable(method), "the result of each run is very different")
    add("minplus_fig4_first", MINPLUS, "Fig. 4, §3.5",
        "MinPlus is the most stable method across runs, ahead of LIME, RISEgauss and RISE.",
        "MinPlus's run-to-run Spearman minus the best random method's (run pairs, joint bootstrap)", ">", 0.0, 10,
        (STABILITY_PAIRS,), minplus_fig4_first, "stable vs random")
    for method in ("lime", "rise", "rise-gauss"):
        add(f"minplus_fig4_unstable_{_slug(method)}_expression_{PAPER_MASKS}", MINPLUS, "Fig. 4, §3.2",
            f"{method} maps of one expression from {PAPER_MASKS} random masks differ from run to run (unstable).",
            f"mean per-face Spearman between the maps of seeds 0 and 1 with {PAPER_MASKS} masks (expression, "
            "raw scoring; reliability stage)", "<", RELIABLE_RHO, MIN_ITEMS, (RELIABILITY,),
            _reliability("expression", method, "raw"), "the result of each run is very different")
    add("minplus_fig5_detection_first", MINPLUS, "Fig. 5, §3.3",
        "MinPlus maps of MTCNN face detections are the most compact on the face.",
        "mean AP against the face box of MinPlus minus the best other method (joint bootstrap)", ">", 0.0,
        MIN_ITEMS, (DETECTION,), minplus_fig5_detection, "qualitative (figure)")
    add("minplus_fig2_vs_avg", MINPLUS, "Fig. 2, §3.1",
        "MinPlus explains face verification better than AVG.",
        "mean deletion (S-RISE §3.3, lower better) of AVG minus MinPlus, paired per face", ">", 0.0, MIN_ITEMS,
        (METHOD_COMPARISON,), minplus_fig2_vs_avg, "qualitative (visually better)")
    # S-RISE (Lu & Ebrahimi): the srise stage's tests per model, for the paper's literal reading
    # (patches keep, raw scoring) and the suite's default (PATCHES_DEFAULT, centred)
    table1 = {m: " -> ".join(f"{PAPER_SRISE_TABLE1[k][i]:.4f}" for k in (SRISE_FEW, SRISE_MANY))
              for i, m in enumerate(SRISE_TABLE1_METRICS)}
    for model in SRISE_MODELS:
        for patches, scoring in SRISE_READINGS:
            key = f"{_slug(model)}_{patches}_{scoring}"
            on = f"{model}, patches {patches}, {scoring} scoring"
            for which, seeds in (("other", "other masks (seed + 1)"), ("same", "the same masks")):
                add(f"srise_fig2_sanity_{which}_masks_{key}", SRISE, "Fig. 2, §4.2",
                    "The S-RISE map of a model with randomized parameters is nonsense, unlike the trained model's.",
                    f"mean per-pair Spearman between the maps of the trained and the fully randomized model with {seeds} "
                    f"({on})", "<", LOW_RANK_CORRELATION, MIN_ITEMS, (SRISE_SANITY,),
                    _srise_sanity(model, patches, scoring, which), "qualitative (figure)")
            for occluder, visible in (("mask", "eyes"), ("sunglasses", "mouth and nose")):
                add(f"srise_fig5_{occluder}_{key}", SRISE, "Fig. 5, §4.3",
                    f"With a {occluder}, the model verifies through the {visible}: the occluded region gets little "
                    "saliency.",
                    f"mean per-pair ratio of the occluded mate's scaled map inside / outside the {occluder} ({on})",
                    "<", 1.0, MIN_ITEMS, (SRISE_OCCLUSION,), _srise_occlusion(model, patches, scoring, occluder),
                    "qualitative (figure)")
            for metric in SRISE_TABLE1_METRICS:
                add(f"srise_table1_{metric}_trend_{key}", SRISE, "Table 1, §4.4",
                    f"{metric.capitalize()} (fraction of pixels until the decision flips) is worse with "
                    f"{SRISE_FEW} masks than with {SRISE_MANY}.",
                    f"mean {metric} with {SRISE_FEW} minus {SRISE_MANY} masks, paired per triplet ({on})", ">", 0.0,
                    50, (SRISE_TABLE1,), _srise_trend(model, patches, scoring, metric), table1[metric])
                for masks in (500, 1000):
                    add(f"srise_table1_{metric}_{masks}_{key}", SRISE, "Table 1",
                        f"{metric.capitalize()} with {masks} masks is the paper's value ({model} here, ArcFace R50 "
                        "there).",
                        f"|our mean {metric} with {masks} masks - the paper's| ({on})", "<", VALUE_TOLERANCE, 50,
                        (SRISE_TABLE1,), _srise_value(model, patches, scoring, metric, masks),
                        f"{PAPER_SRISE_TABLE1[masks][SRISE_TABLE1_METRICS.index(metric)]:.4f}")
            add(f"srise_table1_converged_{key}", SRISE, "Table 1, Fig. 6, §4.4",
                "S-RISE converges after about 500 masks: the metrics barely change from 500 to 1000.",
                f"|mean (deletion + insertion) / 2 with 500 minus 1000 masks|, paired per triplet ({on})", "<",
                SRISE_STEP, 50, (SRISE_TABLE1,), _srise_converged(model, patches, scoring), "average 0.1765 -> 0.1731")
            add(f"srise_table1_beats_random_{key}", SRISE, "Table 1, §3.3",
                f"The S-RISE map orders pixels better than chance: with {SRISE_MANY} masks its deletion is lower than "
                "that of a uniformly random pixel order.",
                f"mean deletion of a random pixel order minus the map's with {SRISE_MANY} masks, paired per triplet "
                f"({on})", ">", 0.0, 50, (SRISE_TABLE1,), _srise_beats_random(model, patches, scoring),
                f"deletion {PAPER_SRISE_TABLE1[SRISE_MANY][0]:.4f} with {SRISE_MANY} masks (no random baseline printed)")
    for patches, scoring in SRISE_READINGS:
        add(f"srise_stable_500_verification_{patches}_{scoring}", SRISE, "§4.4, Fig. 6",
            "S-RISE gives stable saliency maps given sufficient iterations; it converges after around 500.",
            f"mean per-face Spearman between the maps of seeds 0 and 1 with {PAPER_MASKS} masks (verification, "
            f"patches {patches}, {scoring} scoring)", ">", RELIABLE_RHO, MIN_ITEMS, (RELIABILITY,),
            _reliability("verification", f"s-rise {patches}", scoring),
            "stable and accurate saliency maps given sufficient iterations; converges after around 500")
    add("srise_fig3_probe_shallower", SRISE, "Fig. 3, §4.3",
        "The probe's map for the non-matching pair is shallower than for the matching pair.",
        "mean of the probe's map with the mate minus with the non-mate, per triplet", ">", 0.0, MIN_ITEMS,
        (SRISE_TRIPLETS,), _srise_fig3("probe_mate_mean", "probe_nonmate_mean"), "much shallower")
    add("srise_fig3_gallery_shallower", SRISE, "Fig. 3, §4.3",
        "The non-mate's map is shallower than the mate's.",
        "mean of the mate's map minus the non-mate's, per triplet", ">", 0.0, MIN_ITEMS,
        (SRISE_TRIPLETS,), _srise_fig3("mate_mean", "nonmate_mean"), "much shallower")
    # CMS (John et al.)
    figs = {"cms_expression_fer2013": "Fig. 10", "cms_gender_celeba_mini_xception": "Fig. 12",
            "cms_gender_celeba_faceres": "Fig. 12", "cms_verification_lfw": "Fig. 11"}
    words = {"average_drop": ("has the highest Average Drop %", "Average Drop % of CMS minus the best other method"),
             "increase": ("has the lowest % Increase in confidence", "lowest other % Increase minus that of CMS"),
             "win": ("has the highest Win %", "Win % of CMS minus the best other method")}
    for task, fig in figs.items():
        for metric, (text, stat) in words.items():
            add(f"{task}_{metric}", CMS, f"{fig}, §4.2",
                f"On {task.removeprefix('cms_')}, CMS {text} of CMS, Grad-CAM, Grad-CAM++ and ScoreCAM (negative explanations).",
                f"{stat} (per image, joint bootstrap)", ">", 0.0, MIN_ITEMS, (CMS_PER_IMAGE, CMS_METHODS),
                _confidence_claim(task, metric, CAM_METHODS), "outperforms all other methods in all metrics")
    for metric, (text, stat) in words.items():
        add(f"cms_alignment_lfw_{metric}", CMS, "Figs. 20-21, §5.6",
            f"Canonical alignment gives {text.removeprefix('has ')} of canonical, keypoint and no alignment.",
            f"{stat.replace('CMS', 'canonical').replace('method', 'alignment')} (per probe, joint bootstrap)", ">", 0.0,
            MIN_ITEMS, (CMS_PER_IMAGE, CMS_METHODS), _confidence_claim("cms_alignment_lfw", metric, ALIGNMENTS),
            "performs better than keypoint-based alignment or no alignment in all cases")
    for run, what in CONVERGENCE_RUNS.items():
        add("cms_fig5_convergence" + ("" if run == "verification_lfw" else f"_{run}"), CMS, "Fig. 5, §3.4",
            "After 1,000 images the CMS is practically unchanged.",
            f"images per map for two CMS maps of independent images to correlate at 0.99 ({what})",
            "<", CONVERGED_IMAGES, CONVERGED_IMAGES, (CMS_METRICS,), _cms_convergence(run),
            "trends obvious from 100 images, unchanged after 1000")
    add("cms_fig8_randomized", CMS, "Fig. 8, §4.1.3",
        "With the top layers randomized, the canonical maps are randomized (the method passes the sanity check).",
        "mean per-face Spearman of the CIS with the top layers randomized vs trained", "<", LOW_RANK_CORRELATION,
        MIN_ITEMS, (CMS_RANDOMIZATION_PER_IMAGE, CMS_RANDOMIZATION), cms_fig8_randomized, "passes the sanity check")
    add("cms_fig8_progressive", CMS, "Fig. 8, §4.1.3",
        "As more layers are randomized, the map gets more randomized.",
        "per-face Spearman with the top layer randomized minus with all randomized layers", ">", 0.0, MIN_ITEMS,
        (CMS_RANDOMIZATION_PER_IMAGE, CMS_RANDOMIZATION), cms_fig8_progressive, "progressively randomized")
    readings = {"verification_lfw": ("eye_nose_triangle", "Fig. 7, §4.1.1", "recognition looks at the eye-nose triangle"),
                "expression_fer2013": ("glabella", "Fig. 1, §4.1.1", "expression looks between the eyebrows"),
                "gender_mini_utkface": ("eye_corners", "Fig. 13, §4.1.1", "gender models look at the eye corners"),
                "gender_mini_celeba": ("eye_corners", "Fig. 13, §4.1.1", "gender models look at the eye corners"),
                "gender_faceres_utkface": ("eye_corners", "Fig. 13, §4.1.1", "gender models look at the eye corners"),
                "gender_faceres_celeba": ("eye_corners", "Fig. 13, §4.1.1", "gender models look at the eye corners")}
    for key, (region, where, text) in readings.items():
        add(f"cms_regions_{key}", CMS, where,
            f"{text[0].upper()}{text[1:]}: the CMS of {key} is enriched in the {region.replace('_', ' ')}.",
            f"CMS mean in the {region} / on the whole face (per image, joint bootstrap)", ">", 1.0, MIN_ITEMS,
            (CMS_REGIONS_PER_IMAGE, CMS_REGIONS), _cms_region(key, region), text)
    # X-Maps (Knoche et al. 2023)
    add("xmaps_cscore_correct_higher", XMAPS, "Fig. 2, §3.1, eq. 3",
        "The C-Score is a probability of correctness: higher for correct decisions than for wrong ones.",
        "mean C-Score of correct minus wrong decisions (LFW pairs)", ">", 0.0, MIN_ITEMS, (CSCORE_PAIRS,),
        xmaps_cscore_correct, "interpret it as a probability for correctness")
    add("xmaps_cscore_calibrated", XMAPS, "§3.1, eq. 3",
        "As a probability of correctness, the mean C-Score matches the accuracy.",
        "|mean C-Score - accuracy| over pairs", "<", CALIBRATION_TOLERANCE, MIN_ITEMS, (CSCORE_PAIRS,),
        xmaps_cscore_calibration, "C in [0.5, 1], a probability for correctness")
    add("xmaps_fig3_imposter_dissimilar", XMAPS, "Fig. 3, §4.1",
        "X-Maps of imposter pairs show more dissimilar regions than those of genuine pairs.",
        "share of negative (dissimilar) pixels of method III, imposter minus genuine pairs", ">", 0.0, MIN_ITEMS,
        (XMAPS_PAIRS,), xmaps_fig3_imposter, "more dissimilar facial regions")
    add("xmaps_fig5_cut_paste", XMAPS, "Fig. 5, §4.3",
        "A region pasted from the other image of an imposter pair turns similar in the X-Map.",
        "mean X-Map III value in the pasted eye region after minus before", ">", 0.0, MIN_ITEMS,
        (VERIFICATION_METRICS,), xmaps_fig5_cut, "copied regions highlighted as similar")
    add("xmaps_fig6_patch_size", XMAPS, "Fig. 6 a, §4.4",
        "The occluding patch size strongly affects the similarity map.",
        "mean Pearson of the maps with other patch sizes to the 14 px map", "<", 0.9, MIN_ITEMS,
        (XMAPS_SENSITIVITY,), xmaps_fig6_patch, "strongly affects")
    add("xmaps_fig6_black_weakest", XMAPS, "Fig. 6 c, §4.4",
        "Black occluders give the weakest similarity map (gray, white and noise differ only marginally).",
        "mean |map| with black minus the smallest with gray / white / noise", "<", 0.0, MIN_ITEMS,
        (XMAPS_SENSITIVITY,), xmaps_fig6_black_weakest, "the weakest map is generated for black occlusions")
    add("xmaps_fig6_shape_minor", XMAPS, "Fig. 6 d, §4.4",
        "The patch shape has the most minor effect of the studied factors.",
        "Pearson of the round-patch map to the reference minus the highest of the size / colour variants", ">",
        0.0, MIN_ITEMS, (XMAPS_SENSITIVITY,), xmaps_fig6_shape, "the shape has the most minor effect")
    # CMS §5.2 make-up bias
    for model, name in BIAS_MODELS.items():
        add(f"bias_men_eye_makeup_{model}", CMS, "Fig. 17, §5.2",
            f"Eye make-up (darkened eye ring) lowers {name}'s 'male' confidence for men.",
            "mean ΔP(female) of men after darkening the eye ring", ">", 0.0, MIN_ITEMS, (BIAS_EDITS,),
            _bias_edit(model, "male", "dark"), "drop of 'male' confidence in all cases")
        add(f"bias_men_eyes_vs_control_{model}", CMS, "Fig. 17, §5.2",
            f"For {name}, the eyes matter beyond any darkening: darkening the eye ring raises P(female) of men more "
            "than darkening the cheeks.",
            "mean ΔP(female) of men, eye ring minus equal-area cheek control, paired per face", ">", 0.0,
            MIN_ITEMS, (BIAS_EDITS,), _bias_eye_vs_control(model), "the model fixates on the eye corners")
        add(f"bias_women_no_makeup_{model}", CMS, "Fig. 17, §5.2",
            f"Removing eye make-up (lightened eye ring) lowers {name}'s 'female' confidence for women.",
            "mean ΔP(female) of women after lightening the eye ring", "<", 0.0, MIN_ITEMS, (BIAS_EDITS,),
            _bias_edit(model, "female", "light"), "a smaller drop of 'female' confidence")
        add(f"bias_asian_men_{model}", CMS, "§5.2",
            f"The make-up effect on {name} is strongest for Asian men.",
            "mean ΔP(female) of darkening the eye ring, UTKFace Asian men minus men of other races", ">", 0.0,
            MIN_ITEMS, (BIAS_EDITS,), _bias_asian(model), "especially true for males of Asian origin")
        add(f"bias_celeba_makeup_{model}", CMS, "§5.2",
            f"Women labelled Heavy_Makeup get a higher P(female) from {name} (the cue the model picked up).",
            "mean P(female) of CelebA women with minus without Heavy_Makeup", ">", 0.0, MIN_ITEMS, (BIAS_SCORES,),
            _bias_makeup(model), "the model picked up the cue of eye make-up")
    # the survey (002): its statements on the level of detail and the randomization check, on the
    # survey stage's faces (xfr.experiments.survey.STATEMENTS)
    from .survey_statements import STATEMENT_SIGN, STATEMENTS

    for name, (methods, column, text) in STATEMENTS.items():
        where, _, claim = text.partition(": ")
        add(f"survey_{name}", SURVEY, where, claim[:1].upper() + claim[1:] + ".",
            f"per face: mean {column} of {', '.join(methods)} minus that of the other methods",
            ">" if STATEMENT_SIGN[name] > 0 else "<", 0.0, MIN_ITEMS, (SURVEY_PER_FACE,),
            _survey_statement(name), "Fig. 4 (qualitative)" if "2.2" in where else "Adebayo et al. 2018")
    # the survey (002) §4-§5 on the structure stage
    add("survey_inversion_depth", SURVEY, "§4.2, Fig. 13",
        "The initial and middle layers can recreate the input image; the deeper layers keep only what the task "
        "needs (the inversion from the output no longer looks like the face).",
        "per model and face: pixel correlation of the inversion from the shallowest layer minus from the output",
        ">", 0.0, MIN_ITEMS, (STRUCTURE_INVERSIONS,), structure_inversion_depth, "Fig. 13 (qualitative)")
    for judge in STRUCTURE_JUDGES:
        add(f"survey_template_identity_{_slug(judge)}", SURVEY, "§4",
            f"A stored face descriptor reveals the face: the image inverted from a dlib-resnet template is closer to its "
            f"source than another person's face is, judged by {judge}.",
            f"per face: {judge} cosine of the inverted template to its source minus the source's cosine to an impostor",
            ">", 0.0, MIN_ITEMS, (STRUCTURE_TEMPLATE,), _template_identity(judge),
            "feature inversion detects the information stored in descriptors (qualitative)")
    for model, name in TCAV_GENDER.items():
        for concept in TCAV_RELATIVE:
            add(f"cms_tcav_{concept.lower()}_{_slug(model)}", CMS, "§5.2 (TCAV, survey §5)",
                f"{name} uses {concept.replace('_', ' ').lower()} for 'female' beyond gender: the TCAV score of women "
                f"with {concept} against women without it is above the random-vs-random score.",
                "mean TCAV score over the negative sets minus the random-vs-random mean (deepest layer)", ">", 0.0,
                MIN_ITEMS, (STRUCTURE_TCAV,), _tcav_relative(model, concept), "the model picked up the cue of eye make-up")
    return s


SPECS: list[Spec] = _specs()


def claim_sources(specs: Sequence[Spec] = SPECS) -> list[str]:
    """Every results file a claim reads (the comparison stage's data dependencies)."""
    return sorted({src for sp in specs for src in sp.sources})


def evaluate(spec: Spec, results_root: str | Path, boot: Boot = Boot()) -> Claim:
    """The claim of ``spec`` on the results under ``results_root``: computed, or, when its data
    are absent, inconclusive with the aggregate found (if any) and a note in ``source``; an
    unexpected error is reported in ``note`` (a bug: the tests check there is none)."""
    source, note = "; ".join(spec.sources), ""
    try:
        out = spec.compute(Path(results_root), boot)
    except Missing as e:
        out = e.outcome or Outcome(math.nan)
        out = Outcome(out.ours, math.nan, math.nan, out.n, out.note)
        stage = e.rel.removeprefix("results/").split("/")[0] if e.rel else None
        source = f"{source} ({e}{f': rerun the {stage} stage' if stage else ''})"
    except Exception as e:  # noqa: BLE001 - one broken claim must not hide the others
        out = Outcome(math.nan, note=f"error: {type(e).__name__}: {e}")
    if out.note:
        note = out.note
    if out.source:
        source = out.source
    statement = {f.name: getattr(spec, f.name) for f in fields(ClaimStatement)}
    statement.update(threshold=float(spec.threshold), n_required=int(spec.n_required))
    return Claim(**statement, source=source, paper_value=spec.paper_value, ours=float(out.ours),
                 ci_low=float(out.ci_low), ci_high=float(out.ci_high), n=out.n, note=note)


def claims_table(results_root: str | Path, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 specs: Sequence[Spec] = SPECS) -> pd.DataFrame:
    """One row per claim (:data:`xfr.stats.CLAIM_COLUMNS`), computed from the committed
    per-item results under ``results_root``; the verdict follows from the interval."""
    boot = Boot(int(n_boot), float(level), int(seed))
    rows = [evaluate(sp, results_root, boot).row() for sp in specs]
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """{reproduced, not_reproduced, inconclusive (all kinds), inconclusive_n_too_small, total}."""
    v = table["verdict"]
    return {"reproduced": int((v == VERDICTS[0]).sum()), "not_reproduced": int((v == VERDICTS[1]).sum()),
            "inconclusive": int(v.str.startswith("inconclusive").sum()),
            "inconclusive_n_too_small": int((v == VERDICTS[3]).sum()), "total": int(len(v))}
