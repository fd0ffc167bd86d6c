"""The model zoo: named, pinned, real pretrained face models as PyTorch modules.

``xfr.models.load(name)`` returns a ready ``torch.nn.Module`` in eval mode. Interfaces:

- recognition models (``dlib-resnet``, ``faceres``, ``mobileface``, ``arcface-r50``,
  ``facenet-vggface2``): ``model(chips[N,3,H,W] in [0,1]) -> embeddings [N,D]`` on face chips
  aligned with ``xfr.models.align.align(image, landmarks5, model.template)``; attributes
  ``input_size`` and ``template``.
- classifiers (``mini-xception-fer2013``, ``mini-xception-gender``, ``big-xception-fer2013``,
  ``faceres-gender``): ``model(faces[N,3,H,W] in [0,1]) -> logits [N,K]`` (resizing and the
  model's own normalization happen inside); attribute ``classes``.
- ``mtcnn``: ``model.detect(images[N,3,H,W] in [0,1])`` -> per image boxes, probabilities and
  5 landmarks (see :mod:`xfr.models.detect`).
- ``facemesh``: ``model(crops[N,3,H,W] in [0,1]) -> landmarks [N,468,3]`` in crop pixels.

Weights are read without pickle (h5py, numpy, JSON manifests) from files pinned by sha256 in
``xfr/resources/model_manifest.sha256`` (see :mod:`xfr.assets`).
"""
from __future__ import annotations

from importlib import import_module

import torch

# name -> "module:function"; modules are imported lazily.
REGISTRY = {
    "mtcnn": "xfr.models.detect:load_mtcnn",
    "dlib-resnet": "xfr.models.dlib_resnet:load_dlib_resnet",
    "faceres": "xfr.models.human:load_faceres",
    "faceres-gender": "xfr.models.human:load_faceres_gender",
    "mobileface": "xfr.models.human:load_mobileface",
    "facemesh": "xfr.models.human:load_facemesh",
    "mini-xception-fer2013": "xfr.models.xception:load_fer2013_mini_xception",
    "mini-xception-gender": "xfr.models.xception:load_gender_mini_xception",
    "big-xception-fer2013": "xfr.models.xception:load_fer2013_big_xception",
    "arcface-r50": "xfr.models.external:load_arcface_r50",
    "facenet-vggface2": "xfr.models.external:load_facenet_vggface2",
}


def available() -> list[str]:
    return sorted(REGISTRY)


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the named model (see :data:`REGISTRY`) in eval mode on ``device``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}")
    module, func = REGISTRY[name].split(":")
    model = getattr(import_module(module), func)()
    model.registry_name = name  # what backends.resolve_backend reads for backend="auto"
    return model.eval().to(device)
