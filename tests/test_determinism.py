"""The pipeline is deterministic: a stage run twice on the same machine gives identical metrics.

Float reductions are split over torch's CPU threads, so results depend on the thread count, which
torch picks per process (physical cores, CPU affinity, ``OMP_NUM_THREADS``, which importing
ultralytics sets to 1); :func:`xfr.pipeline.fix_threads` fixes it for every stage."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from xfr.assets import REPO_ROOT
from xfr.pipeline import THREAD_VARS, THREADS_ENV, fix_threads, stage_params

SMOKE_PARAMS = {s: stage_params(s, overrides=[REPO_ROOT / "params_smoke.yaml"])
                for s in yaml.safe_load((REPO_ROOT / "params.yaml").read_text())}
TIMING = re.compile(r"(^|_)(seconds|time)(_|$)|_s$")


def _restore_threads(monkeypatch):
    for var in (THREADS_ENV, *THREAD_VARS):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # undone after the test
    return torch.get_num_threads()


def test_fix_threads_sets_torch_and_child_processes(monkeypatch):
    before = _restore_threads(monkeypatch)
    try:
        assert fix_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert all(os.environ[v] == "1" for v in (THREADS_ENV, *THREAD_VARS))
        # a new process (a notebook's kernel) starts with that count, even after ultralytics'
        # import (which sets OMP_NUM_THREADS=1 only when unset) and whatever the machine's default
        code = "import torch; print(torch.get_num_threads())"
        for n in (1, 2):
            fix_threads(n)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            assert int(out.stdout) == n
    finally:
        torch.set_num_threads(before)


def test_fix_threads_default(monkeypatch):
    before = _restore_threads(monkeypatch)
    try:
        monkeypatch.setenv(THREADS_ENV, "")
        assert fix_threads() == (os.cpu_count() or 1)
        monkeypatch.setenv(THREADS_ENV, "1")
        assert fix_threads() == 1 and fix_threads(None) == 1
        assert fix_threads(2) == 2 and os.environ[THREADS_ENV] == "2"
        with pytest.raises(ValueError, match="threads"):
            fix_threads(-1)
    finally:
        torch.set_num_threads(before)


def _non_timing(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_non_timing(v, f"{prefix}{k}."))
        elif not TIMING.search(k):
            out[f"{prefix}{k}"] = v
    return out


def test_timing_keys():
    m = {"train_seconds": 1, "seconds_per_epoch": 2, "cis_s": 3, "time": 4, "seconds": 5,
         "mAP50": 6, "val": {"precision": 7, "seconds": 8}, "n_images": 9}
    assert _non_timing(m) == {"mAP50": 6, "val.precision": 7, "n_images": 9}


def _run_mask_stages(root, params, env):
    for command in ("mask_data", "mask_train"):
        proc = subprocess.run([sys.executable, "-m", f"xfr.experiments.{command}", "--params",
                               str(params), "--out-root", str(root)], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = root / "mask_train"
    with np.load(out / "weights" / "detector.npz", allow_pickle=False) as w:
        weights = {k: w[k].copy() for k in w.files}
    training = [line.split(",")[:1] + line.split(",")[2:]  # without the time column
                for line in (out / "training.csv").read_text().splitlines()]
    return _non_timing(json.loads((out / "metrics.json").read_text())), training, weights


@pytest.mark.slow
def test_mask_training_is_deterministic(tmp_path):
    """mask_data + mask_train (smoke) twice, each in a fresh process as under ``dvc repro``, one
    of them with OMP_NUM_THREADS / MKL_NUM_THREADS set to 1 (as after ultralytics' import): the
    same metrics, per-epoch table and weights, bit for bit (their smoke metrics alone are all
    0, the weights show any difference)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(SMOKE_PARAMS))
    env = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, *THREAD_VARS)}
    a = _run_mask_stages(tmp_path / "a", params, env)
    b = _run_mask_stages(tmp_path / "b", params, {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert a[0] == b[0], {k: (a[0][k], b[0].get(k)) for k in a[0] if a[0][k] != b[0].get(k)}
    assert a[0]["threads"] == (os.cpu_count() or 1)
    assert a[1] == b[1]
    assert set(a[2]) == set(b[2])
    different = [k for k in a[2] if not np.array_equal(a[2][k], b[2][k])]
    assert not different, f"weights differ in {different[:5]}"


def test_run_notebook_starts_kernels_with_fixed_threads(monkeypatch, tmp_path):
    """The notebook's kernel inherits the fixed count, not one an earlier import (ultralytics:
    OMP_NUM_THREADS=1) or the caller's environment left in OMP_NUM_THREADS."""
    import papermill

    from xfr.pipeline import run_notebook

    before = _restore_threads(monkeypatch)
    seen = {}

    def fake_execute(notebook, executed, **kwargs):
        seen.update({v: os.environ.get(v) for v in THREAD_VARS})

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv(THREADS_ENV, "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    try:
        run_notebook("comparison", out_root=tmp_path, override_files=[REPO_ROOT / "params_smoke.yaml"], html=False)
        assert seen == {v: str(os.cpu_count() or 1) for v in THREAD_VARS}
    finally:
        torch.set_num_threads(before)
