"""White-box saliency, the gradient family of the survey (``002_…`` §2.1, Fig. 4): vanilla
gradient (Simonyan et al. 2014), gradient x input, SmoothGrad (Smilkov et al. 2017) and
Integrated Gradients (Sundararajan et al. 2017), computed by captum on a *differentiable* score
function ``f(images[N,C,H,W]) -> [N]`` (:func:`xfr.score.gradient_class_score`,
:func:`xfr.score.gradient_verification_score` build one from a model; the black-box factories
run under ``inference_mode`` on exported graphs and have no gradient).

Same contract as the black-box explainers: a float32 ``[H,W]`` map of the input's size on the
CPU; ``batch_size`` bounds the images per backward pass (same map for every batch size);
SmoothGrad, the random one, takes ``seed`` (same seed, same map).

Backward passes run with oneDNN off (``torch.backends.mkldnn.flags(enabled=False)``): its
backward of a strided 1x1 convolution on channels-last input (the mini-Xception shortcuts) crashes
this torch build, as :mod:`xfr.explain.cam` found; the native kernels give the same gradients.

Channel reduction, as the papers draw these maps: the gradient and SmoothGrad maps are the
maximum over colour channels of the absolute gradient (Simonyan et al. §3.1); gradient x input
and Integrated Gradients keep their sign and sum over channels (IG's completeness, eq. 1 of
Sundararajan et al., holds for that sum: the map adds up to f(x) - f(baseline)).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .common import check_int

ScoreFn = Callable[[Tensor], Tensor]
GRADIENT_METHODS = ("gradient", "gradient-x-input", "smoothgrad", "integrated-gradients")


def _check_image(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a [C,H,W] tensor, got {shape}")
    return image.detach().float().cpu()


def _grad_batches(f: ScoreFn, images: Tensor, batch_size: int) -> Tensor:
    """d f(x_i) / d x_i for each image of ``images`` [N,C,H,W], ``batch_size`` at a time
    (captum's :class:`Saliency` with ``abs=False``: the raw gradient)."""
    from captum.attr import Saliency

    saliency = Saliency(f)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].clone().requires_grad_(True)
        with torch.enable_grad(), torch.backends.mkldnn.flags(enabled=False):
            out.append(saliency.attribute(chunk, abs=False).detach())
    return torch.cat(out)


def gradient(f: ScoreFn, image: Tensor, batch_size: int = 64) -> Tensor:
    """Vanilla gradient: max over channels of |d f / d x| (Simonyan et al. 2014, §3.1)."""
    x = _check_image(image)
    check_int("batch_size", batch_size, 1)
    return _grad_batches(f, x[None], batch_size)[0].abs().amax(dim=0).float()


def gradient_x_input(f: ScoreFn, image: Tensor, batch_size: int = 64) -> Tensor:
    """Gradient x input, summed over channels (signed; captum :class:`InputXGradient`)."""
    from captum.attr import InputXGradient

    x = _check_image(image)
    check_int("batch_size", batch_size, 1)
    with torch.enable_grad(), torch.backends.mkldnn.flags(enabled=False):
        attr = InputXGradient(f).attribute(x[None].clone().requires_grad_(True))
    return attr.detach()[0].sum(dim=0).float()


def smoothgrad(f: ScoreFn, image: Tensor, n_samples: int = 50, noise: float = 0.15, seed: int = 0,
               batch_size: int = 64) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017, eq. 3 on the absolute gradient): the mean of |d f / d x|
    over ``n_samples`` copies of the image with Gaussian noise of standard deviation ``noise``
    times the image's value range, maximum over channels. The noise is drawn once, from a
    generator seeded with ``seed``, so the map does not depend on ``batch_size`` (captum's
    :class:`NoiseTunnel` draws it per batch of samples); the gradients are captum's."""
    x = _check_image(image)
    check_int("n_samples", n_samples, 1)
    check_int("batch_size", batch_size, 1)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0 (a fraction of the image's value range), got {noise}")
    sigma = float(noise) * float(x.max() - x.min())
    # all the noise at once: chunks of other sizes would draw another sequence
    noise_draws = torch.randn((n_samples, *x.shape), generator=torch.Generator().manual_seed(int(seed)))
    grads = _grad_batches(f, x[None] + sigma * noise_draws, batch_size)
    return grads.abs().mean(dim=0).amax(dim=0).float()


@dataclass
class IGAttribution:
    """Integrated Gradients of one image: the per-channel attribution [C,H,W], captum's
    convergence delta (sum of attributions - (f(x) - f(baseline))), and the two scores."""

    attribution: Tensor
    delta: float
    score: float
    baseline_score: float

    @property
    def map(self) -> Tensor:
        return self.attribution.sum(dim=0).float()


def integrated_gradients_attribution(f: ScoreFn, image: Tensor, baseline: float | Tensor = 0.0,
                                     n_steps: int = 256, batch_size: int = 64,
                                     method: str = "gausslegendre") -> IGAttribution:
    """Integrated Gradients (Sundararajan et al. 2017, eq. 1; captum's Gauss-Legendre rule with
    ``n_steps`` points, or another captum ``method``) from ``baseline`` (a value, default black,
    or an image [C,H,W]). Default 256 steps, not captum's 50: on our ReLU networks the path
    integral converges slowly (completeness error on real faces: 1.3-19 % at 128 steps, under
    1 % at 512; tests/explain/test_gradients.py); ``delta`` says how far a run is."""
    from captum.attr import IntegratedGradients

    x = _check_image(image)
    check_int("n_steps", n_steps, 1)
    check_int("batch_size", batch_size, 1)
    base = torch.full_like(x, float(baseline)) if not isinstance(baseline, Tensor) else _check_image(baseline)
    if base.shape != x.shape:
        raise ValueError(f"baseline {tuple(base.shape)} and image {tuple(x.shape)} differ in shape")
    with torch.enable_grad(), torch.backends.mkldnn.flags(enabled=False):
        attr, delta = IntegratedGradients(f).attribute(
            x[None].clone().requires_grad_(True), baselines=base[None], n_steps=n_steps,
            internal_batch_size=batch_size, return_convergence_delta=True, method=method)
    with torch.no_grad():
        scores = f(torch.stack([x, base])).detach().float()
    return IGAttribution(attr.detach()[0].float(), float(delta.reshape(-1)[0]), float(scores[0]),
                         float(scores[1]))


def integrated_gradients(f: ScoreFn, image: Tensor, baseline: float | Tensor = 0.0, n_steps: int = 256,
                         batch_size: int = 64) -> Tensor:
    """The Integrated Gradients map (signed, summed over channels); see
    :func:`integrated_gradients_attribution`."""
    return integrated_gradients_attribution(f, image, baseline, n_steps, batch_size).map


GRADIENT_EXPLAINERS = {
    "gradient": gradient,
    "gradient-x-input": gradient_x_input,
    "smoothgrad": smoothgrad,
    "integrated-gradients": integrated_gradients,
}
