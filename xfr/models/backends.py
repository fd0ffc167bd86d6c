"""Execution paths for the black-box forward pass: the same pinned weights run by PyTorch eager
(the reference, and the only path with gradients), ONNX Runtime or OpenVINO.

Every zoo model computes ``forward(x) = finish(body(preprocess(x)))``: ``preprocess`` (resize to
the network's input size, the model's own normalization) stays in PyTorch, and ``body`` — the
network on its fixed-size input, where the time goes — is what another path replaces.
:func:`accelerated` returns a shallow copy of the model whose ``body`` is a
:class:`ExportedNet`; the PyTorch module itself is never changed, so white-box methods
(gradients, hooks on named layers) keep using it.

Exports are built from the loaded (sha256-pinned) weights on first use, with a dynamic batch
dimension, and cached under ``$XFR_CACHE/exports/`` by a hash of everything they are built
from (the module's class and configuration, every parameter and buffer, the input shape, the
torch/exporter version); nothing is committed.

Which path a score function uses by default (``backend="auto"``) is decided per model by
measurement, ``benchmarks/bench_speed.py`` (``reports/speed.md``): a path is the
default only where it was >= 1.3x faster than PyTorch on the 2-core CPU of the reference machine
and agreed with the PyTorch module (embeddings: cosine >= 0.9999, probabilities: <= 1e-4).
"""
from __future__ import annotations

import copy
import hashlib
import os
import threading
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

BACKENDS = ("torch", "onnxruntime", "openvino")
EXPORT_VERSION = "1"  # bump when the export recipe changes (invalidates the cache)
OPSET = 17

# The measured choice for backend="auto": the "adopt" column of benchmarks/bench_speed.py's
# forward-path table (reports/speed.json; a test keeps the two equal). Models not listed (and any
# model on a GPU) run in PyTorch.
AUTO: dict[str, str] = {
    "dlib-resnet": "onnxruntime",
    "mobileface": "openvino",
    "faceres": "openvino",
    "faceres-gender": "openvino",
    "mini-xception-fer2013": "openvino",
    "mini-xception-gender": "openvino",
    "facemesh": "openvino",
    "mtcnn": "openvino",
}


# model -> {path: accelerated copy}; outside the model, so that copy.deepcopy(model) (e.g. the
# randomization sanity check) never tries to copy a runtime session
_ACCELERATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_backend(backend: str) -> str:
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def export_dir() -> Path:
    from ..assets import cache_dir

    return cache_dir() / "exports"


def module_fingerprint(module: nn.Module, sample_shape: Sequence[int], dynamic: Sequence[int]) -> str:
    """sha256 of what an export is built from: the module tree's classes and configuration
    (``repr``), every parameter and buffer, the non-dynamic input dimensions and the exporter."""
    h = hashlib.sha256()
    shape = [("*" if i in dynamic else int(s)) for i, s in enumerate(sample_shape)]
    h.update(f"{EXPORT_VERSION}|{OPSET}|{torch.__version__}|{shape}|{module!r}".encode())
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


_export_lock = threading.Lock()


def export_onnx(module: nn.Module, sample: Tensor, dynamic: Sequence[int] = (0,), name: str = "net") -> Path:
    """ONNX file of ``module`` traced on ``sample`` (dims ``dynamic`` left free), cached by
    :func:`module_fingerprint`. Written to a temporary name and renamed, so a crash never leaves
    a half-written export behind."""
    key = module_fingerprint(module, sample.shape, dynamic)
    path = export_dir() / f"{name}-{key}.onnx"
    with _export_lock:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        axes = {i: f"d{i}" for i in dynamic}
        module = module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (sample.cpu(),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["x"], output_names=None,
                              dynamic_axes={"x": axes}, do_constant_folding=True)
        tmp.replace(path)
    return path


