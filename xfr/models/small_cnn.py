"""A small expression CNN trained here, for the data randomization test of Adebayo et al. 2018
(survey §2.5): the same network trained once on the true FER-2013 labels and once on a random
permutation of them; a saliency method that depends on what the model learned gives different
maps for the two (compare them with :func:`xfr.metrics.data_randomization.map_similarity`).

Input convention: that of the zoo's ``mini-xception-fer2013`` (:mod:`xfr.models.xception`):
``forward(faces [N,3,H,W] RGB or [N,1,H,W] grey, in [0,1]) -> logits [N,7]`` in the order of
:data:`xfr.data.FER_CLASSES`; preprocessing = BT.601 luma, bilinear resize to 48 x 48
(half-pixel centres, no antialiasing), ``(grey - 0.5) * 2``. The network is standard torch
layers only (Conv2d / BatchNorm2d / ReLU / MaxPool2d / Linear), so white-box explainers
(Grad-CAM, gradients) and :func:`xfr.metrics.cascading_randomization` work on it.

Training (:func:`train_expression_cnn`) is deterministic for a seed on one machine and thread
count: weights from ``torch.manual_seed(seed)``, one mini-batch order drawn from
``numpy.random.default_rng(seed)``, ``torch.use_deterministic_algorithms`` while training.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import FER_CLASSES

INPUT_SIZE = (48, 48)
LUMA = (0.299, 0.587, 0.114)


class ExpressionCNN(nn.Module):
    """Three conv blocks (conv 3x3 - BN - ReLU - max-pool 2) of ``widths`` channels, 48 -> 6 px,
    then dropout and one Linear layer on the flattened 6 x 6 maps -> 7 logits."""

    def __init__(self, widths: Sequence[int] = (8, 16, 32), n_classes: int = len(FER_CLASSES),
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for w in widths:
            layers += [nn.Conv2d(c, int(w), 3, padding=1, bias=False), nn.BatchNorm2d(int(w)),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c = int(w)
        side = INPUT_SIZE[0] // 2 ** len(widths)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(float(dropout)), nn.Linear(c * side * side, n_classes))
        self.classes = tuple(FER_CLASSES[:n_classes]) if n_classes <= len(FER_CLASSES) else None
        self.input_size = INPUT_SIZE
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    @property
    def target_layer(self) -> nn.Module:
        """The last convolution (Grad-CAM's layer)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1]

    def preprocess(self, faces: Tensor) -> Tensor:
        """RGB [N,3,H,W] or grey [N,1,H,W] in [0,1] -> network input [N,1,48,48] in [-1, 1]."""
        if not isinstance(faces, Tensor) or faces.dim() != 4 or faces.shape[1] not in (1, 3):
            got = tuple(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
            raise ValueError(f"faces must be a Tensor [N,3,H,W] (or [N,1,H,W]) in [0,1], got {got}")
        x = faces.float()
        if x.shape[1] == 3:
            luma = self.luma
            assert isinstance(luma, Tensor)
            x = (x * luma).sum(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != INPUT_SIZE:
            x = F.interpolate(x, size=INPUT_SIZE, mode="bilinear", align_corners=False, antialias=False)
        return (x - 0.5) * 2.0

    def body(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, faces: Tensor) -> Tensor:
        return self.body(self.preprocess(faces))


@dataclass
class TrainHistory:
    """Per epoch: mean training loss; after the last epoch (every epoch with
    ``eval_every_epoch``): training accuracy on the labels trained on and on the true labels
    (eval mode) and held-out accuracy (true labels; NaN without held-out data).
    ``labels``: the labels trained on (a permutation of the true ones with ``shuffle_labels``)."""

    loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    train_accuracy_true: list = field(default_factory=list)  # against the true labels
    held_out_accuracy: list = field(default_factory=list)
    seconds: float = 0.0
    labels: Tensor | None = None
    shuffle_labels: bool = False
    seed: int = 0


def load_fer_images(table: pd.DataFrame) -> tuple[Tensor, Tensor]:
    """FER-2013 faces of ``table`` (:func:`xfr.data.fer2013`: ``path``, ``y``) as (grey images
    [N,1,48,48] in [0,1], labels [N] int64)."""
    from ..io import load_image

    if not {"path", "y"} <= set(table.columns):
        raise ValueError(f"table needs columns path and y (xfr.data.fer2013()), got {list(table.columns)}")
    luma = torch.tensor(LUMA).view(3, 1, 1)
    imgs = []
    for p in table["path"]:
        x = load_image(p)
        imgs.append((x * luma).sum(0, keepdim=True) if x.shape[0] == 3 else x[:1])
    return torch.stack(imgs), torch.tensor(table["y"].to_numpy(), dtype=torch.long)


def stratified_split(labels, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: ``held_out`` of each class (rounded) drawn with ``seed``."""
    y = np.asarray(labels)
    if not 0.0 < float(held_out) < 1.0:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test += list(rng.choice(idx, size=int(round(float(held_out) * len(idx))), replace=False))
    test_idx = np.sort(np.array(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on images [N,C,H,W] in [0,1]."""
    was = model.training
    model.eval()
    pred = torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    model.train(was)
    return float((pred == labels).float().mean())


def train_expression_cnn(images: Tensor, labels: Tensor, epochs: int = 12, seed: int = 0,
                         shuffle_labels: bool = False, batch_size: int = 64, threads: int | None = 2,
                         held_out: tuple[Tensor, Tensor] | None = None, lr: float = 2e-3,
                         widths: Sequence[int] = (8, 16, 32), weight_decay: float = 0.0,
                         eval_every_epoch: bool = False) -> tuple[ExpressionCNN, TrainHistory]:
    """Train :class:`ExpressionCNN` on ``images`` ([N,1 or 3,H,W] in [0,1]) and ``labels`` [N]
    (FER class indices) with Adam, ``epochs`` passes in one seeded mini-batch order per epoch.
    ``shuffle_labels``: train on a random permutation of ``labels`` (seed + 1) — Adebayo et al.'s
    data randomization (class frequencies kept, any image-label relation destroyed).
    ``held_out`` (images, true labels): its accuracy is recorded with the training accuracies,
    after the last epoch (after every epoch with ``eval_every_epoch``, one extra forward pass
    over the data each). ``threads``: torch CPU
    threads while training (restored after; None leaves it). Deterministic for a seed."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a Tensor [N,1,H,W] or [N,3,H,W] in [0,1], got {got}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [N] = [{len(images)}] class indices, got {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(FER_CLASSES)):
        raise ValueError(f"labels must be class indices in [0, {len(FER_CLASSES) - 1}]")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    t0 = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(int(seed))
        model = ExpressionCNN(widths)
        rng = np.random.default_rng(int(seed))
        y = labels.clone()
        if shuffle_labels:
            y = y[torch.from_numpy(np.random.default_rng(int(seed) + 1).permutation(len(y)))]
        x = model.preprocess(images)  # once: [N,1,48,48] in [-1, 1]
        opt = torch.optim.Adam(model.parameters(), lr=float(lr), weight_decay=float(weight_decay))
        hist = TrainHistory(labels=y, shuffle_labels=bool(shuffle_labels), seed=int(seed))
        for epoch in range(int(epochs)):
            model.train()
            order = torch.from_numpy(rng.permutation(len(x)))
            total = 0.0
            for i in range(0, len(x), int(batch_size)):
                b = order[i:i + int(batch_size)]
                loss = F.cross_entropy(model.body(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            hist.loss.append(total / len(x))
            if not (eval_every_epoch or epoch == int(epochs) - 1):
                continue
            model.eval()
            with torch.no_grad():
                pred = torch.cat([model.body(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
            hist.train_accuracy.append(float((pred == y).float().mean()))
            hist.train_accuracy_true.append(float((pred == labels).float().mean()))
            hist.held_out_accuracy.append(accuracy(model, *held_out) if held_out is not None else float("nan"))
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)
    hist.seconds = time.perf_counter() - t0
    return model.eval(), hist


__all__ = ["ExpressionCNN", "TrainHistory", "train_expression_cnn", "load_fer_images", "stratified_split",
           "accuracy", "INPUT_SIZE"]
