"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network of King (2017; dlib 19.3, 99.38% on LFW) as ported to TF.js by face-api.js
(``faceRecognitionNet``), with the face-api weights (``face-api/face_recognition_model*``,
uint8-quantized, dequantized as the manifest says; see :mod:`xfr.models.tfjs_weights`).
Architecture, following face-api's ``FaceRecognitionNet.ts``:

- input 150x150 RGB in 0..255, minus the mean RGB (122.782, 117.001, 104.298), divided by 256;
- conv 7x7/2 (32, valid) + scale + ReLU, max pool 3x3/2 (valid);
- residual blocks (conv 3x3 + scale + ReLU, conv 3x3 + scale, + identity, ReLU): 3 x 32 ch,
  then a down block and 3 x 64, down + 2 x 128, down + 2 x 256, and a final down block (256);
  a down block's first conv has stride 2 (valid); its shortcut is a 2x2/2 average pool,
  zero-padded in channels (and the residual branch zero-padded at the bottom/right when the
  spatial sizes differ, as dlib's ``add_prev`` does);
- global average pool, then a 256x128 linear map (no bias) -> the 128-d descriptor.

Every layer is a standard module (``nn.Conv2d`` in :class:`ConvScale`, one ``nn.ReLU`` per call
site, ``nn.MaxPool2d`` / ``nn.AvgPool2d`` / ``nn.AdaptiveAvgPool2d``, ``nn.Linear``), so captum's
DeepLift / GuidedBackprop, zennit's LRP rules and model randomization see all of them.

"scale" layers are dlib's affine layers (batch norm folded into a per-channel weight and bias);
here they are folded into the preceding convolution. Two faces are the same person when the
euclidean distance of their descriptors is below 0.6 (dlib's threshold).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..assets import AssetError, model_file
from .tfjs_weights import TFJSWeightsError, read_tfjs_weights

MEAN_RGB = (122.782, 117.001, 104.298)
MANIFEST = "face-api/face_recognition_model-weights_manifest.json"
SHARD = "face-api/face_recognition_model.bin"
SAME_PERSON_THRESHOLD = 0.6

# (block name, kind) in forward order; kind "down" halves the resolution.
BLOCKS = (
    ("conv32_1", "res"), ("conv32_2", "res"), ("conv32_3", "res"),
    ("conv64_down", "down"), ("conv64_1", "res"), ("conv64_2", "res"), ("conv64_3", "res"),
    ("conv128_down", "down"), ("conv128_1", "res"), ("conv128_2", "res"),
    ("conv256_down", "down"), ("conv256_1", "res"), ("conv256_2", "res"),
    ("conv256_down_out", "down"),
)


class ConvScale(nn.Module):
    """conv (+bias), then dlib's affine "scale" layer (x * weights + biases), folded into one conv.
    ``stride`` 2 uses 'valid' padding, stride 1 'same' (as face-api)."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int):
        super().__init__()
        self.stride = stride
        self.padding = 0 if stride > 1 else k // 2
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=self.padding, bias=True)

    def load_tfjs(self, w: dict[str, np.ndarray], prefix: str) -> None:
        filters = w[f"{prefix}/conv/filters"]  # [kh, kw, in, out]
        bias = w[f"{prefix}/conv/bias"]
        scale_w, scale_b = w[f"{prefix}/scale/weights"], w[f"{prefix}/scale/biases"]
        kernel = torch.from_numpy(filters.astype(np.float64)).permute(3, 2, 0, 1)
        if tuple(kernel.shape) != tuple(self.conv.weight.shape):
            raise TFJSWeightsError(f"{prefix}: filters {filters.shape} do not fit "
                                   f"{tuple(self.conv.weight.shape)}")
        sw = torch.from_numpy(scale_w.astype(np.float64))
        assert self.conv.bias is not None  # built with bias=True
        with torch.no_grad():
            self.conv.weight.copy_(kernel * sw[:, None, None, None])
            self.conv.bias.copy_(torch.from_numpy(bias.astype(np.float64)) * sw
                                 + torch.from_numpy(scale_b.astype(np.float64)))

    def reset_parameters(self) -> None:
        """Re-initialize the folded convolution (``nn.Conv2d``'s default init), so model
        randomization (:mod:`xfr.metrics.randomization`, Quantus MPRT) reaches this layer."""
        self.conv.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """conv1 + ReLU ``relu1``, conv2, + shortcut, ReLU ``relu2``: each ReLU its own ``nn.ReLU``
    module (captum DeepLift / GuidedBackprop override ``nn.ReLU`` modules per call site)."""

    def __init__(self, in_ch: int, out_ch: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = ConvScale(in_ch, out_ch, 3, 2 if down else 1)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvScale(out_ch, out_ch, 3, 1)
        self.relu2 = nn.ReLU()
        self.shortcut_pool = nn.AvgPool2d(2, 2) if down else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.relu1(self.conv1(x)))
        if not self.down:
            return self.relu2(out + x)
        assert self.shortcut_pool is not None
        short = self.shortcut_pool(x)
        dh, dw = short.shape[2] - out.shape[2], short.shape[3] - out.shape[3]
        if dh or dw:  # zero-pad the residual branch at the bottom/right (dlib add_prev)
            out = F.pad(out, (0, max(dw, 0), 0, max(dh, 0)))
            short = F.pad(short, (0, max(-dw, 0), 0, max(-dh, 0)))
        if short.shape[1] != out.shape[1]:  # channel zero-padding of the shortcut
            short = F.pad(short, (0, 0, 0, 0, 0, out.shape[1] - short.shape[1]))
        return self.relu2(out + short)


class DlibResNet(nn.Module):
    """dlib ResNet-29 face descriptor: ``forward(chips[N,3,H,W] in [0,1]) -> [N,128]``.

    Chips must be aligned like ``dlib.get_face_chip`` (template ``"dlib150"`` of
    :mod:`xfr.models.align`); other sizes are resized to 150x150 inside (differentiably).
    """

    input_size = 150
    template = "dlib150"
    threshold = SAME_PERSON_THRESHOLD
    mean: Tensor

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255.0)
        self.conv32_down = ConvScale(3, 32, 7, 2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, 2)
        blocks, ch = {}, 32
        for name, kind in BLOCKS:
            out_ch = int(name[4:].split("_")[0])
            blocks[name] = ResidualBlock(ch, out_ch, kind == "down")
            ch = out_ch
        self.blocks = nn.ModuleDict(blocks)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, 128, bias=False)

    def load_tfjs(self, w: dict[str, np.ndarray]) -> DlibResNet:
        self.conv32_down.load_tfjs(w, "conv32_down")
        for name, block in self.blocks.items():
            block.conv1.load_tfjs(w, f"{name}/conv1")
            block.conv2.load_tfjs(w, f"{name}/conv2")
        fc = w["fc"]
        if fc.shape != (256, 128):
            raise TFJSWeightsError(f"fc has shape {fc.shape}, expected (256, 128)")
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc.T.astype(np.float32)))
        return self

    def preprocess(self, chips: Tensor) -> Tensor:
        """[N,3,H,W] in [0,1] -> resized to 150x150, (255 x - mean RGB) / 256."""
        if chips.dim() == 3:
            chips = chips[None]
        if chips.dim() != 4 or chips.shape[1] not in (1, 3):
            raise ValueError(f"expected chips [N,3,H,W] in [0,1], got {tuple(chips.shape)}")
        if chips.shape[1] == 1:
            chips = chips.expand(-1, 3, -1, -1)
        if not chips.is_floating_point():  # uint8 chips: 0..255
            chips = chips.to(self.mean.dtype) / 255.0
        chips = chips.to(self.mean.dtype)
        if chips.shape[-2:] != (self.input_size, self.input_size):
            chips = F.interpolate(chips, size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False,
                                  antialias=bool(min(chips.shape[-2:]) > self.input_size))
        return (chips - self.mean) * (255.0 / 256.0)

    def forward(self, chips: Tensor) -> Tensor:
        return self.body(self.preprocess(chips))

    def body(self, x: Tensor) -> Tensor:
        """The network on preprocessed 150x150 chips -> embeddings [N,128] (the part another
        execution path may run, :mod:`xfr.models.backends`)."""
        x = self.relu(self.conv32_down(x))
        x = self.pool(x)
        for block in self.blocks.values():
            x = block(x)
        return self.fc(self.gap(x).flatten(1))


def load_dlib_resnet() -> DlibResNet:
    """The dlib ResNet with the pinned face-api weights, in eval mode (CPU)."""
    manifest, shard = model_file(MANIFEST), model_file(SHARD)
    try:
        weights = read_tfjs_weights(manifest, {"face_recognition_model.bin": shard})
        model = DlibResNet().load_tfjs(weights)
    except (TFJSWeightsError, KeyError) as err:
        raise AssetError(f"cannot load the dlib ResNet weights from {manifest} and {shard}: "
                         f"{err}. Restore the files from the mirror (XFR_MIRROR).") from err
    return model.eval()
