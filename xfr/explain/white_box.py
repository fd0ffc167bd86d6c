"""Every white-box explainer behind one call, :func:`white_box_map`, for the pipeline, the CLI and
the sanity checks (survey ``002_…`` §2.1-2.2; CMS §4.2 baselines).

=======================  ====================================================  ======  ==========
method                   how (library)                                         sign    explains
=======================  ====================================================  ======  ==========
gradient, smoothgrad     |d f/d x|, max over channels (captum Saliency)        no      P(k) / cos
gradient-x-input,        x * d f/d x; Integrated Gradients (captum)            yes     P(k) / cos
integrated-gradients
guided-backprop          Springenberg et al. 2015 (captum GuidedBackprop),     no      logit / cos
                         |.| max over channels
deeplift                 Shrikumar et al. 2017, Rescale rule, black baseline   yes     logit / cos
                         (captum DeepLift), summed over channels
lrp                      LRP, zennit EpsilonPlusFlat composite (see below)     yes     logit / cos
grad-cam, grad-cam++,    pytorch-grad-cam at the model's Grad-CAM layer        no      logit / cos
score-cam                (:func:`xfr.explain.cam.cam`), in [0, 1]
guided-grad-cam          Selvaraju et al. 2017: Grad-CAM upsampled x guided    no      logit / cos
                         backprop (captum GuidedGradCam), |.| max over channels
excitation-backprop      Zhang et al. 2016 (torchray), at a named layer        no      logit
=======================  ====================================================  ======  ==========

``f``/target. ``target`` is a class index ``k`` or, for a verification embedder, a reference
image [3,H,W]. The gradient family explains the softmax probability P(k) (:func:`xfr.score.
gradient_class_score`, as before) or the cosine similarity (:func:`xfr.score.
gradient_verification_score`). The module-based methods explain the *logit* of class ``k`` (their
propagation rules are defined for piecewise-linear networks; the softmax would break LRP's and
DeepLIFT's conservation, and Grad-CAM uses the logit too) or the cosine similarity to the
reference's embedding, through :class:`CosineToReference` (output [N,1], captum ``target=0``).

They need the network's layers as torch modules (captum overrides ``nn.ReLU`` modules, zennit
hooks ``nn.Conv2d``/``nn.Linear``/pooling modules, torchray patches ``torch.nn.functional``): the
TF.js graphs (``faceres``, ``faceres-gender``, ``mobileface``) are run op by op and have none, so
those methods raise :func:`white_box_support`'s one-line reason there; the gradient family works
on them, and the Grad-CAM family on ``faceres-gender`` through its layer tap.

LRP: captum's :class:`~captum.attr.LRP` rejects any leaf module it has no rule for (our
``KerasPool2d``, ``KerasAdd``, ``nn.Identity``, ``nn.AdaptiveAvgPool2d``…) and has no rule for
residual sums, so zennit is used: ``rule="epsilon-plus-flat"`` (default; Flat on the first
convolution, z+ on the other convolutions, epsilon on linear layers, the recommended composite
of Kohlbrenner et al. 2020 for CNNs), ``"epsilon-plus"`` or ``"epsilon"`` (epsilon everywhere:
gradient x input on a bias-free ReLU net). Canonizers: Keras BatchNormalization is merged into the
convolution before it; residual additions (``KerasAdd``, the dlib blocks' shortcut sums) go
through zennit's ``Sum`` with the proportional (Norm) rule, average/global pooling through Norm,
max pooling winner-take-all. The output relevance is the explained score itself (so the map sums
to about the logit, or the cosine, times the linear preprocessing's gain, e.g. 2 for the
mini-Xceptions' [-1, 1] scaling).

Excitation backprop (torchray 1.0 runs with this torch) assumes non-negative inputs to every
convolution (a probabilistic winner-take-all). The mini-Xceptions break that (signed depthwise
outputs and residual sums feed convolutions): torchray's map overflows (values of ±1e8 measured on
a FER face); for a verification target the top-down signal (the reference direction) is signed
(measured on dlib-resnet: maps negative everywhere, also for a same-person pair). It is therefore
refused on the zoo models (:func:`white_box_support`) and runs on other ReLU classifiers at a
named ``layer``.

Works on randomized copies (:func:`xfr.metrics.randomization.cascading_randomization`): nothing is
cached across calls; every wrapper, hook and canonizer is made and removed per call.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_int
from .gradients import GRADIENT_EXPLAINERS, GRADIENT_METHODS

CAM_FAMILY = {"grad-cam": "gradcam", "grad-cam++": "gradcam++", "score-cam": "scorecam"}
MODULE_METHODS = ("guided-backprop", "deeplift", "lrp", "guided-grad-cam", "excitation-backprop")
WHITE_BOX_METHODS = (*GRADIENT_METHODS, "guided-backprop", "deeplift", "lrp", *CAM_FAMILY,
                     "guided-grad-cam", "excitation-backprop")
SIGNED_METHODS = ("gradient-x-input", "integrated-gradients", "deeplift", "lrp")
LRP_RULES = ("epsilon-plus-flat", "epsilon-plus", "epsilon")
# per method: the -p parameters white_box_map passes on (besides layer, batch_size, seed)
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "gradient": (), "gradient-x-input": (), "smoothgrad": ("n_samples", "noise"),
    "integrated-gradients": ("baseline", "n_steps"), "guided-backprop": (), "deeplift": ("baseline",),
    "lrp": ("rule", "epsilon"), "grad-cam": (), "grad-cam++": (), "score-cam": (),
    "guided-grad-cam": (), "excitation-backprop": (),
}
BATCHED = ("gradient", "smoothgrad", "integrated-gradients", "score-cam")
RANDOM = ("smoothgrad",)


def signed_method(method: str) -> bool:
    """Whether ``method``'s map keeps its sign (positive: raises the score)."""
    _check_method(method)
    return method in SIGNED_METHODS


