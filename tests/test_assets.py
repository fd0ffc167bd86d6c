"""Pinned files: resolution, hash checks and actionable errors (nothing half-written)."""
import shutil
from pathlib import Path

import pytest

import xfr.assets as assets
import xfr.data as data
from xfr.assets import AssetError


def _isolate(monkeypatch, tmp_path, mirror: Path | None):
    monkeypatch.setattr(assets, "mirror_dirs", lambda: [mirror] if mirror else [])
    monkeypatch.setattr(data, "mirror_dirs", lambda: [mirror] if mirror else [])
    monkeypatch.setenv("XFR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XFR_DOWNLOAD", raising=False)
    assets._verified.cache_clear()


def test_model_file_resolves_from_mirror_with_hash():
    path = assets.model_file("fer/emotion_model.hdf5")
    assert path.is_file()
    assert assets.sha256_file(path) == assets.model_manifest()["fer/emotion_model.hdf5"]


def test_missing_model_file_names_path_and_origin(monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path, tmp_path / "empty_mirror")
    with pytest.raises(AssetError) as err:
        assets.model_file("face-api/face_recognition_model.bin")
    msg = str(err.value)
    assert "models/face-api/face_recognition_model.bin" in msg
    assert "XFR_MIRROR" in msg and "jsdelivr" in msg
    assert str(tmp_path / "cache") in msg


def test_corrupt_model_file_is_refused(monkeypatch, tmp_path):
    real = assets.model_file("oarriaga/gender_mini_XCEPTION.21-0.95.hdf5")
    mirror = tmp_path / "mirror"
    bad = mirror / "models" / "oarriaga" / real.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(real.read_bytes()[:1000])
    _isolate(monkeypatch, tmp_path, mirror)
    with pytest.raises(AssetError, match="sha256"):
        assets.model_file("oarriaga/gender_mini_XCEPTION.21-0.95.hdf5")


def test_unknown_model_file():
    with pytest.raises(KeyError, match="unknown model file"):
        assets.model_file("nope.bin")


def test_data_assembly_copies_checks_and_reports_missing(monkeypatch, tmp_path):
    src_root = assets.REPO_ROOT.parent / "shared"
    if not (src_root / "data" / "lfw_rgb_samples").is_dir():
        pytest.skip("no ../shared mirror beside the checkout")
    mirror = tmp_path / "mirror"
    shutil.copytree(src_root / "data" / "lfw_rgb_samples", mirror / "data" / "lfw_rgb_samples")
    _isolate(monkeypatch, tmp_path, mirror)
    dest = tmp_path / "data"
    assert data.assemble(dest, ["lfw_rgb_samples"], quiet=True) == 2
    assert data.assemble(dest, ["lfw_rgb_samples"], quiet=True) == 0  # idempotent
    # a corrupt mirror copy is refused and leaves nothing half-written
    target = dest / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg"
    target.unlink()
    (mirror / "data" / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg").write_bytes(b"garbage")
    with pytest.raises(AssetError, match="sha256"):
        data.assemble(dest, ["lfw_rgb_samples"], quiet=True)
    assert not target.exists() and not list(dest.rglob("*.part"))
    # a data set absent from the mirror: the message names it and its origin
    with pytest.raises(AssetError) as err:
        data.assemble(dest, ["wild_photos"], quiet=True)
    assert "wild_photos" in str(err.value) and "Linzaer" in str(err.value)
    with pytest.raises(ValueError, match="unknown data sets"):
        data.assemble(dest, ["nope"], quiet=True)


def test_listings(data_dir):
    pairs = data.lfw_pairs()
    assert len(pairs) == 553 and sum(p.same for p in pairs) == 272
    assert all(p.a.is_file() and p.b.is_file() for p in pairs)
    fer = data.fer2013()
    assert len(fer) == 2874 and set(fer["label"]) == set(data.FER_CLASSES)
    utk = data.utkface()
    assert len(utk) == 2000 and utk.groupby(["gender", "race"]).size().eq(200).all()
    celeba = data.celeba()
    assert len(celeba) == 1000 and {"Male", "Heavy_Makeup"} <= set(celeba.columns)
