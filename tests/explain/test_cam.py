"""xfr.explain.cam: the Grad-CAM family wrapper (pytorch-grad-cam), the eq. 8 target, the tapped
TF.js faceres-gender graph."""
import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from tests.helpers import BrightSquareNet, MeanColour
from xfr.explain.cam import (
    CAM_METHODS,
    CamNet,
    TappedFaceResGender,
    VerificationTarget,
    cam_maps,
    cam_setup,
    layer_channels,
)
from xfr.score import mate_confidence


def test_verification_target_matches_mate_confidence():
    emb = MeanColour()
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    target = VerificationTarget(emb(b[None])[0], 0.9, False)
    assert float(target(emb(a[None])[0])) == pytest.approx(
        float(mate_confidence(emb, b, 0.9, False)(a[None])), abs=1e-5)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_maps_shape_range_and_location(method):
    net = BrightSquareNet().eval()
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 4:12, 4:12] = 1.0
    x[1, :, 18:28, 20:30] = 1.0
    maps = cam_maps(method, CamNet(net), net.conv, x, [ClassifierOutputTarget(1)] * 2)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    for m, (y0, y1, x0, x1) in zip(maps, [(4, 12, 4, 12), (18, 28, 20, 30)]):
        inside = np.zeros_like(m, dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert m[inside].mean() > m[~inside].mean() + 0.3
    padded = cam_maps(method, CamNet(net), net.conv, x[:1], [ClassifierOutputTarget(1)], context=0.25)
    assert padded.shape == (1, 32, 32)
    assert padded[0, 4:12, 4:12].mean() > padded[0, 16:, 16:].mean() + 0.3  # cropped back in place
    with pytest.raises(ValueError, match="method"):
        cam_maps("lime", CamNet(net), net.conv, x, [ClassifierOutputTarget(1)] * 2)
    with pytest.raises(ValueError, match="targets"):
        cam_maps(method, CamNet(net), net.conv, x, [ClassifierOutputTarget(1)])


def test_layer_channels():
    net = BrightSquareNet()
    assert layer_channels(net, net.conv, torch.rand(1, 3, 8, 8)) == 2


@pytest.mark.slow
def test_cam_setup_real_models_and_tapped_faceres():
    from xfr import models

    x = torch.rand(1, 3, 224, 224)
    faceres = models.load("faceres-gender")
    net, layer, name = cam_setup("faceres-gender", faceres)
    with torch.no_grad():
        torch.testing.assert_close(net(x), faceres(x))
    assert name.startswith("conv_pw_11") and layer_channels(net, layer, x) == 512
    gm = cam_maps("gradcam", net, layer, x, [ClassifierOutputTarget(0)])
    assert gm.shape == (1, 224, 224) and gm.min() >= 0 and gm.max() <= 1
    fer = models.load("mini-xception-fer2013")
    net, layer, name = cam_setup("mini-xception-fer2013", fer)
    assert layer is fer.target_layer
    maps = cam_maps("gradcam++", net, layer, x.expand(2, -1, -1, -1),
                      [ClassifierOutputTarget(3), ClassifierOutputTarget(3)])
    assert maps.shape == (2, 224, 224)
    with pytest.raises(ValueError, match="expected the faceres-gender"):
        TappedFaceResGender(fer)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_single_image_named_layer_known_answer(method):
    from xfr.explain.cam import cam

    net = BrightSquareNet().eval()
    x = torch.zeros(3, 32, 32)
    x[:, 18:28, 20:30] = 1.0
    m = cam(method, net, x, 1, layer="conv")
    assert isinstance(m, torch.Tensor) and m.dtype == torch.float32 and m.shape == (32, 32)
    assert float(m[18:28, 20:30].mean()) > 2 * float(m.mean())  # the bright square carries it


def test_cam_verification_target_and_errors():
    from xfr.explain.cam import cam

    class ConvEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean(dim=(2, 3))

    net = ConvEmbedder().eval()
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    m = cam("gradcam", net, a, b, layer="conv")
    assert m.shape == (16, 16) and torch.isfinite(m).all()
    with pytest.raises(ValueError, match="no layer 'nope'.*conv"):
        cam("gradcam", net, a, b, layer="nope")
    with pytest.raises(ValueError, match="target must be"):
        cam("gradcam", net, a, -1, layer="conv")
    with pytest.raises(ValueError, match=r"\[C,H,W\]"):
        cam("gradcam", net, a[None], 0, layer="conv")
