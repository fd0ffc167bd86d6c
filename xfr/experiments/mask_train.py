"""Stage ``mask_train`` (``python -m xfr.experiments.mask_train``, MinPlus §3.4):
:func:`xfr.yolo.run_train` — the face-mask detector trained from scratch on the ``mask_data``
stage's YOLO data set with a fixed torch thread count (:func:`xfr.pipeline.fix_threads`; the
weights depend on it), saved without pickle to ``<out-root>/mask_train/weights``, evaluated on
the val and test splits -> ``metrics.json``, ``training.csv`` (per epoch), ``figures/``."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ..pipeline import module_stage_main
    from ..yolo import run_train  # fixes the thread count (train_detector) before any model runs

    return module_stage_main("mask_train", run_train,
                             "Train the face-mask detector (MinPlus §3.4; stage mask_train)", argv)


if __name__ == "__main__":
    sys.exit(main())
