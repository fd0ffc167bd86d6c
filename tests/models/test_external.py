"""Cached-only models: a clear error naming the exact path when the user has not got them."""
import pytest

from xfr import models
from xfr.assets import AssetError


def test_arcface_missing_names_path(monkeypatch, tmp_path):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(AssetError) as err:
        models.load("arcface-r50")
    assert str(tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx") in str(err.value)


def test_facenet_missing_names_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(AssetError) as err:
        models.load("facenet-vggface2")
    assert str(tmp_path / "checkpoints" / "20180402-114759-vggface2.pt") in str(err.value)


def test_facenet_loads_a_cached_state_dict_without_pickle(monkeypatch, tmp_path):
    import torch
    from facenet_pytorch import InceptionResnetV1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "checkpoints" / "20180402-114759-vggface2.pt"
    path.parent.mkdir(parents=True)
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), path)
    model = models.load("facenet-vggface2")
    out = model(torch.rand(2, 3, 120, 120))
    assert out.shape == (2, 512)


def test_unknown_model():
    with pytest.raises(KeyError, match="available"):
        models.load("resnet-imaginary")
