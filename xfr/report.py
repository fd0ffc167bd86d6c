"""Small helpers the experiment notebooks share: output folders, metrics JSON, plot CSVs, figures,
timed explanations."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .engine import CountingScore


def out_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir`` and its ``figures/`` subfolder, created."""
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    return out, figs


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) or math.isinf(v) else round(v, 6)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, torch.Tensor):
        return _clean(value.tolist())
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    return value


def write_metrics(out_dir: str | Path, metrics: dict, name: str = "metrics.json") -> Path:
    """Write ``metrics`` (nested dicts: stage -> method -> value, never keys built by joining
    strings) as sorted, rounded JSON (NaN -> null) for ``dvc metrics``."""
    path = Path(out_dir) / name
    path.write_text(json.dumps(_clean(metrics), indent=2, sort_keys=True) + "\n")
    return path


def flatten_metrics(metrics: Mapping, sep: str = "_", prefix: str = "") -> dict:
    """Nested metrics -> one level, keys joined with ``sep`` (``{"rise": {"box_ap": 1}}`` ->
    ``{"rise_box_ap": 1}``); for comparing with flat metrics files and for tables."""
    out: dict = {}
    for key, value in metrics.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_metrics(value, sep, name))
        else:
            out[name] = value
    return out


def write_csv(out_dir: str | Path, name: str, frame: pd.DataFrame) -> Path:
    """Write plot data for ``dvc plots`` (no index, 6 significant digits)."""
    path = Path(out_dir) / name
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def savefig(fig, figs_dir: str | Path, name: str, dpi: int = 110) -> Path:
    import matplotlib.pyplot as plt

    path = Path(figs_dir) / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class Timed:
    """A map with the cost of computing it."""

    map: torch.Tensor
    seconds: float
    n_forward: int
    extras: dict = field(default_factory=dict)


def timed(explainer: Callable, f: Callable, image: torch.Tensor, **kwargs) -> Timed:
    """Run ``explainer(f_counted, image, **kwargs)`` and record wall seconds and forward passes."""
    counted = CountingScore(f)
    t0 = time.perf_counter()
    smap = explainer(counted, image, **kwargs)
    return Timed(smap, time.perf_counter() - t0, counted.n_forward)


# explainer name (xfr.explain.SINGLE_IMAGE_METHODS) -> the name the papers print
METHOD_LABELS = {
    "minplus": "MinPlus",
    "avg": "AVG",
    "lime": "LIME",
    "lime-map": "LIME-map",
    "rise": "RISE",
    "rise-gauss": "RISEgauss",
    "s-rise": "S-RISE",
    "occlusion": "occlusion",
}


RANDOM_METHODS = ("lime", "lime-map", "rise", "rise-gauss", "s-rise")


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


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
    from .explain import SINGLE_IMAGE_METHODS, lime_explain

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
        out[name] = timed(SINGLE_IMAGE_METHODS[name], f, image, **kwargs[name])
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
    from .explain.common import minmax
    from .metrics import stability

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


def method_row(task: str, method: str, runs: Sequence[Timed], **metrics) -> dict:
    """One methods.csv row: task, method, the given metrics, mean forward passes and seconds per
    explained image."""
    return dict(task=task, method=label(method), **metrics,
                forward_passes=float(np.mean([t.n_forward for t in runs])),
                seconds_per_image=float(np.mean([t.seconds for t in runs])))
