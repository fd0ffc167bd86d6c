"""Overlays and the HLS colour blending of X-Maps Algorithm 2 (checked against colorsys)."""
import colorsys

import numpy as np
import pytest
import torch

from xfr.viz import blend_hls, colorize, hls_to_rgb, overlay, rgb_to_hls, rgb_to_hsv_saturation, side_by_side


def _colors(n=500):
    rng = np.random.default_rng(0)
    c = rng.random((n, 3))
    c[:20] = np.round(c[:20])  # pure colours, black, white: the edge cases
    c[20:40, 1] = c[20:40, 0]  # ties between channels
    c[40:60] = c[40:60, :1]  # grays
    return c


def test_hls_conversions_match_colorsys():
    c = _colors()
    ours = rgb_to_hls(c)
    ref = np.array([colorsys.rgb_to_hls(*px) for px in c])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    back = hls_to_rgb(ref)
    np.testing.assert_allclose(back, np.array([colorsys.hls_to_rgb(*px) for px in ref]), atol=1e-12)
    np.testing.assert_allclose(back, c, atol=1e-9)
    sat = rgb_to_hsv_saturation(c)
    np.testing.assert_allclose(sat, [colorsys.rgb_to_hsv(*px)[1] for px in c], atol=1e-12)


def test_blend_hls_is_algorithm_2():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 10, 12, generator=g)
    smap = torch.rand(10, 12, generator=g) * 2 - 1
    out = blend_hls(img, smap)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    colour = colorize(smap, "RdYlGn", vmin=-1, vmax=1)
    for y in range(0, 10, 3):
        for x in range(0, 12, 4):
            light = colorsys.rgb_to_hls(*img[:, y, x].double().numpy())[1]
            h = colorsys.rgb_to_hls(*colour[y, x])[0]
            s = colorsys.rgb_to_hsv(*colour[y, x])[1]
            want = np.round(np.clip(colorsys.hls_to_rgb(h, light, s), 0, 1) * 255)
            np.testing.assert_allclose(out[y, x], want, atol=1)


def test_blend_hls_keeps_the_face_lightness_and_colours_similar_green_dissimilar_red():
    img = torch.full((3, 4, 4), 0.5)
    smap = torch.zeros(4, 4)
    smap[:2] = 1.0
    smap[2:] = -1.0
    out = blend_hls(img, smap).astype(float) / 255
    hls = rgb_to_hls(out)
    np.testing.assert_allclose(hls[..., 1], 0.5, atol=1 / 255)
    assert (out[:2, :, 1] > out[:2, :, 0]).all()  # similar: green
    assert (out[2:, :, 0] > out[2:, :, 1]).all()  # dissimilar: red


def test_overlay_blends_heat_map_and_image():
    img = torch.rand(3, 8, 9, generator=torch.Generator().manual_seed(1))
    smap = torch.arange(72.0).reshape(8, 9)
    only_image = overlay(img, smap, alpha=0.0)
    np.testing.assert_array_equal(only_image, np.floor(img.permute(1, 2, 0).double().numpy() * 255 + 0.5))
    only_heat = overlay(img, smap, alpha=1.0)
    np.testing.assert_array_equal(only_heat, np.floor(colorize(smap) * 255 + 0.5))
    with pytest.raises(ValueError, match="differ in size"):
        overlay(img, torch.zeros(4, 4))


def test_side_by_side_writes_png(tmp_path):
    from PIL import Image

    panel = np.zeros((16, 16, 3), np.uint8)
    path = side_by_side([[("a", panel), ("b", panel)], [("c", panel)]], tmp_path / "fig.png",
                        title="t")
    with Image.open(path) as im:
        assert im.size[0] > 50 and im.size[1] > 50
