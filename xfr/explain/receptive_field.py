"""Effective receptive field (survey ``002_…`` §2.3; Luo et al., *Understanding the Effective
Receptive Field in Deep Convolutional Neural Networks*, NIPS 2016).

The ERF of the centre unit of a layer is the expected impact of each input pixel on it:
``E_x |d y_centre / d x|`` (the gradient of the layer's centre position, all channels, each
channel's gradient signal 1, back to the input, absolute value summed over colour channels,
averaged over real inputs). Luo et al. find it Gaussian-like and a fraction of the theoretical
receptive field; :func:`erf_summary` measures both: the theoretical field as the pixels any
input can reach (non-zero gradient for some image), the effective one as the smallest set of
pixels holding ``mass`` (95 %) of the gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import as_unit_batch, input_gradients_only, layer_activations


@dataclass
class ERF:
    map: Tensor  # [S,S] float32: mean |d y_centre / d x| over images (summed over colours)
    support: Tensor  # [S,S] bool: the pixels with a non-zero gradient for some image


def effective_receptive_field(model: nn.Module, layer: str, images: Tensor, channel: int | None = None,
                              batch_size: int = 16) -> ERF:
    """The ERF of the centre unit of ``layer`` (all channels, or ``channel``) over ``images``
    [N,3,S,S] (module docstring)."""
    x_all = as_unit_batch(images)
    phi = layer_activations(model, layer)
    total = torch.zeros(x_all.shape[-2:])
    support = torch.zeros(x_all.shape[-2:], dtype=torch.bool)
    with input_gradients_only(model):
        for lo in range(0, len(x_all), batch_size):
            x = x_all[lo:lo + batch_size].clone().requires_grad_(True)
            acts = phi(x)
            if acts.dim() != 4:
                raise ValueError(f"layer {layer!r} is not spatial ({tuple(acts.shape)}): no centre unit")
            h, w = acts.shape[-2:]
            centre = acts[:, :, h // 2, w // 2] if channel is None else acts[:, channel:channel + 1, h // 2, w // 2]
            (grad,) = torch.autograd.grad(centre.sum(), x)
            g = grad.abs().sum(1).detach()
            total += g.sum(0)
            support |= (g > 0).any(0)
    return ERF((total / len(x_all)).float(), support)


def erf_summary(erf: ERF, mass: float = 0.95) -> dict:
    """{"theoretical_px", "effective_px" (smallest pixel set holding ``mass`` of the map),
    "effective_fraction", "sigma_px" (the map's root mean squared distance from its centroid),
    "centre_offset_px"}."""
    m = erf.map.double()
    flat = m.flatten()
    order = flat.sort(descending=True).values
    cum = order.cumsum(0) / order.sum().clamp_min(1e-300)
    effective = int((cum < mass).sum()) + 1
    theoretical = int(erf.support.sum())
    ys, xs = torch.meshgrid(torch.arange(m.shape[0], dtype=torch.float64), torch.arange(m.shape[1], dtype=torch.float64),
                            indexing="ij")
    w = m / m.sum().clamp_min(1e-300)
    cy, cx = float((w * ys).sum()), float((w * xs).sum())
    sigma = float(torch.sqrt((w * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum() / 2))
    centre = ((m.shape[0] - 1) / 2, (m.shape[1] - 1) / 2)
    return dict(theoretical_px=theoretical, effective_px=effective,
                effective_fraction=effective / max(theoretical, 1), sigma_px=sigma,
                centre_offset_px=float(((cy - centre[0]) ** 2 + (cx - centre[1]) ** 2) ** 0.5))
