"""The Keras ports and the dlib ResNet are built from standard torch modules (nn.Conv2d,
nn.BatchNorm2d, one nn.ReLU per call site), so captum, zennit and Quantus work unchanged and
model randomization reaches every layer; outputs equal those of the earlier functional ports
(tests/models/data/standard_layers_reference.npz, computed before the change on real faces and
on a seeded random input)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xfr.models import keras_h5 as K

REFERENCE = Path(__file__).parent / "data" / "standard_layers_reference.npz"
DATA = Path(__file__).resolve().parents[2] / "data"


def test_keras_layers_are_standard_modules():
    conv = K.build_layer(K.KerasLayer("c", "SeparableConv2D", {"padding": "same", "strides": [2, 2],
                                                                "use_bias": True, "activation": "relu"}, (),
                                      {"depthwise_kernel": np.ones((3, 3, 2, 1), np.float32),
                                       "pointwise_kernel": np.ones((1, 1, 2, 4), np.float32),
                                       "bias": np.zeros(4, np.float32)}))
    assert isinstance(conv.conv, nn.Conv2d) and isinstance(conv.pointwise, nn.Conv2d)
    assert conv.conv.groups == 2 and conv.conv.bias is None and isinstance(conv.act, nn.ReLU)
    assert isinstance(conv.pad, K.KerasSamePad)  # stride 2: padding depends on the input size
    bn = K.build_layer(K.KerasLayer("b", "BatchNormalization", {"epsilon": 0.5}, (),
                                    {"moving_mean": np.full(3, 2, np.float32),
                                     "moving_variance": np.full(3, 3.5, np.float32)}))
    assert isinstance(bn, nn.BatchNorm2d) and bn.eps == 0.5
    x = torch.randn(4, 3, 5, 5)
    want = (x - 2) / 2.0
    torch.testing.assert_close(bn(x), want)
    bn.train()  # inference semantics also in train mode: running stats used, never updated
    torch.testing.assert_close(bn(x), want)
    torch.testing.assert_close(bn.running_mean, torch.full((3,), 2.0))
    act = K.build_layer(K.KerasLayer("a", "Activation", {"activation": "relu"}, (), {}))
    assert isinstance(act.act, nn.ReLU)


def _relus_distinct(model: nn.Module) -> None:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and len({id(m) for m in relus}) == len(relus)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mini-xception-fer2013", "mini-xception-gender", "dlib-resnet"])
def test_outputs_equal_the_functional_ports(name):
    from xfr import models
    from xfr.faces.windows import resize_to
    from xfr.io import load_image

    ref = np.load(REFERENCE)
    key = name.replace("-", "_")
    model = models.load(name)
    _relus_distinct(model)
    synth = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        got = model(synth).numpy()
    np.testing.assert_allclose(got, ref[key + "_synthetic"], rtol=1e-5, atol=1e-5 * np.abs(got).max())
    paths = ref["lfw_paths" if name == "dlib-resnet" else "fer_paths"]
    if not all((DATA / str(p)).is_file() for p in paths):
        pytest.skip("data/ not assembled (python -m xfr.data)")
    if name == "dlib-resnet":
        faces = torch.stack([resize_to(load_image(DATA / str(p)), (150, 150)).float() for p in paths])
    else:
        faces = torch.stack([load_image(DATA / str(p)).float() for p in paths])
    with torch.no_grad():
        got = model(faces).numpy()
    want = ref[key + "_faces"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mini-xception-fer2013", "dlib-resnet"])
def test_every_parameterized_module_resets(name):
    """Every module owning parameters has ``reset_parameters``, and both it and
    ``xfr.metrics.randomization._reinit_module`` change every parameter."""
    from xfr import models
    from xfr.metrics.randomization import _reinit_module

    model = models.load(name)
    owners = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    assert owners
    missing = [n for n, m in owners if not hasattr(m, "reset_parameters")]
    assert not missing, f"modules without reset_parameters: {missing}"
    for reset in (lambda m: m.reset_parameters(), _reinit_module):
        work = copy.deepcopy(model)
        before = {k: v.detach().clone() for k, v in work.named_parameters()}
        torch.manual_seed(0)
        with torch.no_grad():
            for _, m in dict(work.named_modules()).items():
                if any(True for _ in m.parameters(recurse=False)):
                    reset(m)
        same = [k for k, v in work.named_parameters() if torch.equal(v, before[k])]
        assert not same, f"parameters unchanged by the reset: {same}"
