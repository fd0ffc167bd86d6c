"""Stage ``mask_data`` (``python -m xfr.experiments.mask_data``, MinPlus §3.4): the PASCAL VOC XML
of ``data/face_mask_detection`` -> the ultralytics YOLO format under ``<out-root>/mask_data/yolo``
with a fixed seeded train / val / test split in the paper's proportions (87.5 / 8.5 / 4 %,
footnote 7), ``dataset.yaml`` without an absolute path (ultralytics resolves the splits against the
yaml's own folder), and ``<out-root>/mask_data/metrics.json`` (images and boxes per split and
class)."""
from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DATA_DIR

MASK_DIR = DATA_DIR / "face_mask_detection"


CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")


CLASS_LABELS = {"with_mask": "with mask", "without_mask": "without mask",
                "mask_weared_incorrect": "mask worn incorrectly"}


SPLITS = ("train", "val", "test")


DATASET_YAML = "dataset.yaml"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class VocAnnotation:
    """One PASCAL VOC annotation file: image file name, size and (class, x1, y1, x2, y2) boxes."""

    filename: str
    width: int
    height: int
    objects: list[tuple[str, float, float, float, float]]


def parse_voc(xml_path: str | Path) -> VocAnnotation:
    """Read a PASCAL VOC XML file (``filename``, ``size/width|height``, ``object/name`` and
    ``object/bndbox/xmin|ymin|xmax|ymax``). Raises ValueError naming the file when a field is
    missing or the image size is not positive."""
    xml_path = Path(xml_path)
    root = ET.parse(xml_path).getroot()

    def text(node, tag):
        el = node.find(tag)
        if el is None or el.text is None or not el.text.strip():
            raise ValueError(f"{xml_path}: missing <{tag}>")
        return el.text.strip()

    size = root.find("size")
    if size is None:
        raise ValueError(f"{xml_path}: missing <size>")
    width, height = int(float(text(size, "width"))), int(float(text(size, "height")))
    if width <= 0 or height <= 0:
        raise ValueError(f"{xml_path}: image size must be positive, got {width}x{height}")
    objects = []
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{xml_path}: an <object> without <bndbox>")
        objects.append((text(obj, "name"), *(float(text(bb, t)) for t in ("xmin", "ymin", "xmax", "ymax"))))
    return VocAnnotation(text(root, "filename"), width, height, objects)


def voc_to_yolo(ann: VocAnnotation, classes: Sequence[str] = CLASSES) -> list[tuple[int, float, float, float, float]]:
    """YOLO label rows (class id, x_center, y_center, width, height; normalized to [0, 1] by the
    image size) of a VOC annotation. VOC pixel boxes are clipped to the image first (the data set
    has a few boxes reaching past the border); boxes left empty by clipping are dropped. Raises
    ValueError for a class not in ``classes``."""
    rows = []
    for name, x1, y1, x2, y2 in ann.objects:
        if name not in classes:
            raise ValueError(f"{ann.filename}: unknown class {name!r}; known: {list(classes)}")
        x1, x2 = np.clip([x1, x2], 0, ann.width)
        y1, y2 = np.clip([y1, y2], 0, ann.height)
        if x2 <= x1 or y2 <= y1:
            continue
        rows.append((classes.index(name), float((x1 + x2) / 2 / ann.width), float((y1 + y2) / 2 / ann.height),
                     float((x2 - x1) / ann.width), float((y2 - y1) / ann.height)))
    return rows


def format_labels(rows: Sequence[tuple[int, float, float, float, float]]) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)


def split_names(names: Sequence[str], fractions: Sequence[float] = (0.875, 0.085, 0.04),
                seed: int = 0) -> dict[str, list[str]]:
    """A fixed seeded split of ``names`` into train / val / test: the names are sorted, shuffled
    with ``numpy.random.default_rng(seed)``, and cut into round(fraction x n) val and test names
    (train takes the rest). Each split is returned sorted. The paper's proportions (footnote 7)
    are the default."""
    fr = [float(v) for v in fractions]
    if len(fr) != 3 or any(v < 0 for v in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing "
                         f"to 1, got {list(fractions)}")
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    names = sorted(names)
    n = len(names)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_val, n_test = int(round(fr[1] * n)), int(round(fr[2] * n))
    test = [names[i] for i in order[:n_test]]
    val = [names[i] for i in order[n_test:n_test + n_val]]
    train = [names[i] for i in order[n_test + n_val:]]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def dataset_yaml_text(classes: Sequence[str] = CLASSES) -> str:
    """The ultralytics data yaml: no ``path:`` key, so that ultralytics takes the yaml's own
    folder as the data set root and the folder can move (a clone elsewhere)."""
    names = "".join(f"  {i}: {c}\n" for i, c in enumerate(classes))
    return ("# ultralytics data set: paths are relative to this file's folder (no `path:` key)\n"
            "train: images/train\nval: images/val\ntest: images/test\n"
            f"nc: {len(classes)}\nnames:\n{names}")


