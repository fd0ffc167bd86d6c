"""A named layer's activations, for the structural explanations (survey ``002_…`` §2.3-§5):
feature visualization, feature inversion, effective receptive fields and TCAV all read one
layer of a model, by name, through :func:`layer_activations`.

A layer is named as the model names it:

- a module of an ``nn.Module`` model (``model.named_modules()``: ``"blocks.conv64_3"`` of
  ``dlib-resnet``, ``"net.layers.add_2"`` of the mini-Xceptions), read by a forward hook;
- a node of a TF.js graph model (``faceres``, ``faceres-gender``, ``mobileface``: no torch
  modules, the graph is run op by op), read through the graph's ``taps``
  (:meth:`xfr.models.tfjs_graph.TFJSGraph.forward`);
- ``"output"``: the model's own output (logits, or the identity descriptor of a recognizer).

The forward pass stops once the layer is computed (the layers after it are not run), so a
shallow layer costs a fraction of the model.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from torch import Tensor, nn

OUTPUT = "output"


class _Reached(Exception):
    """Raised by the hook once the layer's output is captured (stops the forward pass)."""


def _graph(model: nn.Module):
    from ..models.tfjs_graph import TFJSGraph

    g = getattr(model, "graph", None)
    return g if isinstance(g, TFJSGraph) else None


def named_module(model: nn.Module, name: str) -> nn.Module:
    """The module ``name`` of ``model.named_modules()``; ValueError naming the model's last
    convolutions when there is none."""
    modules = dict(model.named_modules())
    if name not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise ValueError(f"{type(model).__name__} has no layer {name!r}; its last convolutions: {convs[-4:]} "
                         f"(xfr.explain.layers.layer_names lists them all)")
    return modules[name]


def layer_names(model: nn.Module) -> list[str]:
    """The layer names :func:`layer_activations` accepts, input side first (``"output"`` last)."""
    g = _graph(model)
    names = list(g.node_names) if g is not None else [n for n, _ in model.named_modules() if n]
    return names + [OUTPUT]


@contextmanager
def tapped(model: nn.Module, layer: str, fn: Callable[[Tensor], Tensor | None]):
    """While the block runs, every forward pass of ``model`` calls ``fn`` on the output of
    ``layer`` (a module's forward hook, or a graph node's tap); a tensor ``fn`` returns replaces
    the output. ValueError naming the nearest layers when ``layer`` is unknown."""
    g = _graph(model)
    if g is not None:
        if layer not in g.node_names:
            raise ValueError(f"{type(model).__name__} has no graph node {layer!r}; some nodes: "
                             f"{g.node_names[-6:]} (xfr.explain.layers.layer_names lists them all)")
        graph_forward = g.forward  # the class's method, or an enclosing tap's
        previous = g.__dict__.get("forward")

        def forward(x, taps=None):
            def tap(t):
                r = fn(t)
                return t if r is None else r
            return graph_forward(x, taps={**(taps or {}), layer: tap})

        g.forward = forward  # type: ignore[method-assign]
        try:
            yield
        finally:
            if previous is None:
                del g.forward  # back to the class's method
            else:
                g.forward = previous  # type: ignore[method-assign]
        return
    if not layer:  # "" names the model itself in named_modules(), not a layer
        raise ValueError(f"{type(model).__name__}: name one of its layers, got '' "
                         f"(xfr.explain.layers.layer_names lists them all)")
    module = named_module(model, layer)

    def hook(_m, _inp, out):
        return fn(out[0] if isinstance(out, (tuple, list)) else out)

    h = module.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def layer_activations(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """``f(images [N,3,H,W] in [0,1]) -> activations of layer [N, ...]``, differentiable with
    respect to the images (the model's own preprocessing included); the forward pass stops at
    the layer. ValueError naming the nearest layers when ``layer`` is unknown."""
    if layer == OUTPUT:
        return lambda x: model(x)
    with tapped(model, layer, lambda t: None):  # checks the name now
        pass

    def run(x: Tensor) -> Tensor:
        box: list[Tensor] = []

        def stop(t: Tensor):
            box.append(t)
            raise _Reached

        with tapped(model, layer, stop):
            try:
                model(x)
            except _Reached:
                pass
        if not box:
            raise ValueError(f"layer {layer!r} was not run by {type(model).__name__}.forward")
        return box[0]

    return run


@contextmanager
def input_gradients_only(model: nn.Module):
    """The model in eval mode with its parameters' gradients off while the block runs (the
    structural methods differentiate with respect to the input only); restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def input_size(model: nn.Module, default: int = 112) -> int:
    """The side of the model's network input (its preprocessing resizes to it)."""
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)):
        return int(size[0])
    if isinstance(size, int):
        return size
    return int(getattr(model, "chip_size", default))


def as_unit_batch(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected images [3,H,W] or [N,3,H,W], got {getattr(x, 'shape', type(x))}")
    return (x if x.dim() == 4 else x[None]).float()


__all__ = ["OUTPUT", "named_module", "layer_names", "layer_activations", "tapped", "input_gradients_only", "input_size", "as_unit_batch"]
