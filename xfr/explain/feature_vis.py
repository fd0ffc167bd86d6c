"""Feature visualization by activation maximization (survey ``002_…`` §3.1, Figs. 7-10; Olah et
al., *Feature Visualization*, Distill 2017): the image that most excites a unit of a face model.

``x* = argmax_x  a(x) - l2 * ||x - 0.5||^2 - tv * TV(x) (- diversity * mean Gram similarity)``

where ``a`` is one of the objectives the survey compares (:data:`OBJECTIVES`):

- ``neuron``: one channel at the spatial centre of the layer (one unit);
- ``channel``: the mean of one channel over the layer (a filter);
- ``layer``: the mean squared activation of the whole layer (DeepDream);
- ``logit``: one output of the model (a class logit, or one dimension of a descriptor).

Regularizers (the survey's Fig. 8 families): the L2 and total-variation penalties;
transformation robustness (each step sees the image padded, jittered, rescaled and rotated at
random, lucid's ``standard_transforms``); and the parameterization: ``pixel`` (a sigmoid of
free pixels) or ``fourier`` (lucid's ``fft_image``: a spectrum scaled by 1/frequency, i.e. a
prior against high frequencies) with decorrelated colour (lucid's ImageNet colour-correlation
square root). ``n`` images are optimized together; ``diversity`` > 0 pushes them apart (the
negative mean cosine similarity of their Gram matrices, lucid's ``diversity`` objective).

Why not torch-lucent: its last release (0.1.8) pins ``kornia<=0.4.1``, and ``render_vis`` with
that kornia crashed the interpreter (segmentation fault) under our torch 2.x on a mini-Xception.
The optimizer here is lucid's recipe in ~150 lines of torch, seeded: same seed, same images.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import input_gradients_only, layer_activations

OBJECTIVES = ("neuron", "channel", "layer", "logit")
PARAMETERIZATIONS = ("pixel", "fourier")

# lucid's colour decorrelation (square root of the ImageNet colour covariance, by SVD)
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass
class FeatureVisualization:
    """The optimized images and what they reach."""

    images: Tensor  # [n,3,S,S] float32 in [0,1]
    objective: Tensor  # [n] the unit's objective on the final images (untransformed)
    curve: np.ndarray  # [steps] the mean objective during optimization (transformed images)
    start: Tensor  # [n] the objective on the initial images


class ImageParam(nn.Module):
    """``n`` images of side ``size`` as free parameters: ``forward() -> [n,3,S,S]`` in (0,1)."""

    def __init__(self, n: int, size: int, kind: str = "fourier", decorrelate: bool = True,
                 generator: torch.Generator | None = None, sd: float = 0.01, decay_power: float = 1.0):
        super().__init__()
        if kind not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")
        self.kind, self.size, self.decorrelate = kind, int(size), bool(decorrelate)
        if kind == "fourier":
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            freqs = torch.sqrt(fx ** 2 + fy ** 2)
            # lucid's fft_image: 1/f scaling times sqrt(h w), an unnormalized inverse FFT, / 4
            self.register_buffer("scale", 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power * size)
            shape: tuple[int, ...] = (n, 3, size, size // 2 + 1, 2)
        else:
            shape = (n, 3, size, size)
        self.raw = nn.Parameter(torch.randn(shape, generator=generator) * sd)

    def forward(self) -> Tensor:
        if self.kind == "fourier":
            scale: Tensor = self.scale  # type: ignore[assignment]  # a registered buffer
            spectrum = torch.view_as_complex(self.raw) * scale
            x = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / 4.0
        else:
            x = self.raw
        if self.decorrelate:
            x = torch.einsum("nchw,dc->ndhw", x, _COLOR_SQRT.to(x.device))
        return torch.sigmoid(x)


def random_transform(x: Tensor, generator: torch.Generator, pad: int = 6, jitter: int = 4,
                     scales: Sequence[float] = (0.95, 0.975, 1.0, 1.025, 1.05),
                     angles: Sequence[float] = (-5, -2.5, 0, 2.5, 5)) -> Tensor:
    """lucid's transformation robustness: pad (grey), jitter by up to ``jitter`` px, rescale and
    rotate (one draw per call, for the whole batch), crop back to the input side."""
    n, _, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), value=0.5)
    def pick(seq):
        return seq[int(torch.randint(len(seq), (1,), generator=generator))]
    s, a = float(pick(list(scales))), math.radians(float(pick(list(angles))))
    dx, dy = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).float() * 2 / x.shape[-1]).tolist() \
        if jitter else (0.0, 0.0)
    theta = torch.tensor([[math.cos(a) / s, -math.sin(a) / s, dx], [math.sin(a) / s, math.cos(a) / s, dy]],
                         dtype=x.dtype, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if pad:
        x = x[..., pad:pad + h, pad:pad + w]
    return x


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels, per image [n]."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3)))


def unit_objective(acts: Tensor, objective: str, unit: int | None) -> Tensor:
    """Per image [n]: the objective of :data:`OBJECTIVES` on a layer's activations."""
    if objective == "layer":
        return acts.pow(2).flatten(1).mean(1)
    if unit is None:
        raise ValueError(f"objective {objective!r} needs a unit (channel or output index)")
    if acts.dim() == 2:  # a flat layer (logits, a descriptor): the unit is one entry
        if not 0 <= unit < acts.shape[1]:
            raise ValueError(f"unit {unit} out of range: the layer has {acts.shape[1]} outputs")
        return acts[:, unit]
    if acts.dim() != 4:
        raise ValueError(f"expected a [N,C,H,W] or [N,D] layer, got {tuple(acts.shape)}")
    if not 0 <= unit < acts.shape[1]:
        raise ValueError(f"channel {unit} out of range: the layer has {acts.shape[1]} channels")
    if objective == "channel" or objective == "logit":
        return acts[:, unit].mean((1, 2))
    if objective == "neuron":
        return acts[:, unit, acts.shape[2] // 2, acts.shape[3] // 2]
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _gram_diversity(acts: Tensor) -> Tensor:
    """lucid's diversity term: mean pairwise cosine similarity of the images' Gram matrices."""
    if acts.shape[0] < 2 or acts.dim() != 4:
        return acts.new_zeros(())
    f = acts.flatten(2)
    gram = F.normalize((f @ f.transpose(1, 2)).flatten(1), dim=1)
    sim = gram @ gram.T
    n = sim.shape[0]
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


def activation_maximization(model: nn.Module, layer: str, objective: str = "channel", unit: int | None = None, *,
                            n: int = 1, size: int = 96, steps: int = 256, lr: float = 0.05,
                            param: str = "fourier", decorrelate: bool = True, l2: float = 0.0, tv: float = 0.0,
                            transforms: bool = True, diversity: float = 0.0, seed: int = 0) -> FeatureVisualization:
    """``n`` images of side ``size`` maximizing ``objective`` of ``unit`` at ``layer`` of
    ``model`` (:func:`xfr.explain.layers.layer_activations` names), optimized with Adam for
    ``steps`` steps (module docstring). ``objective='logit'`` reads the model's output when
    ``layer`` is ``"output"``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, v in (("n", n), ("size", size), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    acts_of = layer_activations(model, layer)
    g = torch.Generator().manual_seed(int(seed))
    image = ImageParam(n, size, param, decorrelate, generator=g)
    opt = torch.optim.Adam(image.parameters(), lr=lr)
    curve = []
    with input_gradients_only(model):
        with torch.no_grad():
            start = unit_objective(acts_of(image()), objective, unit).detach()
        for _ in range(steps):
            opt.zero_grad()
            x = image()
            xt = random_transform(x, g) if transforms else x
            acts = acts_of(xt)
            obj = unit_objective(acts, objective, unit)
            loss = -obj.mean()
            if l2:
                loss = loss + l2 * (x - 0.5).pow(2).mean()
            if tv:
                loss = loss + tv * total_variation(x).mean()
            if diversity:
                loss = loss + diversity * _gram_diversity(acts)
            loss.backward()
            opt.step()
            curve.append(float(obj.detach().mean()))
        with torch.no_grad():
            final = image().detach()
            value = unit_objective(acts_of(final), objective, unit).detach()
    return FeatureVisualization(final.float(), value.float(), np.array(curve), start.float())
