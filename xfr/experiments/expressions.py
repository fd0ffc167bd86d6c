"""Expression-recognition experiments of MinPlus (Mery 2022, §3.2) on FER-2013 with the
mini-Xception (notebook ``notebooks/expressions.ipynb``):

- Fig. 3: MinPlus, LIME (and LIME-map, free from the same samples), RISE and RISEgauss on one
  happy, surprised, angry and neutral face, each explaining f(X) = P(true class | X) (eq. 3);
- Fig. 4: five runs (seeds) of each random method on the 'angry' face, and the run-to-run
  agreement of their maps (:func:`xfr.metrics.stability`); MinPlus has no random component.

Also the glue the other experiment modules reuse: :func:`run_methods` (several explainers on one
image with their cost, LIME and LIME-map sharing one set of samples) and :func:`method_row`
(one methods.csv row).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..explain.common import minmax
from ..io import load_image
from ..report import RANDOM_METHODS, Timed, label, timed
from ..viz import upscale


# ----------------------------------------------------------------------------- faces
def resize_face(image: Tensor, size: int) -> Tensor:
    """[3,h,w] -> [3,size,size], bilinear (antialiased when shrinking)."""
    if image.shape[1:] == (size, size):
        return image.clone()
    shrink = size < max(image.shape[1:])
    out = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=shrink)[0]
    return out.clamp(0, 1)


def pick_confident_faces(model, table: pd.DataFrame, classes: Sequence[str], n_candidates: int = 64,
                         batch_size: int = 64) -> pd.DataFrame:
    """For each class, among the first ``n_candidates`` images of that class (file-name order) the
    one the model classifies correctly with the highest probability (ties: the first).

    ``table``: columns ``path``, ``label``, ``y`` (:func:`xfr.data.fer2013`). Returns one row per
    class: ``label``, ``y``, ``path``, ``prob`` (P(label)), ``n_correct`` (correct among the
    candidates). Raises ValueError when a class has no correctly classified candidate.
    """
    rows = []
    for name in classes:
        sub = table[table["label"] == name].sort_values("path").head(int(n_candidates))
        if sub.empty:
            raise ValueError(f"no images of class {name!r} (classes: {sorted(table['label'].unique())})")
        images = torch.stack([load_image(p) for p in sub["path"]])
        k = int(sub["y"].iloc[0])
        probs = torch.cat([torch.softmax(_logits(model, images[i:i + batch_size]), dim=1)
                           for i in range(0, len(images), batch_size)])
        correct = probs.argmax(dim=1) == k
        if not bool(correct.any()):
            raise ValueError(f"the model classifies none of the first {len(sub)} {name!r} images "
                             f"correctly; raise n_candidates")
        pk = torch.where(correct, probs[:, k], torch.full_like(probs[:, k], -1.0))
        i = int(torch.nonzero(pk == pk.max())[0, 0])
        rows.append(dict(label=name, y=k, path=Path(sub["path"].iloc[i]), prob=float(probs[i, k]),
                         n_correct=int(correct.sum()), n_candidates=len(sub)))
    return pd.DataFrame(rows)


def _logits(model, images: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(images).float().cpu()


# ----------------------------------------------------------------------------- explainers


def class_probability(model, image: Tensor, k: int) -> float:
    """P(class k | image) of a classifier returning logits."""
    return float(torch.softmax(_logits(model, image[None]), dim=1)[0, k])


def max_abs_difference(a: Tensor, b: Tensor) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


# ----------------------------------------------------------------------------- figures
def fig_methods(faces: Sequence[Tensor], row_titles: Sequence[str],
                results: Sequence[Mapping[str, Timed]], path, title: str, scale: int = 1,
                extra: Mapping[str, str] | None = None):
    """Rows of [face, overlay of each method] (MinPlus Figs. 3 and 5 layout); each panel titled
    with the method, its forward passes and seconds (and ``extra[method]``)."""
    from ..viz import image_panel, overlay, side_by_side

    panels = []
    for face, rt, res in zip(faces, row_titles, results):
        row = [(rt, upscale(image_panel(face), scale))]
        for name, t in res.items():
            cap = f"{label(name)}\n{t.n_forward} passes, {t.seconds:.1f}s"
            if extra and name in extra:
                cap += f"\n{extra[name]}"
            row.append((cap, upscale(overlay(face, t.map), scale)))
        panels.append(row)
    return side_by_side(panels, path, title=title)


def fig_runs(face: Tensor, runs: Mapping[str, Sequence[Timed]], stab: pd.DataFrame, path,
             title: str, seeds: Sequence[int], scale: int = 1):
    """MinPlus Fig. 4 layout: one row per method, its runs side by side, then the pixel-wise
    std of the normalized maps; row captions carry the stability numbers."""
    from ..viz import colorize, image_panel, overlay, side_by_side, to_uint8

    panels = []
    for name, items in runs.items():
        st = stab[stab["method"] == label(name)].iloc[0]
        row = [(f"{label(name)}\nPearson {st.pearson:.2f}\nSpearman {st.spearman:.2f}",
                upscale(image_panel(face), scale))]
        for k, t in enumerate(items):
            run_name = f"seed {seeds[k]}" if name in RANDOM_METHODS else f"run {k + 1}"
            row.append((f"{label(name)} {run_name}", upscale(overlay(face, t.map), scale)))
        std = np.std(np.stack([minmax(np.asarray(t.map, np.float64)) for t in items]), axis=0)
        row.append((f"pixel std (mean {st.pixel_std:.3f})",
                    upscale(to_uint8(colorize(std, "magma", vmin=0.0, vmax=0.5)), scale)))
        panels.append(row)
    return side_by_side(panels, path, title=title)


# ----------------------------------------------------------------------------- MinPlus parts
def minplus_with_parts(f, image: Tensor, batch_size: int = 64, **kwargs):
    """MinPlus (eqs. 11-13) together with its four partial maps (Algorithms 1-4): a
    :class:`~xfr.report.Timed` of the final map and the :class:`~xfr.explain.MinPlusMaps`."""
    from ..explain import combine_minplus, minplus_maps

    run = timed(minplus_maps, f, image, batch_size=batch_size, **kwargs)
    parts = run.map
    return Timed(combine_minplus(parts), run.seconds, run.n_forward), parts


def fig_minplus_parts(image: Tensor, parts, path, title: str, scale: int = 1):
    """The four partial maps of MinPlus, each smoothed with its Gaussian window (eq. 12) and
    shown on a symmetric colour scale (red > 0 > blue), and the final map."""
    from ..explain import combine_minplus
    from ..explain.common import gaussian_smooth
    from ..viz import colorize, image_panel, overlay, side_by_side, to_uint8

    row = [("face", upscale(image_panel(image), scale))]
    for name, m in zip(("H0- (Alg. 1)", "H1- (Alg. 2)", "H0+ (Alg. 3)", "H1+ (Alg. 4)"), parts.as_list()):
        sm = gaussian_smooth(m.double(), parts.width).numpy()
        lim = float(np.abs(sm).max()) or 1.0
        raw = m.numpy()
        row.append((f"{name}\nraw min {raw.min():+.2f} max {raw.max():+.2f}",
                    upscale(to_uint8(colorize(sm, "RdBu_r", vmin=-lim, vmax=lim)), scale)))
    row.append(("MinPlus (eqs. 11-13)", upscale(overlay(image, combine_minplus(parts)), scale)))
    return side_by_side([row], path, title=title)
