"""The cross-task comparison table: every stage's ``methods.csv`` in one frame and figure."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

REQUIRED = ("task", "method", "forward_passes", "seconds_per_image")


def collect_methods(results_root: str | Path, stages: list[str]) -> pd.DataFrame:
    """Concatenate ``results_root/<stage>/methods.csv``; a missing file or column is an error."""
    frames = []
    for stage in stages:
        path = Path(results_root) / stage / "methods.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the {stage!r} stage first (dvc repro -s {stage})")
        frame = pd.read_csv(path)
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}")
        frame.insert(0, "stage", stage)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True, sort=False)
    lead = ["stage", *REQUIRED]
    return table[lead + [c for c in table.columns if c not in lead]]


def plot_costs(table: pd.DataFrame):
    """Seconds per image and forward passes per (task, method), log scale."""
    import matplotlib.pyplot as plt

    labels = [f"{t}\n{m}" for t, m in zip(table["task"], table["method"])]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.5 * len(table)) * 1.2, 4.5))
    for ax, col, title in ((axes[0], "seconds_per_image", "seconds per image"),
                           (axes[1], "forward_passes", "forward passes per image")):
        ax.bar(range(len(table)), table[col].astype(float), color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(range(len(table)), labels, rotation=90, fontsize=7)
    fig.tight_layout()
    return fig
