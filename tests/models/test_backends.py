"""Execution paths (xfr.models.backends): an exported body gives the PyTorch module's outputs,
is cached by its fingerprint, is the same for every batch size, and refuses gradients."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from xfr.engine import Counting, CountingScore, perturb
from xfr.models import backends
from xfr.models.backends import ExportedNet, accelerated, module_fingerprint, resolve_backend
from xfr.score import attribute_score, unit_embeddings, verification_score

PATHS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


class TinyZooNet(torch.nn.Module):
    """A zoo-shaped model: forward = body(preprocess(x)); preprocess resizes to 20 px."""

    def __init__(self, seed=0, n_out=5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4, n_out)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def preprocess(self, x):
        return F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False) * 2 - 1

    def body(self, x):
        a = torch.relu(self.conv(x))
        return self.fc(F.adaptive_avg_pool2d(a, 2).flatten(1))

    def forward(self, x):
        return self.body(self.preprocess(x))


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XFR_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("path", PATHS)
def test_accelerated_matches_torch_and_leaves_the_module_alone(path):
    model = TinyZooNet().eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fast = accelerated(model, path)
    assert fast is not model and isinstance(fast.body, ExportedNet)
    assert not isinstance(model.__dict__.get("body"), ExportedNet)  # the original is untouched
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)
    assert accelerated(model, path) is fast  # one session per model and path


def test_export_is_cached_by_fingerprint(export_cache):
    model = TinyZooNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        accelerated(model, "onnxruntime")(x)
    files = sorted((export_cache / "exports").glob("*.onnx"))
    assert len(files) == 1
    other = TinyZooNet(seed=1).eval()
    sample = torch.zeros(1, 3, 20, 20)
    assert module_fingerprint(backends._BoundBody(model), sample.shape, (0,)) != \
        module_fingerprint(backends._BoundBody(other), sample.shape, (0,))
    with torch.no_grad():
        accelerated(TinyZooNet().eval(), "onnxruntime")(x)  # same weights: the same file
    assert sorted((export_cache / "exports").glob("*.onnx")) == files
    assert not list((export_cache / "exports").glob("*.tmp*"))


def test_outputs_do_not_depend_on_the_batch_size():
    fast = accelerated(TinyZooNet().eval(), "onnxruntime")
    x = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = fast(x)
        parts = torch.cat([fast(x[i:i + 1]) for i in range(len(x))] + [])
        pairs = torch.cat([fast(x[i:i + 3]) for i in range(0, len(x), 3)])
    assert torch.equal(whole, parts) and torch.equal(whole, pairs)


def test_exported_net_refuses_gradients():
    fast = accelerated(TinyZooNet().eval(), "onnxruntime")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        fast(x)


def test_backend_names_are_checked_and_auto_means_the_measured_table(monkeypatch):
    model = TinyZooNet().eval()
    with pytest.raises(ValueError, match="backend must be"):
        unit_embeddings(model, backend="tensorrt")
    assert resolve_backend(model, "auto") == "torch"  # not a zoo model
    assert accelerated(model, "torch") is model
    model.registry_name = "tiny"
    monkeypatch.setitem(backends.AUTO, "tiny", "onnxruntime")
    assert resolve_backend(model, "auto") == "onnxruntime"
    assert resolve_backend(lambda x: x, "auto") == "torch"  # plain functions run as they are
    with pytest.raises(ValueError, match="no `body`"):
        accelerated(torch.nn.Linear(2, 2), "onnxruntime")


def test_score_functions_agree_across_backends_and_count_passes():
    model = TinyZooNet(n_out=4).eval()
    g = torch.Generator().manual_seed(3)
    image, ref = torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    masks = torch.rand(10, 32, 32, generator=g)
    for make in (lambda b: verification_score(model, ref, backend=b),
                 lambda b: attribute_score(model, 2, backend=b)):
        s_torch = perturb(make("torch"), image, masks, batch_size=4).scores
        s_ort = perturb(make("onnxruntime"), image, masks, batch_size=4).scores
        assert torch.allclose(s_torch, s_ort, atol=1e-5)
    counted = Counting(model)  # a counted model: the counts see the accelerated passes
    f = CountingScore(verification_score(counted, ref, backend="onnxruntime"))
    perturb(f, image, masks, batch_size=4)
    assert counted.n_forward == 1 + 10 and f.n_forward == 10


def test_an_accelerated_model_can_still_be_deep_copied_and_randomized(monkeypatch):
    import copy

    from xfr.metrics.randomization import cascading_randomization

    model = TinyZooNet().eval()
    model.registry_name = "tiny"
    monkeypatch.setitem(backends.AUTO, "tiny", "onnxruntime")
    with torch.no_grad():
        accelerated(model)(torch.rand(1, 3, 32, 32))
    twin = copy.deepcopy(model)
    assert resolve_backend(twin) == "onnxruntime"
    for _, randomized in cascading_randomization(model, ["fc"]):  # not the zoo model any more
        assert resolve_backend(randomized) == "torch"


def test_auto_is_the_benchmark_s_adopted_table():
    """backend="auto" runs each zoo model on the path the committed speed benchmark adopted."""
    import json
    from pathlib import Path

    report = json.loads((Path(__file__).resolve().parents[2] / "reports" / "speed.json").read_text())
    adopted = {k: v for k, v in report["forward"]["adopt"].items() if v != "torch"}
    assert backends.AUTO == adopted


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(backends.AUTO) - {"mtcnn"}))
def test_zoo_models_agree_with_torch_on_their_default_path(name):
    """The acceptance rule of backend="auto" on real faces: embeddings cosine >= 0.9999,
    probabilities within 1e-4, landmarks within 0.01 px; and the same output for every batch size."""
    from xfr.data import lfw_pairs
    from xfr.io import load_image
    from xfr.models import load

    model = load(name)
    faces = torch.stack([load_image(p.a) for p in lfw_pairs()[:6]])[:, :, 50:200, 50:200]
    fast = accelerated(model)
    assert resolve_backend(model) == backends.AUTO[name] and fast is not model
    with torch.no_grad():
        ref, out = model(faces), fast(faces)
        one_by_one = torch.cat([fast(faces[i:i + 1]) for i in range(len(faces))])
    assert torch.equal(out, one_by_one)
    if name in ("dlib-resnet", "mobileface", "faceres"):
        assert float(F.cosine_similarity(ref, out).min()) >= 0.9999
    elif name == "facemesh":
        assert float((ref - out).abs().max()) <= 0.01
    else:
        assert float((torch.softmax(ref, 1) - torch.softmax(out, 1)).abs().max()) <= 1e-4


@pytest.mark.slow
def test_mtcnn_detection_score_agrees_with_torch_on_its_default_path():
    from xfr.data import load_photo
    from xfr.faces.windows import face_windows
    from xfr.models import load
    from xfr.score import detection_score

    mtcnn = load("mtcnn")
    (fw,), _ = face_windows("astronaut", load_photo("astronaut"), mtcnn, faces_per_photo=1)
    from xfr.explain.masks import RiseMasks

    occluded = fw.window[None] * RiseMasks((96, 96), 16, s=4, p=0.7, seed=0).all()[:, None]
    s_torch = detection_score(mtcnn, fw.box, backend="torch")(occluded)
    s_auto = detection_score(mtcnn, fw.box)(occluded)
    assert s_torch.std() > 0.01  # the occlusions change the score
    assert float((s_torch - s_auto).abs().max()) <= 1e-4


def test_a_context_padded_zoo_model_runs_its_inner_model_on_the_default_path(monkeypatch):
    from xfr.models.xception import ContextPadded

    model = TinyZooNet(n_out=3).eval()
    model.registry_name = "tiny"
    monkeypatch.setitem(backends.AUTO, "tiny", "onnxruntime")
    wrapped = ContextPadded(model, 0.25)
    fast = accelerated(wrapped)
    assert isinstance(fast, ContextPadded) and fast.margin == 0.25
    assert isinstance(fast.model.body, ExportedNet)
    assert accelerated(ContextPadded(TinyZooNet().eval(), 0.25)).model.__dict__.get("body") is None  # not a zoo model
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    s_auto = attribute_score(wrapped, 1)(x)
    s_torch = attribute_score(wrapped, 1, backend="torch")(x)
    assert torch.allclose(s_auto, s_torch, atol=1e-5)
