"""LFW (probe, mate, non-mate) triplets as aligned chips with the probe's FaceMesh regions: the
input of the inpainting game (:func:`xfr.metrics.inpainting.inpainting_triplets`) and of the
item-response curves (:func:`xfr.metrics.item_response.item_response_curves`, genuine pairs =
(mates, probes), region occlusion on the probes' regions). Glue kept out of :mod:`xfr.metrics`
(it reuses :func:`xfr.experiments.srise.lfw_triplets` and :func:`xfr.faces.mesh.prepare_faces`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..metrics.inpainting import REGIONS


@dataclass
class LFWRegionTriplets:
    """Aligned LFW triplets with their FaceMesh regions (:func:`lfw_region_triplets`)."""

    probes: Tensor  # [N,3,S,S] in [0,1], the model template scaled to S
    mates: Tensor
    nonmates: Tensor
    region_masks: dict  # region -> BoolTensor [N,S,S] on the probe
    names: list  # (probe, mate, nonmate) file names
    dropped: dict
    seconds: float


def lfw_region_triplets(pairs: Sequence, detector, n: int, template: str = "dlib150",
                        size: int = 224, regions: Sequence[str] = REGIONS, dilate: int = 3,
                        max_mesh_error: float = 0.25) -> LFWRegionTriplets:
    """``n`` (probe, mate, non-mate) LFW triplets (:func:`xfr.experiments.srise.lfw_triplets`:
    genuine pairs in file order, each with the next impostor image of another identity), prepared
    once with :func:`xfr.faces.mesh.prepare_faces` (MTCNN, 5-point alignment onto ``template``
    scaled to ``size``, FaceMesh in that frame; faces whose mesh disagrees with MTCNN dropped)
    and the probe's regions (:func:`xfr.metrics.inpainting.chip_region_masks`). The chips feed
    a zoo embedder directly (it resizes to its own input)."""
    import time

    from ..faces.mesh import prepare_faces
    from ..metrics.inpainting import chip_region_masks
    from .srise import lfw_triplets

    t0 = time.perf_counter()
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    genuine = [p for p in pairs if p.same][: int(1.5 * n) + 5]
    impostor = [p for p in pairs if not p.same][: int(1.5 * n) + 5]
    paths = sorted({Path(q) for p in genuine + impostor for q in (p.a, p.b)})
    prep = prepare_faces(paths, [-1] * len(paths), "lfw", "align", detector, template=template,
                         size=size, max_mesh_error=max_mesh_error)
    by_name = {f.name: f for f in prep.faces}
    found = {p for p in paths if p.name in by_name}
    trips = lfw_triplets(genuine + impostor, found, n)  # type: ignore[arg-type]  # needs only `in`
    if not trips:
        raise ValueError("no LFW triplet with all three faces prepared")
    faces = [[by_name[Path(q).name] for q in t] for t in trips]
    probes, mates, nonmates = (torch.stack([f[k].image for f in faces]) for k in range(3))
    per = [chip_region_masks(f[0].mesh, (size, size), regions, dilate) for f in faces]
    masks = {r: torch.stack([m[r] for m in per]) for r in regions}
    return LFWRegionTriplets(probes, mates, nonmates, masks,
                              [tuple(Path(q).name for q in t) for t in trips], prep.dropped,
                              time.perf_counter() - t0)


__all__ = ["LFWRegionTriplets", "lfw_region_triplets"]
