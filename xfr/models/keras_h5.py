"""Keras HDF5 model files read with h5py, and their networks rebuilt as PyTorch modules.

No TensorFlow, no pickle: :func:`read_keras_h5` reads the ``model_config`` JSON attribute (the
layer graph) and the layer weights (``model_weights/<layer>/...`` named by the group's
``weight_names`` attribute) of a file written by ``keras.Model.save`` (Keras 2.x; Sequential and
functional models; the Keras-3 legacy-h5 node format is understood too). :class:`KerasGraph`
turns such a model into an ``nn.Module`` working in NCHW, layer by layer:

- ``Conv2D``, ``SeparableConv2D`` (depthwise then pointwise), ``DepthwiseConv2D`` with ``valid``
  or ``same`` padding. Keras/TF ``same`` padding is ``total = max((ceil(n/s)-1)*s + k_eff - n, 0)``
  split as ``total//2`` before and the rest after, so it is *asymmetric* (one more row/column at
  the bottom/right) whenever ``total`` is odd, e.g. a 3x3 stride-2 pooling of an even size.
- ``MaxPooling2D`` / ``AveragePooling2D`` (``same``: padded cells never win a max and are not
  counted in an average, as in TF), ``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``.
- ``BatchNormalization`` (inference form with the moving statistics and the file's ``epsilon``),
  ``Activation`` (linear, relu, sigmoid, tanh, softmax), ``Add``, ``Concatenate``, ``Dropout``.

Layers with weights are standard PyTorch modules (``nn.Conv2d``, ``nn.BatchNorm2d`` subclass,
``nn.ReLU`` etc., one activation module per use), so ``reset_parameters`` (model randomization),
captum's GuidedBackprop / DeepLift and zennit's LRP rules see every layer.

Anything else raises ``NotImplementedError`` naming the layer. Files that are missing, truncated
or not Keras models raise :class:`xfr.assets.AssetError` with the path and what is wrong.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..assets import AssetError

SUPPORTED_LAYERS = (
    "InputLayer", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "BatchNormalization",
    "Activation", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "Add", "Concatenate", "Dropout",
)


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class KerasLayer:
    """One layer of a Keras model: its class, config, input layer names and weights by name.

    Weight names are the last component without ``:0`` (``kernel``, ``bias``, ``gamma``,
    ``beta``, ``moving_mean``, ``moving_variance``, ``depthwise_kernel``, ``pointwise_kernel``).
    """

    name: str
    class_name: str
    config: dict[str, Any]
    inbound: tuple[str, ...]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class KerasModel:
    """A Keras model as stored in an HDF5 file: layers in topological order, inputs, outputs."""

    path: Path
    layers: tuple[KerasLayer, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    keras_version: str = ""
    backend: str = ""

    def layer(self, name: str) -> KerasLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.path}: no layer named {name!r}")

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of the (first) input without the batch axis, channels last, e.g. (64, 64, 1)."""
        cfg = self.layer(self.inputs[0]).config
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape is None:
            raise ValueError(f"{self.path}: input layer {self.inputs[0]!r} declares no shape")
        return tuple(shape[1:])


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _node_names(node: Any) -> list[str]:
    """Input layer names of one inbound node (Keras 2 list form or Keras 3 dict form)."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}} with keras_history
        found: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, dict):
                if "keras_history" in obj:
                    found.append(obj["keras_history"][0])
                else:
                    for v in obj.values():
                        walk(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    walk(v)

        walk(node.get("args", []))
        return found
    return [entry[0] for entry in node]


def _layer_weights(group: Any, layer_name: str) -> dict[str, np.ndarray]:
    if layer_name not in group:
        return {}
    g = group[layer_name]
    names = [_text(n) for n in g.attrs.get("weight_names", [])]
    out = {}
    for full in names:
        key = full.split("/")[-1].split(":")[0]
        out[key] = np.asarray(g[full], dtype=np.float32)
    return out


def _layer_refs(refs: list) -> tuple[str, ...]:
    """Layer names of ``input_layers``/``output_layers`` ([[name, 0, 0], ...] or [name, 0, 0])."""
    if refs and isinstance(refs[0], str):
        return (refs[0],)
    return tuple(ref[0] for ref in refs)


def read_keras_h5(path: str | Path) -> KerasModel:
    """Read the layer graph and weights of a Keras HDF5 model file (see module docstring)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise AssetError(f"Keras model file {path} does not exist")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise AssetError(
            f"{path} is not a readable HDF5 file ({err}); it is truncated or corrupt: restore it "
            "from the mirror (XFR_MIRROR) or its origin"
        ) from err
    try:
        with fh:
            if "model_config" not in fh.attrs:
                raise AssetError(
                    f"{path} has no 'model_config' attribute: it is not a Keras model saved with "
                    "model.save() (a weights-only file cannot be rebuilt without its architecture)"
                )
            cfg = json.loads(_text(fh.attrs["model_config"]))
            wgroup = fh["model_weights"] if "model_weights" in fh else fh
            class_name = cfg["class_name"]
            body = cfg["config"]
            raw_layers = body if isinstance(body, list) else body["layers"]
            layers = []
            prev = None
            for raw in raw_layers:
                lcfg = raw["config"]
                name = raw.get("name") or lcfg["name"]
                nodes = raw.get("inbound_nodes")
                if nodes:
                    if len(nodes) > 1:
                        raise NotImplementedError(
                            f"{path}: layer {name!r} is shared ({len(nodes)} calls); not supported"
                        )
                    inbound = tuple(_node_names(nodes[0]))
                elif class_name == "Sequential" and prev is not None:
                    inbound = (prev,)
                else:
                    inbound = ()
                layers.append(KerasLayer(name, raw["class_name"], lcfg, inbound,
                                         _layer_weights(wgroup, name)))
                prev = name
            if class_name == "Sequential":
                if layers and layers[0].class_name != "InputLayer":
                    first = layers[0]
                    shape = first.config.get("batch_input_shape")
                    layers.insert(0, KerasLayer("input", "InputLayer",
                                                {"batch_input_shape": shape}, ()))
                    layers[1] = KerasLayer(first.name, first.class_name, first.config, ("input",),
                                           first.weights)
                inputs: tuple[str, ...] = (layers[0].name,)
                outputs: tuple[str, ...] = (layers[-1].name,)
            else:
                inputs = _layer_refs(body["input_layers"])
                outputs = _layer_refs(body["output_layers"])
            return KerasModel(path, tuple(layers), inputs, outputs,
                              _text(fh.attrs.get("keras_version", "")),
                              _text(fh.attrs.get("backend", "")))
    except AssetError:
        raise
    except (KeyError, ValueError, OSError) as err:
        raise AssetError(f"{path} is not a readable Keras model file: {err!r}") from err


