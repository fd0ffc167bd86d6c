"""Detection and alignment of face lists: every image detected (MTCNN) and warped onto a
model's template once per run (:func:`align_faces`), the chips kept with their landmarks
(:class:`AlignedFaces`) and resized on demand (:func:`resize_chips`)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class AlignedFaces:
    """Aligned face chips of a list of images, detected and aligned once per run."""

    paths: list[Path]
    chips: Tensor  # [N, 3, S, S] float in [0, 1] on the model's template
    landmarks: Tensor  # [N, 5, 2] MTCNN landmarks in chip pixels (x, y)
    size: int
    missing: list[str] = field(default_factory=list)  # images without a detected face
    seconds: float = 0.0

    def __post_init__(self):
        self.index = {Path(p): i for i, p in enumerate(self.paths)}

    def __contains__(self, path) -> bool:
        return Path(path) in self.index

    def chip(self, path, size: int | None = None) -> Tensor:
        """The chip of ``path`` [3, S, S], resized to ``size`` x ``size`` (antialiased bilinear)."""
        c = self.chips[self.index[Path(path)]]
        return resize_chips(c[None], size)[0] if size and size != self.size else c.clone()

    def chips_at(self, size: int | None = None) -> Tensor:
        return resize_chips(self.chips, size) if size and size != self.size else self.chips

    def landmarks_of(self, path, size: int | None = None) -> np.ndarray:
        """Landmarks [5, 2] of ``path`` in the pixels of a ``size`` chip (pixel centres at ints)."""
        lm = self.landmarks[self.index[Path(path)]].double().numpy()
        if size and size != self.size:
            lm = (lm + 0.5) * size / self.size - 0.5
        return lm


def resize_chips(chips: Tensor, size: int | None) -> Tensor:
    """[N,3,S,S] -> [N,3,size,size] (antialiased bilinear; unchanged when size is None or S)."""
    if size is None or chips.shape[-1] == size:
        return chips
    return F.interpolate(chips, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def align_faces(paths: Sequence[Path], mtcnn, template: str = "dlib150", pad: int = 100,
                detect_scale: float = 0.5, batch: int = 16, progress: bool = False) -> AlignedFaces:
    """MTCNN + 5-point alignment of every image in ``paths``, once.

    The tight 350x350 LFW crops are edge-padded by ``pad`` px (so MTCNN sees the whole head and
    chips reaching past the crop get its edge, as in scripts/eval_human_models.py). MTCNN runs on
    a copy downscaled by ``detect_scale`` (antialiased, padded by ``pad * detect_scale``; faster),
    its landmarks are mapped back, and the chip is warped onto ``template`` from the padded
    full-resolution image. Images without a face are listed in ``missing``; images of the same
    size are detected in batches.
    """
    from ..io import load_image
    from ..models.align import alignment_matrix, get_template, transform_points, warp_affine
    from ..models.detect import largest_face

    if not 0 < detect_scale <= 1:
        raise ValueError(f"detect_scale must be in (0, 1], got {detect_scale}")
    tpl = get_template(template)
    pad_s = int(round(pad * detect_scale))
    t0 = time.perf_counter()
    kept, chips, lms, missing = [], [], [], []
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        full, small = [], []
        for p in chunk:
            img = load_image(p)[None]
            full.append(F.pad(img, (pad,) * 4, mode="replicate")[0])
            if detect_scale != 1:
                img = F.interpolate(img, scale_factor=detect_scale, mode="bilinear",
                                    antialias=True, align_corners=False).clamp(0, 1)
            small.append(F.pad(img, (pad_s,) * 4, mode="replicate")[0])
        for p, img, det in zip(chunk, full, mtcnn.detect(small)):
            k = largest_face(det)
            if k is None:
                missing.append(p.name)
                continue
            # small padded pixel -> original pixel -> full padded pixel (pixel centres at ints)
            lm = (det.landmarks[k].double().numpy() - pad_s + 0.5) / detect_scale - 0.5 + pad
            mat = alignment_matrix(lm, tpl)
            chips.append(warp_affine(img, mat, tpl.size).clamp(0, 1))
            lms.append(torch.from_numpy(transform_points(mat, lm)).float())
            kept.append(p)
        if progress:
            print(f"aligned {min(start + batch, len(paths))}/{len(paths)} images "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return AlignedFaces(kept, torch.stack(chips), torch.stack(lms), tpl.size, missing,
                        time.perf_counter() - t0)
