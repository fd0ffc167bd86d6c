"""Showing saliency maps: heat-map overlays, the HLS colour blending of X-Maps (Algorithm 2) and a
side-by-side figure helper.

Images are float [3,H,W] in [0,1] (or HxWx3 uint8); maps are [H,W] tensors or arrays. Outputs
are HxWx3 uint8 RGB arrays (write them with PIL or :func:`save_png`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor


def _rgb01(image) -> np.ndarray:
    """[3,H,W] float tensor in [0,1] or HxWx3 uint8/float array -> HxWx3 float64 in [0,1]."""
    if isinstance(image, Tensor):
        img = image.detach().cpu().float()
        if img.dim() == 4 and img.shape[0] == 1:
            img = img[0]
        if img.dim() != 3:
            raise ValueError(f"image must be [C,H,W], got {tuple(img.shape)}")
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        arr = img[:3].permute(1, 2, 0).numpy().astype(np.float64)
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arr = arr[..., :3].astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)
    return np.clip(arr, 0.0, 1.0)


def _map(smap) -> np.ndarray:
    arr = smap.detach().cpu().double().numpy() if isinstance(smap, Tensor) else np.asarray(smap, float)
    if arr.ndim != 2:
        raise ValueError(f"a saliency map must be [H,W], got shape {arr.shape}")
    return arr


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    return (np.clip(rgb01, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def colorize(smap, cmap: str = "jet", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """A map through a matplotlib colormap -> HxWx3 float in [0,1] (min-max scaled by default)."""
    import matplotlib

    arr = _map(smap)
    lo = arr.min() if vmin is None else vmin
    hi = arr.max() if vmax is None else vmax
    scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return matplotlib.colormaps[cmap](np.clip(scaled, 0, 1))[..., :3]


def overlay(image, smap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The min-max scaled map as a heat map blended over the face: alpha * heat + (1 - alpha) *
    image (the MinPlus reference's ``cv2.addWeighted(jet(D), alpha, X, 1 - alpha, 0)``)."""
    img = _rgb01(image)
    heat = colorize(smap, cmap)
    if heat.shape[:2] != img.shape[:2]:
        raise ValueError(f"map {heat.shape[:2]} and image {img.shape[:2]} differ in size")
    return to_uint8(alpha * heat + (1.0 - alpha) * img)


