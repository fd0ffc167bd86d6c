"""The data sets of the experiments: assembled into ``data/`` from the mirror, and thin listings.

``python -m xfr.data`` copies every pinned file (``xfr/resources/data_manifest.sha256``) from the
mirror (``$XFR_MIRROR`` or ``../shared``) into ``data/``, checking each sha256, so that ``data.dvc``
(which tracks ``data/``) matches. Files already present with the right hash are left alone.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .assets import REPO_ROOT, AssetError, data_manifest, mirror_dirs, sha256_file
from .io import load_image, to_tensor

DATA_DIR = REPO_ROOT / "data"

# Where each data set comes from, for users without the mirror.
DATA_ORIGINS = {
    "lfw_gray": "LFW (Huang et al. 2007), 350x350 grayscale crops from github muxspace/"
    "facial_expressions; pairs from davidsandberg/facenet (data/pairs.txt)",
    "lfw_rgb_samples": "LFW, http://vis-www.cs.umass.edu/lfw/ (Anthony_Hopkins_0001/0002.jpg)",
    "fer2013_privatetest": "FER-2013 PrivateTest (Kaggle ICML 2013 challenge), one folder per class",
    "face_mask_detection": "Kaggle 'Face Mask Detection' (andrewmvd), CC0, images/ + annotations/",
    "utkface_balanced": "UTKFace aligned crops (github bagashvilit/facial_recognition_bias)",
    "celeba_subset": "CelebA aligned 000001-001000 and list_attr_celeba.txt",
    "wild_photos": "github Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB (imgs/)",
    "masked_faces_wild": "Real-World Masked Face Dataset (github X-zhangyang/"
    "Real-World-Masked-Face-Dataset)",
}


def datasets() -> list[str]:
    return sorted({rel.split("/", 1)[0] for rel in data_manifest()})


def _find_source(rel: str) -> Path | None:
    for root in mirror_dirs():
        cand = root / "data" / rel
        if cand.is_file():
            return cand
    return None


def assemble(dest: Path = DATA_DIR, names: list[str] | None = None, quiet: bool = False) -> int:
    """Copy the pinned files of the data sets ``names`` (default: all) into ``dest``.

    Returns the number of files copied. Raises :class:`AssetError` naming the missing data sets
    and their origins when the mirror lacks them, and on any hash mismatch; nothing half-written
    is left behind (each file is copied to a temporary name, checked, then renamed).
    """
    table = data_manifest()
    wanted = set(names or datasets())
    unknown = wanted - set(datasets())
    if unknown:
        raise ValueError(f"unknown data sets {sorted(unknown)}; known: {datasets()}")
    todo = {rel: h for rel, h in table.items() if rel.split("/", 1)[0] in wanted}
    copied = 0
    missing: dict[str, int] = {}
    for rel, expected in sorted(todo.items()):
        target = dest / rel
        if target.is_file() and sha256_file(target) == expected:
            continue
        src = _find_source(rel)
        if src is None:
            missing[rel.split("/", 1)[0]] = missing.get(rel.split("/", 1)[0], 0) + 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(src, tmp)
        got = sha256_file(tmp)
        if got != expected:
            tmp.unlink()
            raise AssetError(f"{src} has sha256 {got}, expected {expected} (corrupt mirror copy)")
        tmp.replace(target)
        copied += 1
    if missing:
        lines = [f"  {name}: {n} files missing; origin: {DATA_ORIGINS.get(name, '?')}"
                 for name, n in sorted(missing.items())]
        raise AssetError(
            "data files not found in any mirror (looked in: "
            + (", ".join(str(r / "data") for r in mirror_dirs()) or "no mirror found")
            + ").\n" + "\n".join(lines)
            + "\nSet XFR_MIRROR to a folder whose data/<name>/ holds your own copy laid out as in "
            "the pinned list xfr/resources/data_manifest.sha256, then rerun `python -m xfr.data`."
        )
    if not quiet:
        print(f"data/: {len(todo)} pinned files checked, {copied} copied into {dest}")
    return copied


# ----------------------------------------------------------------------------- listings
@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


def lfw_pairs(root: Path = DATA_DIR) -> list[Pair]:
    """The 553 available LFW View-2 fold-1 pairs of ``lfw_gray`` (272 same, 281 different)."""
    df = pd.read_csv(root / "lfw_gray" / "pairs_fold1_available.csv")
    img = root / "lfw_gray" / "images"
    return [Pair(img / a, img / b, bool(s)) for a, b, s in df.itertuples(index=False)]


FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fer2013(root: Path = DATA_DIR) -> pd.DataFrame:
    """FER-2013 PrivateTest: columns ``path``, ``label`` (name), ``y`` (index in FER_CLASSES)."""
    rows = [(p, p.parent.name) for p in sorted((root / "fer2013_privatetest").glob("*/*"))
            if p.suffix.lower() in {".jpg", ".png", ".jpeg"}]
    df = pd.DataFrame(rows, columns=["path", "label"])
    df["y"] = df["label"].map(FER_CLASSES.index)
    return df


def utkface(root: Path = DATA_DIR) -> pd.DataFrame:
    """UTKFace balanced: columns ``path``, ``age``, ``gender`` (0 male, 1 female), ``race`` (0..4)."""
    rows = []
    for p in sorted((root / "utkface_balanced").rglob("*.jpg")):
        parts = p.name.split("_")
        rows.append((p, int(parts[0]), int(parts[1]), int(parts[2])))
    return pd.DataFrame(rows, columns=["path", "age", "gender", "race"])


UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")


def celeba(root: Path = DATA_DIR) -> pd.DataFrame:
    """CelebA subset with its 40 attributes as booleans, plus ``path``."""
    base = root / "celeba_subset"
    lines = (base / "list_attr_celeba_000001-001000.txt").read_text().splitlines()
    header = lines[1].split()
    rows = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(header) + 1:
            rows.append([base / "celebA" / parts[0]] + [v == "1" for v in parts[1:]])
    df = pd.DataFrame(rows, columns=["path"] + header)
    return df[df["path"].map(Path.is_file)].reset_index(drop=True)


def sample_rows(table: pd.DataFrame, n: int | None, seed: int = 0,
                stratify: Sequence[str] | None = None) -> pd.DataFrame:
    """``n`` random rows of ``table`` (all when n is None or larger), in equal shares of the
    groups of the ``stratify`` columns (as equal as the groups allow), reproducible by ``seed``."""
    if n is None or n >= len(table):
        return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not stratify:
        return table.sample(n=int(n), random_state=seed).reset_index(drop=True)
    groups = [g.sample(frac=1.0, random_state=seed) for _, g in table.groupby(list(stratify))]
    picked: list[pd.Series] = []
    k = 0
    while len(picked) < n:  # round robin over the shuffled groups
        added = False
        for g in groups:
            if k < len(g) and len(picked) < n:
                picked.append(g.iloc[k])
                added = True
        if not added:
            break
        k += 1
    out = pd.DataFrame(picked)
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def sample_pairs(pairs, n: int | None, seed: int = 0) -> list:
    """``n`` LFW pairs (:func:`xfr.data.lfw_pairs`), half genuine and half impostor, random."""
    rng = np.random.default_rng(seed)
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    if n is None:
        n = len(pairs)
    n_same = min(len(same), (int(n) + 1) // 2)
    n_diff = min(len(diff), int(n) - n_same)
    pick = [same[i] for i in rng.permutation(len(same))[:n_same]] + \
           [diff[i] for i in rng.permutation(len(diff))[:n_diff]]
    return [pick[i] for i in rng.permutation(len(pick))]


# ----------------------------------------------------------------------------- study tables
# Face tables of the make-up bias study (CMS paper §5.2, :mod:`xfr.experiments.bias`): CelebA and
# UTKFace listings with gender labels, sampled per group, and images loaded as one batch.


def _require(df: pd.DataFrame, cols: Sequence[str], name: str = "frame") -> None:
    """Raises ValueError unless ``df`` is a DataFrame with the columns ``cols``."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(df.columns)}")


