"""The one batched perturbation engine every explainer and metric runs on.

Contract (DEVELOPERS.md §1): a score function ``f(images: Tensor[N,C,H,W]) -> Tensor[N]`` takes
float images in [0, 1] and returns one score per image. Explainers and metrics only ever see f.

A perturbation is a *keep mask* ``m`` in [0, 1] of shape [H, W] (or [C, H, W]) applied as

    x' = m * x + (1 - m) * fill                                           (all papers)

so ``m = 1`` keeps a pixel and ``m = 0`` replaces it by the fill (a constant, the image mean, a
blurred copy, or any image of the same shape). Removal of a Gaussian G (MinPlus eq. 5) is
``m = 1 - G``; insertion of X onto a black image is ``fill = 0``.

A mask source is anything with ``len(src)`` and ``src[i:j] -> Tensor[j-i, H, W]`` (a tensor is
one; random generators in :mod:`xfr.explain.masks` draw mask k from ``seed`` and k alone, so
the result does not depend on the batch size). The engine never materializes more than
``batch_size`` perturbed images at a time.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

ScoreFn = Callable[[Tensor], Tensor]


class MaskSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Tensor: ...


Fill = float | str | Tensor


@dataclass
class Counting:
    """Wraps any batched callable ``f(images [N,...])`` (a score function returning [N], an
    embedder returning [N, D]) and counts forward passes (images), calls and the seconds spent
    inside f. With ``keep`` every output is also appended to ``outputs`` (e.g. the embeddings of
    the occluded images that a score built on them has seen)."""

    f: Callable[[Tensor], Tensor]
    n_forward: int = 0
    n_calls: int = 0
    seconds: float = 0.0
    keep: bool = False
    outputs: list = field(default_factory=list, repr=False)

    def __call__(self, images: Tensor) -> Tensor:
        return self.count(self.f, images)

    def count(self, g: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
        """``g(images)``, counted as passes of f (f itself, or f's model on another execution
        path, :meth:`running`)."""
        t0 = time.perf_counter()
        out = g(images)
        self.seconds += time.perf_counter() - t0
        self.n_calls += 1
        self.n_forward += int(images.shape[0])
        out = self.check(out, images.shape[0])
        if self.keep:
            self.outputs.append(out)
        return out

    def check(self, out, n: int):
        """Hook for validating f's output (none here; :class:`CountingScore` checks scores)."""
        return out

    def reset(self) -> None:
        """Zero the counts and drop the kept outputs."""
        self.n_forward, self.n_calls, self.seconds = 0, 0, 0.0
        self.outputs = []

    def running(self, g: Callable[[Tensor], Tensor]) -> CountingView:
        """A callable that runs ``g`` in place of f (e.g. f's model on a faster execution path,
        :func:`xfr.models.backends.accelerated`) and adds its passes, calls and seconds to these
        counts."""
        return CountingView(self, g)


class CountingView:
    """``g`` counted by another :class:`Counting` (see :meth:`Counting.running`); other
    attributes (a model's ``template``, ``input_size``) are read from ``g``."""

    def __init__(self, counts: Counting, g: Callable[[Tensor], Tensor]):
        self.counts, self.g = counts, g

    def __call__(self, images: Tensor) -> Tensor:
        return self.counts.count(self.g, images)

    def __getattr__(self, name: str):
        if name in ("counts", "g"):
            raise AttributeError(name)
        return getattr(self.g, name)


class CountingScore(Counting):
    """Wraps a score function, checks its output and counts forward passes and time inside f."""

    def check(self, out, n: int) -> Tensor:
        return check_scores(out, n)


def check_scores(out, n: int) -> Tensor:
    """Validate f's output: a finite tensor of shape [n]."""
    if not isinstance(out, Tensor):
        raise ValueError(f"score function must return a torch.Tensor of shape [{n}], got {type(out)}")
    if out.shape != (n,):
        raise ValueError(
            f"score function returned shape {tuple(out.shape)} for {n} images; it must return one "
            f"score per image, shape [{n}] (reduce class/embedding dimensions inside f)"
        )
    if not torch.isfinite(out).all():
        raise ValueError("score function returned NaN or inf; check the model's preprocessing")
    return out.detach().float()


