"""Small helpers the experiment notebooks share: output folders, metrics JSON, plot CSVs, figures,
timed explanations."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .engine import CountingScore


def out_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir`` and its ``figures/`` subfolder, created."""
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    return out, figs


def _clean(value):
    """JSON-ready: numpy / torch values to Python ones, floats rounded to 6 digits, NaN/inf -> None."""
    if isinstance(value, np.bool_):
        return bool(value)
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
    ``{"rise_box_ap": 1}``), for comparing with flat metrics files and for tables; a name that
    two paths give raises ValueError."""
    out: dict = {}
    for key, value in metrics.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        flat = flatten_metrics(value, sep, name) if isinstance(value, Mapping) else {name: value}
        for k, v in flat.items():
            if k in out:
                raise ValueError(f"metric {k!r} appears twice")
            out[k] = v
    return out


def set_nested(tree: dict, path: Sequence, leaves: Mapping) -> None:
    """Set ``leaves`` in the nested metrics dict ``tree`` under the keys ``path`` (created)."""
    for k in path:
        tree = tree.setdefault(str(k), {})
    tree.update(leaves)


def write_csv(out_dir: str | Path, name: str, frame: pd.DataFrame) -> Path:
    """Write plot data for ``dvc plots`` (no index, 6 significant digits)."""
    path = Path(out_dir) / name
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def savefig(fig, figs_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save ``fig`` as ``figs_dir/name``, close it, and show the saved file inline when running
    in a notebook kernel (:func:`xfr.viz.display_saved`)."""
    import matplotlib.pyplot as plt

    from .viz import display_saved

    path = Path(figs_dir) / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    display_saved(path)
    return path


@dataclass
class Timed:
    """A map with the cost of computing it."""

    # A saliency map [H,W], or the result object of an explainer that returns one (e.g.
    # MinPlusMaps, LimeExplanation) when timed directly by :func:`timed`.
    map: Any
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


def method_row(task: str, method: str, runs: Sequence[Timed], **metrics) -> dict:
    """One methods.csv row: task, method, the given metrics, mean forward passes and seconds per
    explained image."""
    return dict(task=task, method=label(method), **metrics,
                forward_passes=float(np.mean([t.n_forward for t in runs])),
                seconds_per_image=float(np.mean([t.seconds for t in runs])))
