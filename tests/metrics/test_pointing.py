"""Pointing game (survey §2.5): inside, outside, empty region, ties, tolerance, energy variant."""
import math

import numpy as np
import pytest

from xfr.metrics import energy_pointing_game, higher_is_better, pointing_game, pointing_game_batch


def region():
    r = np.zeros((20, 30), bool)
    r[5:10, 10:20] = True
    return r


def test_inside_outside_empty():
    sal = np.zeros((20, 30))
    sal[7, 15] = 1.0
    assert pointing_game(sal, region()) == 1.0
    assert pointing_game(sal, (10, 5, 20, 10)) == 1.0  # the same region as a box (x1, y1, x2, y2)
    sal2 = np.zeros((20, 30))
    sal2[15, 2] = 1.0
    assert pointing_game(sal2, region()) == 0.0
    assert math.isnan(pointing_game(sal, np.zeros((20, 30), bool)))
    assert higher_is_better("pointing_game") and pointing_game.higher_is_better


def test_ties_and_tolerance():
    sal = np.zeros((20, 30))
    sal[7, 15] = sal[15, 2] = 1.0  # two maxima, one outside: not a hit
    assert pointing_game(sal, region()) == 0.0
    assert pointing_game(np.ones((20, 30)), region()) == 0.0  # a flat map does not score
    near = np.zeros((20, 30))
    near[12, 15] = 1.0  # 3 rows below the region (last row 9)
    assert pointing_game(near, region()) == 0.0
    assert pointing_game(near, region(), tolerance=3) == 1.0
    assert pointing_game(near, region(), tolerance=2.9) == 0.0


def test_energy_and_batch():
    sal = np.zeros((20, 30))
    sal[7, 15] = 3.0
    sal[15, 2] = 1.0
    sal[0, 0] = -5.0  # negative values are ignored
    assert energy_pointing_game(sal, region()) == pytest.approx(0.75)
    out = pointing_game_batch([sal, -sal, sal], [region(), region(), np.zeros((20, 30), bool)])
    assert out[0] == 1.0 and out[1] == 0.0 and math.isnan(out[2])
    with pytest.raises(ValueError):
        pointing_game_batch([sal], [])
