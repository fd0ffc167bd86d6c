"""The survey's structural explanations (``002_…`` §2.3, §3-§5; notebook
``notebooks/structure.ipynb``): what face networks store, on the suite's models. The methods live
in :mod:`xfr.explain.feature_vis`, :mod:`xfr.explain.inversion`, :mod:`xfr.explain.receptive_field`
and :mod:`xfr.explain.tcav`; here are the faces, the tables and the figures of the stage.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..explain.feature_vis import activation_maximization
from ..explain.inversion import identity_similarity, interpolated_targets, invert_features, layer_features
from ..explain.layers import input_gradients_only, layer_activations
from ..explain.receptive_field import effective_receptive_field, erf_summary
from ..explain.tcav import layer_acts_and_grads, layer_acts_many, tcav

# ----------------------------------------------------------------------------- faces


def load_resized(paths: Sequence, size: int, context: float = 0.0) -> Tensor:
    """Images [N,3,size,size]: each padded by ``context`` x its side (edge replication, the
    bias stage's framing of tight UTKFace chips) and resized (antialiased bilinear)."""
    from ..io import load_image
    from ..models.xception import pad_context

    out = []
    for p in paths:
        x = load_image(p)[None]
        if context:
            x = pad_context(x, context)
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


def lfw_identities(n: int, template: str, seed: int = 0) -> dict:
    """Aligned chips (``template``) of LFW genuine pairs: {"probe", "mate", "impostor"} [n,3,S,S]
    (probe i's impostor is probe i+1's face, another identity)."""
    from ..data import lfw_pairs
    from ..faces.align import align_faces
    from ..models.detect import MTCNNDetector
    from .verification import identity_of

    rng = np.random.default_rng(seed)
    genuine = [p for p in lfw_pairs() if p.same]
    order = rng.permutation(len(genuine))
    chosen, seen = [], set()
    for i in order:
        p = genuine[i]
        if identity_of(p.a) not in seen:
            chosen.append(p)
            seen.add(identity_of(p.a))
        if len(chosen) == n + 4:  # spares for faces MTCNN misses
            break
    faces = align_faces([q for p in chosen for q in (p.a, p.b)], MTCNNDetector(min_face_size=50).eval(),
                        template=template, pad=100, detect_scale=0.5)
    kept = [p for p in chosen if p.a in faces and p.b in faces][:n + 1]
    if len(kept) < 2:
        raise ValueError(f"need >= 2 LFW pairs with both faces found, got {len(kept)}")
    probes = torch.stack([faces.chip(p.a) for p in kept])
    mates = torch.stack([faces.chip(p.b) for p in kept])
    m = min(n, len(kept) - 1)
    return {"probe": probes[:m], "mate": mates[:m], "impostor": probes[1:m + 1],
            "names": [identity_of(p.a) for p in kept[:m]]}


# ----------------------------------------------------------------------------- §3 feature visualization


def top_units(model: nn.Module, layer: str, faces: Tensor, k: int) -> list[int]:
    """The ``k`` channels (or outputs) of ``layer`` most active on real ``faces`` (mean activation)."""
    with torch.no_grad(), input_gradients_only(model):
        a = layer_activations(model, layer)(faces)
    mean = a.mean(dim=(0, 2, 3)) if a.dim() == 4 else a.mean(0)
    return [int(i) for i in mean.argsort(descending=True)[:k]]


def unit_visualizations(model: nn.Module, model_name: str, layers: Sequence[str], faces: Tensor, units_per_layer: int,
                        *, size: int, steps: int, lr: float, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fig. 10: channel visualizations (fourier parameterization, decorrelated colour,
    transformation robustness) of the ``units_per_layer`` most face-active channels of each
    layer. Returns (rows: model, layer, depth, unit, objective before / after, the unit's mean
    activation on the real faces; {(model, layer, unit): image [3,S,S]})."""
    rows, images = [], {}
    for depth, layer in enumerate(layers):
        units = top_units(model, layer, faces, units_per_layer)
        with torch.no_grad(), input_gradients_only(model):
            real = layer_activations(model, layer)(faces)
        fv = [activation_maximization(model, layer, "channel", u, n=1, size=size, steps=steps, lr=lr, seed=seed + u)
              for u in units]
        for u, v in zip(units, fv):
            images[(model_name, layer, u)] = v.images[0]
            real_u = real[:, u].mean() if real.dim() == 4 else real[:, u].mean()
            rows.append(dict(model=model_name, layer=layer, depth=depth, unit=u, objective_start=float(v.start[0]),
                             objective=float(v.objective[0]), real_faces=float(real_u),
                             ratio_to_real=float(v.objective[0] / real_u) if float(real_u) > 0 else float("nan")))
    return pd.DataFrame(rows), images


REGULARIZERS: dict[str, dict] = {  # Fig. 8: from no regularization to lucid's full recipe
    "pixel, none": dict(param="pixel", decorrelate=False, transforms=False),
    "pixel, L2 + TV": dict(param="pixel", decorrelate=False, transforms=False, l2=1.0, tv=0.5),
    "pixel, jitter/scale/rotate": dict(param="pixel", decorrelate=False, transforms=True),
    "fourier + colour, jitter/scale/rotate": dict(param="fourier", decorrelate=True, transforms=True),
}


def regularizer_comparison(model: nn.Module, model_name: str, layer: str, unit: int, *, size: int, steps: int, lr: float,
                           n: int = 2, diversity: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fig. 8: one unit under each regularizer of :data:`REGULARIZERS` (``n`` images each, the
    last also with ``diversity``): objective reached and the images' total variation and high
    frequency share (a noisy, adversarial-looking image has much of its energy there)."""
    from ..explain.feature_vis import total_variation

    rows, images = [], {}
    settings: dict[str, dict] = dict(REGULARIZERS)
    if diversity:
        settings["fourier + colour + transforms, diverse"] = dict(REGULARIZERS["fourier + colour, jitter/scale/rotate"],
                                                                    diversity=diversity)
    for name, kw in settings.items():
        v = activation_maximization(model, layer, "channel", unit, n=n, size=size, steps=steps, lr=lr, seed=seed, **kw)
        images[name] = v.images
        rows.append(dict(model=model_name, layer=layer, unit=unit, regularizer=name, objective=float(v.objective.mean()),
                         total_variation=float(total_variation(v.images).mean()),
                         high_frequency=high_frequency_share(v.images),
                         pairwise_distance=float(torch.pdist(v.images.flatten(1)).mean()) if n > 1 else float("nan")))
    return pd.DataFrame(rows), images


def high_frequency_share(images: Tensor, cutoff: float = 0.25) -> float:
    """Share of the (mean-removed) spectral energy above ``cutoff`` cycles per pixel."""
    x = images.mean(1)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = torch.fft.rfft2(x).abs().pow(2)
    fy = torch.fft.fftfreq(x.shape[-2])[:, None].abs()
    fx = torch.fft.rfftfreq(x.shape[-1])[None, :]
    high = (torch.sqrt(fx ** 2 + fy ** 2) > cutoff).to(p.dtype)
    return float((p * high).sum() / p.sum().clamp_min(1e-12))


# ----------------------------------------------------------------------------- §4 inversion


def pixel_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the grey levels of image pairs [n]."""
    x, y = a.mean(1).flatten(1), b.mean(1).flatten(1)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)


def inversions(model: nn.Module, model_name: str, layers: Sequence[str], faces: Tensor, *, size: int, steps: int,
               lr: float, tv: float, judges: Mapping[str, nn.Module] | None = None,
               calibration: Mapping[str, Tensor] | None = None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fig. 13: each face inverted from each layer (eq. 8). Rows per (layer, face): the
    normalized feature error, the pixel correlation with the source and, for each judge (a
    recognition model), the cosine of the inversion's identity descriptor to the source's; with
    ``calibration`` ({"mate", "impostor"} faces), the judge's cosine of the source to its mate
    (genuine level) and to another identity (impostor level). Images: {(model, layer): [n,3,S,S]}."""
    rows, images = [], {}
    judges = dict(judges or {})
    levels = {}
    for jname, judge in judges.items():
        if calibration is not None:
            levels[jname] = dict(genuine=identity_similarity(judge, calibration["mate"], faces),
                                 impostor=identity_similarity(judge, calibration["impostor"], faces))
    for depth, layer in enumerate(layers):
        target = layer_features(model, layer, faces)
        inv = invert_features(model, layer, target, size=size, steps=steps, lr=lr, tv=tv, seed=seed)
        images[(model_name, layer)] = inv.images
        corr = pixel_correlation(inv.images, F.interpolate(faces, size=(size, size), mode="bilinear", antialias=True,
                                                           align_corners=False))
        sims = {j: identity_similarity(judge, inv.images, faces) for j, judge in judges.items()}
        for i in range(len(faces)):
            row = dict(model=model_name, layer=layer, depth=depth, face=i, feature_error=float(inv.feature_error[i]),
                       pixel_correlation=float(corr[i]))
            for j in judges:
                row[f"identity_{j}"] = float(sims[j][i])
                if j in levels:
                    row[f"genuine_{j}"] = float(levels[j]["genuine"][i])
                    row[f"impostor_{j}"] = float(levels[j]["impostor"][i])
            rows.append(row)
    return pd.DataFrame(rows), images


def interpolation(model: nn.Module, model_name: str, layers: Sequence[str], face_a: Tensor, face_b: Tensor,
                  alphas: Sequence[float], *, size: int, steps: int, lr: float, tv: float,
                  seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fig. 14: inversions of ``(1 - a) Phi(A) + a Phi(B)`` per layer; rows: the pixel
    correlation of each pre-image with A and with B."""
    rows, images = [], {}
    a_img = F.interpolate(face_a[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    b_img = F.interpolate(face_b[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    for layer in layers:
        target = interpolated_targets(model, layer, face_a, face_b, alphas)
        inv = invert_features(model, layer, target, size=size, steps=steps, lr=lr, tv=tv, seed=seed)
        images[(model_name, layer)] = inv.images
        ca = pixel_correlation(inv.images, a_img.expand_as(inv.images))
        cb = pixel_correlation(inv.images, b_img.expand_as(inv.images))
        for k, al in enumerate(alphas):
            rows.append(dict(model=model_name, layer=layer, alpha=float(al), corr_a=float(ca[k]), corr_b=float(cb[k]),
                             feature_error=float(inv.feature_error[k])))
    return pd.DataFrame(rows), images


# ----------------------------------------------------------------------------- §2.3 ERF


def erf_rows(model: nn.Module, model_name: str, layers: Sequence[str], faces: Tensor) -> tuple[pd.DataFrame, dict]:
    rows, maps = [], {}
    for depth, layer in enumerate(layers):
        erf = effective_receptive_field(model, layer, faces)
        maps[(model_name, layer)] = erf.map
        rows.append(dict(model=model_name, layer=layer, depth=depth, n_faces=len(faces), **erf_summary(erf)))
    return pd.DataFrame(rows), maps


# ----------------------------------------------------------------------------- §5 TCAV


def tcav_rows(model: nn.Module, model_name: str, layers: Sequence[str], class_index: int, class_name: str,
              class_images: Tensor, concepts: Mapping[str, Tensor], randoms: Sequence[Tensor],
              relative: Mapping[str, tuple[Tensor, Sequence[Tensor]]] | None = None, *, alpha: float = 0.05,
              seed: int = 0) -> pd.DataFrame:
    """TCAV of every concept against the random sets at each layer for logit ``class_index``;
    ``relative``: name -> (concept images, its own negative sets) (e.g. make-up vs no make-up
    among women: the concept without the gender it co-occurs with). Activations of all layers
    come from one forward pass per image set."""
    relative = dict(relative or {})

    def acts(x: Tensor) -> dict[str, Tensor]:
        return layer_acts_many(model, layers, x)

    random_acts = [acts(r) for r in randoms]
    concept_acts = {name: acts(x) for name, x in concepts.items()}
    relative_acts = {name: (acts(pos), [acts(n) for n in negs]) for name, (pos, negs) in relative.items()}
    rows = []
    for layer in layers:
        def target(out: Tensor) -> Tensor:
            return out[:, class_index]

        _, grads = layer_acts_and_grads(model, layer, class_images, target)
        assert grads is not None
        for res in tcav(grads, {n: a[layer] for n, a in concept_acts.items()}, [a[layer] for a in random_acts],
                        seed=seed, alpha=alpha):
            rows.append(dict(model=model_name, layer=layer, target=class_name, kind="vs random", **res.row()))
        for name, (pos, negs) in relative_acts.items():
            res = tcav(grads, {name: pos[layer]}, [n[layer] for n in negs], seed=seed,
                       alpha=alpha / max(len(relative), 1), bonferroni=False)[0]
            rows.append(dict(model=model_name, layer=layer, target=class_name, kind="relative", **res.row()))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures


def _imshow(ax, img: Tensor, title: str = "") -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def fig_units(images: Mapping, models: Sequence[str], layers: Mapping[str, Sequence[str]], units: pd.DataFrame):
    """Fig. 10: per model a block of rows (layers, shallow to deep) of unit visualizations."""
    import matplotlib.pyplot as plt

    per = int(units.groupby(["model", "layer"]).size().max())
    n_rows = max(len(layers[m]) for m in models)
    fig, axes = plt.subplots(n_rows, per * len(models), figsize=(1.6 * per * len(models), 1.7 * n_rows), squeeze=False)
    for mi, m in enumerate(models):
        for li, layer in enumerate(layers[m]):
            sub = units[(units.model == m) & (units.layer == layer)]
            for ui, r in enumerate(sub.itertuples()):
                _imshow(axes[li, mi * per + ui], images[(m, layer, r.unit)], f"{m}\n{layer.split('.')[-1]} #{r.unit}")
            for ui in range(len(sub), per):
                axes[li, mi * per + ui].axis("off")
        for li in range(len(layers[m]), n_rows):
            for ui in range(per):
                axes[li, mi * per + ui].axis("off")
    fig.suptitle("Channel visualizations, shallow (top) to deep (bottom): the most face-active channels", fontsize=9)
    fig.tight_layout()
    return fig


def fig_regularizers(images: Mapping[str, Tensor], table: pd.DataFrame, title: str):
    import matplotlib.pyplot as plt

    names = list(images)
    n = max(len(v) for v in images.values())
    fig, axes = plt.subplots(n, len(names), figsize=(2.1 * len(names), 2.2 * n), squeeze=False)
    for j, name in enumerate(names):
        r = table[table.regularizer == name].iloc[0]
        for i in range(n):
            if i < len(images[name]):
                _imshow(axes[i, j], images[name][i], f"{name}\nobj {r.objective:.2f}, HF {r.high_frequency:.2f}" if i == 0 else "")
            else:
                axes[i, j].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fig_inversions(sources: Mapping[str, Tensor], images: Mapping, layers: Mapping[str, Sequence[str]], table: pd.DataFrame,
                   face: int = 0):
    """Fig. 13: one face per model, inverted from shallow to deep layers."""
    import matplotlib.pyplot as plt

    models = list(sources)
    ncol = 1 + max(len(layers[m]) for m in models)
    fig, axes = plt.subplots(len(models), ncol, figsize=(1.9 * ncol, 2.1 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        _imshow(axes[i, 0], sources[m][face], f"{m}\nsource")
        for j, layer in enumerate(layers[m]):
            r = table[(table.model == m) & (table.layer == layer) & (table.face == face)].iloc[0]
            extra = "".join(f"\n{c[9:]} cos {r[c]:.2f}" for c in table.columns if c.startswith("identity_") and pd.notna(r[c]))
            _imshow(axes[i, j + 1], images[(m, layer)][face], f"{layer.split('.')[-1]}\nr {r.pixel_correlation:.2f}{extra}")
        for j in range(len(layers[m]) + 1, ncol):
            axes[i, j].axis("off")
    fig.suptitle("Feature inversion (eq. 8) from shallow to deep layers; r: pixel correlation with the source", fontsize=9)
    fig.tight_layout()
    return fig


def fig_template(faces: Tensor, inverted: Tensor, table: pd.DataFrame, judges: Sequence[str], k: int = 8):
    """§4: source faces (top) and the images inverted from their 128-d descriptors (bottom), with
    each judge's cosine to the source and its impostor level."""
    import matplotlib.pyplot as plt

    k = min(k, len(faces))
    fig, axes = plt.subplots(2, k, figsize=(1.7 * k, 4.2), squeeze=False)
    for i in range(k):
        r = table[table.face == i].iloc[0]
        _imshow(axes[0, i], faces[i], f"source {i}")
        text = "\n".join(f"{j}: {r[f'identity_{j}']:.2f} (imp. {r[f'impostor_{j}']:.2f})" for j in judges)
        _imshow(axes[1, i], inverted[i], text)
    fig.suptitle("Faces inverted from their dlib-resnet descriptor: judge cosine to the source (impostor level)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def fig_interpolation(face_a: Tensor, face_b: Tensor, images: Mapping, alphas: Sequence[float]):
    import matplotlib.pyplot as plt

    keys = list(images)
    fig, axes = plt.subplots(len(keys), len(alphas) + 2, figsize=(1.8 * (len(alphas) + 2), 2.0 * len(keys)), squeeze=False)
    for i, k in enumerate(keys):
        _imshow(axes[i, 0], face_a, "A")
        for j, a in enumerate(alphas):
            _imshow(axes[i, j + 1], images[k][j], f"{k[1].split('.')[-1]}\nalpha {a:g}")
        _imshow(axes[i, -1], face_b, "B")
    fig.suptitle("Inversion of features interpolated between two faces (Fig. 14)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_erf(maps: Mapping, table: pd.DataFrame):
    import matplotlib.pyplot as plt

    keys = list(maps)
    models = list(dict.fromkeys(k[0] for k in keys))
    ncol = max(sum(k[0] == m for k in keys) for m in models)
    fig, axes = plt.subplots(len(models), ncol, figsize=(2.0 * ncol, 2.2 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        ks = [k for k in keys if k[0] == m]
        for j, k in enumerate(ks):
            r = table[(table.model == m) & (table.layer == k[1])].iloc[0]
            axes[i, j].imshow(maps[k].numpy() ** 0.5, cmap="magma")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            axes[i, j].set_title(f"{m}\n{k[1].split('.')[-1]}: ERF {r.effective_fraction:.0%} of TRF", fontsize=7)
        for j in range(len(ks), ncol):
            axes[i, j].axis("off")
    fig.suptitle("Effective receptive field of the centre unit (sqrt of mean |gradient| over real faces)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_tcav(table: pd.DataFrame, concepts: Sequence[str]):
    import matplotlib.pyplot as plt

    groups = list(table.groupby(["model", "layer", "target"], sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(6, 0.5 * len(concepts) + 3), 2.4 * len(groups)), squeeze=False)
    for ax, ((m, layer, target), sub) in zip(axes[:, 0], groups):
        sub = sub.reset_index(drop=True)
        labels = [f"{c}{' (rel.)' if k == 'relative' else ''}" for c, k in zip(sub.concept, sub.kind)]
        colors = ["tab:red" if s and t > r else ("tab:blue" if s else "lightgrey")
                  for s, t, r in zip(sub.significant, sub.tcav, sub.random_tcav)]
        ax.bar(range(len(sub)), sub.tcav, yerr=sub.tcav_sd, color=colors, capsize=2)
        ax.axhline(0.5, color="k", lw=0.5, ls=":")
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("TCAV score", fontsize=7)
        ax.set_title(f"{m}, {layer}, logit '{target}' (red: significant and above random; blue: significant below; "
                     f"grey: not significant)", fontsize=7)
    fig.tight_layout()
    return fig


def methods_rows(costs: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """The stage's ``methods.csv``: one row per method with its measured cost."""
    return pd.DataFrame([dict(method=m, task="structure", **c) for m, c in costs.items()])

