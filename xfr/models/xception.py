"""Arriaga et al. (2017) mini-Xception and big-Xception face classifiers, ported from Keras HDF5.

O. Arriaga, M. Valdenegro-Toro, P. Plöger, "Real-time Convolutional Neural Networks for Emotion
and Gender Classification", arXiv:1710.07557 (ref. [2] of Mery 2022, the expression model of the
MinPlus experiments, §3.2). The networks are rebuilt from each file's own ``model_config`` by
:class:`xfr.models.keras_h5.KerasGraph` (no TensorFlow): two plain 3x3 convolutions, residual
blocks of two depthwise-separable convolutions + 3x3/2 max pooling ('same') added to a strided
1x1 convolution, a final 3x3 convolution with one channel per class and global average pooling.
The file's final softmax is left out, so ``forward`` returns logits.

Preprocessing inside ``forward`` (``faces[N,3,H,W]`` float RGB in [0,1]), as in Arriaga's
``face_classification`` inference code (``cv2.cvtColor(BGR2GRAY)``, ``cv2.resize`` to the model
input, ``preprocess_input``: ``(x/255 - 0.5) * 2``):

1. gray = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma, cv2's ``BGR2GRAY``);
2. resize to ``input_size`` by bilinear interpolation with half-pixel centres and *no*
   antialiasing (``F.interpolate(..., align_corners=False, antialias=False)``), which is what
   ``cv2.resize(..., INTER_LINEAR)`` computes, in float (Arriaga rounds the resized image to
   uint8; we keep floats so gradients reach the input; the difference is at most half a grey
   level, see ``scripts/eval_classifiers.py`` for its effect on accuracy);
3. ``(gray - 0.5) * 2``, i.e. [-1, 1].

Every step is differentiable, so white-box methods (Grad-CAM on :attr:`target_layer`, the final
class-score convolution, as Arriaga's own Grad-CAM uses ``conv2d_7``) work on the same module.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import assets
from .keras_h5 import KerasConv2d, KerasGraph, KerasModel, read_keras_h5

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDER_CLASSES = ("woman", "man")  # Arriaga's get_labels('imdb')
GENDER_OFFSETS = (30, 60)  # Arriaga's (x, y) margins in pixels around a detected face box
BT601_LUMA = (0.299, 0.587, 0.114)


def luma(x: Tensor, weights: Tensor) -> Tensor:
    """sum_c weights[c] * x[:, c] for RGB [N,3,H,W] -> [N,1,H,W], accumulated channel by channel
    (``(x * w).sum(1)`` materializes a full [N,3,H,W] product first: 3x slower on a 224 px batch
    of 64, and the explainers' batches are memory-bound)."""
    w = weights.reshape(3).to(x.dtype)
    out = x[:, 0:1] * w[0]
    out.add_(x[:, 1:2], alpha=float(w[1]))
    return out.add_(x[:, 2:3], alpha=float(w[2]))


class XceptionClassifier(nn.Module):
    """A Keras (mini/big-)Xception classifier: ``forward(faces[N,3,H,W] in [0,1]) -> logits [N,K]``.

    ``softmax(logits)`` equals the Keras model's output. Attributes: ``classes`` (K names),
    ``input_size`` (H, W of the network input), ``net`` (the :class:`KerasGraph`, taking the
    preprocessed [N,C,H,W] in [-1, 1]), ``target_layer`` (last convolution, for Grad-CAM).
    """

    luma: Tensor

    def __init__(self, model: KerasModel, classes: Sequence[str], name: str = ""):
        super().__init__()
        # The supported models declare a fixed input size (no None dimensions).
        h, w, channels = cast("tuple[int, int, int]", model.input_shape)
        self.name = name
        self.input_size = (int(h), int(w))
        self.in_channels = int(channels)
        if self.in_channels not in (1, 3):
            raise ValueError(f"{model.path}: unsupported input channels {channels}")
        out = model.layer(model.outputs[0])
        if out.class_name != "Activation" or out.config.get("activation") != "softmax":
            raise ValueError(f"{model.path}: expected a final softmax Activation, got "
                             f"{out.class_name} {out.config.get('activation')!r}")
        self.net = KerasGraph(model, output=out.inbound[0])
        convs = [n for n in self.net.order if isinstance(self.net.layers[n], KerasConv2d)]
        self.target_layer_name = convs[-1]
        n_out = self.target_layer.out_channels
        if n_out != len(classes):
            raise ValueError(f"{model.path}: {n_out} outputs but {len(classes)} class names")
        self.classes = tuple(classes)
        self.register_buffer("luma", torch.tensor(BT601_LUMA).view(1, 3, 1, 1), persistent=False)

    @property
    def target_layer(self) -> KerasConv2d:
        """The last convolution (class-score maps before global pooling), Grad-CAM's layer."""
        return cast(KerasConv2d, self.net.layers[self.target_layer_name])

    def preprocess(self, faces: Tensor) -> Tensor:
        """RGB [N,3,H,W] (or gray [N,1,H,W]) in [0,1] -> network input [N,C,h,w] in [-1, 1]."""
        if not isinstance(faces, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(faces).__name__}")
        if faces.dim() != 4 or faces.shape[1] not in (1, 3):
            raise ValueError(f"expected faces [N,3,H,W] (or [N,1,H,W]) in [0,1], got "
                             f"{tuple(faces.shape)}")
        x = faces.to(self.luma.dtype)
        if self.in_channels == 1 and x.shape[1] == 3:
            x = luma(x, self.luma)
        elif self.in_channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=False)
        return (x - 0.5) * 2.0

    def forward(self, faces: Tensor) -> Tensor:
        return self.body(self.preprocess(faces))

    def body(self, x: Tensor) -> Tensor:
        """The network on preprocessed faces -> logits (the part another execution path may
        run, :mod:`xfr.models.backends`)."""
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, faces: Tensor) -> Tensor:
        """Class probabilities [N,K] (the Keras model's softmax output)."""
        return torch.softmax(self(faces), dim=1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, classes={self.classes}"


def load_xception(rel: str, classes: Sequence[str], name: str = "") -> XceptionClassifier:
    """Build the classifier from the pinned Keras HDF5 ``models/<rel>`` (see :mod:`xfr.assets`)."""
    model = read_keras_h5(assets.model_file(rel))
    return XceptionClassifier(model, classes, name or rel).eval()


def load_fer2013_mini_xception() -> XceptionClassifier:
    """mini-Xception on FER-2013 (fer2013_mini_XCEPTION.102-0.66): 64x64 gray, 7 expressions."""
    return load_xception("fer/emotion_model.hdf5", FER2013_CLASSES, "mini-xception-fer2013")


def load_gender_mini_xception() -> XceptionClassifier:
    """mini-Xception gender classifier on IMDB faces (gender_mini_XCEPTION.21-0.95): 64x64 gray.

    Trained on IMDB-WIKI face crops; Arriaga's demos feed a detector box widened by
    :data:`GENDER_OFFSETS` (see :func:`crop_with_offsets`).
    """
    return load_xception("oarriaga/gender_mini_XCEPTION.21-0.95.hdf5", GENDER_CLASSES,
                         "mini-xception-gender")


def load_fer2013_big_xception() -> XceptionClassifier:
    """big-Xception on FER-2013 (fer2013_big_XCEPTION.54-0.66): 64x64 gray (per its config)."""
    return load_xception("oarriaga/fer2013_big_XCEPTION.54-0.66.hdf5", FER2013_CLASSES,
                         "big-xception-fer2013")


def offset_box(box: Sequence[float], offsets: Sequence[int], width: int, height: int
               ) -> tuple[int, int, int, int]:
    """Arriaga's ``apply_offsets``: box (x1, y1, x2, y2) widened by (x_off, y_off) pixels per
    side, rounded to integers and clipped to the image; returns (x1, y1, x2, y2)."""
    x_off, y_off = offsets
    x1, y1, x2, y2 = (float(v) for v in box)
    return (max(int(round(x1)) - x_off, 0), max(int(round(y1)) - y_off, 0),
            min(int(round(x2)) + x_off, width), min(int(round(y2)) + y_off, height))


def crop_with_offsets(image: Tensor, box: Sequence[float], offsets: Sequence[int] = GENDER_OFFSETS
                      ) -> Tensor:
    """Crop ``image`` [C,H,W] to ``box`` (x1, y1, x2, y2) widened by ``offsets`` (Arriaga)."""
    x1, y1, x2, y2 = offset_box(box, offsets, image.shape[-1], image.shape[-2])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty crop {(x1, y1, x2, y2)} for box {tuple(box)}")
    return image[..., y1:y2, x1:x2]


def pad_context(faces: Tensor, margin: float = 0.3, mode: str = "replicate") -> Tensor:
    """Pad tight face chips [N,C,H,W] by ``margin`` x size on every side (edge replication).

    The gender mini-Xception was trained on IMDB face crops that include hair and background;
    on tightly aligned chips (UTKFace) it is near chance without extra context (see
    ``scripts/eval_classifiers.py``). Padding the chip restores part of that context.
    """
    if faces.dim() != 4:
        raise ValueError(f"expected faces [N,C,H,W], got {tuple(faces.shape)}")
    ph, pw = int(round(margin * faces.shape[-2])), int(round(margin * faces.shape[-1]))
    return F.pad(faces, (pw, pw, ph, ph), mode=mode)


class ContextPadded(nn.Module):
    """``model(pad_context(faces, margin))``: a classifier trained on loose crops fed a face with
    extra edge-replicated context (:func:`pad_context`). Differentiable."""

    def __init__(self, model: nn.Module, margin: float):
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.model = model
        self.margin = float(margin)
        self.classes = getattr(model, "classes", None)
        if hasattr(model, "registry_name"):  # backend="auto" resolves to the wrapped zoo model's path
            self.registry_name = model.registry_name

    def forward(self, faces: Tensor) -> Tensor:
        return self.model(pad_context(faces, self.margin) if self.margin > 0 else faces)

    def accelerated_copy(self, backend: str) -> nn.Module:
        """The wrapped model on ``backend`` (:func:`xfr.models.backends.accelerated`), the
        padding in PyTorch around it."""
        from .backends import accelerated

        return ContextPadded(accelerated(self.model, backend), self.margin)
