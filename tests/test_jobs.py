"""xfr.jobs: sharded, resumable data-set explanation jobs (in process and on Ray) and the
``xfr explain-dataset`` command, on tiny jobs: mini-xception-fer2013 on FER-2013 faces with a
coarse occlusion (4 patches) and a small RISE."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xfr import jobs
from xfr.cli import main

MODEL = "mini-xception-fer2013"
METHODS = {"occlusion": dict(patch=24, stride=24), "rise": dict(n_masks=16, s=4)}
HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def faces() -> list[str]:
    from xfr.data import fer2013

    df = fer2013()
    if len(df) < 7:
        pytest.skip("FER-2013 faces not assembled (python -m xfr.data)")
    return [str(p) for p in df.path[:7]]


def run(items, out, **kw):
    kw.setdefault("shard_size", 3)
    return jobs.run_job(items, "expression", MODEL, METHODS, out, cls="happy", progress=False, **kw)


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Maps and manifest byte-identical; tables identical but for the wall-time column."""
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith((".csv", ".parquet")):
            ta, tb = jobs.read_table(a / name), jobs.read_table(b / name)
            pd.testing.assert_frame_equal(ta.drop(columns="seconds", errors="ignore"),
                                          tb.drop(columns="seconds", errors="ignore"))
        else:
            assert fa[name] == fb[name], name


