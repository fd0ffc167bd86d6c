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

from tests.browser import check_site
from xfr.assets import REPO_ROOT
from xfr.pipeline import code_deps, fill_params, run_notebook, stage_params

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
SMOKE = yaml.safe_load((REPO_ROOT / "params_smoke.yaml").read_text())  # overrides only
STAGES = list(DVC["stages"])  # dvc.yaml order: every stage's inputs come before it
NOTEBOOK_STAGES = [s for s in STAGES if "xfr.pipeline" in DVC["stages"][s]["cmd"]]
MODULE_STAGES = [s for s in STAGES if s not in NOTEBOOK_STAGES]


def _paths(entries) -> set[str]:
    return {k for e in entries or [] for k in (e if isinstance(e, dict) else {e: 0})}


def test_declarations_fit_stages():
    for stage in STAGES:
        spec = DVC["stages"][stage]
        assert spec["params"] == [stage], f"{stage} must read only its own params section"
        assert stage in PARAMS, f"{stage}: no section in params.yaml"
        assert f"results/{stage}/metrics.json" in _paths(spec.get("metrics")), f"{stage}: metrics.json not declared"


def test_each_parameter_has_one_home():
    """Defaults live in params.yaml only; params_smoke.yaml and notebooks/params/STAGE.paper.yaml
    hold overrides (known keys, other values), and nothing else mirrors a section."""
    assert set(SMOKE) <= set(PARAMS)
    overrides = [("params_smoke.yaml", SMOKE)]
    for path in sorted((REPO_ROOT / "notebooks" / "params").glob("*.yaml")):
        assert path.name.endswith(".paper.yaml"), f"{path.name}: only STAGE.paper.yaml override files belong there"
        overrides.append((path.name, yaml.safe_load(path.read_text())))
        assert set(overrides[-1][1]) == {path.name.split(".")[0]}, f"{path.name}: one section, its stage's"
    for name, sections in overrides:
        for stage, section in sections.items():
            for key, value in (section or {}).items():
                assert key in PARAMS[stage], f"{name}: {stage}.{key} is not a parameter (params.yaml)"
                assert value != PARAMS[stage][key], f"{name}: {stage}.{key} repeats the default"


def test_stage_deps_are_the_code_the_stage_imports():
    """Each stage depends on exactly the code it runs (computed from its imports), so editing one
    stage's helper re-runs that stage only."""
    for stage in STAGES:
        declared = {d for d in _paths(DVC["stages"][stage]["deps"]) if d.startswith(("xfr", "notebooks"))}
        assert declared == set(code_deps(stage)), (
            f"{stage}: dvc.yaml deps differ from its imports; missing {set(code_deps(stage)) - declared}, "
            f"extra {declared - set(code_deps(stage))} (`python -m xfr.pipeline --print-deps {stage}`)")


def test_declarations_fit_notebooks():
    for stage in NOTEBOOK_STAGES:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{stage}: exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{stage} has outputs"
        cell = nb.cells[tagged[0]].source
        assigned = dict(re.findall(r"^(\w+)\s*=\s*(.+)$", cell, flags=re.M))
        assert set(assigned) == set(PARAMS[stage]) | {"out_dir"}, \
            f"{stage}: parameters cell must declare exactly params.yaml's keys and out_dir"
        assert set(assigned.values()) == {"None"}, f"{stage}: values live in params.yaml, not the notebook"
        assert f'fill_params("{stage}", globals())' in nb.cells[tagged[0] + 1].source


def test_fill_params_reads_params_yaml_when_nothing_was_injected():
    ns = {k: None for k in PARAMS["expressions"]} | {"out_dir": None}
    fill_params("expressions", ns)
    assert {k: ns[k] for k in PARAMS["expressions"]} == PARAMS["expressions"]
    assert ns["out_dir"].endswith("results/expressions")
    injected = {k: 1 for k in PARAMS["expressions"]} | {"out_dir": "x"}
    fill_params("expressions", injected)
    assert injected["out_dir"] == "x" and injected["seed"] == 1
    with pytest.raises(KeyError, match="not declared"):
        fill_params("expressions", {"out_dir": None})


def test_overrides_and_paper_files_apply_over_the_defaults(tmp_path):
    merged = stage_params("expressions", overrides=[REPO_ROOT / "params_smoke.yaml"])
    assert merged == PARAMS["expressions"] | SMOKE.get("expressions", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("expressions:\n  no_such_key: 1\n")
    with pytest.raises(KeyError, match="no_such_key"):
        stage_params("expressions", overrides=[bad])


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
    smoke_file = REPO_ROOT / "params_smoke.yaml"
    path.write_text(yaml.safe_dump({s: stage_params(s, overrides=[smoke_file]) for s in PARAMS}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_with_smoke_params(stage, smoke_root, smoke_params):
    spec = DVC["stages"][stage]
    if stage in NOTEBOOK_STAGES:
        overrides = {"results_root": str(smoke_root)} if "results_root" in PARAMS[stage] else {}
        # html: the site stage (last) links every rendered notebook
        executed = run_notebook(stage, smoke_params, smoke_root, overrides=overrides, html=True)
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


@pytest.mark.slow
def test_smoke_site_in_browser(smoke_root, tmp_path):
    """The site the smoke stages built (test_stage_runs_with_smoke_params[site], run before this in
    the module) in headless Chromium: no console error, links and images resolve, sorting and
    filtering change the rows, selecting an item shows its maps (tests/browser.py)."""
    site = smoke_root / "site"
    if not (site / "index.html").is_file():
        pytest.skip("the smoke site is built by test_stage_runs_with_smoke_params[site]: run the whole module")
    done = check_site(site, tmp_path)
    assert any(d.startswith("LFW pairs: selecting a pair") for d in done)
