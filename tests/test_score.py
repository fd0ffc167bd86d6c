"""Score-function factories (MinPlus eqs. 1-4) against small fakes, and on the real models."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import BrightSquareNet, MeanColour
from xfr.faces.mesh import pair_canvas
from xfr.models.detect import Detections
from xfr.models.xception import ContextPadded
from xfr.score import (
    attribute_score,
    box_iou,
    class_score,
    classifier_net,
    cosine_tau,
    decided_correctly,
    detection_score,
    mate_confidence,
    pair_confidence,
    to_ultralytics,
    verification_score,
)


class CountingEmbedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 5)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return self.proj(x.flatten(1)) * 3.0  # not unit length


def test_verification_score_is_dot_product_of_unit_embeddings():
    emb = CountingEmbedder()
    g = torch.Generator().manual_seed(1)
    ref, probes = torch.rand(3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    f = verification_score(emb, ref)
    assert emb.calls == 1  # the reference embedding is computed once, up front
    s = f(probes)
    assert emb.calls == 5
    with torch.no_grad():
        want = torch.nn.functional.cosine_similarity(emb.proj(probes.flatten(1)),
                                                     emb.proj(ref[None].flatten(1)), dim=1)
    torch.testing.assert_close(s, want, rtol=1e-5, atol=1e-6)
    assert float(f(ref[None])[0]) == pytest.approx(1.0, abs=1e-6)
    assert s.shape == (4,) and s.dtype == torch.float32


def test_verification_score_rejects_bad_reference_and_embedder():
    with pytest.raises(ValueError, match="one image"):
        verification_score(CountingEmbedder(), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="embeddings"):
        verification_score(lambda x: x.mean(dim=(1, 2, 3)), torch.rand(3, 8, 8))


def test_attribute_score_is_softmax_probability_of_class_k():
    lin = nn.Linear(12, 4)
    clf = lambda x: lin(x.flatten(1))
    x = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        probs = torch.softmax(lin(x.flatten(1)), dim=1)
    for k in range(4):
        torch.testing.assert_close(attribute_score(clf, k)(x), probs[:, k])
    # a single logit is read as a sigmoid
    one = lambda x: x.flatten(1)[:, :1] * 4 - 2
    p = torch.sigmoid(x.flatten(1)[:, 0] * 4 - 2)
    torch.testing.assert_close(attribute_score(one, 1)(x), p)
    torch.testing.assert_close(attribute_score(one, 0)(x), 1 - p)
    with pytest.raises(ValueError, match="out of range"):
        attribute_score(clf, 4)(x)
    with pytest.raises(ValueError, match="class index"):
        attribute_score(clf, -1)


def test_box_iou():
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 0, 0.]])
    iou = box_iou(boxes, torch.tensor([0, 0, 10, 10.]))
    torch.testing.assert_close(iou, torch.tensor([1.0, 25 / 175, 0.0, 0.0]))


BOX = (4.0, 6.0, 14.0, 18.0)


class FakeMTCNN:
    """detect() -> one face whose probability is the mean intensity inside a fixed box, and a
    second face elsewhere with probability 0.99."""

    def detect(self, images):
        out = []
        for img in images:
            p = float(img[:, 6:18, 4:14].mean())
            out.append(Detections(torch.tensor([[4.5, 6.0, 14.0, 18.5], [20, 2, 30, 12.]]),
                                  torch.tensor([p, 0.99]), torch.zeros(2, 5, 2)))
        return out


def test_detection_score_with_mtcnn_like_detector():
    x = torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(3))
    f = detection_score(FakeMTCNN(), BOX)
    torch.testing.assert_close(f(x), x[:, :, 6:18, 4:14].mean(dim=(1, 2, 3)))
    # nothing at that location: 0
    assert float(detection_score(FakeMTCNN(), (40, 40, 60, 60))(x).abs().max()) == 0.0
    # the other face matches its own box
    torch.testing.assert_close(detection_score(FakeMTCNN(), (20, 2, 30, 12))(x),
                               torch.full((3,), 0.99))
    with pytest.raises(ValueError, match="no classes"):
        detection_score(FakeMTCNN(), BOX, cls=1)(x)


class FakeYOLO:
    """ultralytics-like: called on a list of HxWx3 uint8 BGR arrays; two boxes per image with
    class 0 (score: mean red inside BOX) and class 2 (score: mean blue inside BOX)."""

    def __init__(self):
        self.kwargs = None

    def predict(self, *a, **k):
        return self(*a, **k)

    def __call__(self, source, **kwargs):
        self.kwargs = kwargs
        results = []
        for arr in source:
            assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape[2] == 3
            crop = arr[6:18, 4:14].astype(np.float64) / 255.0
            boxes = SimpleNamespace(
                xyxy=torch.tensor([[4.0, 6.0, 14.0, 18.0], [4.0, 6.0, 14.0, 18.0]]),
                conf=torch.tensor([crop[..., 2].mean(), crop[..., 0].mean()], dtype=torch.float32),
                cls=torch.tensor([0.0, 2.0]),
            )
            results.append(SimpleNamespace(boxes=boxes))
        return results


def test_detection_score_with_ultralytics_like_model_reads_rgb_as_bgr_uint8():
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(4))
    q = torch.round(x * 255) / 255  # what survives the uint8 conversion
    yolo = FakeYOLO()
    red = detection_score(yolo, BOX, cls=0)(x)
    blue = detection_score(yolo, BOX, cls=2)(x)
    torch.testing.assert_close(red, q[:, 0, 6:18, 4:14].mean(dim=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(blue, q[:, 2, 6:18, 4:14].mean(dim=(1, 2)), atol=1e-5, rtol=0)
    assert yolo.kwargs["verbose"] is False and yolo.kwargs["conf"] <= 0.01
    assert float(detection_score(yolo, BOX, cls=1)(x).abs().max()) == 0.0  # no such class
    # any class: the best matching score
    torch.testing.assert_close(detection_score(yolo, BOX)(x), torch.maximum(red, blue))


def test_to_ultralytics_layout():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0  # pure red
    arr = to_ultralytics(x)[0]
    assert arr.shape == (2, 2, 3) and arr.dtype == np.uint8
    assert (arr[..., 2] == 255).all() and (arr[..., :2] == 0).all()


@pytest.mark.parametrize("box,thr", [((0, 0, 0, 10), 0.5), ((0, 0, 10), 0.5), ((0, 0, 5, 5), 0.0)])
def test_detection_score_bad_arguments(box, thr):
    with pytest.raises(ValueError):
        detection_score(FakeMTCNN(), box, iou_threshold=thr)


# ----------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_detection_score_with_real_mtcnn():
    from xfr.data import DATA_DIR
    from xfr.io import load_image
    from xfr.models import load

    path = DATA_DIR / "lfw_rgb_samples" / "Anthony_Hopkins_0001.jpg"
    if not path.is_file():
        pytest.skip("data/ not assembled (python -m xfr.data)")
    img = load_image(path)
    mtcnn = load("mtcnn")
    det = mtcnn.detect(img)[0]
    assert len(det) >= 1
    f = detection_score(mtcnn, det.boxes[0].tolist())
    s = f(torch.stack([img, torch.zeros_like(img)]))
    assert float(s[0]) == pytest.approx(float(det.probs[0]), abs=1e-5)
    assert float(s[1]) == 0.0  # a black image has no face there


@pytest.mark.slow
def test_verification_score_with_real_dlib_resnet():
    from xfr.data import DATA_DIR, lfw_pairs
    from xfr.models import load
    from xfr.models.align import detect_and_align

    if not (DATA_DIR / "lfw_gray").is_dir():
        pytest.skip("data/ not assembled (python -m xfr.data)")
    model = load("dlib-resnet")
    pairs = lfw_pairs()
    same = next(p for p in pairs if p.same)
    diff = next(p for p in pairs if not p.same)
    chips = {k: detect_and_align(v, model.template) for k, v in
             (("a", same.a), ("b", same.b), ("c", diff.a), ("d", diff.b))}
    f_same = verification_score(model, chips["b"])
    f_diff = verification_score(model, chips["d"])
    s_same = float(f_same(chips["a"][None])[0])
    s_diff = float(f_diff(chips["c"][None])[0])
    assert float(f_same(chips["b"][None])[0]) == pytest.approx(1.0, abs=1e-5)
    assert s_same > s_diff


# ----------------------------------------------------------------------------- CMS paper scores (eqs. 1, 8)



def test_pair_confidence_sign_eq8():
    emb = MeanColour()
    a = torch.rand(3, 16, 16)
    b = torch.rand(3, 16, 16) * 0.2
    b[0] += 0.8  # another "identity"
    same_pair = pair_canvas(a, a)[None]
    tau = 0.5
    assert float(pair_confidence(emb, tau, True)(same_pair)) == pytest.approx(0.5, abs=1e-5)
    assert float(pair_confidence(emb, tau, False)(same_pair)) == pytest.approx(-0.5, abs=1e-5)
    # mate_confidence (one face perturbed, the mate fixed) equals the pair score
    diff = pair_canvas(a, b)[None]
    assert float(mate_confidence(emb, b, tau, False)(a[None])) == pytest.approx(
        float(pair_confidence(emb, tau, False)(diff)), abs=1e-5)
    with pytest.raises(ValueError, match="even width"):
        pair_confidence(emb, tau, True)(torch.rand(1, 3, 8, 15))


def test_cosine_tau_separates_and_class_score():
    sims = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3])
    same = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    tau = cosine_tau(sims, same)
    assert 0.3 < tau < 0.7 and ((sims > tau) == same).all()
    net = BrightSquareNet().eval()
    x = torch.zeros(1, 3, 12, 12)
    x[..., 3:9, 3:9] = 1.0
    f = class_score(net, 1)
    torch.testing.assert_close(f(x), torch.softmax(net(x), 1)[:, 1])
    assert decided_correctly(f, x[0]) and not decided_correctly(class_score(net, 0), x[0])
    assert decided_correctly(mate_confidence(MeanColour(), x[0], 0.5, True), x[0])


def test_context_padded_pads_before_the_model():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return torch.zeros(x.shape[0], 2)

    ContextPadded(Probe(), 0.25)(torch.rand(2, 3, 40, 40))
    assert seen == [(2, 3, 60, 60)]
    assert isinstance(classifier_net(Probe(), 0.0), Probe)
    with pytest.raises(ValueError, match="margin"):
        ContextPadded(Probe(), -0.1)