# ----------------------------------------------------------------------------- HLS (colorsys)
def rgb_to_hls(rgb: np.ndarray) -> np.ndarray:
    """Vectorized ``colorsys.rgb_to_hls`` on [..., 3] arrays in [0,1] -> [..., 3] (h, light, s)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.max(rgb, axis=-1)
    minc = np.min(rgb, axis=-1)
    sumc = maxc + minc
    rangec = maxc - minc
    light = sumc / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(light <= 0.5, rangec / sumc, rangec / (2.0 - sumc))
        rc = (maxc - r) / rangec
        gc = (maxc - g) / rangec
        bc = (maxc - b) / rangec
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = (h / 6.0) % 1.0
    gray = minc == maxc
    h = np.where(gray, 0.0, h)
    s = np.where(gray, 0.0, s)
    return np.stack([h, light, s], axis=-1)


def rgb_to_hsv_saturation(rgb: np.ndarray) -> np.ndarray:
    """The S of ``colorsys.rgb_to_hsv``: (max - min) / max (0 for black)."""
    maxc = np.max(rgb, axis=-1)
    minc = np.min(rgb, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(maxc > 0, (maxc - minc) / maxc, 0.0)


def _hls_value(m1, m2, hue):
    hue = hue % 1.0
    return np.where(hue < 1 / 6, m1 + (m2 - m1) * hue * 6.0,
                    np.where(hue < 0.5, m2,
                             np.where(hue < 2 / 3, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0, m1)))


def hls_to_rgb(hls: np.ndarray) -> np.ndarray:
    """Vectorized ``colorsys.hls_to_rgb``."""
    h, light, s = hls[..., 0], hls[..., 1], hls[..., 2]
    m2 = np.where(light <= 0.5, light * (1.0 + s), light + s - light * s)
    m1 = 2.0 * light - m2
    rgb = np.stack([_hls_value(m1, m2, h + 1 / 3), _hls_value(m1, m2, h),
                    _hls_value(m1, m2, h - 1 / 3)], axis=-1)
    return np.where((s == 0)[..., None], light[..., None], rgb)


def blend_hls(image, smap, cmap: str = "RdYlGn", vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """X-Maps Algorithm 2: light = lightness of HLS(image), h = hue of HLS(map colour), s =
    saturation of HSV(map colour), blended = HLStoRGB(h, light, s). The map (in [-1, 1]: similar
    > 0, dissimilar < 0) is coloured with ``cmap`` (red = dissimilar, green = similar; the
    neutral middle of RdYlGn is pale, so unaffected regions stay nearly gray)."""
    img = _rgb01(image)
    colour = colorize(smap, cmap, vmin=vmin, vmax=vmax)
    if colour.shape[:2] != img.shape[:2]:
        raise ValueError(f"map {colour.shape[:2]} and image {img.shape[:2]} differ in size")
    light = rgb_to_hls(img)[..., 1]
    h = rgb_to_hls(colour)[..., 0]
    s = rgb_to_hsv_saturation(colour)
    return to_uint8(hls_to_rgb(np.stack([h, light, s], axis=-1)))


# ----------------------------------------------------------------------------- figures
def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
    return path


def side_by_side(panels: Sequence[Sequence[tuple[str, np.ndarray]]], path: str | Path,
                 title: str | None = None, panel_inches: float = 1.9, dpi: int = 110) -> Path:
    """A grid figure: ``panels[row]`` is a list of (caption, HxWx3 uint8 image); rows may have
    different lengths. Saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = len(panels)
    cols = max(len(r) for r in panels)
    max_lines = max(caption.count("\n") + 1 for row in panels for caption, _ in row)
    caption_inches = 0.16 * max_lines + 0.1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * panel_inches,
                                                  rows * (panel_inches + caption_inches) + (0.4 if title else 0)),
                             squeeze=False)
    for i, row in enumerate(panels):
        for j in range(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                caption, rgb = row[j]
                ax.imshow(rgb)
                ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=0.4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")  # keeps the suptitle clear of the captions
    plt.close(fig)
    display_saved(path)
    return path


def display_saved(path: str | Path) -> None:
    """Show the PNG at ``path`` inline when this runs in a Jupyter kernel (the pipeline's
    papermill notebooks: their executed copies and HTML then carry every figure next to the cell
    that made it); nothing anywhere else (scripts, tests, the CLI)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook dependencies
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def image_panel(image) -> np.ndarray:
    return to_uint8(_rgb01(image))


__all__ = ["colorize", "overlay", "blend_hls", "rgb_to_hls", "hls_to_rgb", "rgb_to_hsv_saturation",
           "side_by_side", "save_png", "image_panel", "to_uint8"]


def draw_box(rgb: np.ndarray, box, color=(255, 255, 255), scale: int = 1) -> np.ndarray:
    """A copy of an HxWx3 uint8 image with the rectangle ``box`` (in pixels / ``scale``) drawn."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    ImageDraw.Draw(img).rectangle([x1, y1, x2 - 1, y2 - 1], outline=color, width=max(1, scale))
    return np.asarray(img)


def upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    return rgb if scale <= 1 else np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def map_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]], row_labels: Sequence[str] | None = None,
             title: str | None = None, panel: float = 1.75, fontsize: float = 7.0):
    """A matplotlib figure: ``rows`` of (title, HxWx3 uint8) panels; returns the figure."""
    import matplotlib.pyplot as plt

    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * panel, n_rows * (panel + 0.45)),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                caption, rgb = row[j]
                ax.imshow(rgb)
                ax.set_title(caption, fontsize=fontsize)
            else:
                ax.axis("off")
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=fontsize + 1)
    if title:
        fig.suptitle(title, fontsize=fontsize + 3)
    fig.tight_layout()
    return fig


def overlay_fixed(image, smap, vmin: float = 0.0, vmax: float = 1.0, alpha: float = 0.5,
                  cmap: str = "jet") -> np.ndarray:
    """Heat-map overlay on a *fixed* scale [vmin, vmax] (``xfr.viz.overlay`` min-max scales each
    map, which would hide the joint normalization of S-RISE §3.2.2 step 7)."""
    img = image_panel(image).astype(np.float64) / 255.0
    heat = colorize(smap, cmap, vmin=vmin, vmax=vmax)
    return to_uint8(alpha * heat + (1.0 - alpha) * img)
