"""Model-parameter randomization sanity checks (notebook ``notebooks/sanity_checks.ipynb``):
S-RISE (Lu & Ebrahimi, §4.2, Fig. 2) and Canonical Saliency Maps (John et al., §4.1.3, Fig. 8),
after Adebayo et al. 2018.

The layers of a trained model are re-initialized cumulatively from the output side
(:func:`xfr.metrics.cascading_randomization`); at chosen depths (number of randomized layers) the
image is explained again with the *randomized* model's own score function (for verification
both embeddings come from the randomized model: S-RISE explains "the decision of a face
recognition model whose parameters are randomly initialized"). Spearman rank correlation and SSIM
between the trained model's map and each randomized map measure how much the explanation depends
on what the model learned (low = passes the check).

For a random explainer (S-RISE) two trained maps with different seeds give the run-to-run
agreement, the ceiling any comparison can reach; randomized maps are compared with the trained
map of the same seed (same masks: the explainer is fixed, only the model changes, as Adebayo et
al.) and with the trained map of the other seed (nothing shared but the image: with the same
masks, the uneven coverage of a finite mask set shows in both maps whatever the model).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from torch import Tensor

from ..metrics import map_ssim, spearman
from ..metrics.randomization import CascadeMaps
from ..report import label


def curves(task: str, cm: CascadeMaps) -> pd.DataFrame:
    """Long table: task, method, comparison, layer, depth, spearman, ssim. ``comparison``:
    ``same_seed`` (randomized map vs the trained map with the same explainer settings; depth 0
    is the trained map itself, 1 by definition), ``other_seed`` (random methods: randomized map
    vs the trained map of seed + 1; depth 0 = the run-to-run agreement of the trained model)."""
    rows = []
    for name, by_depth in cm.maps.items():
        trained = by_depth[0]
        refs = {"same_seed": trained}
        if name in cm.other_seed:
            refs["other_seed"] = cm.other_seed[name]
        for comparison, ref in refs.items():
            for depth in cm.depths:
                m = by_depth[depth]
                rows.append(dict(task=task, method=label(name), comparison=comparison,
                                 layer=cm.layer_at(depth), depth=depth,
                                 spearman=spearman(ref, m), ssim=map_ssim(ref, m)))
    return pd.DataFrame(rows)


def summary_rows(task: str, cm: CascadeMaps, table: pd.DataFrame) -> list[dict]:
    """One methods.csv row per method: Spearman / SSIM of the trained map with the fully
    randomized (deepest) one, the run-to-run ceiling for random methods, and the cost."""
    deepest = max(cm.depths)
    rows = []
    for name in cm.maps:
        sub = table[(table.method == label(name)) & (table.comparison == "same_seed")]
        last = sub[sub.depth == deepest].iloc[0]
        row = dict(task=task, method=label(name), randomized_layers=deepest,
                   spearman_randomized=last.spearman, ssim_randomized=last.ssim,
                   mean_spearman_randomized=float(sub[sub.depth > 0].spearman.mean()))
        other = table[(table.method == label(name)) & (table.comparison == "other_seed")]
        if len(other):
            row["spearman_randomized_other_seed"] = float(other[other.depth == deepest].spearman.iloc[0])
            row["spearman_trained_two_seeds"] = float(other[other.depth == 0].spearman.iloc[0])
        row["forward_passes"] = float(np.mean(cm.n_forward[name]))
        row["seconds_per_image"] = float(np.mean(cm.seconds[name]))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- figures
def fig_cascade(image: Tensor, cm: CascadeMaps, table: pd.DataFrame, path, title: str, scale: int = 1):
    """S-RISE Fig. 2 / CMS Fig. 8 layout: per method the trained map and the maps after
    randomizing the top k layers, titled with Spearman and SSIM against the trained map."""
    from ..viz import image_panel, overlay, side_by_side, upscale

    panels = []
    for name, by_depth in cm.maps.items():
        row = [(label(name), upscale(image_panel(image), scale))]
        for depth in cm.depths:
            sub = table[(table.method == label(name)) & (table.comparison == "same_seed")
                        & (table.depth == depth)].iloc[0]
            cap = (f"trained, f = {cm.scores[0]:.3f}" if depth == 0 else
                   f"top {depth} random, f = {cm.scores[depth]:.3f}\n"
                   f"rho {sub.spearman:+.2f}, SSIM {sub.ssim:.2f}")
            row.append((cap, upscale(overlay(image, by_depth[depth]), scale)))
        panels.append(row)
    return side_by_side(panels, path, title=title)


def fig_curves(table: pd.DataFrame):
    """Spearman and SSIM vs randomization depth, one line per (task, method, comparison)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(table.method))}
    tasks = list(dict.fromkeys(table.task))
    for (task, method, comparison), sub in table.groupby(["task", "method", "comparison"], sort=False):
        style = ("-" if tasks.index(task) == 0 else "--") if comparison == "same_seed" else ":"
        marker = "o" if comparison == "same_seed" else "x"
        lab = f"{task}: {method}" + ("" if comparison == "same_seed" else " vs trained, other seed")
        for ax, col in zip(axes, ("spearman", "ssim")):
            ax.plot(sub.depth, sub[col], style, marker=marker, color=colours[method], label=lab)
    for ax, col in zip(axes, ("Spearman rank correlation", "SSIM")):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("randomized layers (from the output)")
        ax.set_ylabel(f"{col} with the trained model's map")
        ax.axhline(0, color="gray", lw=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def srise_mask_mean(hw: tuple[int, int], n_masks: int = 500, n_patches: int = 100, kernel: int = 40,
                    sigma: float = 7.0, seed: int = 0) -> float:
    """Mean keep value of the S-RISE masks (1 = the whole image kept): the closer to 1, the less
    the masked scores vary and the more the map sum_i s_i M_i is the masks' own coverage."""
    from ..explain.masks import SRiseMasks

    masks = SRiseMasks(hw, n_masks, n_patches, kernel, sigma, seed=seed)
    total = sum(float(masks[i:i + 64].double().sum()) for i in range(0, n_masks, 64))
    return total / (n_masks * hw[0] * hw[1])
