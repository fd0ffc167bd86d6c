"""The survey's statements (``002_…`` §2.2, §2.5) that the ``survey`` stage tests, as paired
differences over faces of the per-face leaderboard (``results/survey/leaderboard_per_face.csv``):
shared by the stage (:mod:`xfr.experiments.survey`) and the claims table
(:mod:`xfr.experiments.claims`), which reads only this module."""
from __future__ import annotations

import pandas as pd

BLACK_BOX = ("occlusion", "rise", "lime-map")
GRADIENT_METHODS = ("gradient", "gradient-x-input", "smoothgrad", "integrated-gradients", "guided-backprop")
PROPAGATION_METHODS = ("deeplift", "lrp", "excitation-backprop")
CAM_METHODS = ("grad-cam", "grad-cam++", "score-cam")
HYBRID_METHODS = ("guided-grad-cam",)
EDGE_METHODS = ("integrated-gradients", "guided-backprop", "deeplift")  # survey §2.2, Fig. 4
RANDOM = ("rise", "lime-map", "smoothgrad")

# statement -> (methods, column, sign): the claim is mean(methods) - mean(other methods) on the
# same face, with the sign the survey states (> 0)
STATEMENTS = {
    "edge_detectors": (EDGE_METHODS, "edge_similarity",
                       "§2.2: Integrated Gradients, Guided Backprop and DeepLIFT resemble edge detectors"),
    "fine_detail": (EDGE_METHODS, "map_coarseness",
                    "§2.2: Integrated Gradients, Guided Backprop and DeepLIFT show fine detail (coarseness lower)"),
    "cam_coarse": (CAM_METHODS, "map_coarseness", "§2.2: CAM-based maps are coarse"),
    "gradient_randomization": (GRADIENT_METHODS, "rand_all_dependence",
                               "§2.5 (Adebayo et al.): gradient maps change less than the others when "
                               "all the weights are randomized"),
}
STATEMENT_SIGN = {"edge_detectors": 1, "fine_detail": -1, "cam_coarse": 1, "gradient_randomization": 1}


def statement_differences(per_face: pd.DataFrame, statement: str) -> pd.Series:
    """Per face: mean of ``column`` over the statement's methods minus over the other methods
    (faces where either side has no value are dropped)."""
    group, column, _ = STATEMENTS[statement]
    if column not in per_face:
        return pd.Series(dtype=float)
    key = per_face["task"] + " / " + per_face["face"]
    inside = per_face["method"].isin(group)
    a = per_face[inside].groupby(key[inside])[column].mean()
    b = per_face[~inside].groupby(key[~inside])[column].mean()
    return (a - b).dropna()


def statements(per_face: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The survey's statements (:data:`STATEMENTS`) as paired differences over faces: the mean,
    its 95 % percentile bootstrap interval and n (faces, all tasks pooled); ``holds`` says whether
    the interval lies entirely on the side the survey states (:data:`STATEMENT_SIGN`)."""
    from ..stats import bootstrap_ci

    rows = []
    for name, (group, column, text) in STATEMENTS.items():
        d = statement_differences(per_face, name)
        if not len(d):
            continue
        lo, hi = bootstrap_ci(d.to_numpy(), n_boot=n_boot, seed=seed)
        sign = STATEMENT_SIGN[name]
        rows.append(dict(statement=name, text=text, column=column, methods=" ".join(group),
                         value=float(d.mean()), ci_low=lo, ci_high=hi, n=len(d),
                         holds=bool(lo > 0 if sign > 0 else hi < 0)))
    return pd.DataFrame(rows)


