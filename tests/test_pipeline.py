"""Every pipeline stage runs end to end with the smoke parameters (params_smoke.yaml), in dvc.yaml
order into one temporary results root, and the pipeline's declarations (dvc.yaml, params.yaml)
fit the notebooks and stage modules."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from xfr.assets import REPO_ROOT
from xfr.pipeline import run_notebook

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
SMOKE = yaml.safe_load((REPO_ROOT / "params_smoke.yaml").read_text())
STAGES = list(DVC["stages"])  # dvc.yaml order: every stage's inputs come before it
NOTEBOOK_STAGES = [s for s in STAGES if "xfr.pipeline" in DVC["stages"][s]["cmd"]]
MODULE_STAGES = [s for s in STAGES if s not in NOTEBOOK_STAGES]


def _paths(entries) -> set[str]:
    return {k for e in entries or [] for k in (e if isinstance(e, dict) else {e: 0})}


def test_declarations_fit_stages():
    for stage in STAGES:
        spec = DVC["stages"][stage]
        assert spec["params"] == [stage], f"{stage} must read only its own params section"
        assert stage in PARAMS and stage in SMOKE, f"{stage}: no section in params.yaml / params_smoke.yaml"
        assert set(SMOKE[stage]) <= set(PARAMS[stage]), f"{stage}: smoke keys not in params.yaml"
        assert f"results/{stage}/metrics.json" in _paths(spec.get("metrics")), f"{stage}: metrics.json not declared"
        for kind, section in (("", PARAMS), (".smoke", SMOKE)):
            mirror = REPO_ROOT / "notebooks" / "params" / f"{stage}{kind}.yaml"
            if mirror.is_file():
                assert yaml.safe_load(mirror.read_text())[stage] == section[stage], \
                    f"{mirror.name} differs from section {stage!r} of params{kind.replace('.', '_')}.yaml"


def test_declarations_fit_notebooks():
    for stage in NOTEBOOK_STAGES:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{stage}: exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{stage} has outputs"
        names = set(re.findall(r"^(\w+)\s*=", tagged[0].source, flags=re.M))
        assert set(PARAMS[stage]) <= names, f"{stage}: params not in the parameters cell: {set(PARAMS[stage]) - names}"


def test_declarations_fit_stage_modules():
    for stage in MODULE_STAGES:
        cmd = DVC["stages"][stage]["cmd"].split()
        assert cmd[:2] == ["python", "-m"], f"{stage}: cmd must be `python -m MODULE ...` ({cmd})"
        module = REPO_ROOT / (cmd[2].replace(".", "/") + ".py")
        assert module.is_file(), f"{stage}: {module} not found"
        for path in _paths(DVC["stages"][stage].get("outs")) | _paths(DVC["stages"][stage].get("metrics")):
            assert path.startswith(f"results/{stage}/"), f"{stage}: output {path} outside results/{stage}"


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="module")
def smoke_params(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(SMOKE))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_with_smoke_params(stage, smoke_root, smoke_params):
    spec = DVC["stages"][stage]
    if stage in NOTEBOOK_STAGES:
        overrides = {"results_root": str(smoke_root)} if "results_root" in SMOKE[stage] else {}
        executed = run_notebook(stage, smoke_params, smoke_root, overrides=overrides, html=False)
        out = Path(executed).parent
        assert list((out / "figures").glob("*.png")), f"{stage} wrote no figure"
    else:
        cmd = spec["cmd"].split()
        cmd[0] = sys.executable if cmd[0] == "python" else cmd[0]
        proc = subprocess.run(cmd + ["--params", str(smoke_params), "--out-root", str(smoke_root)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        out = smoke_root / stage
        for path in _paths(spec.get("outs")) | _paths(spec.get("plots")):
            assert (smoke_root / Path(path).relative_to("results")).exists(), f"{stage} did not write {path}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics, f"{stage} wrote empty metrics"
