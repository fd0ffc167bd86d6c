"""Masked-face detection (MinPlus §3.4): VOC -> YOLO conversion, the seeded split, the data set
yaml, the pickle-free weights of the YOLO detector, the windows explained, and clear errors."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from xfr import yolo as Y
from xfr.experiments import mask_data as MD
from xfr.experiments import masks as M


def _voc(path, filename, width, height, objects):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
                    f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>")
    return path


def _voc_dataset(root, n=12, size=(40, 32)):
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"img{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / name)
        _voc(root / "annotations" / f"img{i:02d}.xml", name, size[0], size[1],
             [("with_mask", 2, 3, 12, 15), ("without_mask" if i % 2 else "mask_weared_incorrect", 20, 5, 30, 20)])
    return root


# ----------------------------------------------------------------------------- VOC -> YOLO


# ----------------------------------------------------------------------------- split


# ----------------------------------------------------------------------------- data set


# ----------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    Y.offline_env(tmp_path_factory.mktemp("cfg"))
    torch.manual_seed(0)
    return Y._build("yolov5n.yaml", list(MD.CLASSES), imgsz=64)


def test_weights_round_trip_without_pickle(tiny_detector, tmp_path):
    model = tiny_detector
    with torch.no_grad():  # make the random detector's scores non-trivial
        for p in model.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.model.eval()
    Y.save_weights(model, tmp_path / "w", "yolov5n.yaml", 64)
    with np.load(tmp_path / "w" / "detector.npz", allow_pickle=False) as arrays:
        assert all(arrays[k].dtype != object for k in arrays.files)
    loaded = Y.load_detector(tmp_path / "w")
    assert loaded.meta["names"] == {"0": "with_mask", "1": "without_mask", "2": "mask_weared_incorrect"}
    assert dict(loaded.model.names) == {0: "with_mask", 1: "without_mask", 2: "mask_weared_incorrect"}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = model.model(x), loaded.model(x)
    a, b = (a[0] if isinstance(a, (tuple, list)) else a), (b[0] if isinstance(b, (tuple, list)) else b)
    assert torch.equal(a, b)
    da = M.detections_at(model, 64, conf=0.0)(x)
    db = M.detections_at(loaded, 64, conf=0.0)(x)
    for (ba, sa, ca), (bb, sb, cb) in zip(da, db):
        assert torch.equal(ba, bb) and torch.equal(sa, sb) and torch.equal(ca, cb)


def test_predicting_keeps_the_torch_thread_count(tiny_detector):
    # ultralytics' select_device() would set it to cores - 1 for the rest of the process (1 on a
    # 2-core machine: every model after the first YOLO prediction then ran on one core)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tiny_detector([np.zeros((40, 48, 3), dtype=np.uint8)], verbose=False, imgsz=64)
        assert torch.get_num_threads() == 2
        fresh = Y._build("yolov5n.yaml", list(MD.CLASSES), imgsz=64)  # its predictor is not set up yet
        torch.set_num_threads(3)  # as if ultralytics had not been told: the adapter restores the count
        import ultralytics.utils.torch_utils as yolo_torch_utils
        yolo_torch_utils.NUM_THREADS = 1
        M.detections_at(fresh, 64)(torch.rand(1, 3, 40, 48))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
        Y.keep_torch_threads()


def test_load_detector_errors(tiny_detector, tmp_path):
    with pytest.raises(FileNotFoundError, match="mask_train"):
        Y.load_detector(tmp_path / "missing")
    Y.save_weights(tiny_detector, tmp_path / "w", "yolov5n.yaml", 64)
    meta = yaml.safe_load((tmp_path / "w" / "detector.json").read_text())
    meta["model"] = "yolov5s.yaml"  # weights of another size
    (tmp_path / "w" / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="yolov5s.yaml"):
        Y.load_detector(tmp_path / "w")


# ----------------------------------------------------------------------------- windows, table
def test_mask_window_maps_the_box():
    image = torch.rand(3, 100, 120)
    calls = []

    def detect(images):  # one detection: the mapped box, class 0, score 0.9
        calls.append(tuple(images.shape))
        return [(torch.tensor([[15.0, 15.0, 35.0, 35.0]]), torch.tensor([0.9]), torch.tensor([0]))]

    fw = M.mask_window("x#with_mask", image, torch.tensor([40.0, 40.0, 60.0, 60.0]), 0, detect,
                       context=2.5, window_size=50, source="ground truth")
    assert calls == [(1, 3, 50, 50)]
    assert fw.rect == (25, 25, 75, 75) and fw.score == pytest.approx(0.9) and fw.source == "detection"
    assert torch.equal(fw.box, torch.tensor([15.0, 15.0, 35.0, 35.0]))
    assert torch.allclose(fw.window, image[:, 25:75, 25:75])
    assert fw.box_fraction == pytest.approx(0.16)
    assert M.mask_window("x", image, torch.tensor([40.0, 40.0, 60.0, 60.0]), 1, detect,
                         context=2.5, window_size=50) is None  # no detection of class 1
    fb = M.mask_window("x#mask_weared_incorrect", image, torch.tensor([40.0, 40.0, 60.0, 60.0]), 0, detect,
                       context=2.5, window_size=50, min_iou=1.01, fallback_iou=0.3, source="ground truth")
    assert fb.source == "ground truth" and torch.equal(fb.box, torch.tensor([15.0, 15.0, 35.0, 35.0]))


def test_ground_truth_reads_labels(tmp_path):
    (tmp_path / "images" / "test").mkdir(parents=True)
    (tmp_path / "labels" / "test").mkdir(parents=True)
    (tmp_path / "labels" / "test" / "a.txt").write_text("2 0.5 0.25 0.2 0.1\n")
    boxes, classes = M.ground_truth(tmp_path / "images" / "test" / "a.jpg", (100, 200))
    assert torch.allclose(boxes, torch.tensor([[80.0, 20.0, 120.0, 30.0]])) and classes.tolist() == [2]
    boxes, classes = M.ground_truth(tmp_path / "images" / "test" / "none.jpg", (100, 200))
    assert boxes.shape == (0, 4) and classes.shape == (0,)


def test_method_ranking_and_paper_constants():
    assert M.method_ranking({"a": 0.2, "b": 0.9, "c": 0.5}) == ["b", "c", "a"]
    assert M.method_ranking(M.PAPER_TABLE1_MEAN) == ["MinPlus", "RISEgauss", "RISE", "LIME-map"]
