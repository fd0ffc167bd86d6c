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


_ACTIVATIONS = {"linear": None, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


class KerasActivation(nn.Module):
    """``Activation`` layer (softmax over the channel axis, dim 1 in NCHW / [N,K])."""

    def __init__(self, activation: str):
        super().__init__()
        if activation not in (*_ACTIVATIONS, "softmax"):
            raise NotImplementedError(f"activation {activation!r} not supported")
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation == "softmax":
            return torch.softmax(x, dim=1)
        fn = _ACTIVATIONS[self.activation]
        return x if fn is None else fn(x)

    def extra_repr(self) -> str:
        return self.activation


class KerasConv2d(nn.Module):
    """``Conv2D`` / ``DepthwiseConv2D`` / ``SeparableConv2D`` with Keras ``valid``/``same`` padding.

    Separable: a depthwise convolution (``groups = C_in``, ``depth_multiplier`` outputs per input
    channel) followed by a 1x1 pointwise convolution; padding and strides apply to the first.
    """

    weight: nn.Parameter
    pointwise: nn.Parameter | None
    bias: nn.Parameter | None

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

        if kind == "Conv2D":
            k = need("kernel")  # (kh, kw, in, out) -> (out, in, kh, kw)
            self.weight = nn.Parameter(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
            self.groups = 1
            self.pointwise = None
        else:
            d = need("depthwise_kernel")  # (kh, kw, in, mult) -> (in*mult, 1, kh, kw)
            kh, kw, cin, mult = d.shape
            dw = d.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            self.weight = nn.Parameter(torch.from_numpy(dw.copy()))
            self.groups = cin
            if kind == "SeparableConv2D":
                p = need("pointwise_kernel")  # (1, 1, in*mult, out) -> (out, in*mult, 1, 1)
                self.pointwise = nn.Parameter(torch.from_numpy(p.transpose(3, 2, 0, 1).copy()))
            else:
                self.pointwise = None
        if config.get("use_bias", True):
            self.bias = nn.Parameter(torch.from_numpy(need("bias").copy()))
        else:
            self.bias = None
        self.kernel_size = tuple(self.weight.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        pad: tuple[int, int] | int = 0
        if self.padding == "same":
            left, right, top, bottom = _pad_same(x, self.kernel_size, self.stride, self.dilation)
            if left == right and top == bottom:
                pad = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
        bias_first = self.bias if self.pointwise is None else None
        y = F.conv2d(x, self.weight, bias_first, self.stride, pad, self.dilation, self.groups)
        if self.pointwise is not None:
            y = F.conv2d(y, self.pointwise, self.bias)
        fn = _ACTIVATIONS[self.activation]
        return y if fn is None else fn(y)

    def extra_repr(self) -> str:
        return (f"{self.kind}, weight={tuple(self.weight.shape)}, stride={self.stride}, "
                f"padding={self.padding!r}, bias={self.bias is not None}")


class KerasBatchNorm(nn.Module):
    """``BatchNormalization`` at inference: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

    Always uses the stored moving statistics (also in ``train()`` mode): the port is not meant
    for training, and this keeps explainers that toggle modes from changing the function.
    """

    mean: Tensor
    var: Tensor
    gamma: Tensor
    beta: Tensor

    def __init__(self, config: dict, weights: dict[str, np.ndarray], name: str = ""):
        super().__init__()
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
        self.eps = float(config.get("epsilon", 1e-3))
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)
        self.register_buffer("gamma", torch.ones_like(mean) if gamma is None
                             else torch.from_numpy(gamma.copy()))
        self.register_buffer("beta", torch.zeros_like(mean) if beta is None
                             else torch.from_numpy(beta.copy()))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.mean.numel()}, eps={self.eps}"


class KerasPool2d(nn.Module):
    """``MaxPooling2D`` / ``AveragePooling2D`` with Keras ``valid``/``same`` padding."""

    def __init__(self, kind: str, config: dict, name: str = ""):
        super().__init__()
        _check_channels_last(config, name)
        self.kind = kind
        self.pool_size = tuple(config.get("pool_size", (2, 2)))
        self.stride = tuple(config.get("strides") or self.pool_size)
        self.padding = config.get("padding", "valid")
        if self.padding not in ("valid", "same"):
            raise NotImplementedError(f"layer {name!r}: padding {self.padding!r} not supported")

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "same":
            pads = _pad_same(x, self.pool_size, self.stride)
            if any(pads):
                if self.kind == "MaxPooling2D":
                    left, right, top, bottom = pads
                    if left == 0 and top == 0:  # padding only after: ceil_mode pools the same
                        out = F.max_pool2d(x, self.pool_size, self.stride, ceil_mode=True)
                        if out.shape[-2:] == (math.ceil(x.shape[-2] / self.stride[0]),
                                              math.ceil(x.shape[-1] / self.stride[1])):
                            return out
                    x = F.pad(x, pads, value=float("-inf"))
                else:  # TF averages over the valid cells only
                    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
                    total = F.avg_pool2d(F.pad(x, pads), self.pool_size, self.stride)
                    return total / F.avg_pool2d(ones, self.pool_size, self.stride)
        if self.kind == "MaxPooling2D":
            return F.max_pool2d(x, self.pool_size, self.stride)
        return F.avg_pool2d(x, self.pool_size, self.stride)

    def extra_repr(self) -> str:
        return f"{self.kind}, pool={self.pool_size}, stride={self.stride}, padding={self.padding!r}"


class KerasGlobalPool(nn.Module):
    def __init__(self, kind: str, config: dict, name: str = ""):
        super().__init__()
        _check_channels_last(config, name)
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)) if self.kind == "GlobalAveragePooling2D" else x.amax(dim=(2, 3))


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
