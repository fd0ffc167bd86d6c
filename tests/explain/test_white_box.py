"""xfr.explain.white_box: one dispatcher for every white-box method. Known answers on tiny models
computed by hand (linear: gradient = w, DeepLIFT = LRP-epsilon = w*x; one-hidden-layer ReLU net:
guided backprop, DeepLIFT = LRP-epsilon = gradient x input; excitation backprop on one linear
layer), the wrapped libraries called directly on real models, the contract (float32 [H,W] of the
input's size, batch-size and seed behaviour), randomized copies, and one-line errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from xfr.explain import white_box as W
from xfr.explain.white_box import (
    BATCHED,
    WHITE_BOX_METHODS,
    CosineToReference,
    signed_method,
    white_box_map,
    white_box_support,
)

H, WD, K = 6, 5, 3
G = torch.Generator().manual_seed(0)
X = torch.rand(3, H, WD, generator=G)
DATA = Path(__file__).resolve().parents[2] / "data"


class Linear(nn.Module):
    """logits = W flatten(x), no bias."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * H * WD, K, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, 3 * H * WD, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return self.fc(x.flatten(1))


class ReluNet(nn.Module):
    """logits = V relu(W flatten(x)), no biases."""

    def __init__(self, hidden=8):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.fc1 = nn.Linear(3 * H * WD, hidden, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, K, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(hidden, 3 * H * WD, generator=g))
            self.fc2.weight.copy_(torch.randn(K, hidden, generator=g))

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class ConvNet(nn.Module):
    """A small CNN classifier (conv-ReLU-conv-ReLU-maxpool-GAP-linear) with named layers."""

    def __init__(self, out=K):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, out)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.gap(self.pool(x)).flatten(1))


