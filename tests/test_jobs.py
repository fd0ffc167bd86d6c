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
            pd.testing.assert_frame_equal(ta.drop(columns="seconds"), tb.drop(columns="seconds"))
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
