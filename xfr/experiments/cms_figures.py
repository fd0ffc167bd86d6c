"""Figures of the CMS paper's experiments (notebook ``notebooks/cms.ipynb``, steps in
:mod:`xfr.experiments.cms`): canonical maps per model (Figs. 1, 7, 13), CIS examples (Fig. 6),
convergence (Fig. 5), the alignment (Figs. 20-21) and patch-size (Fig. 18) ablations, negative
explanations and metric bars (Figs. 9-14), the randomization check (Fig. 8)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..explain.canonical import CISRun


def fig_faces_and_meshes(sets: Mapping, n: int = 4):
    """The first ``n`` working frames of each set with FaceMesh (green) and MTCNN's 5 points (red)."""
    import matplotlib.pyplot as plt

    show = [(name, s.faces[:n]) for name, s in sets.items()]
    fig, axes = plt.subplots(len(show), n, figsize=(9, 2.4 * len(show)), squeeze=False)
    for r, (name, fs) in enumerate(show):
        for c in range(n):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(fs):
                fc = fs[c]
                ax.imshow(fc.image.permute(1, 2, 0).numpy())
                m = fc.mesh.numpy() - 0.5
                ax.plot(m[:, 0], m[:, 1], ".", ms=0.8, color="lime")
                lm = fc.landmarks5.numpy() - 0.5
                ax.plot(lm[:, 0], lm[:, 1], "r+", ms=6)
                ax.set_title(f"{name}: {fc.name[:16]}\nmesh error {fc.mesh_error:.2f}", fontsize=7)
    fig.suptitle("Working frames (224 px) with FaceMesh (green) and MTCNN's 5 points (red)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_cms_models(maps: Mapping[str, Tensor], face, subtitles: Mapping[str, str] | None = None,
                   title: str | None = None):
    """Figs. 1 / 7 / 13: one canonical map per model over the canonical face (each scaled to
    its own range, red = high)."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical

    n = len(maps)
    cols = n if n <= 4 else int(math.ceil(n / 2))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 3.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, m) in zip(axes.flat, maps.items()):
        plot_canonical(ax, m, face)
        sub = (subtitles or {}).get(name, "")
        ax.set_title(name + (f"\n{sub}" if sub else ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def fig_cis_examples(rows: Sequence[dict], face, title: str | None = None):
    """Fig. 6: per row (a) the occlusion-on-mesh map on the input, (b) the CIS map, (c) the
    model's CMS and (d) the CMS reprojected onto the input. ``rows``: dicts with ``label``,
    ``image`` [3,H,W], ``image_map`` [H,W], ``cis`` [S,S], ``cms`` [S,S], ``reprojected``
    [H,W]."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical
    from ..viz import overlay

    fig, axes = plt.subplots(len(rows), 4, figsize=(10.5, 2.75 * len(rows)), squeeze=False)
    heads = ("(a) occlusion on the mesh", "(b) CIS", "(c) CMS", "(d) CMS reprojected")
    for r, row in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(overlay(row["image"], row["image_map"]))
        plot_canonical(ax[1], row["cis"], face)
        plot_canonical(ax[2], row["cms"], face)
        rep = row["reprojected"]
        ax[3].imshow(overlay(row["image"], rep))
        for j in range(4):
            ax[j].set_axis_off()
            ax[j].set_title((heads[j] + "\n" if r == 0 else "") + (row["label"] if j == 0 else ""),
                            fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_convergence(curves: pd.DataFrame, levels: Sequence[float] = (0.95, 0.99)):
    """Fig. 5 as a curve: Pearson correlation of the CMS of n images with the final CMS."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, sub in curves.groupby("model", sort=False):
        ax.plot(sub.n_images, sub.pearson_with_final, marker="o", ms=3, label=model)
    for lv in levels:
        ax.axhline(lv, color="gray", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("number of CIS maps averaged (random order)")
    ax.set_ylabel("Pearson r with the CMS of all maps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_convergence_maps(maps: Sequence[Tensor], steps: Sequence[int], face, seed: int = 0,
                         title: str | None = None):
    """Fig. 5 as maps: the CMS of the first n CIS maps (same random order as cms_convergence)."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical

    stacked = torch.stack([torch.as_tensor(m, dtype=torch.float64) for m in maps])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(stacked)))
    steps = [s for s in steps if s <= len(stacked)]
    fig, axes = plt.subplots(1, len(steps), figsize=(2.4 * len(steps), 2.8), squeeze=False)
    for ax, k in zip(axes[0], steps):
        plot_canonical(ax, stacked[order[:k]].mean(0), face)
        ax.set_title(f"{k} images", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_alignment(none_map, mean_raw: Tensor, kp_map, mean_chip: Tensor, cms_map, face, title=None):
    """Fig. 21: the three model-level maps: (a) no alignment over the mean input image, (b)
    5-point alignment over the mean aligned face, (c) CMS over the canonical face."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical
    from ..viz import overlay

    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.5))
    axes[0].imshow(overlay(mean_raw, torch.as_tensor(np.asarray(none_map))))
    axes[0].set_title("(a) no alignment\n(mean of the input frames)", fontsize=8)
    axes[1].imshow(overlay(mean_chip, torch.as_tensor(np.asarray(kp_map))))
    axes[1].set_title("(b) 5-point alignment\n(mean aligned face)", fontsize=8)
    plot_canonical(axes[2], cms_map, face)
    axes[2].set_title("(c) canonical (CMS)", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


METRIC_TITLES = (("average_drop", "Average Drop % (higher better)"),
                 ("increase_in_confidence", "% Increase in confidence (lower better)"),
                 ("win", "Win % (higher better)"))


def fig_metric_bars(table: pd.DataFrame, title: str | None = None,
                    metrics: Sequence[tuple[str, str]] = METRIC_TITLES):
    """Figs. 10-12 / 20 layout: per metric, grouped bars of the methods for each task."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table.task))
    methods = list(dict.fromkeys(table.method))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, (col, name) in zip(axes[0], metrics):
        for j, m in enumerate(methods):
            vals = [float(table[(table.task == t) & (table.method == m)][col].iloc[0])
                    if ((table.task == t) & (table.method == m)).any() else np.nan for t in tasks]
            ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_negative_explanations(images: Sequence[Tensor], heatmaps: Mapping[str, Sequence],
                              scores: np.ndarray | None = None, labels: Sequence[str] | None = None,
                              title: str | None = None):
    """Figs. 9 / 14 style: per image a row of the normalized heat maps H (eq. 10) over the image
    and a row of the negative explanations E = (1 - H) I (eq. 9) of every method; ``scores``
    [N, 1 + K] = M(I), M(E_k) shown in the captions."""
    import matplotlib.pyplot as plt

    from ..metrics import negative_explanation, normalize_heatmaps
    from ..viz import overlay

    methods = list(heatmaps)
    n = len(images)
    fig, axes = plt.subplots(2 * n, 1 + len(methods), figsize=(2.1 * (1 + len(methods)), 4.5 * n),
                             squeeze=False)
    for i, img in enumerate(images):
        hs = normalize_heatmaps([heatmaps[m][i] for m in methods])
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top[0].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        cap = (labels[i] if labels else "") + (f"\nM(I) = {scores[i][0]:.3f}" if scores is not None else "")
        top[0].set_title(cap, fontsize=7)
        for k, m in enumerate(methods):
            top[k + 1].imshow(overlay(img, torch.from_numpy(hs[k]), alpha=0.5))
            top[k + 1].set_title(f"{m}: H (max {hs[k].max():.2f})", fontsize=7)
            e = negative_explanation(img, hs[k])
            bottom[k + 1].imshow(e.permute(1, 2, 0).clamp(0, 1).numpy())
            bottom[k + 1].set_title("E = (1 - H) I" + (f"\nM(E) = {scores[i][k + 1]:.3f}"
                                                          if scores is not None else ""), fontsize=7)
        for ax in list(top) + list(bottom):
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_patch_sizes(image: Tensor, results: Sequence, face, title: str | None = None):
    """Fig. 18: the CIS map of one image for each occluder size."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical

    fig, axes = plt.subplots(1, 1 + len(results), figsize=(2.4 * (1 + len(results)), 2.9))
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].set_axis_off()
    axes[0].set_title("input", fontsize=8)
    for ax, r in zip(axes[1:], results):
        plot_canonical(ax, r.canonical, face)
        ax.set_title(f"patch {r.patch} px\n{len(r.points)} points, canvas {r.canvas_patch} px",
                     fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_randomization(original: Tensor, maps: Sequence, layers: Sequence[str], table: pd.DataFrame,
                      face, title: str | None = None):
    """Fig. 8: the trained model's CMS and the CMS after randomizing the top 1, 2, ... layers,
    captioned with Spearman (face pixels) and SSIM against the trained CMS."""
    import matplotlib.pyplot as plt

    from ..explain.canonical import plot_canonical

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.5 * (1 + len(maps)), 3.1))
    axes = np.atleast_1d(axes)
    plot_canonical(axes[0], torch.as_tensor(np.asarray(original)), face)
    axes[0].set_title("trained", fontsize=8)
    for k, (ax, m) in enumerate(zip(axes[1:], maps)):
        plot_canonical(ax, torch.as_tensor(np.asarray(m)), face)
        row = table.iloc[k]
        ax.set_title(f"top {k + 1} random ({layers[k]})\nrho {row.spearman_face:+.2f}, "
                     f"SSIM {row.ssim:.2f}", fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_convergence_of(runs: Mapping[str, CISRun], face, seed: int = 0):
    """:func:`fig_convergence_maps` of the verification run (the FER-2013 run if it has < 2 maps)
    at 1, 5, 10, 20, 50, ... images."""
    k5 = "verification_lfw" if len(runs["verification_lfw"].maps) >= 2 else "expression_fer2013"
    n = len(runs[k5].maps)
    steps = [s for s in (1, 5, 10, 20, 50, 100, 200, 500, 1000) if s < n] + [n]
    return fig_convergence_maps(runs[k5].maps, steps, face, seed=seed,
                                title=f"CMS of the first n CIS maps: {runs[k5].model}, {runs[k5].task}")


def fig_negative_examples(c, k: int = 2):
    """:func:`fig_negative_explanations` of the first ``k`` faces of one
    :class:`xfr.experiments.cms.CamComparison`."""
    k = min(k, len(c.faces))
    return fig_negative_explanations([fc.image for fc in c.faces[:k]], {m: v[:k] for m, v in c.maps.items()},
                                     np.stack([np.r_[r.m_image, r.m_explained[0]] for r in c.res4[:k]]),
                                     [f"{c.model_name}\n{fc.name[:18]}" for fc in c.faces[:k]],
                                     title=f"Negative explanations E = (1 - H) I, {c.task}")