def hidden_mask(net: ReluNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (net.fc1(x.flatten()[None])[0] > 0).float()


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("k", [0, 2])
def test_known_answers_on_a_linear_model(k):
    net = Linear()
    w = net.fc.weight[k].detach().view(3, H, WD)
    logit = float((w * X).sum())
    torch.testing.assert_close(white_box_map("deeplift", net, X, k), (w * X).sum(0))
    torch.testing.assert_close(white_box_map("lrp", net, X, k, rule="epsilon"), (w * X).sum(0),
                               rtol=1e-4, atol=1e-6)
    # the Flat rule (first layer of epsilon-plus-flat) spreads the relevance evenly over the inputs
    torch.testing.assert_close(white_box_map("lrp", net, X, k), torch.full((H, WD), logit / (H * WD)),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(white_box_map("guided-backprop", net, X, k), w.abs().amax(0))


def test_known_answers_on_a_relu_net():
    net = ReluNet()
    k = 1
    w1, v = net.fc1.weight.detach(), net.fc2.weight[k].detach()
    mask = hidden_mask(net, X)
    grad = (w1.T @ (v * mask)).view(3, H, WD)  # d logit_k / d x
    guided = (w1.T @ (v.clamp(min=0) * mask)).view(3, H, WD)  # only positive signals pass the ReLU
    torch.testing.assert_close(white_box_map("guided-backprop", net, X, k), guided.abs().amax(0))
    # zero baseline, no biases: the Rescale multiplier relu(z)/z is the gradient's mask
    torch.testing.assert_close(white_box_map("deeplift", net, X, k), (grad * X).sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(white_box_map("lrp", net, X, k, rule="epsilon"), (grad * X).sum(0),
                               rtol=1e-4, atol=1e-5)


def test_deeplift_completeness_from_another_baseline():
    net, base = ReluNet(), torch.rand(3, H, WD, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        gap = float(net(X[None])[0, 0] - net(base[None])[0, 0])
    assert float(white_box_map("deeplift", net, X, 0, baseline=base).sum()) == pytest.approx(gap, rel=1e-4)


def test_known_answer_excitation_backprop_on_one_linear_layer():
    """MWP of input i for class k: x_i w+_ki / sum_j x_j w+_kj (Zhang et al. 2016, eq. 7)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.feat = nn.Identity()
            self.fc = Linear().fc

        def forward(self, x):
            return self.fc(self.feat(x).flatten(1))

    net, k = Net(), 2
    wp = net.fc.weight[k].detach().clamp(min=0).view(3, H, WD)
    want = (X * wp).sum(0) / (X * wp).sum()
    torch.testing.assert_close(white_box_map("excitation-backprop", net, X, k, layer="feat"), want,
                               rtol=1e-4, atol=1e-6)


def test_guided_grad_cam_is_guided_backprop_times_upsampled_grad_cam():
    from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam

    net, x, k = ConvNet(), torch.rand(3, 8, 8, generator=G), 1
    inp = x[None].clone().requires_grad_(True)
    gbp = GuidedBackprop(net).attribute(inp, target=k)[0]
    cam = LayerGradCam(net, net.conv2).attribute(inp, target=k, relu_attributions=True)
    up = LayerAttribution.interpolate(cam, (8, 8), "bilinear")[0, 0]
    torch.testing.assert_close(white_box_map("guided-grad-cam", net, x, k, layer="conv2"),
                               (gbp * up).abs().amax(0).detach())


def test_gradient_family_equals_xfr_explain_gradients():
    from xfr.explain.gradients import integrated_gradients, smoothgrad
    from xfr.score import gradient_class_score

    net, x = ConvNet(), torch.rand(3, 8, 8, generator=G)
    f = gradient_class_score(net, 2)
    torch.testing.assert_close(white_box_map("smoothgrad", net, x, 2, seed=4, n_samples=6),
                               smoothgrad(f, x, n_samples=6, seed=4))
    torch.testing.assert_close(white_box_map("integrated-gradients", net, x, 2, n_steps=8),
                               integrated_gradients(f, x, n_steps=8))


# ----------------------------------------------------------------------------- contract
class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = ConvNet(out=6)

    def forward(self, x):
        return self.body(x)


def _layer(method, prefix=""):
    return prefix + "conv2" if method in ("grad-cam", "grad-cam++", "score-cam", "guided-grad-cam",
                                 "excitation-backprop") else None


def _fast(method):
    return {"smoothgrad": {"n_samples": 4}, "integrated-gradients": {"n_steps": 8}}.get(method, {})


@pytest.mark.parametrize("method", WHITE_BOX_METHODS)
@pytest.mark.parametrize("task", ["class", "verification"])
def test_every_method_gives_a_float32_map_of_the_input_size(method, task):
    x = torch.rand(3, 10, 9, generator=G)
    if task == "class":
        model, target = ConvNet().eval(), 1
    else:
        if method == "excitation-backprop":
            pytest.skip("excitation backprop explains classes (a non-negative top-down signal)")
        model, target = Embedder().eval(), torch.rand(3, 10, 9, generator=G)
    layer = _layer(method, "" if task == "class" else "body.")
    m = white_box_map(method, model, x, target, layer=layer, **_fast(method))
    assert m.dtype == torch.float32 and m.shape == (10, 9) and m.device.type == "cpu"
    assert torch.isfinite(m).all() and float(m.abs().max()) > 0
    assert signed_method(method) or float(m.min()) >= 0


@pytest.mark.parametrize("method", BATCHED)
def test_batch_size_does_not_change_the_map(method):
    net, x = ConvNet().eval(), torch.rand(3, 8, 8, generator=G)
    kw = {**_fast(method), "layer": _layer(method)}
    torch.testing.assert_close(white_box_map(method, net, x, 0, batch_size=1, **kw),
                               white_box_map(method, net, x, 0, batch_size=16, **kw), rtol=1e-5, atol=1e-7)


def test_seed():
    net, x = ConvNet().eval(), torch.rand(3, 8, 8, generator=G)
    a = white_box_map("smoothgrad", net, x, 0, seed=1, n_samples=4)
    torch.testing.assert_close(a, white_box_map("smoothgrad", net, x, 0, seed=1, n_samples=4))
    assert not torch.equal(a, white_box_map("smoothgrad", net, x, 0, seed=2, n_samples=4))


def test_signed_methods():
    assert [m for m in WHITE_BOX_METHODS if signed_method(m)] == [
        "gradient-x-input", "integrated-gradients", "deeplift", "lrp"]


def test_cosine_to_reference():
    emb, x, y = Embedder().eval(), torch.rand(2, 3, 8, 8, generator=G), torch.rand(3, 8, 8, generator=G)
    with torch.no_grad():
        got = CosineToReference(emb, emb(y[None])[0])(x)
        want = torch.cosine_similarity(emb(x), emb(y[None]), dim=1)
    assert got.shape == (2, 1)
    torch.testing.assert_close(got[:, 0], want)


def test_randomized_copies_get_their_own_maps():
    """No state kept across calls: each copy of cascading_randomization is explained afresh, and
    the model itself is left as it was (no hooks, no canonizer attributes)."""
    from xfr.metrics.randomization import cascading_randomization

    net, x = ConvNet().eval(), torch.rand(3, 8, 8, generator=G)
    before = copy.deepcopy(net.state_dict())
    maps = {m: white_box_map(m, net, x, 0, layer=_layer(m)) for m in ("guided-backprop", "deeplift", "lrp")}
    for _, randomized in cascading_randomization(net, seed=0):
        for method, original in maps.items():
            m = white_box_map(method, randomized, x, 0, layer=_layer(method))
            assert m.shape == original.shape and not torch.allclose(m, original)
    for method, original in maps.items():  # same model again: same map
        torch.testing.assert_close(white_box_map(method, net, x, 0, layer=_layer(method)), original)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert not any(h for m in net.modules() for h in (m._forward_hooks, m._backward_hooks, m._forward_pre_hooks))


def test_tfjs_graphs_refuse_the_module_methods(monkeypatch):
    monkeypatch.setattr(W, "_is_tfjs", lambda model: True)
    net = ConvNet()
    for method in ("guided-backprop", "deeplift", "lrp", "guided-grad-cam", "excitation-backprop"):
        reason = white_box_support(method, net)
        assert reason and "TF.js graph" in reason and "\n" not in reason
        with pytest.raises(ValueError, match="TF.js graph"):
            white_box_map(method, net, X, 0)
    assert white_box_support("gradient", net) is None


@pytest.mark.parametrize("call, message", [
    (lambda: white_box_map("occlusion", Linear(), X, 0), "unknown white-box method"),
    (lambda: white_box_map("deeplift", Linear(), X[None], 0), r"\[C,H,W\]"),
    (lambda: white_box_map("deeplift", Linear(), X, -1), "class index >= 0"),
    (lambda: white_box_map("deeplift", Linear(), X, True), "class index >= 0"),
    (lambda: white_box_map("deeplift", Linear(), X, 7), "out of range"),
    (lambda: white_box_map("lrp", Linear(), X, 7), "out of range"),
    (lambda: white_box_map("deeplift", Embedder(), torch.rand(3, 8, 8), torch.rand(1, 3, 8, 8)), "reference image"),
    (lambda: white_box_map("deeplift", Linear(), X, 0, n_steps=3), "takes no parameter"),
    (lambda: white_box_map("deeplift", Linear(), X, 0, layer="fc"), "takes no layer"),
    (lambda: white_box_map("deeplift", Linear(), X, 0, baseline=torch.zeros(3, 2, 2)), "differ in shape"),
    (lambda: white_box_map("lrp", Linear(), X, 0, rule="alpha-beta"), "rule must be one of"),
    (lambda: white_box_map("excitation-backprop", Linear(), X, 0), "needs layer="),
    (lambda: white_box_map("guided-grad-cam", ConvNet(), torch.rand(3, 8, 8), 0, layer="nope"), "no layer 'nope'"),
    (lambda: white_box_map("guided-grad-cam", ConvNet(), torch.rand(3, 8, 8), 0), "name one with layer="),
    (lambda: white_box_map("gradient", Linear(), X, 0, batch_size=0), "batch_size"),
    (lambda: white_box_map("gradient", Linear(), X.long(), 0), "float tensor"),
    (lambda: signed_method("nope"), "unknown white-box method"),
])
def test_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- real models
def _fer_face():
    paths = sorted((DATA / "fer2013_privatetest" / "happy").glob("*.jpg"))
    if not paths:
        pytest.skip("data/ not assembled (python -m xfr.data)")
    from xfr.io import load_image

    return load_image(paths[0]).float()


def _lfw_pair():
    paths = sorted((DATA / "lfw_gray").glob("**/*.jpg"))
    if len(paths) < 2:
        pytest.skip("data/ not assembled (python -m xfr.data)")
    from xfr.faces.windows import resize_to
    from xfr.io import load_image

    return [resize_to(load_image(p), (150, 150)).float() for p in paths[:2]]


@pytest.mark.slow
def test_real_fer_model_matches_the_libraries_called_directly():
    """mini-xception-fer2013 on a real FER face, class happy: the dispatcher equals captum's
    GuidedBackprop / DeepLift / GuidedGradCam and zennit's EpsilonPlusFlat called directly."""
    from captum.attr import DeepLift, GuidedBackprop, GuidedGradCam
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    from xfr import models

    model, face = models.load("mini-xception-fer2013"), _fer_face()
    k = model.classes.index("happy")
    with torch.no_grad():
        logits = model(face[None])
    inp = face[None].clone().requires_grad_(True)
    with torch.backends.mkldnn.flags(enabled=False):
        gbp = GuidedBackprop(model).attribute(inp, target=k)[0].abs().amax(0)
        with W._maxpool_as_gradient():
            dl = DeepLift(model).attribute(inp, baselines=torch.zeros_like(inp), target=k)[0].sum(0)
        ggc = GuidedGradCam(model, model.target_layer).attribute(
            inp, target=k, interpolate_mode="bilinear")[0].abs().amax(0)
        onehot = torch.zeros(1, len(model.classes))
        onehot[0, k] = 1
        with Gradient(model, EpsilonPlusFlat(canonizers=W._lrp_canonizers())) as attributor:
            out, rel = attributor(inp, lambda o: o.detach() * onehot)
        lrp = rel[0].sum(0)
    for method, ref in [("guided-backprop", gbp), ("deeplift", dl), ("guided-grad-cam", ggc), ("lrp", lrp)]:
        got = white_box_map(method, model, face, k, model_name="mini-xception-fer2013")
        assert float((got - ref.detach()).abs().max()) <= 1e-5 * float(ref.abs().max()), method
    # the model is left as it was (canonizers removed): same logits; with the BatchNorms merged
    # (LRP's forward pass) they differ by float32 rounding of the folded weights only
    with torch.no_grad():
        assert torch.equal(model(face[None]), logits)
    torch.testing.assert_close(out.detach(), logits, rtol=0.01, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mini-xception-fer2013", "mini-xception-gender", "dlib-resnet",
                                  "faceres-gender"])
def test_every_supported_method_on_real_models(name):
    from xfr import models

    model = models.load(name)
    if name == "dlib-resnet":
        face, target = _lfw_pair()
    else:
        face, target = _fer_face(), 0
    for method in WHITE_BOX_METHODS:
        reason = white_box_support(method, model)
        expected_unsupported = method == "excitation-backprop" or (
            name == "faceres-gender" and method in ("guided-backprop", "deeplift", "lrp", "guided-grad-cam"))
        if expected_unsupported:
            assert reason and "\n" not in reason, (method, reason)
            with pytest.raises(ValueError):
                white_box_map(method, model, face, target, model_name=name)
            continue
        assert reason is None, (method, reason)
        if name == "faceres-gender" and method == "score-cam":
            continue  # 512 TF.js passes (~80 s); the tapped graph's ScoreCAM: tests/explain/test_cam.py
        m = white_box_map(method, model, face, target, model_name=name, **_fast(method))
        assert m.dtype == torch.float32 and m.shape == face.shape[1:] and torch.isfinite(m).all(), method
        assert float(m.std()) > 0, method