class ExportedNet(nn.Module):
    """A module's forward run by ONNX Runtime or OpenVINO from its cached ONNX export.

    Exports lazily on the first call (its input shape fixes the non-dynamic dimensions); a call
    with other fixed dimensions exports again. Inference only: no gradients. Uses
    ``torch.get_num_threads()`` threads (``XFR_THREADS``)."""

    def __init__(self, module: nn.Module, backend: str, dynamic: Sequence[int] = (0,), name: str = "net"):
        super().__init__()
        if backend not in ("onnxruntime", "openvino"):
            raise ValueError(f"ExportedNet runs 'onnxruntime' or 'openvino', got {backend!r}")
        self.backend = backend
        self.dynamic = tuple(dynamic)
        self.name = name
        self._module = [module]  # a list, so the torch module is not registered as a child
        # an empty parameter, for callers that read the net's dtype/device from its parameters
        self.dtype_probe = nn.Parameter(torch.zeros(0), requires_grad=False)
        self._sessions: dict[tuple, object] = {}

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, name={self.name!r}"

    def _key(self, x: Tensor) -> tuple:
        return tuple(("*" if i in self.dynamic else s) for i, s in enumerate(x.shape))

    def session(self, x: Tensor):
        key = self._key(x)
        if key not in self._sessions:
            path = export_onnx(self._module[0], x[:1].detach().float().cpu(), self.dynamic, self.name)
            self._sessions[key] = _open(path, self.backend)
        return self._sessions[key]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{self.backend} runs inference only; use backend='torch' for gradients")
        sess = self.session(x)
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outs = sess(arr)
        tensors = tuple(torch.from_numpy(np.asarray(o)).to(x.device) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


def _open(path: Path, backend: str):
    """A callable ``numpy input -> list of numpy outputs`` for the export at ``path``."""
    threads = max(1, torch.get_num_threads())
    if backend == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the engine's own work (masks, blending) runs on the same
        # cores right after each batch
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        return lambda arr: sess.run(None, {in_name: arr})
    try:
        import openvino as ov
    except ImportError:
        raise ImportError("backend='openvino' needs the openvino package (an xfr dependency): "
                          "pip install openvino, or use backend='onnxruntime' or 'torch'") from None
    core = ov.Core()
    # no CPU pinning: OpenVINO pins its threads to the first cores by default, so two processes
    # with one thread each (Ray actors, xfr.jobs) shared core 0 (measured: 53 % CPU each)
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32",
                                                     "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()

    def run(arr):
        request.infer({0: arr})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return run


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy sharing ``module``'s submodules and tensors, with its own registries, so that a
    submodule or attribute set on the copy never reaches the original."""
    fast = copy.copy(module)
    for attr in ("_modules", "_parameters", "_buffers"):
        fast.__dict__[attr] = dict(module.__dict__[attr])
    return fast


def _body_module(model: nn.Module) -> nn.Module:
    """The network part of a zoo model as a module: ``model.body`` (a module or a method)."""
    body = getattr(model, "body", None)
    if isinstance(body, nn.Module):
        return body
    if callable(body):
        return _BoundBody(model)
    raise ValueError(f"{type(model).__name__} has no `body` (the network on its preprocessed input); "
                     f"only zoo models with forward = finish(body(preprocess(x))) can be accelerated")


class _BoundBody(nn.Module):
    """``model.body`` as the forward of a module (what the exporter traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        return type(self.model).body(self.model, x)  # type: ignore[attr-defined]


def resolve_backend(model, backend: str = "auto") -> str:
    """The path ``backend`` means for ``model``: 'auto' -> the measured default of a zoo model
    on the CPU (:data:`AUTO`, set on the model by ``xfr.models.load`` as ``registry_name``),
    'torch' otherwise."""
    check_backend(backend)
    if backend != "auto":
        return backend
    if not isinstance(model, nn.Module) or _device(model).type != "cpu":
        return "torch"
    return AUTO.get(getattr(model, "registry_name", ""), "torch")


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def accelerated(model, backend: str = "auto"):
    """``model`` with its ``body`` run by ``backend`` (see the module docstring); the model
    itself when the path is 'torch'. Cached on the model, so every score function built on it
    shares one session."""
    from ..engine import Counting, CountingView

    if isinstance(model, Counting) and isinstance(model.f, nn.Module):  # a counted model
        fast = accelerated(model.f, backend)
        return model if fast is model.f else model.running(fast)
    if isinstance(model, CountingView) or getattr(model, "__dict__", {}).get("backend") in BACKENDS:
        return model  # already on its path
    path = resolve_backend(model, backend)
    if path == "torch":
        return model
    if _device(model).type != "cpu":
        raise ValueError(f"backend={path!r} runs on the CPU; the model is on {_device(model)} "
                         f"(use backend='torch')")
    cache = _ACCELERATED.setdefault(model, {})
    if path not in cache and hasattr(model, "accelerated_copy"):  # MTCNN (three nets), ContextPadded (a wrapper)
        cache[path] = model.accelerated_copy(path)
    if path not in cache:
        fast = shallow_copy(model)
        name = getattr(model, "registry_name", type(model).__name__)
        object.__setattr__(fast, "body", ExportedNet(_body_module(model), path, name=name))
        fast.__dict__["backend"] = path
        cache[path] = fast
    return cache[path]
