"""Structural explanations (survey §2.3-§5): known answers on tiny networks for activation
maximization, feature inversion, the effective receptive field and TCAV, and the layer taps on
real zoo models."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from xfr.explain.feature_vis import activation_maximization, total_variation
from xfr.explain.inversion import identity_similarity, interpolated_targets, invert_features, layer_features
from xfr.explain.layers import OUTPUT, layer_activations, layer_names
from xfr.explain.receptive_field import effective_receptive_field, erf_summary
from xfr.explain.tcav import concept_activation_vector, layer_acts_and_grads, tcav, tcav_score


def red_minus_blue() -> nn.Module:
    """A 1x1 convolution whose channel 0 is R - B (optimum: red 1, blue 0 everywhere)."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 0, 0] = torch.tensor([1.0, 0.0, -1.0])
        conv.weight[1, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    return nn.Sequential(OrderedDict(conv=conv, pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))


@pytest.mark.parametrize("param, tol", [("pixel", 0.1), ("fourier", 0.15)])
def test_activation_maximization_finds_the_known_optimum(param, tol):
    model = red_minus_blue()
    fv = activation_maximization(model, "conv", "channel", 0, size=16, steps=300, lr=0.1, param=param,
                                 decorrelate=False, transforms=False, seed=0)
    r, b = fv.images[:, 0].mean(), fv.images[:, 2].mean()
    assert r > 1 - tol and b < tol  # the optimum of R - B in (0, 1): red 1, blue 0
    assert fv.objective[0] > 0.8 and fv.objective[0] > fv.start[0] + 0.5
    assert fv.curve[-1] > fv.curve[0]
    assert all(p.requires_grad for p in model.parameters())  # restored after


def test_activation_maximization_is_seeded_and_regularized():
    model = red_minus_blue()
    kw = dict(size=16, steps=20, lr=0.1, param="fourier", seed=3)
    a = activation_maximization(model, "conv", "neuron", 1, n=2, **kw)
    b = activation_maximization(model, "conv", "neuron", 1, n=2, **kw)
    c = activation_maximization(model, "conv", "neuron", 1, n=2, **{**kw, "seed": 4})
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
    assert not torch.equal(a.images, c.images)
    kw2 = {**kw, "steps": 60, "param": "pixel"}
    smooth = activation_maximization(model, "conv", "layer", None, tv=5.0, **kw2)
    rough = activation_maximization(model, "conv", "layer", None, tv=0.0, **kw2)
    assert total_variation(smooth.images).mean() < total_variation(rough.images).mean()
    logit = activation_maximization(model, OUTPUT, "logit", 0, size=16, steps=100, lr=0.1, transforms=False,
                                    decorrelate=False)
    assert logit.objective[0] > 0.5


@pytest.mark.parametrize("kw, match", [
    (dict(objective="max"), "objective must be"),
    (dict(unit=None), "needs a unit"),
    (dict(unit=7), "out of range"),
    (dict(layer="nope"), "has no layer 'nope'"),
    (dict(steps=0), "steps must be"),
])
def test_activation_maximization_argument_errors(kw, match):
    args = dict(layer="conv", objective="channel", unit=0, size=8, steps=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        activation_maximization(red_minus_blue(), **args)


def test_inversion_of_an_invertible_linear_feature_map_recovers_the_input():
    torch.manual_seed(0)
    mix = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        mix.weight[:, :, 0, 0] = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]])
    model = nn.Sequential(OrderedDict(mix=mix))
    x = torch.rand(2, 3, 12, 12) * 0.8 + 0.1
    inv = invert_features(model, "mix", layer_features(model, "mix", x), size=12, steps=400, lr=0.1, tv=0.0,
                          param="pixel", decorrelate=False)
    assert float((inv.images - x).abs().max()) < 0.02
    assert float(inv.feature_error.max()) < 1e-4 and inv.curve[-1] < inv.curve[0]


def test_interpolated_targets_are_the_feature_mixture():
    model = nn.Sequential(OrderedDict(mix=nn.Conv2d(3, 4, 1)))
    a, b = torch.rand(1, 3, 6, 6), torch.rand(1, 3, 6, 6)
    t = interpolated_targets(model, "mix", a, b, [0.0, 0.25, 1.0])
    fa, fb = layer_features(model, "mix", a), layer_features(model, "mix", b)
    torch.testing.assert_close(t[0], fa[0])
    torch.testing.assert_close(t[1], 0.75 * fa[0] + 0.25 * fb[0])
    torch.testing.assert_close(t[2], fb[0])


def test_erf_of_two_stacked_box_filters_is_the_known_pyramid():
    c1, c2 = nn.Conv2d(3, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False)
    nn.init.ones_(c1.weight)
    nn.init.ones_(c2.weight)
    model = nn.Sequential(OrderedDict(c1=c1, c2=c2))
    erf = effective_receptive_field(model, "c2", torch.rand(4, 3, 15, 15))
    profile = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    expected = torch.zeros(15, 15)
    expected[5:10, 5:10] = 3 * torch.outer(profile, profile)  # 3 colours; centre unit at (5, 5) of 11x11
    torch.testing.assert_close(erf.map, expected)
    s = erf_summary(erf)
    assert s["theoretical_px"] == 25 and s["effective_px"] < 25 and s["centre_offset_px"] < 1e-9
    assert 0 < s["effective_fraction"] < 1