def prepare_dataset(out_dir: str | Path, source: str | Path = MASK_DIR,
                    fractions: Sequence[float] = (0.875, 0.085, 0.04), seed: int = 0,
                    limit: int | None = None, classes: Sequence[str] = CLASSES) -> dict:
    """Write the YOLO data set under ``out_dir`` (``images/{split}``, ``labels/{split}``,
    ``dataset.yaml``; images copied) from the VOC data set ``source`` (``annotations/*.xml`` and
    ``images/``). ``limit``: keep only the first ``limit`` annotation files (sorted by name) —
    for smoke runs. Returns the counts (images and boxes per split and class)."""
    source, out_dir = Path(source), Path(out_dir)
    ann_dir, img_dir = source / "annotations", source / "images"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise FileNotFoundError(f"face-mask data set not found: expected {ann_dir} and {img_dir} "
                                f"(run `python -m xfr.data` to assemble data/)")
    xmls = sorted(ann_dir.glob("*.xml"), key=lambda p: p.name)
    if limit is not None:
        if int(limit) < 3:
            raise ValueError(f"limit must be >= 3 (one image per split at least), got {limit}")
        xmls = xmls[:int(limit)]
    if not xmls:
        raise FileNotFoundError(f"no *.xml annotations in {ann_dir}")
    anns = {}
    for x in xmls:
        ann = parse_voc(x)
        if not (img_dir / ann.filename).is_file():
            raise FileNotFoundError(f"{x}: image {ann.filename} not found in {img_dir}")
        anns[Path(ann.filename).stem] = ann
    split = split_names(list(anns), fractions, seed)
    if limit is not None:  # tiny smoke sets: every split gets at least one image
        for s in ("val", "test"):
            if not split[s]:
                split[s].append(split["train"].pop())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    counts: dict = {"images": len(anns), "seed": int(seed), "fractions": [float(v) for v in fractions]}
    for s in SPLITS:
        (out_dir / "images" / s).mkdir(parents=True)
        (out_dir / "labels" / s).mkdir(parents=True)
        boxes = np.zeros(len(classes), dtype=int)
        for stem in split[s]:
            ann = anns[stem]
            shutil.copyfile(img_dir / ann.filename, out_dir / "images" / s / ann.filename)
            rows = voc_to_yolo(ann, classes)
            (out_dir / "labels" / s / f"{Path(ann.filename).stem}.txt").write_text(format_labels(rows))
            for r in rows:
                boxes[r[0]] += 1
        counts[f"{s}_images"] = len(split[s])
        counts[f"{s}_boxes"] = int(boxes.sum())
        for c, n in zip(classes, boxes):
            counts[f"{s}_boxes_{c}"] = int(n)
    (out_dir / DATASET_YAML).write_text(dataset_yaml_text(classes))
    return counts


def run_prepare(params: Mapping, out_root: str | Path, source: str | Path = MASK_DIR) -> dict:
    """Stage ``mask_data``: the YOLO data set in ``<out_root>/mask_data/yolo`` and its counts in
    ``<out_root>/mask_data/metrics.json``."""
    from ..report import write_metrics

    out = Path(out_root) / "mask_data"
    counts = prepare_dataset(out / "yolo", source, fractions=params.get("fractions", (0.875, 0.085, 0.04)),
                             seed=int(params.get("seed", 0)), limit=params.get("limit"))
    write_metrics(out, counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    from ..pipeline import module_stage_main

    return module_stage_main("mask_data", run_prepare,
                             "Face-mask data set in the YOLO format (MinPlus §3.4; stage mask_data)", argv)


if __name__ == "__main__":
    sys.exit(main())
