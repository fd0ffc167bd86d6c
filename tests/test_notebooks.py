"""Every pipeline notebook runs end to end with the smoke parameters (params_smoke.yaml), and the
pipeline's declarations (dvc.yaml, params.yaml) fit the notebooks."""
import json
from pathlib import Path

import nbformat
import pytest
import yaml

from xfr.assets import REPO_ROOT
from xfr.pipeline import run_notebook

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
SMOKE = yaml.safe_load((REPO_ROOT / "params_smoke.yaml").read_text())
NOTEBOOK_STAGES = [s for s, spec in DVC["stages"].items() if "xfr.pipeline" in spec["cmd"]]


def test_declarations_fit_notebooks():
    for stage in NOTEBOOK_STAGES:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{stage}: exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{stage} has outputs"
        spec = DVC["stages"][stage]
        assert spec["params"] == [stage], f"{stage} must read only its own params section"
        assert stage in PARAMS and stage in SMOKE
        assert set(SMOKE[stage]) <= set(PARAMS[stage]), f"{stage}: smoke keys not in params.yaml"
        names = {k for k in spec.get("metrics", []) for k in (k if isinstance(k, dict) else {k: 0})}
        assert f"results/{stage}/metrics.json" in names


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.slow
@pytest.mark.parametrize("stage", NOTEBOOK_STAGES)
def test_notebook_runs_with_smoke_params(stage, smoke_root, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(SMOKE))
    overrides = {"results_root": str(smoke_root)} if "results_root" in SMOKE[stage] else {}
    executed = run_notebook(stage, params, smoke_root, overrides=overrides, html=False)
    out = Path(executed).parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics, f"{stage} wrote empty metrics"
    assert list((out / "figures").glob("*.png")), f"{stage} wrote no figure"
