"""Stage mask_data (MinPlus §3.4): VOC -> YOLO conversion, the seeded split, the data set yaml,
clear errors."""
import shutil

import numpy as np
import pytest
import yaml

from tests.experiments.test_masks import _voc, _voc_dataset
from xfr import yolo as Y
from xfr.experiments import mask_data as MD
from xfr.experiments import masks as M


def test_voc_to_yolo_known_answer(tmp_path):
    ann = MD.parse_voc(_voc(tmp_path / "a.xml", "a.jpg", 200, 100, [
        ("with_mask", 20, 10, 60, 50),               # inside
        ("mask_weared_incorrect", 180, -5, 230, 40),  # past the right and top borders: clipped
        ("without_mask", 210, 10, 250, 30),           # entirely outside: dropped
    ]))
    assert (ann.filename, ann.width, ann.height) == ("a.jpg", 200, 100)
    rows = MD.voc_to_yolo(ann)
    assert len(rows) == 2
    np.testing.assert_allclose(rows[0], (0, 40 / 200, 30 / 100, 40 / 200, 40 / 100))
    np.testing.assert_allclose(rows[1], (2, 190 / 200, 20 / 100, 20 / 200, 40 / 100))
    assert MD.format_labels(rows).splitlines()[0] == "0 0.200000 0.300000 0.200000 0.400000"


def test_voc_errors(tmp_path):
    ann = MD.parse_voc(_voc(tmp_path / "a.xml", "a.jpg", 10, 10, [("helmet", 1, 1, 5, 5)]))
    with pytest.raises(ValueError, match="unknown class 'helmet'"):
        MD.voc_to_yolo(ann)
    (tmp_path / "b.xml").write_text("<annotation><filename>b.jpg</filename></annotation>")
    with pytest.raises(ValueError, match="size"):
        MD.parse_voc(tmp_path / "b.xml")
    _voc(tmp_path / "c.xml", "c.jpg", 0, 10, [])
    with pytest.raises(ValueError, match="positive"):
        MD.parse_voc(tmp_path / "c.xml")


def test_split_proportions_and_determinism():
    names = [f"maksssksksss{i}" for i in range(800)]
    a = MD.split_names(names, seed=0)
    assert [len(a[s]) for s in MD.SPLITS] == [700, 68, 32]  # 87.5 / 8.5 / 4 % of 800
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(names)
    assert a == MD.split_names(list(reversed(names)), seed=0)  # input order does not matter
    b = MD.split_names(names, seed=1)
    assert a["test"] != b["test"] and a["val"] != b["val"]
    with pytest.raises(ValueError, match="summing to 1"):
        MD.split_names(names, fractions=(0.8, 0.1, 0.05))
    with pytest.raises(ValueError, match="unique"):
        MD.split_names(["a", "a", "b"])


def test_prepare_dataset_and_yaml(tmp_path):
    src = _voc_dataset(tmp_path / "voc")
    counts = MD.prepare_dataset(tmp_path / "out" / "yolo", src, seed=3)
    root = tmp_path / "out" / "yolo"
    assert counts["images"] == 12
    assert sum(counts[f"{s}_images"] for s in MD.SPLITS) == 12
    assert counts["train_boxes_with_mask"] == counts["train_images"]
    for s in MD.SPLITS:
        imgs = sorted(p.stem for p in (root / "images" / s).glob("*.jpg"))
        labels = sorted(p.stem for p in (root / "labels" / s).glob("*.txt"))
        assert imgs == labels and len(imgs) == counts[f"{s}_images"]
        assert not any(p.is_symlink() for p in (root / "images" / s).iterdir())
    first = sorted((root / "labels" / "train").glob("*.txt"))[0]
    rows = np.loadtxt(first, ndmin=2)
    assert rows.shape == (2, 5) and rows[0, 0] == 0
    np.testing.assert_allclose(rows[0, 1:], (7 / 40, 9 / 32, 10 / 40, 12 / 32), atol=1e-6)
    data = yaml.safe_load((root / "dataset.yaml").read_text())
    assert "path" not in data  # resolved against the yaml's folder: the data set can move
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert data["names"] == {0: "with_mask", 1: "without_mask", 2: "mask_weared_incorrect"}
    assert MD.prepare_dataset(tmp_path / "again", src, seed=3) == counts  # deterministic


def test_dataset_yaml_resolves_where_the_folder_is(tmp_path):
    Y.offline_env(tmp_path / "cfg")
    from ultralytics.data.utils import check_det_dataset

    MD.prepare_dataset(tmp_path / "a" / "yolo", _voc_dataset(tmp_path / "voc"), seed=0)
    shutil.move(str(tmp_path / "a" / "yolo"), str(tmp_path / "moved"))  # "cloned elsewhere"
    data = check_det_dataset(str(tmp_path / "moved" / "dataset.yaml"), autodownload=False)
    assert data["nc"] == 3
    assert data["val"] == str((tmp_path / "moved" / "images" / "val").resolve())


def test_prepare_limit_and_errors(tmp_path):
    src = _voc_dataset(tmp_path / "voc")
    counts = MD.prepare_dataset(tmp_path / "small", src, limit=5)
    assert counts["images"] == 5 and min(counts[f"{s}_images"] for s in MD.SPLITS) >= 1
    with pytest.raises(FileNotFoundError, match="python -m xfr.data"):
        MD.prepare_dataset(tmp_path / "x", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="limit"):
        MD.prepare_dataset(tmp_path / "x", src, limit=2)
    (src / "images" / "img00.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="img00.jpg"):
        MD.prepare_dataset(tmp_path / "x", src)
    with pytest.raises(FileNotFoundError, match="mask_data"):
        M.dataset_root(tmp_path / "no_results")
    with pytest.raises(FileNotFoundError, match="run the data stage first"):
        Y.run_train({"epochs": 1}, tmp_path / "no_results")