def _check_method(method: str) -> None:
    if method not in WHITE_BOX_METHODS:
        raise ValueError(f"unknown white-box method {method!r}; one of {', '.join(WHITE_BOX_METHODS)}")


class CosineToReference(nn.Module):
    """``[N,1]``: the cosine similarity of ``embedder(x)`` to ``ref_embedding`` [D] (a fixed
    buffer), so captum / zennit / torchray can explain a verification score with ``target=0``."""

    ref: Tensor

    def __init__(self, embedder: nn.Module, ref_embedding: Tensor):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("ref", F.normalize(ref_embedding.detach().float().flatten(), dim=0))

    def forward(self, x: Tensor) -> Tensor:
        e = F.normalize(self.embedder(x).float(), dim=-1)
        return (e * self.ref.to(e.device)).sum(-1, keepdim=True)


def _is_tfjs(model: nn.Module) -> bool:
    from ..models.tfjs_graph import TFJSGraph

    return any(isinstance(m, TFJSGraph) for m in model.modules())


def white_box_support(method: str, model: Any) -> str | None:
    """None if ``white_box_map(method, model, ...)`` can run, else the one-line reason why not."""
    _check_method(method)
    if not isinstance(model, nn.Module):
        return f"{method} needs a PyTorch nn.Module, got {type(model).__name__}"
    name = type(model).__name__
    if method in CAM_FAMILY:
        if _is_tfjs(model):
            from ..models.human import FaceResGender

            if not isinstance(model, FaceResGender):
                return (f"{method} needs a layer to hook; {name} is a TF.js graph run op by op with "
                        f"no layer modules and no tap defined (only faceres-gender has one)")
        return None
    if method in GRADIENT_METHODS:
        return None
    if _is_tfjs(model):
        return (f"{method} needs the network's layers as torch modules (ReLU/convolution rules); "
                f"{name} is a TF.js graph run op by op, which has none: use the gradient or CAM family")
    if method == "excitation-backprop":
        from ..models.dlib_resnet import DlibResNet
        from ..models.xception import XceptionClassifier

        if any(isinstance(m, XceptionClassifier) for m in model.modules()):
            return ("excitation-backprop assumes non-negative inputs to every convolution; the "
                    "mini-Xception feeds signed depthwise outputs and residual sums to its "
                    "convolutions (torchray's map overflows to ±1e8)")
        if any(isinstance(m, DlibResNet) for m in model.modules()):
            return ("excitation-backprop needs a non-negative top-down signal (a class); a "
                    "verification score's signal, the reference embedding direction, is signed "
                    "(torchray's maps on dlib-resnet are negative everywhere, same pair or not)")
    return None


