"""The gradient family (xfr.explain.gradients): known answers on analytic score functions,
captum as the external reference, Integrated Gradients' completeness, seed and batch-size
invariance, argument errors, and the real models."""
import pytest
import torch

from xfr.explain.gradients import (
    gradient,
    gradient_x_input,
    integrated_gradients,
    integrated_gradients_attribution,
    smoothgrad,
)
from xfr.score import gradient_class_score, gradient_verification_score

G = torch.Generator().manual_seed(0)
W = torch.randn(3, 12, 10, generator=G)
X = torch.rand(3, 12, 10, generator=G)


def linear(images):
    return (images * W).flatten(1).sum(1)


def half_square(images):
    return 0.5 * (images ** 2).flatten(1).sum(1)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def test_known_answers_on_a_linear_score():
    torch.testing.assert_close(gradient(linear, X), W.abs().amax(0))
    torch.testing.assert_close(gradient_x_input(linear, X), (W * X).sum(0))
    torch.testing.assert_close(smoothgrad(linear, X, n_samples=7, noise=0.3), W.abs().amax(0))
    # IG from black of a linear f is gradient x input, exactly (the path integral of a constant)
    torch.testing.assert_close(integrated_gradients(linear, X, n_steps=5), (W * X).sum(0))


def test_known_answer_integrated_gradients_of_a_quadratic():
    # f = sum x^2 / 2: the attribution of x_i from 0 is the integral of (a x_i) x_i da = x_i^2 / 2
    ig = integrated_gradients_attribution(half_square, X, n_steps=8)
    torch.testing.assert_close(ig.attribution, X ** 2 / 2, rtol=1e-5, atol=1e-6)
    assert abs(ig.delta) < 1e-4


def test_gradient_equals_captum_saliency():
    from captum.attr import Saliency

    f = gradient_class_score(TinyNet(), 2)
    ours = gradient(f, X)
    ref = Saliency(f).attribute(X[None].clone().requires_grad_(True), abs=True)[0].amax(0)
    torch.testing.assert_close(ours, ref)


def test_smoothgrad_matches_captum_noise_tunnel_in_expectation():
    from captum.attr import NoiseTunnel, Saliency

    f = gradient_class_score(TinyNet(), 0)
    ours = smoothgrad(f, X, n_samples=400, noise=0.2, seed=3)
    torch.manual_seed(0)
    sigma = 0.2 * float(X.max() - X.min())
    ref = NoiseTunnel(Saliency(f)).attribute(X[None].clone().requires_grad_(True), nt_type="smoothgrad",
                                             nt_samples=400, stdevs=sigma, abs=True)[0].amax(0)
    r = torch.corrcoef(torch.stack([ours.flatten(), ref.flatten()]))[0, 1]
    assert r > 0.98, f"SmoothGrad vs captum NoiseTunnel: Pearson {r:.3f}"
    assert abs(float(ours.mean() / ref.mean()) - 1) < 0.05


def test_integrated_gradients_completeness_on_a_network():
    f = gradient_class_score(TinyNet(), 1)
    ig = integrated_gradients_attribution(f, X, baseline=0.0, n_steps=64)
    gap = ig.score - ig.baseline_score
    assert abs(float(ig.attribution.sum()) - gap) <= 0.01 * abs(gap), (float(ig.attribution.sum()), gap)


def test_seed_and_batch_size_invariance():
    f = gradient_class_score(TinyNet(), 1)
    a = smoothgrad(f, X, n_samples=10, seed=5, batch_size=3)
    torch.testing.assert_close(a, smoothgrad(f, X, n_samples=10, seed=5, batch_size=64), rtol=1e-6, atol=1e-9)
    assert not torch.equal(a, smoothgrad(f, X, n_samples=10, seed=6))
    torch.testing.assert_close(integrated_gradients(f, X, n_steps=20, batch_size=3),
                               integrated_gradients(f, X, n_steps=20, batch_size=64), rtol=1e-5, atol=1e-8)


def test_maps_are_float32_of_the_input_size():
    f = gradient_verification_score(TinyNet(), torch.rand(3, 12, 10, generator=G))
    for fn in (gradient, gradient_x_input, smoothgrad, integrated_gradients):
        m = fn(f, X)
        assert m.dtype == torch.float32 and m.shape == (12, 10) and torch.isfinite(m).all()


@pytest.mark.parametrize("call, message", [
    (lambda: gradient(linear, X[None]), r"\[C,H,W\]"),
    (lambda: smoothgrad(linear, X, n_samples=0), "n_samples"),
    (lambda: smoothgrad(linear, X, noise=-1), "noise must be >= 0"),
    (lambda: integrated_gradients(linear, X, n_steps=0), "n_steps"),
    (lambda: integrated_gradients(linear, X, baseline=torch.zeros(3, 4, 4)), "differ in shape"),
    (lambda: gradient(linear, X, batch_size=0), "batch_size"),
    (lambda: gradient_class_score(TinyNet(), -1), "non-negative int"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mini-xception-fer2013", "dlib-resnet"])
def test_real_models_integrated_gradients_completeness(name):
    """On real faces, 512 Gauss-Legendre steps bring IG's sum within 1 % of f(x) - f(black)
    (measured: 0.5 % for the FER face, 0.9 % for the LFW pair; 128 steps: 1.3 % and 19 %, as the
    ReLU networks' kinks make the path integral converge slowly)."""
    import glob

    from xfr import models
    from xfr.faces.windows import resize_to
    from xfr.io import load_image

    fer = sorted(glob.glob("data/fer2013_privatetest/happy/*.jpg"))
    lfw = sorted(glob.glob("data/lfw_gray/**/*.jpg", recursive=True))
    if not fer or len(lfw) < 2:
        pytest.skip("data/ not assembled (python -m xfr.data)")
    model = models.load(name)
    if name == "dlib-resnet":
        face, ref = (resize_to(load_image(p), (112, 112)) for p in lfw[:2])
        f = gradient_verification_score(model, ref)
    else:
        face = load_image(fer[0])
        f = gradient_class_score(model, model.classes.index("happy"))
    ig = integrated_gradients_attribution(f, face, baseline=0.0, n_steps=512, batch_size=64)
    gap = ig.score - ig.baseline_score
    assert abs(float(ig.attribution.sum()) - gap) <= 0.01 * abs(gap), (float(ig.attribution.sum()), gap)
    g = gradient(f, face)
    assert g.shape == face.shape[1:] and float(g.std()) > 0
