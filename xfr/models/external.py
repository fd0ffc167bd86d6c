"""Recognition models that cannot be fetched here but that a user may have cached.

- ``arcface-r50``: insightface ``buffalo_l`` ArcFace R50 (``w600k_r50.onnx``), run with
  onnxruntime: a black box (no gradients). Its weights live at
  ``$INSIGHTFACE_HOME/models/buffalo_l/w600k_r50.onnx`` (default ``~/.insightface``).
- ``facenet-vggface2``: facenet-pytorch ``InceptionResnetV1`` trained on VGGFace2, state dict at
  ``$TORCH_HOME/checkpoints/20180402-114759-vggface2.pt`` (default ``~/.cache/torch``), loaded
  with ``torch.load(weights_only=True)`` (no arbitrary pickle code runs).

Their sha256 is not pinned: no offline copy exists to pin it from, so the files are checked for
structure instead (input/output shapes, state-dict keys). Neither model is ever downloaded by
xfr: a missing file raises :class:`xfr.assets.AssetError` naming the exact path and how to get it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..assets import AssetError


def arcface_path() -> Path:
    home = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")).expanduser()
    return home / "models" / "buffalo_l" / "w600k_r50.onnx"


def facenet_vggface2_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser()
    return torch_home / "checkpoints" / "20180402-114759-vggface2.pt"


class OnnxArcFace(nn.Module):
    """ArcFace R50 via onnxruntime: chips [N,3,112,112] in [0,1] -> [N,512]. Black box only."""

    input_size = 112
    template = "arcface112"

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [3, 112, 112]:
            raise AssetError(f"{path}: expected an ArcFace model with input [N,3,112,112], got {inp.shape}")
        self.input_name = inp.name

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.shape[-2:] != (112, 112):
            chips = F.interpolate(chips, size=(112, 112), mode="bilinear", align_corners=False)
        x = (chips * 255.0 - 127.5) / 127.5  # insightface: (img - 127.5) / 127.5, RGB
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype("float32")})[0]
        return torch.from_numpy(out)


def load_arcface_r50() -> nn.Module:
    path = arcface_path()
    if not path.is_file():
        raise AssetError(
            f"ArcFace R50 (insightface buffalo_l) not found at {path}. It cannot be downloaded "
            "here; on a machine with internet run `python -c \"from insightface.app import "
            "FaceAnalysis; FaceAnalysis(name='buffalo_l')\"` (it unpacks buffalo_l.zip into "
            "~/.insightface/models/buffalo_l/) and copy w600k_r50.onnx to that path, or set "
            "INSIGHTFACE_HOME to the folder holding models/buffalo_l/."
        )
    return OnnxArcFace(path)


class FacenetEmbedder(nn.Module):
    """facenet-pytorch InceptionResnetV1 (VGGFace2): chips [N,3,160,160] in [0,1] -> [N,512]."""

    input_size = 160
    template = "arcface112"  # facenet-pytorch uses MTCNN crops; arcface-style 5-point is close

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.shape[-2:] != (160, 160):
            chips = F.interpolate(chips, size=(160, 160), mode="bilinear", align_corners=False)
        return self.net((chips * 255.0 - 127.5) / 128.0)  # facenet-pytorch fixed_image_standardization


def load_facenet_vggface2() -> nn.Module:
    from facenet_pytorch import InceptionResnetV1

    path = facenet_vggface2_path()
    if not path.is_file():
        raise AssetError(
            f"facenet VGGFace2 weights not found at {path}. They cannot be downloaded here; on a "
            "machine with internet run `python -c \"from facenet_pytorch import InceptionResnetV1; "
            "InceptionResnetV1(pretrained='vggface2')\"` and copy "
            "checkpoints/20180402-114759-vggface2.pt to that path (or set TORCH_HOME)."
        )
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing:
        raise AssetError(f"{path} is not an InceptionResnetV1 state dict (missing {missing[:3]}...)")
    return FacenetEmbedder(net)