# ----------------------------------------------------------------------------- targets
def _check_image(image: Any, what: str = "image") -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{what} must be a [C,H,W] tensor, got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in the model's input range, got {image.dtype}")
    return image.detach().float()


def _device(model: nn.Module) -> torch.device:
    from ..score import model_device

    return model_device(model)


def _explained(model: nn.Module, image: Tensor, target: Any) -> tuple[nn.Module, int]:
    """(module whose output column ``t`` is explained, ``t``): the model and class ``k``, or
    :class:`CosineToReference` and 0 for a reference image."""
    if isinstance(target, Tensor):
        ref = _check_image(target, "reference image (target)")
        if ref.shape[0] != image.shape[0]:
            raise ValueError(f"reference image {tuple(ref.shape)} and image {tuple(image.shape)} "
                             f"differ in channels")
        with torch.no_grad():
            e = model(ref[None].to(_device(model)))
        if not isinstance(e, Tensor) or e.dim() != 2 or e.shape[0] != 1:
            raise ValueError(f"a reference image needs an embedder returning [N,D], got "
                             f"{tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__}")
        return CosineToReference(model, e[0]), 0
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise ValueError(f"target must be a class index >= 0 or a reference image [C,H,W], got {target!r}")
    classes = getattr(model, "classes", None)
    if classes is not None:
        n = len(classes)
    else:  # a bare classifier: its output width
        with torch.no_grad():
            out = model(image[None].to(_device(model)))
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"a class target needs a classifier returning logits [N,K], got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        n = out.shape[1]
    if int(target) >= n:
        raise ValueError(f"class {int(target)} out of range: the model has {n} classes")
    return model, int(target)


# ----------------------------------------------------------------------------- methods
@contextlib.contextmanager
def _backward_ctx():
    """Gradients on, oneDNN off (its strided 1x1 convolution backward crashes this torch build,
    see :mod:`xfr.explain.gradients`), library warnings muted."""
    with torch.enable_grad(), torch.backends.mkldnn.flags(enabled=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _input(x: Tensor, net: nn.Module) -> Tensor:
    return x[None].to(_device(net)).clone().requires_grad_(True)


def guided_backprop(net: nn.Module, x: Tensor, target: int) -> Tensor:
    """Guided backpropagation (captum), per channel [C,H,W]."""
    from captum.attr import GuidedBackprop

    with _backward_ctx():
        return GuidedBackprop(net).attribute(_input(x, net), target=target).detach()[0].cpu()


@contextlib.contextmanager
def _maxpool_as_gradient():
    """captum's DeepLift with max pooling passing the gradient (winner-take-all), the default of
    the DeepLIFT reference implementation (kundajelab/deeplift, ``MaxPoolDeepLiftMode.gradient``):
    captum's own max-pool rule unpools with ``max_unpool2d``, which overwrites instead of summing
    where windows overlap (the 3x3/2 pools of both zoo CNNs) and loses most of the difference
    (mini-xception, FER face: attributions summed to 0.53 for a logit difference of 6.78)."""
    from captum.attr._core import deep_lift

    table = deep_lift.SUPPORTED_NON_LINEAR
    saved = {k: table.pop(k) for k in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d) if k in table}
    try:
        yield
    finally:
        table.update(saved)


def deeplift(net: nn.Module, x: Tensor, target: int, baseline: float | Tensor = 0.0) -> Tensor:
    """DeepLIFT, Rescale rule (captum, max pooling as in :func:`_maxpool_as_gradient`), per
    channel [C,H,W], from ``baseline`` (a value, default 0 = black, or an image [C,H,W])."""
    from captum.attr import DeepLift

    base = torch.full_like(x, float(baseline)) if not isinstance(baseline, Tensor) \
        else _check_image(baseline, "baseline")
    if base.shape != x.shape:
        raise ValueError(f"baseline {tuple(base.shape)} and image {tuple(x.shape)} differ in shape")
    with _backward_ctx(), _maxpool_as_gradient():
        attr = DeepLift(net).attribute(_input(x, net), baselines=base[None].to(_device(net)), target=target)
    return attr.detach()[0].cpu()


