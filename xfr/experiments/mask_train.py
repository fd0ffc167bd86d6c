"""Stage ``mask_train`` (``python -m xfr.experiments.mask_train``, MinPlus §3.4):
:func:`xfr.yolo.run_train` — the face-mask detector trained from scratch on the ``mask_data``
stage's YOLO data set with a fixed torch thread count (:func:`xfr.pipeline.fix_threads`; the
weights depend on it), saved without pickle to ``<out-root>/mask_train/weights``, evaluated on
the val and test splits -> ``metrics.json``, ``training.csv`` (per epoch), ``figures/``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ..assets import REPO_ROOT
    from ..pipeline import fix_threads, stage_params
    from ..yolo import run_train

    ap = argparse.ArgumentParser(description="Train the face-mask detector (MinPlus §3.4; stage mask_train)")
    ap.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    ap.add_argument("--out-root", type=Path, default=REPO_ROOT / "results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    params = stage_params("mask_train", args.params)
    fix_threads(params.get("threads"))  # before any model runs
    res = run_train(params, args.out_root)
    print(json.dumps(res, indent=1, default=str))
    print(f"mask_train: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
