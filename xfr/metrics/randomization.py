"""Model-parameter randomization sanity check (Adebayo et al. 2018; survey §2.5; S-RISE §4.2;
CMS §4.1.3, Fig. 8).

The layers of a trained model are re-initialized cumulatively starting from the output layer, and
the explanation is recomputed after each step. An explainer that depends on what the model learned
gives maps that drift away from the original one; Spearman rank correlation and SSIM between the
original map and each randomized map measure that (low = passes the check). Both are also
reported on absolute values (Adebayo et al. compare with and without the sign).

The original model is never modified: the generator works on a deep copy and yields a fresh copy
at every step.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from ..explain.common import minmax
from .base import as_map, declares
from .stability import spearman


def parameter_layers(model: torch.nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, output side first (reverse registration
    order, which follows the forward order for the usual sequential definitions)."""
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def _reinit_module(module: torch.nn.Module) -> None:
    for m in module.modules():
        own = list(m.parameters(recurse=False))
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()  # type: ignore[operator]  # hasattr-checked; stubs type Module.__getattr__ as Tensor | Module
        elif own:
            for p in own:  # fallback for custom layers: the nn.Linear/Conv default init
                if p.dim() > 1:
                    torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                else:
                    torch.nn.init.uniform_(p, -0.1, 0.1)
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()  # type: ignore[operator]  # hasattr-checked; stubs type Module.__getattr__ as Tensor | Module