def check_image(image: Tensor) -> Tensor:
    """Accept [C,H,W] or [1,C,H,W] float images; return [C,H,W] float32."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image must be a torch.Tensor [C,H,W], got {type(image)}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"image must have shape [C,H,W], got {tuple(image.shape)}")
    if not torch.is_floating_point(image):
        raise ValueError("image must be a float tensor in [0, 1] (use xfr.io.to_tensor)")
    return image.float()


def resolve_fill(image: Tensor, fill: Fill) -> Tensor:
    """The replacement image for masked-out pixels, broadcastable to ``image`` ([C,H,W])."""
    if isinstance(fill, Tensor):
        fill = fill.to(image)
        if fill.dim() == 0:
            return fill.expand(image.shape[0], 1, 1)
        if fill.shape != image.shape and fill.shape != (image.shape[0], 1, 1):
            raise ValueError(f"fill tensor shape {tuple(fill.shape)} does not match image {tuple(image.shape)}")
        return fill
    if isinstance(fill, (int, float)):
        return torch.full((image.shape[0], 1, 1), float(fill), dtype=image.dtype, device=image.device)
    if fill == "mean":  # the image's mean value per channel (S-RISE §3.3)
        return image.mean(dim=(1, 2), keepdim=True)
    if fill == "blur":
        from torchvision.transforms.functional import gaussian_blur

        k = max(3, (min(image.shape[1:]) // 8) | 1)
        return gaussian_blur(image[None], [k, k])[0]
    raise ValueError(f"unknown fill {fill!r}: use a number, 'mean', 'blur' or an image tensor")


@dataclass
class PerturbationResult:
    scores: Tensor  # [M] score of each perturbed image
    n_forward: int  # forward passes (images evaluated by f)
    seconds_in_f: float
    seconds_wall: float
    extras: dict = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """wall time / time inside f (1.0 = no overhead)."""
        return self.seconds_wall / max(self.seconds_in_f, 1e-12)


def apply_masks(image: Tensor, masks: Tensor, fill: Tensor) -> Tensor:
    """x' = m * x + (1 - m) * fill for a batch of masks [B,H,W] or [B,C,H,W] -> [B,C,H,W]."""
    if masks.dim() == 3:
        masks = masks[:, None]
    return torch.lerp(fill.expand_as(image)[None], image[None], masks.to(device=image.device, dtype=image.dtype))


def perturb(
    f: ScoreFn,
    image: Tensor,
    masks: MaskSource,
    fill: Fill = 0.0,
    batch_size: int = 64,
    progress: bool = False,
    on_batch: Callable[[Tensor, Tensor, int], None] | None = None,
    desc: str = "perturb",
) -> PerturbationResult:
    """Score ``f`` on ``m * image + (1 - m) * fill`` for every mask m of ``masks``, in batches.

    ``on_batch(masks_batch, scores_batch, start)`` is called after each batch (aggregators use it
    to accumulate score-weighted masks without keeping the masks). Runs under
    ``torch.inference_mode()``.
    """
    t0 = time.perf_counter()
    image = check_image(image)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(masks)
    if n == 0:
        raise ValueError("empty mask set: nothing to evaluate (check the mask generator's parameters)")
    counted = f if isinstance(f, CountingScore) else CountingScore(f)
    before_n, before_s = counted.n_forward, counted.seconds
    fill_t = resolve_fill(image, fill)
    out = torch.empty(n, dtype=torch.float32)
    with torch.inference_mode():
        bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
        for start in range(0, n, batch_size):
            m = masks[start:min(start + batch_size, n)]
            if m.dim() not in (3, 4) or m.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"masks must have shape [B,H,W] or [B,C,H,W] with H,W = {tuple(image.shape[-2:])}, "
                    f"got {tuple(m.shape)}"
                )
            s = counted(apply_masks(image, m, fill_t)).cpu()
            out[start:start + len(s)] = s
            if on_batch is not None:
                on_batch(m, s, start)
            bar.update(len(s))
        bar.close()
    return PerturbationResult(
        scores=out,
        n_forward=counted.n_forward - before_n,
        seconds_in_f=counted.seconds - before_s,
        seconds_wall=time.perf_counter() - t0,
    )


def score_images(f: ScoreFn, images: Tensor, batch_size: int = 64) -> Tensor:
    """f on a stack of images [N,C,H,W] in batches, under inference mode."""
    counted = f if isinstance(f, CountingScore) else CountingScore(f)
    with torch.inference_mode():
        return torch.cat([counted(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])
