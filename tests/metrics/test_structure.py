"""Edge similarity and coarseness of maps (xfr.metrics.structure): known answers."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from xfr.metrics import higher_is_better
from xfr.metrics.structure import edge_similarity, image_edges, map_coarseness


def test_edges_of_the_image_itself_are_a_perfect_edge_detector():
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert edge_similarity(image_edges(image), image) == pytest.approx(1.0)
    # the sign of the map does not matter (|map|)
    assert edge_similarity(-image_edges(image), image) == pytest.approx(1.0)


def test_a_map_unrelated_to_the_image_is_not_an_edge_detector():
    rng = np.random.default_rng(1)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    values = [edge_similarity(rng.random((64, 64)), image) for _ in range(5)]
    assert abs(np.mean(values)) < 0.05


def test_coarseness_grows_with_the_blob_size():
    rng = np.random.default_rng(0)
    noise = rng.random((96, 96))
    widths = [map_coarseness(ndimage.gaussian_filter(noise, s)) for s in (1, 3, 6, 12)]
    assert widths == sorted(widths)
    assert map_coarseness(noise) < 0.02  # white noise: about one pixel
    # a 4 x 4 grid upsampled (a CAM of a 4 x 4 layer) is coarser than a 1-pixel detail map
    grid = np.kron(rng.random((4, 4)), np.ones((24, 24)))
    assert map_coarseness(grid) > 5 * map_coarseness(noise)


def test_constant_map_has_no_coarseness_and_directions_are_declared():
    assert np.isnan(map_coarseness(np.ones((10, 10))))
    assert higher_is_better("edge_similarity") is False
    assert higher_is_better("map_coarseness") is False


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="differ in size"):
        edge_similarity(np.zeros((8, 8)), torch.zeros(3, 9, 9))
    with pytest.raises(ValueError, match=r"\[C,H,W\] or \[H,W\]"):
        image_edges(np.zeros(5))
