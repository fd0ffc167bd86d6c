"""Several explainers on one image with their cost (forward passes, seconds): the method runner
the experiment notebooks share, seed runs of the random ones (MinPlus Fig. 4) and their
stability table."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
import pandas as pd
from torch import Tensor

from ..report import RANDOM_METHODS, Timed, label, timed


def run_methods(f, image: Tensor, methods: Mapping[str, Mapping], seed: int | None = None,
                batch_size: int | None = None) -> dict[str, Timed]:
    """Run each explainer of ``methods`` (name -> keyword arguments; names of
    :data:`xfr.explain.SINGLE_IMAGE_METHODS`) on ``image`` with the score function ``f``.

    ``seed`` and ``batch_size`` are added to every explainer's arguments (``seed`` only to the
    random ones) unless given there. When both ``lime`` and ``lime-map`` are asked for with the
    same arguments they come from one :func:`xfr.explain.lime_explain` run, as in the paper
    (LIME-map is "the saliency map of LIME"); both rows then carry that run's cost, with
    ``extras['shared_with']`` naming the other.
    """
    from . import SINGLE_IMAGE_METHODS, lime_explain

    out: dict[str, Timed] = {}
    kwargs = {name: _kwargs(name, methods[name], seed, batch_size) for name in methods}
    unknown = [n for n in methods if n not in SINGLE_IMAGE_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(SINGLE_IMAGE_METHODS)}")
    shared = "lime" in methods and "lime-map" in methods and kwargs["lime"] == kwargs["lime-map"]
    for name in methods:
        if shared and name in ("lime", "lime-map"):
            if "lime" in out:
                continue
            run = timed(lime_explain, f, image, **kwargs["lime"])
            exp = run.map
            out["lime"] = Timed(exp.lime_map, run.seconds, run.n_forward,
                                dict(shared_with="lime-map", r2=exp.r2))
            out["lime-map"] = Timed(exp.saliency, run.seconds, run.n_forward,
                                    dict(shared_with="lime", r2=exp.r2))
            continue
        # The explainers' signatures differ, so mypy types the dict's values as bare `function`.
        explainer = cast(Callable[..., Tensor], SINGLE_IMAGE_METHODS[name])
        out[name] = timed(explainer, f, image, **kwargs[name])
    return {name: out[name] for name in methods}


def _kwargs(name: str, given: Mapping | None, seed: int | None, batch_size: int | None) -> dict:
    kw = dict(given or {})
    if seed is not None and name in RANDOM_METHODS:
        kw.setdefault("seed", int(seed))
    if batch_size is not None:
        kw.setdefault("batch_size", int(batch_size))
    return kw


def seed_runs(f, image: Tensor, methods: Mapping[str, Mapping], seeds: Sequence[int],
              batch_size: int | None = None, first: Mapping[str, Timed] | None = None
              ) -> dict[str, list[Timed]]:
    """Maps of each random method for every seed of ``seeds`` (MinPlus Fig. 4). ``first``:
    results already computed with ``seeds[0]`` (reused, not recomputed)."""
    runs: dict[str, list[Timed]] = {name: [] for name in methods}
    for k, s in enumerate(seeds):
        todo = {n: kw for n, kw in methods.items() if not (k == 0 and first and n in first)}
        done = run_methods(f, image, todo, seed=s, batch_size=batch_size) if todo else {}
        for name in methods:
            runs[name].append(first[name] if k == 0 and first and name in first else done[name])
    return runs


def stability_table(runs: Mapping[str, Sequence[Timed]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method: mean pairwise Pearson and Spearman and mean pixel std of the min-max
    normalized maps of the runs (:func:`xfr.metrics.stability`), and the pairwise values
    (long format: method, run_a, run_b, pearson, spearman)."""
    from ..metrics import stability
    from .common import minmax

    summary, pairs = [], []
    for name, items in runs.items():
        maps = [minmax(np.asarray(t.map, dtype=np.float64)) for t in items]
        res = stability(maps)
        summary.append(dict(method=label(name), runs=len(maps), pearson=res.mean_pearson,
                            spearman=res.mean_spearman, pixel_std=res.mean_std))
        for a in range(len(maps)):
            for b in range(a + 1, len(maps)):
                pairs.append(dict(method=label(name), run_a=a, run_b=b,
                                  pearson=res.pearson[a, b], spearman=res.spearman[a, b]))
    return pd.DataFrame(summary), pd.DataFrame(pairs)
