"""xfr.faces.windows: square context windows around a box, boxes mapped into them, downscaling."""
import pytest
import torch

from xfr.faces import windows as W


def test_square_window_centred_shifted_and_clipped():
    # centred: box 20x10 at (40..60, 45..55), context 2 -> side 40 around (50, 50)
    assert W.square_window((40, 45, 60, 55), 2.0, (100, 100)) == (30, 30, 70, 70)
    # near the top-left corner: shifted inside, same side
    x1, y1, x2, y2 = W.square_window((0, 0, 10, 10), 3.0, (100, 100))
    assert (x1, y1) == (0, 0) and x2 - x1 == y2 - y1 == 30
    # near the bottom edge of a 100 x 120 image: shifted up only (x fits)
    assert W.square_window((90, 90, 100, 100), 3.0, (100, 120)) == (80, 70, 110, 100)
    # larger than the image: clipped to its short side
    x1, y1, x2, y2 = W.square_window((10, 10, 40, 40), 5.0, (50, 80))
    assert x2 - x1 == y2 - y1 == 50 and 0 <= x1 and x2 <= 80
    with pytest.raises(ValueError):
        W.square_window((10, 10, 5, 20), 2.0, (50, 50))
    with pytest.raises(ValueError):
        W.square_window((0, 0, 5, 5), 0.0, (50, 50))


def test_map_box():
    b = W.map_box([30, 40, 50, 60], (20, 30, 60, 70), 80)  # window side 40 -> x2 scale
    assert torch.allclose(b, torch.tensor([20.0, 20.0, 60.0, 60.0]))


def test_downscale():
    img = torch.rand(3, 100, 300)
    small, s = W.downscale(img, 150)
    assert small.shape == (3, 50, 150) and s == pytest.approx(0.5)
    same, s1 = W.downscale(img, 400)
    assert same is img and s1 == 1.0
