"""xfr.faces.windows: square context windows around a box, boxes mapped into them, downscaling."""
import pytest
import torch

from xfr.data import load_photo
from xfr.faces import windows as W
from xfr.models.detect import Detections


def test_square_window_centred_shifted_and_clipped():
    # centred: box 20x10 at (40..60, 45..55), context 2 -> side 40 around (50, 50)
    assert W.square_window((40, 45, 60, 55), 2.0, (100, 100)) == (30, 30, 70, 70)
    # near the top-left corner: shifted inside, same side
    x1, y1, x2, y2 = W.square_window((0, 0, 10, 10), 3.0, (100, 100))
    assert (x1, y1) == (0, 0) and x2 - x1 == y2 - y1 == 30
    # near the bottom edge of a 100 x 120 image: shifted up only (x fits)
    assert W.square_window((90, 90, 100, 100), 3.0, (100, 120)) == (80, 70, 110, 100)
    # larger than the image: clipped to its short side
    x1, y1, x2, y2 = W.square_window((10, 10, 40, 40), 5.0, (50, 80))
    assert x2 - x1 == y2 - y1 == 50 and 0 <= x1 and x2 <= 80
    with pytest.raises(ValueError):
        W.square_window((10, 10, 5, 20), 2.0, (50, 50))
    with pytest.raises(ValueError):
        W.square_window((0, 0, 5, 5), 0.0, (50, 50))


def test_map_box():
    b = W.map_box([30, 40, 50, 60], (20, 30, 60, 70), 80)  # window side 40 -> x2 scale
    assert torch.allclose(b, torch.tensor([20.0, 20.0, 60.0, 60.0]))


def test_downscale():
    img = torch.rand(3, 100, 300)
    small, s = W.downscale(img, 150)
    assert small.shape == (3, 50, 150) and s == pytest.approx(0.5)
    same, s1 = W.downscale(img, 400)
    assert same is img and s1 == 1.0


class SquareFinder:
    """A fake detector: 'detects' every bright (> 0.5) axis-aligned square region as one face
    (bounding box of the bright pixels), probability 0.99."""

    def detect(self, images):
        if images.dim() == 3:
            images = images[None]
        out = []
        for img in images:
            bright = img.mean(0) > 0.5
            if not bright.any():
                out.append(Detections.empty())
                continue
            ys, xs = torch.nonzero(bright, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append(Detections(box, torch.tensor([0.99]), torch.zeros(1, 5, 2)))
        return out


def test_face_windows_with_a_fake_detector():
    photo = torch.zeros(3, 200, 300)
    photo[:, 80:120, 140:180] = 1.0  # a 40 px "face"
    faces, boxes = W.face_windows("p", photo, SquareFinder(), faces_per_photo=2, detect_side=150,
                                  context=2.5, window_size=50)
    assert len(boxes) == 1 and len(faces) == 1
    fw = faces[0]
    assert torch.allclose(boxes[0], torch.tensor([140.0, 80.0, 180.0, 120.0]), atol=2.5)
    assert fw.rect == (110, 50, 210, 150)  # side 2.5 x 40 = 100, centred on the face
    assert fw.window.shape == (3, 50, 50)
    # the face occupies the middle 20x20 of the 50 px window
    assert torch.allclose(fw.box, torch.tensor([15.0, 15.0, 35.0, 35.0]), atol=1.5)
    assert fw.iou_photo_window > 0.8 and fw.prob == pytest.approx(0.99)
    assert fw.box_fraction == pytest.approx(0.16, abs=0.03)


def test_face_windows_drop_faces_the_window_does_not_confirm():
    class Forgetful(SquareFinder):
        def detect(self, images):
            dets = super().detect(images)
            small = images.dim() == 3 and images.shape[-1] == 50
            return [Detections.empty() for _ in dets] if small else dets

    photo = torch.zeros(3, 200, 300)
    photo[:, 80:120, 140:180] = 1.0
    faces, boxes = W.face_windows("p", photo, Forgetful(), context=2.5, window_size=50)
    assert len(boxes) == 1 and faces == []


@pytest.mark.slow
def test_mtcnn_window_of_the_astronaut_is_detected_and_scored():
    from xfr.models.detect import MTCNNDetector
    from xfr.score import detection_score

    mtcnn = MTCNNDetector().eval()
    faces, boxes = W.face_windows("astronaut", load_photo("astronaut"), mtcnn, faces_per_photo=1,
                                  context=2.5, window_size=96)
    assert len(boxes) == 1 and len(faces) == 1
    fw = faces[0]
    f = detection_score(mtcnn, fw.box)
    assert float(f(fw.window[None])[0]) == pytest.approx(fw.prob, abs=1e-4)
    assert float(f(torch.zeros(1, 3, 96, 96))[0]) == 0.0
    assert 0.05 < fw.box_fraction < 0.3


def test_window_for_box_of_a_given_box():
    photo = torch.zeros(3, 200, 300)
    photo[:, 80:120, 140:180] = 1.0
    fw = W.window_for_box(SquareFinder(), photo, [140, 80, 180, 120], context=2.5, window_size=50)
    assert fw is not None and fw.rect == (110, 50, 210, 150)
    assert torch.allclose(fw.box, torch.tensor([15.0, 15.0, 35.0, 35.0]), atol=1.5)
    # a box where the detector finds nothing matching: None
    assert W.window_for_box(SquareFinder(), photo, [10, 10, 40, 40], context=1.5, window_size=50) is None
