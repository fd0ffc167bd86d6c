"""xfr.experiments.detection: photo loading, face windows (geometry, box mapping, matching with a
fake detector), AP / pointing / interpolated PR of maps against a box."""
import pytest
import torch

from xfr.experiments import detection as D
from xfr.models.detect import Detections


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
    faces, boxes = D.face_windows("p", photo, SquareFinder(), faces_per_photo=2, detect_side=150,
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
    faces, boxes = D.face_windows("p", photo, Forgetful(), context=2.5, window_size=50)
    assert len(boxes) == 1 and faces == []


def test_load_photo():
    astro = D.load_photo("astronaut")
    assert astro.shape == (3, 512, 512) and astro.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="not found"):
        D.load_photo("no_such_photo.jpg")
    p = D.sample_photo_path("grace_hopper")
    assert p is None or p.is_file()


def test_fig_detection_written(tmp_path):
    import pandas as pd

    from xfr.report import Timed

    fw = D.FaceWindow("p#0", "p", torch.rand(3, 32, 32), torch.tensor([8.0, 8.0, 24.0, 24.0]), 0.9,
                      (0, 0, 32, 32), torch.tensor([8.0, 8.0, 24.0, 24.0]), 1.0)
    res = {"rise": Timed(torch.rand(32, 32), 1.0, 10)}
    scores = pd.DataFrame([dict(face="p#0", method="RISE", ap=0.5, pointing_game=1.0)])
    D.fig_detection([fw], [res], scores, tmp_path / "f.png", title="t")
    D.fig_photos([("p", torch.rand(3, 40, 60), torch.tensor([[1.0, 1.0, 9.0, 9.0]]), [fw])], tmp_path / "g.png")
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.slow
def test_mtcnn_window_of_the_astronaut_is_detected_and_scored():
    from xfr.models.detect import MTCNNDetector
    from xfr.score import detection_score

    mtcnn = MTCNNDetector().eval()
    faces, boxes = D.face_windows("astronaut", D.load_photo("astronaut"), mtcnn, faces_per_photo=1,
                                  context=2.5, window_size=96)
    assert len(boxes) == 1 and len(faces) == 1
    fw = faces[0]
    f = detection_score(mtcnn, fw.box)
    assert float(f(fw.window[None])[0]) == pytest.approx(fw.prob, abs=1e-4)
    assert float(f(torch.zeros(1, 3, 96, 96))[0]) == 0.0
    assert 0.05 < fw.box_fraction < 0.3