def _lrp_canonizers() -> list:
    """zennit canonizers for the zoo's layer types (see the module docstring)."""
    from zennit.canonizers import AttributeCanonizer, MergeBatchNorm
    from zennit.layer import Sum

    from ..models.dlib_resnet import ResidualBlock
    from ..models.keras_h5 import KerasAdd, KerasBatchNorm, KerasConv2d, KerasGraph

    class KerasMergeBatchNorm(MergeBatchNorm):
        """Merge each Keras BatchNormalization into the convolution feeding only it."""

        def apply(self, root_module):
            instances = []
            for graph in (m for m in root_module.modules() if isinstance(m, KerasGraph)):
                for name in graph.order:
                    bn, srcs = graph.layers[name], graph.inbound[name]
                    if not isinstance(bn, KerasBatchNorm) or len(srcs) != 1:
                        continue
                    conv = graph.layers[srcs[0]]
                    if isinstance(conv, KerasConv2d) and conv.act is None and graph._uses[srcs[0]] == 1:
                        inst = KerasMergeBatchNorm()
                        inst.register([conv.pointwise if conv.pointwise is not None else conv.conv], bn)
                        instances.append(inst)
            return instances

    def keras_add(self, *xs):
        return self.canonizer_sum(torch.stack(xs, dim=-1))

    def dlib_block(self, x):
        out = self.conv2(self.relu1(self.conv1(x)))
        if not self.down:
            return self.relu2(self.canonizer_sum(torch.stack([out, x], dim=-1)))
        short = self.shortcut_pool(x)
        dh, dw = short.shape[2] - out.shape[2], short.shape[3] - out.shape[3]
        if dh or dw:
            out = F.pad(out, (0, max(dw, 0), 0, max(dh, 0)))
            short = F.pad(short, (0, max(-dw, 0), 0, max(-dh, 0)))
        if short.shape[1] != out.shape[1]:
            short = F.pad(short, (0, 0, 0, 0, 0, out.shape[1] - short.shape[1]))
        return self.relu2(self.canonizer_sum(torch.stack([out, short], dim=-1)))

    def sums(name, module):
        if isinstance(module, KerasAdd):
            return {"forward": keras_add.__get__(module), "canonizer_sum": Sum()}
        if isinstance(module, ResidualBlock):
            return {"forward": dlib_block.__get__(module), "canonizer_sum": Sum()}
        return None

    return [KerasMergeBatchNorm(), AttributeCanonizer(sums)]