# ----------------------------------------------------------------------------- layers
def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Keras/TF ``same`` padding (before, after) of one spatial axis of length ``size``."""
    k_eff = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...] = (1, 1)) -> tuple[int, int, int, int]:
    """F.pad order (left, right, top, bottom) of Keras ``same`` padding for ``x`` [N,C,H,W]."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    return left, right, top, bottom


def _check_channels_last(cfg: dict, name: str) -> None:
    fmt = cfg.get("data_format", "channels_last")
    if fmt != "channels_last":
        raise NotImplementedError(f"layer {name!r}: data_format {fmt!r} not supported")


_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


def activation_module(activation: str) -> nn.Module | None:
    """A fresh standard module for a Keras activation name (``nn.ReLU``, ``nn.Sigmoid``,
    ``nn.Tanh``, ``nn.Softmax(dim=1)``; None for ``linear``). One module per use: captum's
    GuidedBackprop / DeepLift hook ``nn.ReLU`` modules and need a distinct one per call site."""
    if activation == "linear":
        return None
    if activation == "relu":
        return nn.ReLU()
    if activation == "sigmoid":
        return nn.Sigmoid()
    if activation == "tanh":
        return nn.Tanh()
    if activation == "softmax":
        return nn.Softmax(dim=1)
    raise NotImplementedError(f"activation {activation!r} not supported")


class KerasActivation(nn.Module):
    """``Activation`` layer: a standard activation module ``act`` (softmax over the channel axis,
    dim 1 in NCHW / [N,K]; ``nn.Identity`` for linear)."""

    def __init__(self, activation: str):
        super().__init__()
        if activation not in (*_ACTIVATIONS, "softmax"):
            raise NotImplementedError(f"activation {activation!r} not supported")
        self.activation = activation
        self.act = activation_module(activation) or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x)

    def extra_repr(self) -> str:
        return self.activation


