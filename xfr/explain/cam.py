"""The Grad-CAM family as baselines of the CMS paper (§4.2, Figs. 10-12): Grad-CAM,
Grad-CAM++ and ScoreCAM from ``pytorch-grad-cam`` on the suite's models (mini-Xceptions, the dlib
ResNet, the TF.js ``faceres-gender`` graph through a layer tap), with the eq. 8 verification
target."""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..score import _sign, model_device
from .layers import named_module

CAM_METHODS = ("gradcam", "gradcam++", "scorecam")
CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "ScoreCAM"}


class CamNet(nn.Module):
    """A model as pytorch-grad-cam wants it: an ``nn.Module`` with at least one parameter (the
    package finds the device from it; TF.js graphs hold only buffers)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class TappedFaceResGender(nn.Module):
    """``faceres-gender`` (a TF.js graph run op by op, :class:`xfr.models.tfjs_graph.TFJSGraph`)
    with an ``nn.Identity`` module ``tap`` applied to the output of graph node ``node``, so that
    module hooks (Grad-CAM's activations and gradients) see that layer. Same logits as the model.

    The graph's ops are closures, not modules, so no layer can be hooked directly; the tap goes
    in through the graph's ``taps`` argument (:meth:`xfr.models.tfjs_graph.TFJSGraph.forward`).
    """

    def __init__(self, net: nn.Module, node: str = "conv_pw_11_relu/clip_by_value"):
        super().__init__()
        from ..models.human import FaceResGender

        if not isinstance(net, FaceResGender):
            raise ValueError(f"expected the faceres-gender model, got {type(net).__name__}")
        names = net.graph.node_names
        if node not in names:
            raise ValueError(f"node {node!r} is not in the graph; conv layers: "
                             f"{[n for n in names if 'relu' in n][-6:]}")
        self.net = net
        self.node = node
        self.tap = nn.Identity()
        self.classes = net.classes
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, faces: Tensor) -> Tensor:
        z = self.net.graph(self.net.preprocess(faces), taps={self.node: self.tap})
        return torch.cat([-z / 2, z / 2], dim=1)


class VerificationTarget:
    """Grad-CAM target for eq. 8: c (cos(e, e_mate) - tau) of an embedding ``e`` (model output)."""

    def __init__(self, mate_embedding: Tensor, tau: float, same: bool):
        self.ref = F.normalize(mate_embedding.float().flatten(), dim=0)
        self.tau = float(tau)
        self.c = _sign(same)

    def __call__(self, output: Tensor) -> Tensor:
        e = F.normalize(output.float(), dim=-1)
        return self.c * ((e * self.ref.to(e.device)).sum(-1) - self.tau)


def cam_setup(model_name: str, model: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(module to explain, its target layer, layer name) for the Grad-CAM family:
    mini-Xceptions: ``model.target_layer`` (the last convolution, Arriaga's Grad-CAM layer);
    dlib ResNet: ``blocks.conv256_2`` (the last residual block at 4x4 on the 150 input; the
    final down block leaves 2x2); faceres-gender: the graph node ``conv_pw_11`` (14x14x512, the
    resolution and width of VGG-16's conv5_3 at 224 that the paper's baselines use; its last
    layer conv_pw_13 is 7x7x1024, twice the ScoreCAM cost) through :class:`TappedFaceResGender`."""
    from ..models.dlib_resnet import DlibResNet
    from ..models.human import FaceResGender
    from ..models.xception import XceptionClassifier

    if isinstance(model, XceptionClassifier):
        return CamNet(model), model.target_layer, model.target_layer_name
    if isinstance(model, DlibResNet):
        return CamNet(model), model.blocks["conv256_2"], "blocks.conv256_2"
    if isinstance(model, FaceResGender):
        tapped = TappedFaceResGender(model)
        return tapped, tapped.tap, tapped.node
    raise ValueError(f"no Grad-CAM target layer known for {model_name!r} ({type(model).__name__})")


def cam_maps(method: str, net: nn.Module, layer: nn.Module, images: Tensor, targets: Sequence,
             context: float = 0.0, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM / Grad-CAM++ / ScoreCAM maps (pytorch-grad-cam) [N,H,W] in [0,1] of images
    [N,3,H,W] with one target per image (``ClassifierOutputTarget`` or a callable on the model
    output, e.g. :class:`VerificationTarget`).

    ``context`` > 0: the images are padded as :class:`ContextPadded` does, the CAM computed on
    the padded input (where the network's activations live) and cropped back to the face.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
    if method not in classes:
        raise ValueError(f"method must be one of {sorted(classes)}, got {method!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be [N,3,H,W], got {tuple(images.shape)}")
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    h, w = images.shape[-2:]
    x = images.float()
    ph = pw = 0
    if context and context > 0:
        from ..models.xception import pad_context

        x = pad_context(x, context)
        ph, pw = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    cam = classes[method](model=net, target_layers=[layer])
    cam.compute_input_gradient = method != "scorecam"  # gradients reach TF.js graphs (buffers)
    if method == "scorecam":
        cam.batch_size = batch_size
    out = []
    try:
        for i in range(len(x)):
            # oneDNN's backward of a strided 1x1 convolution on channels-last input (the
            # mini-Xception shortcuts) crashes this torch build (double free / segfault): the
            # gradient methods run on the native kernels (same gradients); ScoreCAM needs no
            # backward pass and keeps oneDNN (3x faster forward passes). Its tqdm bars are muted.
            with torch.enable_grad(), warnings.catch_warnings(), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore", UserWarning)
                with torch.backends.mkldnn.flags(enabled=method == "scorecam"):
                    m = cam(input_tensor=x[i:i + 1], targets=[targets[i]])[0]
            m = m[ph:ph + h, pw:pw + w] if (ph or pw) else m
            lo, hi = float(m.min()), float(m.max())
            out.append(((m - lo) / (hi - lo)) if hi > lo else np.zeros_like(m))
    finally:
        cam.activations_and_grads.release()
    return np.stack(out).astype(np.float32)


def layer_channels(net: nn.Module, layer: nn.Module, images: Tensor) -> int:
    """Number of channels of ``layer``'s output on ``images`` (ScoreCAM runs one pass each)."""
    shapes = []
    h = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    try:
        with torch.no_grad():
            net(images)
    finally:
        h.remove()
    return int(shapes[0][1])


def cam(method: str, model: nn.Module, image: Tensor, target: int | Tensor, layer: str | None = None,
        model_name: str = "", batch_size: int = 16) -> Tensor:
    """One image's Grad-CAM / Grad-CAM++ / ScoreCAM map (pytorch-grad-cam), the contract of the
    other explainers: a float32 [H,W] CPU tensor of the input's size, in [0, 1].

    ``model``: a zoo model (its Grad-CAM layer from :func:`cam_setup` unless ``layer`` names
    another) or any ``nn.Module`` with ``layer``, the name of one of its modules
    (``model.named_modules()``). ``target``: a class index (the logit of that class) or, for a
    verification model, the reference image [C,H,W]: the cosine similarity of the embeddings
    (eq. 8 with tau = 0 and c = +1)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not isinstance(image, Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a [C,H,W] tensor, got {getattr(image, 'shape', type(image).__name__)}")
    if layer is None:
        net, target_layer, _ = cam_setup(model_name or type(model).__name__, model)
    else:
        net, target_layer = CamNet(model), named_module(model, layer)
    if isinstance(target, Tensor):
        with torch.no_grad():
            ref = model(target.float()[None].to(model_device(model)))[0]
        tgt = VerificationTarget(ref, 0.0, True)
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target >= 0:
        tgt = ClassifierOutputTarget(int(target))
    else:
        raise ValueError(f"target must be a class index >= 0 or a reference image, got {target!r}")
    return torch.from_numpy(cam_maps(method, net, target_layer, image[None].float(), [tgt],
                                     batch_size=batch_size)[0]).float()
