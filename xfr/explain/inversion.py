"""Feature inversion (survey ``002_…`` §4, Figs. 11-14; Mahendran & Vedaldi, *Understanding Deep
Image Representations by Inverting Them*, CVPR 2015): the image whose features at a layer match
given features.

``x* = argmin_x  ||Phi(x) - Phi_0||^2 / ||Phi_0||^2 + tv * TV(x) + l2 * ||x - 0.5||^2``   (eq. 8)

``Phi`` is the model up to ``layer`` (:func:`xfr.explain.layers.layer_activations`; ``"output"``
is the model's output: the identity descriptor of a recognizer, what a stored template holds).
The image is parameterized as in :mod:`xfr.explain.feature_vis` (``pixel`` or ``fourier``,
decorrelated colour, sigmoid) and optimized with Adam from a fixed seed; with ``transforms``
each step also sees a jittered copy (robustness against adversarial pre-images).

:func:`interpolated_targets` gives the features of Fig. 14: ``(1 - a) Phi(x_a) + a Phi(x_b)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .feature_vis import ImageParam, random_transform, total_variation
from .layers import as_unit_batch, input_gradients_only, layer_activations


@dataclass
class Inversion:
    images: Tensor  # [n,3,S,S] float32 in [0,1]
    feature_error: Tensor  # [n] ||Phi(x*) - Phi_0||^2 / ||Phi_0||^2 on the final images
    curve: np.ndarray  # [steps] the mean normalized feature error during optimization


def layer_features(model: nn.Module, layer: str, images: Tensor) -> Tensor:
    """``Phi(images)`` at ``layer``, detached [n, ...]."""
    with torch.no_grad(), input_gradients_only(model):
        return layer_activations(model, layer)(as_unit_batch(images)).detach()


def interpolated_targets(model: nn.Module, layer: str, image_a: Tensor, image_b: Tensor,
                         alphas: Sequence[float]) -> Tensor:
    """Fig. 14: ``(1 - a) Phi(a) + a Phi(b)`` for each ``a`` of ``alphas`` -> [len(alphas), ...]."""
    fa, fb = layer_features(model, layer, image_a), layer_features(model, layer, image_b)
    return torch.cat([(1 - float(a)) * fa + float(a) * fb for a in alphas])


def invert_features(model: nn.Module, layer: str, target: Tensor, *, size: int = 112, steps: int = 300,
                    lr: float = 0.05, tv: float = 0.05, l2: float = 0.0, param: str = "fourier",
                    decorrelate: bool = True, transforms: bool = False, seed: int = 0) -> Inversion:
    """Pre-images of side ``size`` of the features ``target`` [n, ...] (e.g.
    :func:`layer_features` of real faces, or :func:`interpolated_targets`) at ``layer`` of
    ``model``: eq. 8 minimized with Adam (module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    target = target.detach().float()
    n = target.shape[0]
    phi = layer_activations(model, layer)
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    g = torch.Generator().manual_seed(int(seed))
    image = ImageParam(n, size, param, decorrelate, generator=g)
    opt = torch.optim.Adam(image.parameters(), lr=lr)
    curve = []

    def error(x: Tensor) -> Tensor:
        f = phi(x)
        if f.shape != target.shape:
            raise ValueError(f"target features {tuple(target.shape)} do not match layer {layer!r} "
                             f"output {tuple(f.shape)} at size {size}")
        return (f - target).flatten(1).pow(2).sum(1) / norm

    with input_gradients_only(model):
        for _ in range(steps):
            opt.zero_grad()
            x = image()
            err = error(random_transform(x, g, pad=0, jitter=2, scales=(1.0,), angles=(0.0,)) if transforms else x)
            loss = err.mean()
            if tv:
                loss = loss + tv * total_variation(x).mean()
            if l2:
                loss = loss + l2 * (x - 0.5).pow(2).mean()
            loss.backward()
            opt.step()
            curve.append(float(err.detach().mean()))
        with torch.no_grad():
            final = image().detach()
            err = error(final).detach()
    return Inversion(final.float(), err.float(), np.array(curve))


def identity_similarity(embedder: nn.Module, images: Tensor, references: Tensor) -> Tensor:
    """Cosine similarity of each image's identity descriptor to its reference's [n] (the
    judge of what an inversion kept of the face: the same or another recognition model)."""
    from ..score import unit_embeddings

    embed = unit_embeddings(embedder)
    with torch.inference_mode():
        return (embed(as_unit_batch(images)) * embed(as_unit_batch(references))).sum(1).float()
