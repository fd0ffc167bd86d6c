"""TF.js weights reader (xfr.models.tfjs_weights) and the dlib ResNet port
(xfr.models.dlib_resnet)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xfr import assets
from xfr.assets import AssetError
from xfr.io import to_uint8
from xfr.models.tfjs_weights import TFJSWeightsError, read_tfjs_weights


# ----------------------------------------------------------------------------- TF.js reader
def _write_tfjs(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A two-shard manifest: a float32 kernel, a uint8-quantized vector, an int32 and a float16."""
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    q = np.array([0, 1, 7, 255], dtype=np.uint8)
    scale, vmin = 0.5, -3.0
    ints = np.array([3, -2], dtype=np.int32)
    half = np.array([0.5, -1.25, 2.0], dtype=np.float16)
    blob = kernel.tobytes() + q.tobytes() + ints.tobytes() + half.tobytes()
    (tmp_path / "m.bin").write_bytes(blob[:50])
    (tmp_path / "m2.bin").write_bytes(blob[50:])
    manifest = [{"paths": ["m.bin", "m2.bin"], "weights": [
        {"name": "k", "shape": [2, 3, 4], "dtype": "float32"},
        {"name": "v", "shape": [4], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": scale, "min": vmin}},
        {"name": "i", "shape": [2], "dtype": "int32"},
        {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
    ]}]
    path = tmp_path / "m-weights_manifest.json"
    path.write_text(json.dumps(manifest))
    expected = {"k": kernel, "v": np.array([-3.0, -2.5, 0.5, 124.5], np.float32), "i": ints,
                "h": half.astype(np.float32)}
    return path, expected


def test_tfjs_reader_known_answer(tmp_path):
    path, expected = _write_tfjs(tmp_path)
    for shards in (None, tmp_path, {"m.bin": tmp_path / "m.bin", "m2.bin": tmp_path / "m2.bin"}):
        got = read_tfjs_weights(path, shards)
        assert sorted(got) == sorted(expected)
        for name, arr in expected.items():
            assert got[name].dtype == arr.dtype
            np.testing.assert_array_equal(got[name], arr)
    # a model.json-style dict with a weightsManifest entry
    got = read_tfjs_weights({"weightsManifest": json.loads(path.read_text())}, tmp_path)
    np.testing.assert_array_equal(got["v"], expected["v"])


def test_tfjs_reader_rejects_truncated_and_malformed(tmp_path):
    path, _ = _write_tfjs(tmp_path)
    (tmp_path / "m2.bin").write_bytes((tmp_path / "m2.bin").read_bytes()[:-3])
    with pytest.raises(TFJSWeightsError, match="truncated"):
        read_tfjs_weights(path)
    with pytest.raises(TFJSWeightsError, match="no path given"):
        read_tfjs_weights(path, {"m.bin": tmp_path / "m.bin"})
    with pytest.raises(TFJSWeightsError, match="not a TF.js weights manifest"):
        read_tfjs_weights([{"weights": []}], tmp_path)


# ----------------------------------------------------------------------------- architecture
def test_dlib_resnet_shapes_and_gradient_random_weights():
    from xfr.models.dlib_resnet import DlibResNet

    torch.manual_seed(0)
    model = DlibResNet().eval()
    shapes = []
    for block in model.blocks.values():
        block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    x = torch.rand(2, 3, 150, 150, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 128)
    # dlib's layout: 150 -> conv/2 72 -> pool/2 35 -> 17 -> 8 -> 4 (3, zero-padded) -> 2 (1, padded)
    assert shapes[0] == (32, 35, 35) and shapes[3] == (64, 17, 17)
    assert shapes[7] == (128, 8, 8) and shapes[10] == (256, 4, 4) and shapes[13] == (256, 2, 2)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # other sizes are resized to 150 inside
    assert model(torch.rand(1, 3, 200, 180)).shape == (1, 128)


# ----------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def dlib_resnet():
    from xfr.models.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet()


@pytest.fixture(scope="module")
def pair_chips(data_dir):
    """Aligned dlib150 chips of the first two same and first two different LFW pairs."""
    from xfr.data import lfw_pairs
    from xfr.models.align import detect_and_align
    from xfr.models.detect import load_mtcnn

    pairs = lfw_pairs(data_dir)
    pick = [p for p in pairs if p.same][:2] + [p for p in pairs if not p.same][:2]
    mtcnn = load_mtcnn()
    chips = [(detect_and_align(p.a, "dlib150", mtcnn=mtcnn),
              detect_and_align(p.b, "dlib150", mtcnn=mtcnn), p.same) for p in pick]
    return chips


@pytest.mark.slow
def test_dlib_resnet_separates_same_and_different_pairs(dlib_resnet, pair_chips):
    a = torch.stack([c[0] for c in pair_chips])
    b = torch.stack([c[1] for c in pair_chips])
    with torch.no_grad():
        dist = (dlib_resnet(a) - dlib_resnet(b)).norm(dim=1)
    same = torch.tensor([c[2] for c in pair_chips])
    assert bool((dist[same] < 0.6).all()), dist
    assert bool((dist[~same] > 0.6).all()), dist
    assert dlib_resnet.input_size == 150 and dlib_resnet.template == "dlib150"


@pytest.mark.slow
def test_dlib_resnet_gradient_reaches_input(dlib_resnet, pair_chips):
    x = pair_chips[0][0][None].clone().requires_grad_(True)
    ref = dlib_resnet(pair_chips[0][1][None]).detach()
    (dlib_resnet(x) - ref).norm().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.slow
def test_dlib_resnet_batch_invariance(dlib_resnet, pair_chips):
    x = torch.stack([c[0] for c in pair_chips])
    with torch.no_grad():
        torch.testing.assert_close(dlib_resnet(x)[1:2], dlib_resnet(x[1:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_dlib_resnet_agrees_with_dlib(dlib_resnet, pair_chips):
    """External check: dlib itself (dlib-bin, face-recognition-models' original weights) on the
    same uint8 chips. The face-api weights are 8-bit quantized, so agreement is not exact."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin (test extra) is not installed")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models (test extra, dlib's original weights) "
                    "is not installed")
    root = Path(spec.submodule_search_locations[0]) / "models"
    facerec = dlib.face_recognition_model_v1(
        str(root / "dlib_face_recognition_resnet_model_v1.dat"))
    chips = [to_uint8(c) for c in (pair_chips[0][0], pair_chips[1][1], pair_chips[2][0])]
    ref = np.stack([np.asarray(facerec.compute_face_descriptor(np.ascontiguousarray(c)))
                    for c in chips])
    with torch.no_grad():
        ours = dlib_resnet(torch.stack([torch.from_numpy(c).permute(2, 0, 1) for c in chips])
                           .float() / 255).double().numpy()
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos
    assert np.linalg.norm(ours - ref, axis=1).max() < 0.1


@pytest.mark.slow
def test_corrupt_weight_file_raises_asset_error(tmp_path, monkeypatch):
    from xfr.models.dlib_resnet import MANIFEST, SHARD, load_dlib_resnet

    good_manifest, good_shard = assets.model_file(MANIFEST), assets.model_file(SHARD)
    mirror = tmp_path / "mirror"
    (mirror / "models" / "face-api").mkdir(parents=True)
    shutil.copyfile(good_manifest, mirror / "models" / MANIFEST)
    (mirror / "models" / SHARD).write_bytes(good_shard.read_bytes()[:100_000])
    monkeypatch.setenv("XFR_MIRROR", str(mirror))
    monkeypatch.setattr(assets, "mirror_dirs", lambda: [mirror])
    with pytest.raises(AssetError, match="face_recognition_model.bin"):
        load_dlib_resnet()
    # a missing shard names the file and where it was looked for
    (mirror / "models" / SHARD).unlink()
    monkeypatch.setenv("XFR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetError, match="not found"):
        load_dlib_resnet()

