"""Average Drop %, % Increase, Win % (CMS eqs. 9-13): hand-computed toy cases."""
import math

import numpy as np
import pytest
import torch

from xfr.engine import CountingScore
from xfr.metrics import (
    METRICS,
    average_drop,
    confidence_metrics,
    explanation_scores,
    increase_in_confidence,
    negative_explanation,
    normalize_heatmaps,
    win,
)


def test_normalize_heatmaps_by_hand():
    h1 = np.array([[0.0, 1.0], [2.0, 3.0]])  # min-max: 0, 1/3, 2/3, 1 (sum 2)
    h2 = np.array([[0.0, 0.0], [0.0, 5.0]])  # min-max: 0, 0, 0, 1 (sum 1)
    out = normalize_heatmaps([h1, h2])  # common sum s = 1 (the smaller one)
    np.testing.assert_allclose(out[0], [[0, 1 / 6], [1 / 3, 1 / 2]])
    np.testing.assert_allclose(out[1], [[0, 0], [0, 1]])
    np.testing.assert_allclose(out.sum(axis=(1, 2)), [1, 1])
    out2 = normalize_heatmaps([h1, h2], pixel_sum=0.5)
    np.testing.assert_allclose(out2[0], [[0, 1 / 12], [1 / 6, 1 / 4]])
    np.testing.assert_allclose(out2[1], [[0, 0], [0, 0.5]])
    # offset and scale of a raw map do not matter (eq. 10 starts with min-max)
    np.testing.assert_allclose(normalize_heatmaps([h1 * 7 - 3, h2])[0], out[0])
    const = normalize_heatmaps([np.ones((2, 2)), h2])
    np.testing.assert_allclose(const[0], np.full((2, 2), 0.25))  # uniform, sum 1


def test_per_image_terms_by_hand():
    m_i = np.array([0.8, 0.5, 0.4])
    m_e = np.array([[0.4, 0.9], [0.5, 0.1], [0.2, 0.2]])
    np.testing.assert_allclose(average_drop(m_i, m_e), [[50, 0], [0, 80], [50, 50]])
    np.testing.assert_allclose(increase_in_confidence(m_i, m_e), [[0, 100], [0, 0], [0, 0]])
    np.testing.assert_allclose(win(m_e), [[100, 0], [0, 100], [50, 50]])  # ties share
    assert np.all(win(np.random.rand(10, 4)).sum(axis=1) == pytest.approx(100))
    assert math.isnan(average_drop([0.0], [0.1])[0])  # eq. 11 divides by M(I)
    assert METRICS["average_drop"].higher_is_better
    assert not METRICS["increase_in_confidence"].higher_is_better
    assert METRICS["win"].higher_is_better


def _region_confidence():
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:8, 4:8] = True

    def f(x):  # "confidence" = mean brightness of the 4x4 region, in [0, 1]
        return x[:, 0][:, region].mean(dim=1)

    return region, f


def test_negative_explanation_matches_engine_path():
    region, f = _region_confidence()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    hs = normalize_heatmaps([np.random.default_rng(0).random((16, 16)), region.numpy() * 1.0])
    m_i, m_e, nf = explanation_scores(f, image, hs)
    assert nf == 3
    assert m_i == pytest.approx(f(image[None]).item())
    for k in range(2):
        e = negative_explanation(image, hs[k])
        torch.testing.assert_close(e, (1 - torch.tensor(hs[k], dtype=torch.float32)) * image)
        assert m_e[k] == pytest.approx(f(e[None]).item(), abs=1e-6)


def test_confidence_metrics_end_to_end():
    region, f = _region_confidence()
    images = [torch.ones(3, 16, 16), torch.full((3, 16, 16), 0.5)]
    on = region.numpy().astype(float)  # 16 pixels on the region
    off = np.zeros((16, 16))
    off[12:16, 12:16] = 1.0  # 16 pixels elsewhere: same pixel sum
    counted = CountingScore(f)
    res = confidence_metrics(counted, images, {"on": [on, on], "off": [off, off]})
    assert res.n_forward == counted.n_forward == 2 * 3
    # "on" darkens the whole region: M(E) = 0 -> drop 100 %; "off" leaves it: drop 0 %
    np.testing.assert_allclose(res.m_image, [1.0, 0.5])
    np.testing.assert_allclose(res.m_explained, [[0, 1.0], [0, 0.5]], atol=1e-6)
    s = res.summary()
    assert s["on"] == {"average_drop": 100.0, "increase_in_confidence": 0.0, "win": 100.0}
    assert s["off"] == {"average_drop": 0.0, "increase_in_confidence": 0.0, "win": 0.0}


def test_mismatched_inputs_raise():
    _, f = _region_confidence()
    with pytest.raises(ValueError, match="heatmaps"):
        confidence_metrics(f, [torch.ones(3, 16, 16)], {"a": []})
    with pytest.raises(ValueError, match="at least one method"):
        confidence_metrics(f, [torch.ones(3, 16, 16)], {})
