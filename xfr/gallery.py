"""What a stage keeps of its explanations for the results site's explorer (``xfr.site``).

A stage adds its explained inputs and maps, grouped into items (an LFW pair, a FER face, a
detection window), and :meth:`Gallery.save` writes two files beside its other outputs:

- ``gallery.npz``: the inputs as HxWx3 uint8 and the maps as float16 [H,W], compressed
  (float16 keeps 3 significant digits, enough to draw a map; the numbers the stage reports were
  computed on the float32 maps);
- ``gallery.json``: the index: collections (a titled set of items) and per item its fields (ground
  truth, decision, scores), its images (with an optional box) and its maps (method, the image it
  explains, colour style, parameters and per-map scores).

The site draws each map over its image in the style the stage names: ``saliency`` (min-max
scaled jet, :func:`xfr.viz.overlay`), ``fixed`` (jet on [0, 1], :func:`xfr.viz.overlay_fixed`,
for S-RISE's jointly normalized maps) or ``signed`` (X-Maps' HLS code on [-1, 1],
:func:`xfr.viz.blend_hls`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .report import _clean

STYLES = ("saliency", "fixed", "signed")
INDEX_FILE, ARRAYS_FILE = "gallery.json", "gallery.npz"


def params_text(kwargs: Mapping[str, Any]) -> str:
    """An explainer's keyword arguments as the explorer shows them: ``n_masks=500 s=8`` (None
    values, i.e. the explainer's defaults, left out)."""
    return " ".join(f"{k}={v}" for k, v in kwargs.items() if v is not None)


def _uint8_image(image) -> np.ndarray:
    from .viz import image_panel

    return image_panel(image)


def _float16_map(smap) -> np.ndarray:
    arr = smap.detach().cpu().float().numpy() if isinstance(smap, Tensor) else np.asarray(smap, np.float32)
    if arr.ndim != 2:
        raise ValueError(f"a gallery map must be [H,W], got shape {arr.shape}")
    return arr.astype(np.float16)


@dataclass
class GalleryItem:
    """One explained thing (a face, a pair, a window): its images and the maps on them."""

    gallery: Gallery
    collection: str
    id: str
    title: str
    fields: dict
    images: list = field(default_factory=list)
    maps: list = field(default_factory=list)

    def image(self, name: str, image, label: str = "", box: Sequence[float] | None = None) -> GalleryItem:
        """Add an input image ([3,H,W] float in [0,1] or HxWx3 uint8) under ``name``; ``box``
        (x1, y1, x2, y2 in its pixels) is drawn on it and on its maps."""
        if any(im["name"] == name for im in self.images):
            raise ValueError(f"item {self.id!r} already has an image {name!r}")
        key = self.gallery._store(_uint8_image(image))
        self.images.append(dict(name=name, label=label or name, key=key,
                                box=None if box is None else [float(v) for v in box]))
        return self

    def map(self, method: str, smap, on: str, style: str = "saliency", params: str = "",
            **scores) -> GalleryItem:
        """Add the map ``smap`` [H,W] of ``method`` explaining image ``on`` of this item, drawn
        in ``style`` (one of :data:`STYLES`), with its parameters and per-map ``scores``."""
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        image = next((im for im in self.images if im["name"] == on), None)
        if image is None:
            raise ValueError(f"item {self.id!r} has no image {on!r}; add it first with .image()")
        arr = _float16_map(smap)
        shape = self.gallery.arrays[image["key"]].shape[:2]
        if arr.shape != shape:
            raise ValueError(f"map of {method} is {arr.shape}, image {on!r} is {shape}")
        key = self.gallery._store(arr)
        self.maps.append(dict(method=method, on=on, key=key, style=style, params=params,
                              scores=_clean(scores)))
        return self


class Gallery:
    """The explorer's inputs of one stage; see the module docstring."""

    def __init__(self, stage: str):
        self.stage = stage
        self.collections: dict[str, dict] = {}
        self.items: list[GalleryItem] = []
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, arr: np.ndarray) -> str:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = arr
        return key

    def collection(self, name: str, title: str, description: str = "",
                   columns: Sequence[str] = ()) -> Gallery:
        """Declare a collection: its title, a sentence on what it holds, and the item fields the
        explorer's table shows as columns (in this order)."""
        self.collections[name] = dict(title=title, description=description, columns=list(columns))
        return self

    def item(self, collection: str, id: str, title: str = "", **fields) -> GalleryItem:
        if collection not in self.collections:
            raise ValueError(f"unknown collection {collection!r}; declare it with .collection() first")
        if any(it.collection == collection and it.id == id for it in self.items):
            raise ValueError(f"collection {collection!r} already has an item {id!r}")
        item = GalleryItem(self, collection, str(id), title or str(id), _clean(fields))
        self.items.append(item)
        return item

    def save(self, out_dir: str | Path) -> Path:
        """Write ``gallery.npz`` and ``gallery.json`` into ``out_dir``; returns the JSON path."""
        out = Path(out_dir)
        np.savez_compressed(out / ARRAYS_FILE, **self.arrays)  # type: ignore[arg-type]
        index = dict(stage=self.stage, collections=self.collections,
                     items=[dict(collection=it.collection, id=it.id, title=it.title, fields=it.fields,
                                 images=it.images, maps=it.maps) for it in self.items])
        path = out / INDEX_FILE
        path.write_text(json.dumps(_clean(index), indent=1) + "\n")
        return path


def load(stage_dir: str | Path) -> tuple[dict, Mapping[str, np.ndarray]]:
    """A stage's saved gallery: (index, arrays) as written by :meth:`Gallery.save`."""
    stage_dir = Path(stage_dir)
    index = json.loads((stage_dir / INDEX_FILE).read_text())
    return index, np.load(stage_dir / ARRAYS_FILE)
