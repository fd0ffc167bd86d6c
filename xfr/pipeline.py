"""Run one experiment notebook with papermill, with its own section of a params file.

``python -m xfr.pipeline STAGE`` executes ``notebooks/STAGE.ipynb`` with the parameters of
section ``STAGE`` of ``params.yaml`` (plus ``out_dir``), writes the executed notebook and its
HTML rendering into ``results/STAGE/``. This is the command of every DVC stage in ``dvc.yaml``.
``--overrides params_smoke.yaml --out-root DIR`` runs the same notebook with the smoke values (CI)
without touching the pipeline's outputs; ``--paper`` applies ``notebooks/params/STAGE.paper.yaml``.
A parameter's default lives in params.yaml only; the other files hold overrides.

Every stage runs with a fixed torch CPU thread count (:func:`fix_threads`): float reductions
(convolutions, matrix products, sums) are split over the threads, so their rounding and hence
the metrics depend on the count, which torch otherwise picks per process from the machine
(physical cores, CPU affinity, ``OMP_NUM_THREADS``; importing ultralytics sets the latter to 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from .assets import REPO_ROOT

PARAMS_FILE = REPO_ROOT / "params.yaml"
PAPER_DIR = REPO_ROOT / "notebooks" / "params"

THREADS_ENV = "XFR_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def fix_threads(threads: int | None = None) -> int:
    """Fix the torch CPU thread count of this process and of the processes it starts (the
    notebooks' kernels) to ``threads``; by default ``$XFR_THREADS`` or, unset, all cores
    (``os.cpu_count()``). Sets ``XFR_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``
    (read by torch when a new process loads it; ultralytics then leaves them alone) and calls
    ``torch.set_num_threads`` when torch is imported here. Returns the count."""
    threads = int(threads or os.environ.get(THREADS_ENV) or os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for var in (THREADS_ENV, *THREAD_VARS):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def stage_params(stage: str, params_file: Path = PARAMS_FILE, overrides: Sequence[Path] = (),
                 paper: bool = False) -> dict:
    """Section ``stage`` of ``params_file`` (the defaults: every parameter lives there, once),
    updated by the same section of each file of ``overrides`` (e.g. ``params_smoke.yaml``, which
    holds only the values CI changes) and, with ``paper``, by ``notebooks/params/STAGE.paper.yaml``
    (only the values the paper's scale changes). An override of an unknown key is an error."""
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    if stage not in params:
        raise KeyError(f"{params_file} has no section {stage!r} (sections: {sorted(params)})")
    out = dict(params[stage] or {})
    paper_file = PAPER_DIR / f"{stage}.paper.yaml"  # none: the defaults are the paper's scale
    files = [Path(f) for f in overrides] + ([paper_file] if paper and paper_file.is_file() else [])
    for path in files:
        section = (yaml.safe_load(Path(path).read_text()) or {}).get(stage) or {}
        unknown = sorted(set(section) - set(out))
        if unknown:
            raise KeyError(f"{path}: section {stage!r} overrides keys that {params_file} lacks: {unknown}")
        out.update(section)
    return out


def fill_params(stage: str, namespace: dict) -> None:
    """Called by each notebook right after its ``parameters`` cell, which declares every
    parameter as None: when papermill injected nothing (``out_dir`` is None, a notebook opened by
    hand), set them from section ``stage`` of params.yaml and ``out_dir`` to ``results/STAGE``.
    Either way, check that the notebook declares exactly the section's keys."""
    params = stage_params(stage)
    declared = {k for k in namespace if k in params or k == "out_dir"}
    missing = sorted(set(params) - declared)
    if missing:
        raise KeyError(f"notebook {stage}: parameters not declared in its parameters cell: {missing}")
    if namespace.get("out_dir") is None:
        namespace.update(params)
        namespace["out_dir"] = str(REPO_ROOT / "results" / stage)


def run_notebook(stage: str, params_file: Path = PARAMS_FILE, out_root: Path = REPO_ROOT / "results",
                 overrides: dict | None = None, html: bool = True, override_files: Sequence[Path] = (),
                 paper: bool = False) -> Path:
    import papermill as pm

    notebook = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook for stage {stage!r}: {notebook}")
    out_dir = Path(out_root) / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    params = stage_params(stage, params_file, override_files, paper)
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


# ----------------------------------------------------------------------------- code dependencies
def _module_file(module: str) -> Path | None:
    base = REPO_ROOT / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """xfr modules that ``source`` (the code of ``module``) imports anywhere, local imports too."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "xfr")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "xfr":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
    return found


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:k])
            path = _module_file(name)
            if path is None or name in seen:
                continue
            seen.add(name)
            todo.extend(_imported_modules(path.read_text(), name, path.name == "__init__.py"))
    return seen


def code_deps(stage: str) -> list[str]:
    """The code a stage runs, as ``dvc.yaml`` dependencies: its notebook (or its module, for
    ``python -m MODULE`` stages) and every xfr module it imports, transitively (local imports
    too), as files for ``xfr/*.py`` and ``xfr/experiments/*.py`` and as folders for the other
    subpackages (``xfr/explain``, ``xfr/metrics``, ...: their ``__init__`` imports them whole)."""
    import nbformat

    spec = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][stage]
    cmd = spec["cmd"].split()
    deps: set[str] = set()
    if cmd[2] == "xfr.pipeline":
        nb_path = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
        nb = nbformat.read(str(nb_path), as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code"
                         and not c.source.lstrip().startswith(("%", "!")))
        roots = _imported_modules(code, "notebook", False) | {"xfr.pipeline"}
        deps.add(f"notebooks/{stage}.ipynb")
    else:
        roots = {cmd[2]}
    for mod in _closure(roots):
        parts = mod.split(".")
        path = _module_file(mod)
        assert path is not None  # _closure keeps only modules that have a file
        is_package = path.name == "__init__.py"
        if len(parts) == 1:
            deps.add("xfr/__init__.py")
        elif parts[1] == "experiments" and len(parts) == 3 or (len(parts) == 2 and not is_package):
            deps.add(str(path.relative_to(REPO_ROOT)))
        elif parts[1] != "experiments":
            deps.add("/".join(parts[:2]))
        if mod == "xfr.assets":
            deps.add("xfr/resources")
    return sorted(deps)


def module_stage_main(stage: str, run: Callable[[dict, Path], dict], description: str,
                      argv: list[str] | None = None) -> int:
    """The command line of a ``python -m MODULE`` stage: ``run(section STAGE of --params,
    --out-root)``, its result printed as JSON, then the wall time."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", type=Path, default=PARAMS_FILE)
    ap.add_argument("--out-root", type=Path, default=REPO_ROOT / "results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(stage_params(stage, args.params), args.out_root)
    print(json.dumps(res, indent=1, default=str))
    print(f"{stage}: {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--print-deps", action="store_true",
                    help="print the code each stage imports (its dvc.yaml deps) instead of running it")
    ap.add_argument("--params", type=Path, default=PARAMS_FILE, help="defaults (default: params.yaml)")
    ap.add_argument("--overrides", type=Path, action="append", default=[],
                    help="a file of sections whose values replace the defaults (e.g. params_smoke.yaml)")
    ap.add_argument("--paper", action="store_true",
                    help="apply notebooks/params/STAGE.paper.yaml (the papers' scale; hours of CPU)")
    ap.add_argument("--out-root", type=Path, default=REPO_ROOT / "results")
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    for stage in args.stages:
        if args.print_deps:
            print(f"{stage}:", *code_deps(stage), sep="\n    - ")
            continue
        run_notebook(stage, args.params, args.out_root, html=not args.no_html,
                     override_files=args.overrides, paper=args.paper)
    return 0


if __name__ == "__main__":
    sys.exit(main())