def planted_concept_model() -> nn.Module:
    """layer ``colour``: the image's mean colour; class 0's logit = the red mean."""
    head = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    return nn.Sequential(OrderedDict(colour=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=head))


def test_tcav_on_a_planted_concept_and_on_a_random_concept():
    g = torch.Generator().manual_seed(0)
    model = planted_concept_model()
    rand = [torch.rand(20, 3, 4, 4, generator=g) for _ in range(10)]
    red = torch.rand(20, 3, 4, 4, generator=g) * 0.3
    red[:, 0] += 0.7
    other = torch.rand(20, 3, 4, 4, generator=g)
    class_images = torch.rand(30, 3, 4, 4, generator=g)
    _, grads = layer_acts_and_grads(model, "colour", class_images, lambda out: out[:, 0])
    acts = {name: layer_acts_and_grads(model, "colour", x)[0] for name, x in (("red", red), ("random", other))}
    random_acts = [layer_acts_and_grads(model, "colour", x)[0] for x in rand]
    res = {r.concept: r for r in tcav(grads, acts, random_acts, seed=0, alpha=0.05)}
    assert res["red"].score == 1.0 and res["red"].significant and res["red"].cav_accuracy > 0.9
    assert 0.2 < res["random"].score < 0.8 and res["random"].p_value > 0.05 and not res["random"].significant
    assert res["red"].alpha == 0.025  # Bonferroni over the two concepts


def test_cav_direction_and_score_known_answers():
    c = np.c_[np.full(10, 2.0), np.linspace(-1, 1, 10)]
    r = np.c_[np.full(10, -2.0), np.linspace(-1, 1, 10)]
    cav = concept_activation_vector(c, r)
    assert cav.vector[0] > 0.9 and cav.accuracy == 1.0
    assert tcav_score(np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 5.0]]), cav) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=">= 3 images"):
        concept_activation_vector(c[:2], r)


def test_layer_gradients_match_autograd_on_a_linear_head():
    model = planted_concept_model()
    x = torch.rand(5, 3, 4, 4)
    acts, grads = layer_acts_and_grads(model, "head", x, lambda out: out[:, 1] * 2)
    torch.testing.assert_close(grads, torch.tensor([[0.0, 2.0]]).expand(5, 2))
    torch.testing.assert_close(acts, model(x))


@pytest.mark.slow
def test_layer_taps_on_zoo_models():
    from xfr import models

    fer = models.load("mini-xception-fer2013")
    x = torch.rand(2, 3, 64, 64)
    a = layer_activations(fer, "net.layers.add_2")(x)
    assert a.dim() == 4 and a.shape[0] == 2
    assert "net.layers.add_2" in layer_names(fer) and layer_names(fer)[-1] == OUTPUT
    fr = models.load("faceres-gender")
    node = "conv_pw_5_relu/clip_by_value"
    h = layer_activations(fr, node)(torch.rand(2, 3, 96, 96))
    assert h.dim() == 4 and h.shape[0] == 2
    _, grads = layer_acts_and_grads(fr, node, torch.rand(2, 3, 96, 96), lambda out: out[:, 0])
    assert grads is not None and grads.abs().sum() > 0
    from xfr.explain.tcav import layer_acts_many

    x = torch.rand(3, 3, 96, 96)
    two = layer_acts_many(fr, [node, "conv_pw_11_relu/clip_by_value"], x)  # nested taps on one graph
    torch.testing.assert_close(two[node], layer_acts_and_grads(fr, node, x)[0])
    with pytest.raises(ValueError, match="no graph node"):
        layer_activations(fr, "conv_pw_99")
    assert fr.graph.forward.__func__ is type(fr.graph).forward  # the tap is gone after use
    mobile = models.load("mobileface")  # a TF.js recognizer: its graph nodes are the layers
    inv = invert_features(mobile, "add_8", layer_features(mobile, "add_8", torch.rand(1, 3, 112, 112)), size=32,
                          steps=3)
    assert inv.images.shape == (1, 3, 32, 32) and inv.curve.shape == (3,)
    dlib = models.load("dlib-resnet")
    sim = identity_similarity(dlib, torch.rand(2, 3, 150, 150), torch.rand(2, 3, 150, 150))
    same = identity_similarity(dlib, torch.rand(1, 3, 150, 150).expand(2, 3, 150, 150),
                               torch.rand(1, 3, 150, 150).expand(2, 3, 150, 150))
    assert sim.shape == (2,) and float(same[0]) == pytest.approx(float(same[1]))


def test_many_layers_in_one_pass_equal_one_at_a_time():
    from xfr.explain.tcav import layer_acts_many

    model = planted_concept_model()
    x = torch.rand(7, 3, 4, 4)
    many = layer_acts_many(model, ["colour", "head"], x, batch_size=3)
    for layer in ("colour", "head"):
        torch.testing.assert_close(many[layer], layer_acts_and_grads(model, layer, x)[0])
