"""The structure stage's helpers (xfr.experiments.structure): known answers on synthetic inputs."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from xfr.experiments import structure as S


def test_pixel_correlation_known_answers():
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(S.pixel_correlation(x, x), torch.ones(3))
    torch.testing.assert_close(S.pixel_correlation(x, 1 - x), -torch.ones(3))
    torch.testing.assert_close(S.pixel_correlation(x, 2 * x + 0.1), torch.ones(3))


def test_high_frequency_share_separates_smooth_from_checkerboard():
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(1, 3, 16, 16)
    smooth = (torch.sin(xx / 16 * 2 * torch.pi) * 0.5 + 0.5).float().expand(1, 3, 16, 16)
    assert S.high_frequency_share(checker) > 0.99
    assert S.high_frequency_share(smooth) < 0.01


def test_top_units_are_the_most_active_channels():
    conv = nn.Conv2d(3, 4, 1, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.1, 3.0, -1.0, 2.0]))
    model = nn.Sequential(OrderedDict(conv=conv))
    assert S.top_units(model, "conv", torch.rand(2, 3, 5, 5), 2) == [1, 3]


def test_load_resized_pads_context_and_resizes(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))
    p = tmp_path / "a.png"
    img.save(p)
    x = S.load_resized([p, p], 16)
    assert x.shape == (2, 3, 16, 16) and float(x[0, 0].mean()) > 0.9
    padded = S.load_resized([p], 16, context=0.5)
    assert padded.shape == (1, 3, 16, 16)


@pytest.mark.slow
def test_tcav_rows_on_a_zoo_model_give_one_row_per_concept_and_layer():
    from xfr import models

    g = torch.Generator().manual_seed(0)
    model = models.load("mini-xception-gender")
    rand = [torch.rand(6, 3, 48, 48, generator=g) for _ in range(3)]
    concepts = {"bright": torch.rand(6, 3, 48, 48, generator=g) * 0.2 + 0.8, "noise": torch.rand(6, 3, 48, 48, generator=g)}
    rel = {"bright": (concepts["bright"], rand)}
    tab = S.tcav_rows(model, "mini-xception-gender", ["net.layers.add_4"], 0, "woman", torch.rand(5, 3, 48, 48, generator=g),
                      concepts, rand, rel)
    assert len(tab) == 3 and set(tab.kind) == {"vs random", "relative"}
    assert tab.tcav.between(0, 1).all() and tab.p_value.between(0, 1).all() and (tab.n_random == 3).all()
