"""Face detection with MTCNN (Zhang et al. 2016), the detector and aligner of the pipelines.

:func:`load_mtcnn` wraps ``facenet_pytorch.MTCNN`` (``facenet-pytorch==2.5.3`` ships the real
P-Net/R-Net/O-Net weights) as an ``nn.Module`` whose :meth:`MTCNNDetector.detect` takes images in
the suite's convention (float RGB [N,3,H,W] in [0,1]) and returns one :class:`Detections` per
image: boxes, probabilities and the five landmarks (left eye, right eye, nose, left and right
mouth corner, in image pixels, as MTCNN orders them).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Detections:
    """The faces found in one image (K of them, K may be 0).

    ``boxes`` [K,4] (x1, y1, x2, y2) in pixels, ``probs`` [K] face probabilities,
    ``landmarks`` [K,5,2] (x, y) pixels in the order of :data:`LANDMARK_NAMES`.
    """

    boxes: Tensor
    probs: Tensor
    landmarks: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))

    def select(self, index: int | Tensor | Sequence[int]) -> Detections:
        """The detections at ``index`` (an int keeps a leading dimension of 1)."""
        if isinstance(index, int):
            index = [index]
        return Detections(self.boxes[index], self.probs[index], self.landmarks[index])

    @property
    def areas(self) -> Tensor:
        return (self.boxes[:, 2] - self.boxes[:, 0]).clamp(min=0) * (
            self.boxes[:, 3] - self.boxes[:, 1]
        ).clamp(min=0)


def largest_face(det: Detections) -> int | None:
    """Index of the face with the largest box area, or None when there is no face."""
    if len(det) == 0:
        return None
    return int(torch.argmax(det.areas))


def best_face(det: Detections) -> int | None:
    """Index of the most probable face (ties: the larger box), or None when there is no face."""
    if len(det) == 0:
        return None
    key = det.probs.double() * 1e6 + det.areas.double() / (det.areas.double().max() + 1)
    return int(torch.argmax(key))


def _as_hwc255(image: Tensor) -> Tensor:
    """[3,H,W] or [1,H,W] in [0,1] -> [H,W,3] float in 0..255 (what facenet-pytorch expects)."""
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a torch.Tensor image, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"expected an image [3,H,W] (or [1,H,W], [4,H,W]), got {tuple(image.shape)}")
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = image[:3]
    return (image.clamp(0, 1) * 255.0).permute(1, 2, 0)


class MTCNNDetector(nn.Module):
    """MTCNN face detector (facenet-pytorch weights) on images float RGB in [0,1].

    ``min_face_size``, ``thresholds`` (P/R/O-Net) and ``factor`` (pyramid scale step) are the
    facenet-pytorch defaults. The module has no trainable use; it holds the three nets so that
    ``.to(device)`` moves them.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ):
        super().__init__()
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(
            keep_all=True, device="cpu", min_face_size=min_face_size,
            thresholds=list(thresholds), factor=factor, post_process=False,
        )
        self.min_face_size = min_face_size
        self.thresholds = list(thresholds)
        self.factor = factor
        # the zoo's MTCNN whatever its pyramid settings: backend="auto" takes its measured path
        # (xfr.models.backends.AUTO) as for ``xfr.models.load("mtcnn")``
        self.registry_name = "mtcnn"

    @property
    def device(self) -> torch.device:
        return next(self.mtcnn.pnet.parameters()).device

    def _detect_batch(self, hwc: Tensor) -> list[Detections]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        m = self.mtcnn
        if min(hwc.shape[1:3]) < self.min_face_size:  # no pyramid level fits: nothing to find
            return [Detections.empty() for _ in range(hwc.shape[0])]
        with torch.no_grad():
            batch_boxes, batch_points = detect_face(
                hwc.to(self.device), self.min_face_size, m.pnet, m.rnet, m.onet,
                self.thresholds, self.factor, self.device,
            )
        out = []
        for i in range(hwc.shape[0]):
            boxes = np.asarray(batch_boxes[i], dtype=np.float32).reshape(-1, 5)
            points = np.asarray(batch_points[i], dtype=np.float32).reshape(-1, 5, 2)
            if boxes.shape[0] == 0:
                out.append(Detections.empty())
                continue
            order = np.argsort(-boxes[:, 4], kind="stable")  # most probable first
            out.append(Detections(
                torch.from_numpy(boxes[order, :4].copy()),
                torch.from_numpy(boxes[order, 4].copy()),
                torch.from_numpy(points[order].copy()),
            ))
        return out

    def detect(self, images: Tensor | Sequence[Tensor], batch_size: int = 16) -> list[Detections]:
        """Detect faces in ``images`` ([N,3,H,W] or [3,H,W] float in [0,1], or a list of [C,H,W]
        images of any sizes; 1-channel and RGBA images are accepted). Images of the same size
        go through MTCNN together, ``batch_size`` at a time. Returns one :class:`Detections` per
        image, faces sorted by decreasing probability."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(images, Tensor):
            if images.dim() == 3:
                images = [images]
            elif images.dim() == 4:
                images = list(images)
            else:
                raise ValueError(f"expected images [N,3,H,W] or [3,H,W], got {tuple(images.shape)}")
        hwcs = [_as_hwc255(img) for img in images]
        results: list[Detections | None] = [None] * len(hwcs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, h in enumerate(hwcs):
            groups.setdefault(tuple(h.shape[:2]), []).append(i)
        for same_size in groups.values():
            for start in range(0, len(same_size), batch_size):
                idx = same_size[start:start + batch_size]
                batch = torch.stack([hwcs[i] for i in idx])
                for i, det in zip(idx, self._detect_batch(batch)):
                    results[i] = det
        return results  # type: ignore[return-value]

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[Detections]:
        return self.detect(images)

    def accelerated_copy(self, backend: str) -> nn.Module:
        """A copy whose P-, R- and O-Net run on ``backend`` (:mod:`xfr.models.backends`; P-Net
        with free image size, one export for every pyramid level); the pyramid, NMS and box
        regression stay in facenet-pytorch."""
        from .backends import ExportedNet, shallow_copy

        fast = shallow_copy(self)
        m = shallow_copy(self.mtcnn)
        m.pnet = ExportedNet(self.mtcnn.pnet, backend, dynamic=(0, 2, 3), name="mtcnn-pnet")
        m.rnet = ExportedNet(self.mtcnn.rnet, backend, name="mtcnn-rnet")
        m.onet = ExportedNet(self.mtcnn.onet, backend, name="mtcnn-onet")
        fast.mtcnn = m
        fast.__dict__["backend"] = backend
        return fast


def load_mtcnn() -> MTCNNDetector:
    """The MTCNN detector (facenet-pytorch 2.5.3 weights, CPU, all faces kept), in eval mode."""
    return MTCNNDetector().eval()
