"""Image input/output: every image enters the suite as float32 RGB [3,H,W] in [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor


def load_pil(path: str | Path) -> Image.Image:
    """Open an image file as RGB. Grayscale, palette and RGBA images are converted (alpha is
    composited onto black), not refused; a file that is not an image raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img: Image.Image = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ImportError) as err:
        # ImportError: ultralytics >= 8.4 patches Image.open to load an optional HEIF plugin on
        # files PIL cannot identify, and raises ModuleNotFoundError when it is not installed.
        raise ValueError(f"{path} is not a readable image ({err})") from err
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def to_tensor(img: Image.Image | np.ndarray) -> Tensor:
    """PIL image or uint8/float HxW(xC) array -> float32 [3,H,W] in [0, 1]."""
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image array, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


def load_image(path: str | Path) -> Tensor:
    """Read an image file as float32 RGB [3,H,W] in [0, 1]."""
    return to_tensor(load_pil(path))


def to_uint8(image: Tensor) -> np.ndarray:
    """[3,H,W] float in [0,1] -> HxWx3 uint8."""
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