def lrp(net: nn.Module, x: Tensor, target: int, rule: str = "epsilon-plus-flat",
        epsilon: float = 1e-6) -> Tensor:
    """Layer-wise relevance propagation (zennit), per channel [C,H,W]; the output relevance is
    the explained score (one-hot x output)."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus, EpsilonPlusFlat, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    if rule not in LRP_RULES:
        raise ValueError(f"rule must be one of {LRP_RULES}, got {rule!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    canonizers = _lrp_canonizers()
    if rule == "epsilon-plus-flat":
        composite = EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    elif rule == "epsilon-plus":
        composite = EpsilonPlus(epsilon=epsilon, canonizers=canonizers)
    else:
        composite = LayerMapComposite(layer_map=layer_map_base() + [
            (Convolution, Epsilon(epsilon=epsilon)), (nn.Linear, Epsilon(epsilon=epsilon))],
            canonizers=canonizers)

    def attr_output(out: Tensor) -> Tensor:
        if out.dim() != 2 or target >= out.shape[1]:
            raise ValueError(f"target {target} out of range for the output {tuple(out.shape)}")
        onehot = torch.zeros_like(out)
        onehot[:, target] = 1.0
        return out.detach() * onehot

    was_training = net.training
    net.eval()
    try:
        with _backward_ctx(), Gradient(model=net, composite=composite) as attributor:
            _, relevance = attributor(_input(x, net), attr_output)
    finally:
        net.train(was_training)
    return relevance.detach()[0].cpu()


def _layer_module(model: nn.Module, layer: str | None, model_name: str, method: str) -> nn.Module:
    from .cam import cam_setup
    from .layers import named_module

    if layer is not None:
        return named_module(model, layer)
    try:
        return cam_setup(model_name or type(model).__name__, model)[1]
    except ValueError as err:
        raise ValueError(f"{method}: {err}; name one with layer=") from None


def guided_grad_cam(net: nn.Module, x: Tensor, target: int, layer: nn.Module) -> Tensor:
    """Guided Grad-CAM (captum GuidedGradCam: guided backprop x Grad-CAM at ``layer``, bilinearly
    upsampled), per channel [C,H,W]."""
    from captum.attr import GuidedGradCam

    with _backward_ctx():
        attr = GuidedGradCam(net, layer).attribute(_input(x, net), target=target,
                                                   interpolate_mode="bilinear")
    return attr.detach()[0].cpu()


def excitation_backprop(net: nn.Module, x: Tensor, target: int, layer: nn.Module) -> Tensor:
    """Excitation backprop (torchray) at ``layer``: the marginal winning probability summed over
    channels, bilinearly resized to the input [H,W]."""
    from torchray.attribution.excitation_backprop import excitation_backprop as ebp

    with _backward_ctx():
        s = ebp(net, x[None].to(_device(net)), target, saliency_layer=layer, resize=True)
    return s.detach()[0, 0].cpu()


# ----------------------------------------------------------------------------- dispatcher
def white_box_map(method: str, model: nn.Module, image: Tensor, target: int | Tensor, *,
                  model_name: str = "", layer: str | None = None, batch_size: int = 16, seed: int = 0,
                  **params: Any) -> Tensor:
    """The ``method`` map (float32 [H,W] on the CPU, the image's size) of ``image`` [C,H,W] (the
    model's input convention, as the score factories take it) for ``target``: a class index or a
    reference image [C,H,W] (a verification embedder: cosine similarity to its embedding).

    ``layer``: a module name (``model.named_modules()``) for the layer methods (Grad-CAM family,
    guided Grad-CAM, excitation backprop; default: the model's Grad-CAM layer,
    :func:`xfr.explain.cam.cam_setup`). ``batch_size``: images per pass where the method batches
    (:data:`BATCHED`; the map does not depend on it). ``seed``: SmoothGrad's noise. ``params``:
    the method's own (:data:`METHOD_PARAMS`, e.g. ``n_steps``, ``baseline``, ``rule``).
    Unsupported (method, model) pairs raise ``ValueError`` with :func:`white_box_support`'s reason.
    """
    _check_method(method)
    reason = white_box_support(method, model)
    if reason is not None:
        raise ValueError(reason)
    x = _check_image(image)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    unknown = sorted(set(params) - set(METHOD_PARAMS[method]))
    if unknown:
        raise ValueError(f"{method} takes no parameter(s) {unknown}; its parameters: "
                         f"{list(METHOD_PARAMS[method]) or 'none'} (and layer, batch_size, seed)")
    if layer is not None and method not in (*CAM_FAMILY, "guided-grad-cam", "excitation-backprop"):
        raise ValueError(f"{method} takes no layer (only the Grad-CAM family, guided-grad-cam and "
                         f"excitation-backprop do)")
    if method in GRADIENT_METHODS:
        from ..score import gradient_class_score, gradient_verification_score

        if isinstance(target, Tensor):
            ref = _check_image(target, "reference image (target)")
            f = gradient_verification_score(model, ref)
        else:
            _explained(model, x, target)  # the checks
            f = gradient_class_score(model, int(target))
        kwargs: dict[str, Any] = dict(params)
        if method != "gradient-x-input":
            kwargs["batch_size"] = batch_size
        if method in RANDOM:
            kwargs["seed"] = seed
        fn = cast("Callable[..., Tensor]", GRADIENT_EXPLAINERS[method])
        return fn(f, x, **kwargs).float().cpu()
    if method in CAM_FAMILY:
        from .cam import cam

        if not isinstance(target, Tensor):
            _explained(model, x, target)
        return cam(CAM_FAMILY[method], model, x, target, layer=layer, model_name=model_name,
                   batch_size=batch_size).float().cpu()
    net, t = _explained(model, x, target)
    if method == "guided-backprop":
        attr = guided_backprop(net, x, t)
        return attr.abs().amax(dim=0).float()
    if method == "deeplift":
        return deeplift(net, x, t, **params).sum(dim=0).float()
    if method == "lrp":
        return lrp(net, x, t, **params).sum(dim=0).float()
    if method == "guided-grad-cam":
        attr = guided_grad_cam(net, x, t, _layer_module(model, layer, model_name, method))
        return attr.abs().amax(dim=0).float()
    # excitation-backprop
    if layer is None:
        raise ValueError("excitation-backprop needs layer=, the module whose excitation is mapped "
                         "(a ReLU layer at mid resolution)")
    from .layers import named_module

    return excitation_backprop(net, x, t, named_module(model, layer)).float()