class KerasSamePad(nn.Module):
    """Keras/TF ``same`` zero padding computed from the input's size (:func:`same_padding`;
    asymmetric, one more row/column at the bottom/right, when the total is odd). No parameters."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]):
        super().__init__()
        self.kernel, self.stride, self.dilation = tuple(kernel), tuple(stride), tuple(dilation)

    def forward(self, x: Tensor) -> Tensor:
        pads = _pad_same(x, self.kernel, self.stride, self.dilation)
        return F.pad(x, pads) if any(pads) else x

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class KerasConv2d(nn.Module):
    """``Conv2D`` / ``DepthwiseConv2D`` / ``SeparableConv2D`` with Keras ``valid``/``same`` padding,
    built from standard modules (so captum, zennit, Quantus and ``reset_parameters`` see them):

    - ``pad``: :class:`KerasSamePad` when the 'same' padding depends on the input size (stride >
      1 or an even kernel), else None (a symmetric 'same' padding is the ``nn.Conv2d``'s own);
    - ``conv``: ``nn.Conv2d`` (depthwise: ``groups = C_in``, ``depth_multiplier`` outputs per
      input channel);
    - ``pointwise``: separable only, the 1x1 ``nn.Conv2d`` after the depthwise one (which then
      has no bias; padding and strides apply to the depthwise one);
    - ``act``: the fused activation as a module (None for linear).

    ``weight`` / ``bias`` / ``pointwise_weight`` are read-only views of those modules' parameters.
    """

    def __init__(self, kind: str, config: dict, weights: dict[str, np.ndarray], name: str = ""):
        super().__init__()
        _check_channels_last(config, name)
        self.kind = kind
        self.stride = tuple(config.get("strides", (1, 1)))
        self.dilation = tuple(config.get("dilation_rate", (1, 1)))
        self.padding = config.get("padding", "valid")
        if self.padding not in ("valid", "same"):
            raise NotImplementedError(f"layer {name!r}: padding {self.padding!r} not supported")
        act = config.get("activation", "linear")
        if act not in _ACTIVATIONS:
            raise NotImplementedError(f"layer {name!r}: fused activation {act!r} not supported")
        self.activation = act

        def need(key: str) -> np.ndarray:
            if key not in weights:
                raise AssetError(f"layer {name!r} ({kind}) lacks weight {key!r}; "
                                 f"the file holds {sorted(weights)}")
            return weights[key]

        use_bias = bool(config.get("use_bias", True))
        if kind == "Conv2D":
            k = need("kernel")  # (kh, kw, in, out) -> (out, in, kh, kw)
            kernel = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
            groups = 1
            pw = None
        else:
            d = need("depthwise_kernel")  # (kh, kw, in, mult) -> (in*mult, 1, kh, kw)
            kh, kw, cin, mult = d.shape
            kernel = torch.from_numpy(d.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).copy())
            groups = cin
            pw = None
            if kind == "SeparableConv2D":
                p = need("pointwise_kernel")  # (1, 1, in*mult, out) -> (out, in*mult, 1, 1)
                pw = torch.from_numpy(p.transpose(3, 2, 0, 1).copy())
        bias = torch.from_numpy(need("bias").copy()) if use_bias else None
        self.kernel_size: tuple[int, int] = (int(kernel.shape[-2]), int(kernel.shape[-1]))
        self.groups = groups
        static: tuple[int, int] = (0, 0)
        self.pad: KerasSamePad | None = None
        if self.padding == "same":
            k_eff = [(k - 1) * dl + 1 for k, dl in zip(self.kernel_size, self.dilation)]
            if all(s == 1 for s in self.stride) and all(k % 2 == 1 for k in k_eff):
                static = (k_eff[0] // 2, k_eff[1] // 2)  # symmetric for every input size
            else:
                self.pad = KerasSamePad(self.kernel_size, self.stride, self.dilation)
        self.conv = nn.Conv2d(kernel.shape[1] * groups, kernel.shape[0], self.kernel_size,
                              stride=self.stride, padding=static, dilation=self.dilation,
                              groups=groups, bias=bias is not None and pw is None)
        self.pointwise: nn.Conv2d | None = None
        if pw is not None:
            self.pointwise = nn.Conv2d(pw.shape[1], pw.shape[0], 1, bias=bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(kernel)
            if pw is not None:
                assert self.pointwise is not None
                self.pointwise.weight.copy_(pw)
            last = self.conv if self.pointwise is None else self.pointwise
            if bias is not None:
                assert last.bias is not None
                last.bias.copy_(bias)
        self.act = activation_module(act)

    @property
    def weight(self) -> Tensor:
        """The (depthwise) kernel [out, in/groups, kh, kw]."""
        return self.conv.weight

    @property
    def pointwise_weight(self) -> Tensor | None:
        return None if self.pointwise is None else self.pointwise.weight

    @property
    def bias(self) -> Tensor | None:
        return (self.conv if self.pointwise is None else self.pointwise).bias

    @property
    def out_channels(self) -> int:
        return (self.conv if self.pointwise is None else self.pointwise).out_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        y = self.conv(x)
        if self.pointwise is not None:
            y = self.pointwise(y)
        return y if self.act is None else self.act(y)

    def extra_repr(self) -> str:
        return f"{self.kind}, stride={self.stride}, padding={self.padding!r}"


class KerasBatchNorm(nn.BatchNorm2d):
    """``BatchNormalization`` as an ``nn.BatchNorm2d`` (gamma/beta as its ``weight``/``bias``
    parameters, the moving statistics as ``running_mean``/``running_var``, the file's epsilon),
    so ``reset_parameters`` / ``reset_running_stats`` and LRP canonizers see a standard layer.

    Inference semantics always: ``forward`` normalizes with the running statistics and never
    updates them, also in ``train()`` mode (the port is not meant for training, and explainers or
    sanity checks that toggle modes must not change the function). ``scale=False`` / ``center=
    False`` layers get gamma = 1 / beta = 0 (trainable like the others after a reset).
    """

    def __init__(self, config: dict, weights: dict[str, np.ndarray], name: str = ""):
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) else axis
        if axis not in (-1, 3):
            raise NotImplementedError(f"layer {name!r}: BatchNormalization axis {axis} not supported")
        for key in ("moving_mean", "moving_variance"):
            if key not in weights:
                raise AssetError(f"layer {name!r} lacks weight {key!r}; has {sorted(weights)}")
        mean = torch.from_numpy(weights["moving_mean"].copy())
        var = torch.from_numpy(weights["moving_variance"].copy())
        gamma = weights.get("gamma") if config.get("scale", True) else None
        beta = weights.get("beta") if config.get("center", True) else None
        super().__init__(mean.numel(), eps=float(config.get("epsilon", 1e-3)), momentum=0.0,
                         affine=True, track_running_stats=True)
        assert self.running_mean is not None and self.running_var is not None  # track_running_stats
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.weight.copy_(torch.ones_like(mean) if gamma is None else torch.from_numpy(gamma.copy()))
            self.bias.copy_(torch.zeros_like(mean) if beta is None else torch.from_numpy(beta.copy()))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class KerasPool2d(nn.Module):
    """``MaxPooling2D`` / ``AveragePooling2D`` with Keras ``valid``/``same`` padding, pooling with
    ``nn.MaxPool2d`` / ``nn.AvgPool2d`` modules (``pool``; ``pool_ceil``, a ceil-mode max pool, for
    a 'same' padding only at the bottom/right, e.g. Xception's 3x3/2 pooling of an even size;
    ``pool_sym``, a max pool with its own symmetric padding, e.g. that pooling of an odd size),
    so DeepLift's max-pool rule sees them; other 'same' paddings pad with -inf first."""

    def __init__(self, kind: str, config: dict, name: str = ""):
        super().__init__()
        _check_channels_last(config, name)
        self.kind = kind
        self.pool_size = tuple(config.get("pool_size", (2, 2)))
        self.stride = tuple(config.get("strides") or self.pool_size)
        self.padding = config.get("padding", "valid")
        if self.padding not in ("valid", "same"):
            raise NotImplementedError(f"layer {name!r}: padding {self.padding!r} not supported")
        if kind == "MaxPooling2D":
            self.pool: nn.Module = nn.MaxPool2d(self.pool_size, self.stride)
            self.pool_ceil: nn.Module | None = nn.MaxPool2d(self.pool_size, self.stride, ceil_mode=True)
            half = (self.pool_size[0] // 2, self.pool_size[1] // 2)
            self.pool_sym: nn.Module | None = nn.MaxPool2d(self.pool_size, self.stride, padding=half)
        else:
            self.pool = nn.AvgPool2d(self.pool_size, self.stride)
            self.pool_ceil = self.pool_sym = None

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "same":
            pads = _pad_same(x, self.pool_size, self.stride)
            if any(pads):
                if self.kind == "MaxPooling2D":
                    left, right, top, bottom = pads
                    assert self.pool_ceil is not None and self.pool_sym is not None
                    if left == 0 and top == 0:  # padding only after: ceil_mode pools the same
                        out = self.pool_ceil(x)
                        if out.shape[-2:] == (math.ceil(x.shape[-2] / self.stride[0]),
                                              math.ceil(x.shape[-1] / self.stride[1])):
                            return out
                    if (top, left) == (bottom, right) == (self.pool_size[0] // 2, self.pool_size[1] // 2):
                        return self.pool_sym(x)  # symmetric: the module's own -inf padding
                    x = F.pad(x, pads, value=float("-inf"))
                else:  # TF averages over the valid cells only
                    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
                    total = self.pool(F.pad(x, pads))
                    return total / F.avg_pool2d(ones, self.pool_size, self.stride)
        return self.pool(x)

    def extra_repr(self) -> str:
        return f"{self.kind}, pool={self.pool_size}, stride={self.stride}, padding={self.padding!r}"


class KerasGlobalPool(nn.Module):
    """``GlobalAveragePooling2D`` / ``GlobalMaxPooling2D``: an ``nn.AdaptiveAvgPool2d(1)`` /
    ``nn.AdaptiveMaxPool2d(1)`` module ``pool`` (LRP's sum-pooling rule and DeepLift see it),
    flattened to [N,C]."""

    def __init__(self, kind: str, config: dict, name: str = ""):
        super().__init__()
        _check_channels_last(config, name)
        self.kind = kind
        self.pool = nn.AdaptiveAvgPool2d(1) if kind == "GlobalAveragePooling2D" else nn.AdaptiveMaxPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x).flatten(1)


class KerasAdd(nn.Module):
    """``Add``: elementwise sum of the inputs (a module, so hooks can see residual outputs)."""

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class KerasConcat(nn.Module):
    def __init__(self, config: dict, name: str = ""):
        super().__init__()
        axis = config.get("axis", -1)
        if axis not in (-1, 3):
            raise NotImplementedError(f"layer {name!r}: Concatenate axis {axis} not supported")

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=1)


def build_layer(layer: KerasLayer) -> nn.Module:
    """The PyTorch module (NCHW) computing one Keras layer."""
    kind, cfg, name = layer.class_name, layer.config, layer.name
    layer = KerasLayer(name, kind, cfg, layer.inbound,
                       {k: np.asarray(v, dtype=np.float32) for k, v in layer.weights.items()})
    if kind in ("InputLayer", "Dropout"):
        return nn.Identity()
    if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
        return KerasConv2d(kind, cfg, layer.weights, name)
    if kind == "BatchNormalization":
        return KerasBatchNorm(cfg, layer.weights, name)
    if kind == "Activation":
        return KerasActivation(cfg["activation"])
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return KerasPool2d(kind, cfg, name)
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        return KerasGlobalPool(kind, cfg, name)
    if kind == "Add":
        return KerasAdd()
    if kind == "Concatenate":
        return KerasConcat(cfg, name)
    raise NotImplementedError(
        f"Keras layer {name!r} of type {kind} is not supported by xfr.models.keras_h5 "
        f"(supported: {', '.join(SUPPORTED_LAYERS)})"
    )


class KerasGraph(nn.Module):
    """A single-input Keras model as an ``nn.Module``: ``forward(x[N,C,H,W]) -> output``.

    ``output`` picks the layer whose value is returned (default: the model's output), e.g. the
    input of a final softmax to get logits. Submodules are named as the Keras layers
    (``graph.layers["conv2d_7"]``), so hooks (Grad-CAM) can be attached by Keras name.
    """

    def __init__(self, model: KerasModel, output: str | None = None):
        super().__init__()
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise NotImplementedError(f"{model.path}: only single-input single-output models")
        self.input_name = model.inputs[0]
        self.output_name = output or model.outputs[0]
        # keep only the layers the output depends on, in topological (file) order
        by_name = {layer.name: layer for layer in model.layers}
        if self.output_name not in by_name:
            raise KeyError(f"{model.path}: no layer named {self.output_name!r}")
        needed, stack = set(), [self.output_name]
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(by_name[name].inbound)
        self.order = [layer.name for layer in model.layers if layer.name in needed]
        self.inbound = {name: list(by_name[name].inbound) for name in self.order}
        self.layers = nn.ModuleDict({name: build_layer(by_name[name]) for name in self.order})
        self.to(memory_format=torch.channels_last)
        # how many consumers each value has, to free intermediate tensors early
        self._uses = {name: 0 for name in self.order}
        for name in self.order:
            for src in self.inbound[name]:
                self._uses[src] += 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # NHWC in memory: ~2-3x faster depthwise convolutions on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        values: dict[str, Tensor] = {}
        left = dict(self._uses)
        for name in self.order:
            if name == self.input_name:
                out = self.layers[name](x)
            else:
                args = [values[src] for src in self.inbound[name]]
                for src in self.inbound[name]:
                    left[src] -= 1
                    if left[src] == 0 and src != self.output_name:
                        del values[src]
                out = self.layers[name](*args)
            values[name] = out
        return values[self.output_name]