def sample_per_group(df: pd.DataFrame, by: Sequence[str], per_group: int | None, seed: int = 0
                     ) -> pd.DataFrame:
    """``per_group`` rows (or all of a smaller group) of each group of ``by``, seeded, in the
    frame's order; None keeps every row."""
    by = [by] if isinstance(by, str) else list(by)
    _require(df, by)
    if per_group is None:
        return df.reset_index(drop=True)
    if per_group < 1:
        raise ValueError(f"per-group sample size must be >= 1 (or None for all), got {per_group}")
    parts = [g.sample(min(per_group, len(g)), random_state=seed) for _, g in df.groupby(by, sort=True)]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def celeba_table(n: int | None = None, seed: int = 0, root=None) -> pd.DataFrame:
    """CelebA faces (``xfr.data.celeba()``): ``path``, ``face`` id, ``dataset``, ``gender``
    ('female'/'male' from ``Male``), ``makeup`` (``Heavy_Makeup``) and the 40 attributes.
    ``n``: None for all, else about n faces balanced over gender x make-up (n // 4 per group, or
    all of a smaller group: the 1,000-image subset has only 3 men labelled Heavy_Makeup)."""
    df = celeba(root) if root is not None else celeba()
    if df.empty:
        raise ValueError("no CelebA images found: run `python -m xfr.data` to assemble data/")
    df = df.copy()
    df.insert(1, "face", ["celeba/" + p.stem for p in df["path"]])
    df.insert(2, "dataset", "celeba")
    df.insert(3, "gender", np.where(df["Male"], "male", "female"))
    df.insert(4, "makeup", df["Heavy_Makeup"].astype(bool))
    if n is not None:
        if n < 4:
            raise ValueError(f"n must be >= 4 (one face per gender x make-up group) or None, got {n}")
        df = sample_per_group(df, ["gender", "makeup"], n // 4, seed)
    return df


def utkface_table(per_cell: int | None = None, seed: int = 0, min_age: int = 0, root=None
                  ) -> pd.DataFrame:
    """UTKFace balanced faces: ``path``, ``face``, ``dataset``, ``gender``, ``race`` (name),
    ``age``; faces of ``min_age`` years or older (the balanced set is 43% under 18, 70% of the
    Asian men), then ``per_cell`` faces per gender x race (None: all)."""
    df = utkface(root) if root is not None else utkface()
    if df.empty:
        raise ValueError("no UTKFace images found: run `python -m xfr.data` to assemble data/")
    df = df[df["age"] >= int(min_age)]
    if df.empty:
        raise ValueError(f"no UTKFace face is {min_age} years or older")
    df = sample_per_group(df, ["gender", "race"], per_cell, seed)
    return pd.DataFrame({
        "path": df["path"], "face": ["utkface/" + p.name.split(".")[0] for p in df["path"]],
        "dataset": "utkface", "gender": np.where(df["gender"] == 1, "female", "male"),
        "race": [UTK_RACES[int(r)] for r in df["race"]], "age": df["age"],
    })


def load_batch(paths: Sequence) -> Tensor:
    """Images of equal size as one float tensor [N,3,H,W]."""
    imgs = [load_image(p) for p in paths]
    shapes = {tuple(i.shape) for i in imgs}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes {sorted(shapes)}: score them separately")
    return torch.stack(imgs)


WILD_DIR = DATA_DIR / "wild_photos" / "imgs"


def sample_photo_path(name: str) -> Path | None:
    """Files of the sample photos that registry packages ship: ``grace_hopper`` (matplotlib),
    ``t1`` and ``Tom_Hanks_54745`` (insightface); None when the package (or file) is missing."""
    try:
        if name == "grace_hopper":
            import matplotlib

            p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        elif name in ("t1", "Tom_Hanks_54745"):
            import importlib.util

            spec = importlib.util.find_spec("insightface")
            if spec is None or not spec.submodule_search_locations:
                return None
            base = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
            p = base / ("t1.jpg" if name == "t1" else "Tom_Hanks_54745.png")
        else:
            return None
    except ImportError:
        return None
    return p if p.is_file() else None


def load_photo(name: str, wild_dir: Path = WILD_DIR) -> Tensor:
    """A photo as float RGB [3,H,W]: ``astronaut`` (scikit-image), ``grace_hopper``, ``t1``,
    ``Tom_Hanks_54745`` (package sample photos) or a file name in ``data/wild_photos/imgs``.
    Raises FileNotFoundError naming where it looked."""
    if name == "astronaut":
        from skimage import data

        return to_tensor(data.astronaut())
    p = sample_photo_path(name)
    if p is not None:
        return load_image(p)
    if name in ("grace_hopper", "t1", "Tom_Hanks_54745"):
        raise FileNotFoundError(f"sample photo {name!r} not found: its package (matplotlib / "
                                f"insightface) is not installed or lacks the file")
    path = Path(wild_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"photo {name!r} not found in {wild_dir} (run `python -m xfr.data` "
                                f"to assemble data/)")
    return load_image(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Assemble data/ from the offline mirror")
    ap.add_argument("names", nargs="*", help=f"data sets (default all): {', '.join(datasets())}")
    ap.add_argument("--dest", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    try:
        assemble(args.dest, args.names or None)
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- sampling


if __name__ == "__main__":
    raise SystemExit(main())
