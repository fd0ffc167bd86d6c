"""Run one experiment notebook with papermill, with its own section of a params file.

``python -m xfr.pipeline STAGE`` executes ``notebooks/STAGE.ipynb`` with the parameters of
section ``STAGE`` of ``params.yaml`` (plus ``out_dir``), writes the executed notebook and its
HTML rendering into ``results/STAGE/``. This is the command of every DVC stage in ``dvc.yaml``.
``--params params_smoke.yaml --out-root DIR`` runs the same notebook with the smoke parameters
(CI) without touching the pipeline's outputs.

Every stage runs with a fixed torch CPU thread count (:func:`fix_threads`): float reductions
(convolutions, matrix products, sums) are split over the threads, so their rounding and hence
the metrics depend on the count, which torch otherwise picks per process from the machine
(physical cores, CPU affinity, ``OMP_NUM_THREADS``; importing ultralytics sets the latter to 1).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from .assets import REPO_ROOT

THREADS_ENV = "XFR_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def fix_threads(threads: int | None = None) -> int:
    """Fix the torch CPU thread count of this process and of the processes it starts (the
    notebooks' kernels) to ``threads``; by default ``$XFR_THREADS`` or, unset, all cores
    (``os.cpu_count()``). Sets ``XFR_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``
    (read by torch when a new process loads it; ultralytics then leaves them alone) and calls
    ``torch.set_num_threads`` when torch is imported here. Returns the count."""
    if not threads:
        threads = os.environ.get(THREADS_ENV) or os.cpu_count() or 1
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for var in (THREADS_ENV, *THREAD_VARS):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def stage_params(stage: str, params_file: Path) -> dict:
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    if stage not in params:
        raise KeyError(f"{params_file} has no section {stage!r} (sections: {sorted(params)})")
    return dict(params[stage] or {})


def run_notebook(stage: str, params_file: Path, out_root: Path, overrides: dict | None = None,
                 html: bool = True) -> Path:
    import papermill as pm

    notebook = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook for stage {stage!r}: {notebook}")
    out_dir = Path(out_root) / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    params = stage_params(stage, params_file)
    params.update(overrides or {})
    params["out_dir"] = str(out_dir.resolve())
    executed = out_dir / f"{stage}.ipynb"
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    fix_threads()  # the kernel starts with these threads
    t0 = time.perf_counter()
    pm.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name="python3",
                        cwd=str(REPO_ROOT), progress_bar=False, log_output=False)
    print(f"{stage}: executed in {time.perf_counter() - t0:.1f} s -> {executed}")
    if html:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(executed), as_version=4))
        (out_dir / f"{stage}.html").write_text(body)
    return executed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    ap.add_argument("--out-root", type=Path, default=REPO_ROOT / "results")
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    for stage in args.stages:
        run_notebook(stage, args.params, args.out_root, html=not args.no_html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