def cascading_randomization(
    model: torch.nn.Module,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    cascading: bool = True,
) -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield ``(layer_name, randomized_copy)`` for each layer, output side first.

    ``layers``: module names in the order to randomize (default :func:`parameter_layers`); a name
    re-initializes the whole sub-module. ``cascading=True`` accumulates (step j has layers 0..j
    randomized); ``False`` randomizes one layer at a time (Adebayo's independent variant).
    Re-initialization uses each module's ``reset_parameters`` (and resets BatchNorm running
    statistics) under ``torch.manual_seed(seed + step)``, so it is reproducible.
    """
    names = list(parameter_layers(model) if layers is None else layers)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"unknown layer names {missing}; see parameter_layers(model)")
    work = copy.deepcopy(model)
    for step, name in enumerate(names):
        if not cascading:
            work = copy.deepcopy(model)
        target = dict(work.named_modules())[name]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + step)
            _reinit_module(target)
        randomized = copy.deepcopy(work)
        # no longer the named zoo model: backend="auto" runs it in PyTorch (no export of weights
        # that exist only for this test)
        randomized.__dict__.pop("registry_name", None)
        yield name, randomized


def map_ssim(a, b) -> float:
    """SSIM of two maps after min-max normalization to [0, 1] (skimage, data_range 1)."""
    x, y = minmax(as_map(a)), minmax(as_map(b))
    if x.shape != y.shape:
        raise ValueError(f"maps differ in shape: {x.shape} vs {y.shape}")
    win = min(7, min(x.shape) if min(x.shape) % 2 else min(x.shape) - 1)
    if win < 3:
        raise ValueError(f"maps of shape {x.shape} are too small for SSIM")
    return float(structural_similarity(x, y, data_range=1.0, win_size=win))


@dataclass
class RandomizationResult:
    layers: list[str]  # randomized layer at each step (cumulative when cascading)
    spearman: np.ndarray  # [L] rank correlation original vs randomized map
    ssim: np.ndarray  # [L]
    spearman_abs: np.ndarray  # [L] on absolute values
    ssim_abs: np.ndarray  # [L]
    original_map: np.ndarray
    maps: list[np.ndarray] = field(repr=False)


@declares('randomization_spearman', higher=False, field='spearman',
          paper='Adebayo et al. 2018; S-RISE §4.2; CMS §4.1.3: similarity to the map of a randomized model (low = the explainer depends on the weights)')
@declares('randomization_ssim', higher=False, field='ssim',
          paper='Adebayo et al. 2018')
def randomization_test(
    model: torch.nn.Module,
    explain: Callable[[torch.nn.Module], object],
    layers: Sequence[str] | None = None,
    seed: int = 0,
    cascading: bool = True,
) -> RandomizationResult:
    """Sanity check: ``explain(model) -> map [H,W]`` on the trained model and on each randomized
    copy from :func:`cascading_randomization`; Spearman and SSIM against the original map."""
    original = as_map(explain(model), "explain(model)")
    names, maps = [], []
    for name, randomized in cascading_randomization(model, layers, seed, cascading):
        names.append(name)
        maps.append(as_map(explain(randomized), f"explain(model randomized up to {name})"))
    arr = lambda vals: np.array(vals, dtype=np.float64)  # noqa: E731
    return RandomizationResult(
        layers=names,
        spearman=arr([spearman(original, m) for m in maps]),
        ssim=arr([map_ssim(original, m) for m in maps]),
        spearman_abs=arr([spearman(np.abs(original), np.abs(m)) for m in maps]),
        ssim_abs=arr([map_ssim(np.abs(original), np.abs(m)) for m in maps]),
        original_map=original,
        maps=maps,
    )




@dataclass
class CascadeMaps:
    """Maps of one image under the trained model (depth 0) and after randomizing the top
    ``depth`` layers, for each method."""

    layers: list[str]  # all randomizable layers, output side first
    depths: list[int]  # depths explained (0 = trained)
    maps: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # method -> depth -> map
    scores: dict[int, float] = field(default_factory=dict)  # depth -> f(image) of that model
    n_forward: dict[str, list[int]] = field(default_factory=dict)  # method -> per map
    seconds: dict[str, list[float]] = field(default_factory=dict)
    other_seed: dict[str, np.ndarray] = field(default_factory=dict)  # trained map, seed + 1

    def layer_at(self, depth: int) -> str:
        return "none (trained)" if depth == 0 else self.layers[depth - 1]


def check_depths(depths: Sequence[int], n_layers: int) -> list[int]:
    """Sorted distinct depths in 1..n_layers (a clear error otherwise); -1 means all layers."""
    out = sorted({n_layers if int(d) == -1 else int(d) for d in depths})
    bad = [d for d in out if not 1 <= d <= n_layers]
    if bad or not out:
        raise ValueError(f"depths must be in 1..{n_layers} (or -1 for all layers), got {list(depths)}")
    return out


def cascade_maps(model: torch.nn.Module, make_score: Callable[[torch.nn.Module], Callable],
                 image: Tensor, methods: Mapping[str, Mapping], depths: Sequence[int],
                 seed: int = 0, randomization_seed: int = 0, batch_size: int | None = None,
                 layers: Sequence[str] | None = None, other_seed: bool = True) -> CascadeMaps:
    """Explain ``image`` with ``make_score(model)`` for the trained model and for every depth of
    ``depths`` of the cascading randomization (``randomization_seed``); each method of
    ``methods`` (:func:`run_methods`) with explainer seed ``seed``. With ``other_seed``, the
    random methods are also run once more on the trained model with seed ``seed + 1``."""
    from ..explain.runner import run_methods
    from ..report import RANDOM_METHODS

    names = list(parameter_layers(model) if layers is None else layers)
    wanted = check_depths(depths, len(names))
    out = CascadeMaps(layers=names, depths=[0] + wanted)
    out.maps = {m: {} for m in methods}
    out.n_forward = {m: [] for m in methods}
    out.seconds = {m: [] for m in methods}

    def explain(net: torch.nn.Module, depth: int) -> None:
        f = make_score(net)
        out.scores[depth] = float(f(image[None])[0])
        for name, t in run_methods(f, image, methods, seed=seed, batch_size=batch_size).items():
            out.maps[name][depth] = np.asarray(t.map, dtype=np.float64)
            out.n_forward[name].append(t.n_forward)
            out.seconds[name].append(t.seconds)
        if depth == 0 and other_seed:
            rnd = {n: kw for n, kw in methods.items() if n in RANDOM_METHODS}
            if rnd:
                for name, t in run_methods(f, image, rnd, seed=seed + 1, batch_size=batch_size).items():
                    out.other_seed[name] = np.asarray(t.map, dtype=np.float64)

    explain(model, 0)
    for depth, (_, randomized) in enumerate(
            cascading_randomization(model, names[:max(wanted)], seed=randomization_seed), start=1):
        if depth in wanted:
            randomized.eval()
            explain(randomized, depth)
    return out
