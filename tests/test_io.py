import numpy as np
import pytest
from PIL import Image

from xfr.io import load_image, to_uint8


def test_gray_and_rgba_are_converted(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((10, 12), 128, np.uint8), "L").save(gray)
    rgba = tmp_path / "a.png"
    arr = np.zeros((10, 12, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 255
    arr[:5, :, 3] = 0  # transparent top half -> black
    Image.fromarray(arr, "RGBA").save(rgba)
    g = load_image(gray)
    assert g.shape == (3, 10, 12) and abs(float(g.mean()) - 128 / 255) < 1e-6
    a = load_image(rgba)
    assert a.shape == (3, 10, 12)
    assert float(a[0, 7].mean()) == 1.0 and float(a[0, 2].mean()) == 0.0
    assert to_uint8(a).shape == (10, 12, 3)


def test_not_an_image(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(bad)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg")