@pytest.fixture(scope="module")
def reference(faces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jobs") / "reference"
    summary = run(faces, out)
    assert summary.items == 7 and summary.ok == 7 and summary.shards_done == 3
    return out


def test_in_process_job_writes_shards_and_manifest(reference, faces):
    fmt = jobs.table_format()
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted(["manifest.json"] + [f"shard-{s:05d}.{e}" for s in range(3) for e in ("npz", fmt)])
    m = json.loads((reference / "manifest.json").read_text())
    assert m["job"]["n_items"] == 7 and m["job"]["methods"] == METHODS
    assert m["model"]["name"] == MODEL and len(m["model"]["weights_sha256"]) == 64
    assert [s["n"] for s in m["shards"]] == [3, 3, 1]
    rows, maps = jobs.load_maps(reference)
    assert rows["index"].tolist() == list(range(7)) and (rows["status"] == "ok").all()
    assert rows["item"].tolist() == faces
    assert ((rows["score"] >= 0) & (rows["score"] <= 1)).all()
    # 1 score + (1 + 4 patches) occlusion + 16 masks rise forward passes
    assert (rows["forward_passes"] == 22).all()
    assert sorted(maps) == sorted(f"{m}/{i}" for m in METHODS for i in range(7))
    assert all(v.dtype == np.float16 and v.shape == (48, 48) for v in maps.values())
    assert all((p.stat().st_mode & 0o777) != 0o600 for p in reference.iterdir())


def test_npz_serialization_is_deterministic(tmp_path):
    arrays = {"occlusion/1": np.ones((4, 4), np.float16), "occlusion/0": np.zeros((4, 4), np.float16)}
    data = jobs.npz_bytes(arrays)
    assert data == jobs.npz_bytes(dict(reversed(arrays.items())))
    (tmp_path / "a.npz").write_bytes(data)
    with np.load(tmp_path / "a.npz") as z:
        assert z.files == ["occlusion/0", "occlusion/1"]
        np.testing.assert_array_equal(z["occlusion/1"], arrays["occlusion/1"])


def test_resume_after_a_killed_driver_gives_the_same_files(reference, faces, tmp_path):
    out = tmp_path / "resumed"
    first = run(faces, out, stop_after=1)  # the driver "dies" after the first shard
    assert first.shards_done == 1
    fmt = jobs.table_format()
    # and dies again while writing the next shard: its maps written, its table not, a temporary left
    result = jobs.ShardWorker(jobs.JobSpec(faces, "expression", MODEL, METHODS, cls="happy", shard_size=3)).run_shard(1)
    jobs.atomic_write(out / "shard-00001.npz", jobs.npz_bytes(result["maps"]))
    (out / f".shard-00001.{fmt}.abc.tmp").write_bytes(b"partial")
    second = run(faces, out)
    assert second.shards_skipped == 1 and second.shards_done == 2 and second.items == 4
    assert_same_outputs(reference, out)
    third = run(faces, out)  # nothing left to do
    assert third.items == 0 and third.shards_skipped == 3


def test_maps_do_not_depend_on_sharding(reference, faces, tmp_path):
    out = tmp_path / "one-shard"
    run(faces, out, shard_size=10)
    _, a = jobs.load_maps(reference)
    _, b = jobs.load_maps(out)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert jobs.item_seed(0, 3) == jobs.item_seed(0, 3) != jobs.item_seed(0, 4) != jobs.item_seed(1, 4)


def test_a_bad_item_is_recorded_and_the_rest_done(faces, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\x00garbage, not a JPEG" * 10)
    items = [faces[0], str(bad), faces[1], str(tmp_path / "missing.jpg")]
    summary = run(items, tmp_path / "out", shard_size=2)
    assert summary.items == 4 and summary.ok == 2 and sum(summary.failures.values()) == 2
    rows, maps = jobs.load_maps(tmp_path / "out")
    assert rows["status"].tolist()[0] == "ok" and rows["status"].tolist()[2] == "ok"
    assert "not a readable image" in rows["status"][1]
    assert rows["status"][3].startswith("FileNotFoundError")
    assert sorted(maps) == sorted(f"{m}/{i}" for m in METHODS for i in (0, 2))
    assert "failed x1" in summary.text()


def test_a_different_job_in_the_same_folder_is_refused(reference, faces):
    with pytest.raises(ValueError, match="different job"):
        jobs.run_job(faces, "expression", MODEL, METHODS, reference, cls="sad", shard_size=3)


@pytest.mark.parametrize("kw, match", [
    (dict(task="age"), "task must be"),
    (dict(cls=None), "needs the class"),
    (dict(methods={"grad-cam": {}}), "unknown methods"),
    (dict(shard_size=0), "shard_size"),
    (dict(items=[]), "no items"),
])
def test_job_arguments_are_checked_before_the_model_loads(kw, match, tmp_path, monkeypatch):
    import xfr.models

    monkeypatch.setattr(xfr.models, "load", lambda *a, **k: pytest.fail("model loaded"))
    args = dict(items=["a.jpg"], task="expression", model=MODEL, methods=METHODS, out_dir=tmp_path, cls="happy")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        jobs.run_job(**args)


def test_cli_explain_dataset(faces, tmp_path, capsys, reference):
    listing = tmp_path / "items.txt"
    listing.write_text("\n".join(faces) + "\n")
    out = tmp_path / "cli"
    rc = main(["explain-dataset", "--list", str(listing), "-o", str(out), "--class", "happy", "--model", MODEL,
               "--method", "occlusion", "--method", "rise", "-p", "occlusion.patch=24", "-p", "stride=24",
               "-p", "rise.n_masks=16", "-p", "s=4", "--shard-size", "3", "--quiet"])
    assert rc == 0
    assert "7 items in 3 shards" in capsys.readouterr().out
    assert_same_outputs(reference, out)


@pytest.mark.parametrize("argv, message", [
    (["x.jpg", "-o", "OUT"], "--class is required"),
    (["x.jpg", "-o", "OUT", "--class", "happy", "--method", "grad-cam"], "black-box methods"),
    (["x.jpg", "-o", "OUT", "--class", "happy", "-p", "foo=1"], "no parameter 'foo'"),
    (["x.jpg", "-o", "OUT", "--class", "happy", "-p", "rise.n_masks=4"], "not among the methods"),
    (["x.jpg", "-o", "OUT", "--class", "joy"], "unknown class 'joy'"),
    (["-o", "OUT", "--class", "happy"], "no items"),
    (["--list", "missing.txt", "-o", "OUT", "--class", "happy"], "list file not found"),
    (["x.jpg", "-o", "NOPE/OUT", "--class", "happy"], "does not exist"),
    (["a.jpg", "--task", "verification", "-o", "OUT"], "by pairs"),
])
def test_cli_explain_dataset_errors(argv, message, tmp_path, capsys, monkeypatch):
    import xfr.models

    monkeypatch.setattr(xfr.models, "load", lambda *a, **k: pytest.fail("model loaded"))
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("NOPE", str(tmp_path / "nope")) for a in argv]
    assert main(["explain-dataset", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_local():
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'xfr[jobs]')")
    import ray

    jobs.init_ray()
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_workers_give_the_same_outputs(ray_local, reference, faces, tmp_path):
    out = tmp_path / "ray"
    summary = run(faces, out, workers=2)
    assert summary.items == 7 and summary.ok == 7 and len(summary.items_per_s_per_worker) == 2
    assert_same_outputs(reference, out)


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_and_every_item_done_once(ray_local, reference, faces, tmp_path):
    out = tmp_path / "crash"
    marker = tmp_path / "crashed-once"
    summary = run(faces, out, workers=2, _crash_once=(4, str(marker)))
    assert marker.exists()  # the worker did die on item 4 (shard 1)
    assert summary.items == 7 and summary.ok == 7 and summary.shards_done == 3
    rows, _ = jobs.load_maps(out)
    assert rows["index"].tolist() == list(range(7))
    assert_same_outputs(reference, out)


def test_cli_verification_pairs(tmp_path, capsys):
    from xfr.data import lfw_pairs

    pairs = lfw_pairs()[:2]
    if not pairs or not Path(pairs[0].a).exists():
        pytest.skip("LFW pairs not assembled (python -m xfr.data)")
    argv = [str(p) for pair in pairs for p in (pair.a, pair.b)] + ["missing.jpg", str(pairs[0].b)]
    out = tmp_path / "ver"
    rc = main(["explain-dataset", "--task", "verification", *argv, "-o", str(out), "-p", "patch=175",
               "-p", "stride=175", "--shard-size", "2", "--quiet"])
    assert rc == 0 and "3 items in 2 shards" in capsys.readouterr().out
    rows, maps = jobs.load_maps(out)
    assert rows["status"].tolist()[:2] == ["ok", "ok"] and rows["status"][2].startswith("FileNotFoundError")
    assert rows["item"][0] == f"{pairs[0].a}|{pairs[0].b}" and -1 <= rows["score"][0] <= 1
    assert sorted(maps) == ["occlusion/0", "occlusion/1"] and maps["occlusion/0"].shape == (350, 350)
    assert json.loads((out / "manifest.json").read_text())["model"]["name"] == "dlib-resnet"


# ----------------------------------------------------------------------------- paper tasks (ItemTask)
class ProductTask(jobs.ItemTask):
    """A toy task on items [a, b]: score a + b, a float32 map, two records; b < 0 fails."""

    columns = ("product",)
    map_dtype = "float32"
    has_records = True

    def __init__(self, spec):
        import torch

        super().__init__(spec)
        self._model = torch.nn.Linear(2, 1)
        torch.nn.init.constant_(self._model.weight, spec.options["w"])
        torch.nn.init.zeros_(self._model.bias)

    @property
    def model(self):
        return self._model

    @classmethod
    def normalize_item(cls, item, spec):
        return [float(item[0]), float(item[1])]

    @classmethod
    def check(cls, spec):
        if "w" not in spec.options:
            raise ValueError("ProductTask needs option w")

    def explain(self, index, item, seed):
        a, b = item
        if b < 0:
            raise ValueError("negative b")
        return jobs.ItemResult(dict(score=a + b, forward_passes=2, product=a * b),
                               {"grid": np.full((2, 3), a * b / 3, np.float64)},
                               [dict(j=j, value=a * j + self.spec.options["w"]) for j in range(2)])


ITEMS = [[1, 2], [3, -1], [2.5, 4], [0, 1], [5, 5]]


def run_product(out, **kw):
    kw.setdefault("options", {"w": 0.5})
    return jobs.run_job(ITEMS, ProductTask, "toy", None, out, shard_size=2, progress=False, **kw)


def test_an_item_task_writes_its_columns_maps_and_records(tmp_path):
    summary = run_product(tmp_path / "toy")
    assert summary.items == 5 and summary.ok == 4 and summary.failures == {"ValueError: negative b": 1}
    m = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert m["job"]["task"] == "tests.test_jobs:ProductTask" and m["map_dtype"] == "float32"
    assert m["job"]["options"] == {"w": 0.5} and all("records" in s for s in m["shards"])
    rows, maps = jobs.load_maps(tmp_path / "toy")
    assert list(rows.columns) == ["index", "item", "status", "score", "forward_passes", "product", "seconds"]
    assert rows["product"].tolist()[::2] == [2.0, 10.0, 25.0] and np.isnan(rows["product"][1])
    assert sorted(maps) == ["grid/0", "grid/2", "grid/3", "grid/4"]
    assert maps["grid/2"].dtype == np.float32 and maps["grid/2"][0, 0] == np.float32(10 / 3)
    rec = jobs.load_records(tmp_path / "toy")
    assert rec["index"].tolist() == [0, 0, 2, 2, 3, 3, 4, 4]  # none for the failed item
    assert rec["value"].tolist() == [0.5, 1.5, 0.5, 3.0, 0.5, 0.5, 0.5, 5.5]


def test_replace_other_empties_a_folder_of_another_job(tmp_path):
    out = tmp_path / "toy"
    run_product(out)
    with pytest.raises(ValueError, match="different job"):
        run_product(out, options={"w": 2.0})
    summary = run_product(out, options={"w": 2.0}, replace_other=True)
    assert summary.shards_done == 3 and summary.shards_skipped == 0
    assert jobs.load_records(out)["value"].tolist()[:2] == [2.0, 3.0]
    assert json.loads((out / "manifest.json").read_text())["job"]["options"] == {"w": 2.0}
    assert run_product(out, options={"w": 2.0}, replace_other=True).shards_skipped == 3  # same job: resumed


@pytest.mark.parametrize("task, match", [
    ("nowhere.module:Task", "not found"),
    ("xfr.jobs:JobSpec", "not an xfr.jobs.ItemTask"),
    ("tests.test_jobs:ProductTask", "needs option w"),
])
def test_item_task_names_and_options_are_checked(task, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        jobs.run_job(ITEMS, task, "toy", None, tmp_path, options={})


def test_package_code_hash_is_stable():
    assert jobs.package_code_hash() == jobs.package_code_hash() and len(jobs.package_code_hash()) == 64


@pytest.mark.slow
def test_item_task_on_ray_gives_the_same_outputs(ray_local, tmp_path):
    run_product(tmp_path / "a")
    summary = run_product(tmp_path / "b", workers=2)
    assert summary.items == 5 and len(summary.items_per_s_per_worker) == 2
    assert_same_outputs(tmp_path / "a", tmp_path / "b")


def test_cms_cis_task_equals_the_in_process_cis(faces, tmp_path):
    """The CMS stage's job (face preparation + CIS per item) gives the maps of run_cis on the
    notebook's prepared faces (float16 storage: relative 1e-3), a face MTCNN misses is recorded."""
    import torch

    from xfr import models
    from xfr.experiments import cms as C
    from xfr.explain.canonical import canonical_face
    from xfr.explain.canonical_regions import spread_landmarks
    from xfr.faces.mesh import prepare_faces
    from xfr.score import class_score

    rows = pd.DataFrame({"path": faces[:5]})
    labels = [3] * 5
    opts = dict(canvas_size=96, cis_points=12, patch=15, canvas_patch=8, crop_scale=1.4, max_mesh_error=0.15,
                work_size=224)
    summary = C.cis_job("expression_fer2013", rows, labels, tmp_path / "cis", seed=0, batch_size=16, workers=0,
                        shard_size=2, context=0.0, image_map_items=1, **opts)
    assert summary.items == 5
    prepared = prepare_faces(faces[:5], labels, "fer2013", "full", models.load("mtcnn"), crop_scale=1.4,
                             max_mesh_error=0.15, size=224)
    run, info = C.run_from_job(tmp_path / "cis", "expression_fer2013", prepared.faces)
    assert info["matched"] == len(prepared.faces) == summary.ok and sum(info["failed"].values()) == 5 - summary.ok
    face = canonical_face(96)
    model = models.load("mini-xception-fer2013")
    ref = C.run_cis("x", "m", prepared.faces, lambda fc: class_score(model, fc.label, 0.0), lambda fc: fc.image,
                    lambda fc: fc.mesh, patch=15, points=spread_landmarks(12, face), canvas_patch=8, batch_size=16,
                    face=face)
    for a, b in zip(run.results, ref.results):
        torch.testing.assert_close(a.canonical, b.canonical, atol=2e-3 * float(b.canonical.abs().max()) + 1e-6, rtol=0)
        assert a.base_score == pytest.approx(b.base_score, abs=1e-6) and a.n_forward == b.n_forward == 13
    assert run.results[0].image_map is not None and run.results[-1].image_map is None  # image_map_items=1


def test_srise_table1_task_equals_run_table1(tmp_path):
    from xfr import models
    from xfr.data import lfw_pairs
    from xfr.experiments import srise as SR
    from xfr.experiments.verification import run_table1
    from xfr.faces.align import align_faces
    from xfr.models.detect import MTCNNDetector

    pairs = lfw_pairs()
    if not pairs or not Path(pairs[0].a).exists():
        pytest.skip("LFW pairs not assembled (python -m xfr.data)")
    genuine, impostor = [p for p in pairs if p.same][:2], [p for p in pairs if not p.same][:3]
    paths = sorted({q for p in genuine + impostor for q in (p.a, p.b)})
    faces = align_faces(paths, MTCNNDetector(min_face_size=50).eval(), template="arcface112", pad=100,
                        detect_scale=0.5)
    trips = SR.lfw_triplets(genuine + impostor, faces, 1)
    kw = dict(template="arcface112", size=48, counts=[2, 4], step=0.5, n_patches=10, kernel=9, sigma=2.0,
              readings=["keep", "remove"], threshold=0.4)
    per, summary = SR.table1_job("mobileface", trips + [(trips[0][0], trips[0][1], "missing.jpg")],
                                 tmp_path / "t1", seed=0, batch_size=16, workers=0, shard_size=1, **kw)
    assert summary.items == 2 and summary.ok == 1 and "image file not found: missing.jpg" in str(summary.failures)
    ref = pd.concat([run_table1(models.load("mobileface"), faces, trips, kw["counts"], kw["threshold"], kw["size"],
                                kw["step"], kw["n_patches"], kw["kernel"], kw["sigma"], jobs.item_seed(0, 0), 16,
                                patches=r, random_baseline=r == "keep", stop_at_flip=True)[0]
                     for r in ("keep", "remove")], ignore_index=True)
    cols = ["patches", "variant", "masks", "deletion", "insertion", "deletion_flipped", "similarity"]
    assert set(per.triplet) == {0} and len(per) == len(ref) == 9  # per reading 2 counts x (raw, centred), + random
    pd.testing.assert_frame_equal(per[cols].reset_index(drop=True), ref[cols].reset_index(drop=True), atol=1e-6,
                                  check_dtype=False)


@pytest.mark.slow
def test_a_driver_killed_by_sigkill_resumes_to_the_same_files(reference, faces, tmp_path):
    """A real kill: the job runs in a subprocess, SIGKILLed once its first shard is on disk; the
    rerun skips the finished shards and ends with the files of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    # the subprocess's worker holds shard 1 for 60 s before handing it over: the kill lands there
    code = (f"import time\nfrom xfr import jobs\norig = jobs.ShardWorker.run_shard\n"
            f"def held(self, s):\n    r = orig(self, s)\n    time.sleep(60 if s == 1 else 0)\n    return r\n"
            f"jobs.ShardWorker.run_shard = held\n"
            f"jobs.run_job({faces!r}, 'expression', {MODEL!r}, {METHODS!r}, {str(out)!r}, cls='happy', "
            f"shard_size=3, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    first = out / f"shard-00000.{jobs.table_format()}"
    t0 = time.monotonic()
    while not first.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(["shard-00000.npz", first.name])
    summary = run(faces, out)
    assert summary.shards_skipped == 1 and summary.shards_done == 2 and summary.items == 4
    assert_same_outputs(reference, out)
